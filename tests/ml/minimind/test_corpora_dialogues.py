"""The offline corpora (parsers on hand-written snippets, then the installed Debian files when
present) and the training data built from them: seeds, held-out splits, DPO pairs, loss masks."""

from __future__ import annotations

import gzip
import re

import pytest

from playground.ml.minimind import corpora as C
from playground.ml.minimind import dialogues as D
from playground.ml.minimind import templates
from playground.ml.minimind.corpora import Definition, Poem, Quote
from playground.ml.minimind.tokenizer import train_bpe

TANG = ("\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n%\n"
        "\x1b[32m《登鹳雀楼》\x1b[m\n\x1b[33m作者：王之涣\x1b[m\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n%\n")
SONG = ("\x1b[32m题目:《题西林壁》\x1b[m\n\x1b[33m作者:苏轼（１０３７－１１０１）\x1b[m\n"
        "横看成岭侧成峰，远近高低各不同。\n\n不识庐山真面目，只缘身在此山中。\n%    \n")
FORTUNES = ("%\nA day for firm decisions!!!!!  Or is it?\n%\n"
            "It's a very *__\b\bUN*lucky week.\n\t\t-- Churchy La Femme\n"
            "%\nTwo lines of\nwisdom here.\n    -- Someone,\n       in a book\n%\n\n%\n")
JARGON = """Glossary

  A

   abbrev

   ABEND

   :abbrev: /@·breev'/, n.

   Common abbreviation for ‘abbreviation’.

   :ABEND: /a´bend/, n.

   [ABnormal END]

   1. Abnormal termination (of software); {crash}; {lossage}. Derives from
   an error message on the IBM 360.

   2. Absent By Enforced Net Deprivation.

  B

   back door

   :back door: n.

   A hole in the security of a system.

Appendix A. Hacker Folklore

   Not an entry.
"""
DEVIL = ("ABASEMENT, n.  A decent and customary mental attitude in the presence\nof wealth of power.\n\n\n",
         "BABE or BABY, n.  A misshapen creature of no particular age.\n\n    A verse line\n    and another\n\n",
         "LL.D.  Letters indicating the degree _Legumptionorum Doctor_.\n\n",
         "I is the first letter of the alphabet.\n\n")


def test_ansi_codes_and_overstrike_are_cleaned():
    assert C.strip_ansi("\x1b[32m《静夜思》\x1b[m") == "《静夜思》"
    assert C.strip_overstrike("*__\b\bUN*lucky") == "*UN*lucky"
    assert C.strip_overstrike("b\bbo\bold") == "bold"


def test_poems_parse_with_title_author_and_body():
    tang = C.parse_poems(TANG, "tang300")
    assert [p.title for p in tang] == ["静夜思", "登鹳雀楼"]
    assert tang[0] == Poem("静夜思", "李白", "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。", "tang300")
    song = C.parse_poems(SONG, "song100")
    assert len(song) == 1 and song[0].author == "苏轼" and song[0].dates == "1037-1101"
    assert song[0].body == "横看成岭侧成峰，远近高低各不同。\n\n不识庐山真面目，只缘身在此山中。"
    assert song[0].dynasty == "song" and "\x1b" not in song[0].text


def test_quotes_parse_with_attributions():
    quotes = [C.parse_quote(e, "fortunes") for e in C.split_fortunes(FORTUNES)]
    assert [q.quote for q in quotes] == ["A day for firm decisions!!!!!  Or is it?", "It's a very *UN*lucky week.",
                                         "Two lines of\nwisdom here."]
    assert [q.attribution for q in quotes] == ["", "Churchy La Femme", "Someone, in a book"]
    assert quotes[1].text == "It's a very *UN*lucky week.\n    -- Churchy La Femme"


def test_jargon_entries_stop_at_letter_headings():
    entries = C.parse_jargon(JARGON)
    assert [e.headword for e in entries] == ["abbrev", "ABEND", "back door"]
    assert entries[0].definition == "Common abbreviation for ‘abbreviation’." and entries[0].grammar == "n."
    abend = entries[1].definition
    assert abend.startswith("[ABnormal END]\n\n1. Abnormal termination (of software); crash; lossage. Derives")
    assert "B" not in abend.split("\n")[-1].split() and "back door" not in abend
    assert entries[2].definition == "A hole in the security of a system."


def test_devil_dictionary_from_a_dictd_database(tmp_path):
    data = "".join(DEVIL).encode()
    offsets, pos = [], 0
    for entry in DEVIL:
        offsets.append((pos, len(entry.encode())))
        pos += len(entry.encode())

    def b64(n: int) -> str:
        digits = ""
        while True:
            digits = C._B64[n % 64] + digits
            n //= 64
            if not n:
                return digits

    words = ["abasement", "babe", "lld", "i"]
    lines = ["00databaseshort\tA\tB"] + [f"{w}\t{b64(o)}\t{b64(n)}" for w, (o, n) in zip(words, offsets)]
    lines.append(f"baby\t{b64(offsets[1][0])}\t{b64(offsets[1][1])}")  # two words, one article
    (tmp_path / "devil.index").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "devil.dict.dz").write_bytes(gzip.compress(data))
    entries = C.read_devil(tmp_path / "devil.index", tmp_path / "devil.dict.dz")
    assert [(e.headword, e.grammar) for e in entries] == [("abasement", "n."), ("babe or baby", "n."),
                                                          ("LL.D.", ""), ("i", "")]
    assert entries[0].definition == "A decent and customary mental attitude in the presence of wealth of power."
    assert entries[1].definition == "A misshapen creature of no particular age.\n\nA verse line\nand another"
    assert entries[3].definition == "I is the first letter of the alphabet."
    assert C.dictd_number("BdqM") == ((1 * 64 + 29) * 64 + 42) * 64 + 12


def test_a_missing_package_is_named(tmp_path):
    for read, package in [(lambda: C.read_poems(tmp_path), "fortunes-zh"),
                          (lambda: C.read_quotes(tmp_path / "none"), "fortunes"),
                          (lambda: C.read_jargon(tmp_path / "jargon.txt.gz"), "jargon-text"),
                          (lambda: C.read_devil(tmp_path / "d.index", tmp_path / "d.dict.dz"), "dict-devil")]:
        with pytest.raises(C.CorpusMissing) as info:
            read()
        assert info.value.package == package and f"apt-get install {package}" in str(info.value)


@pytest.mark.skipif(any(C.available_sources().values()), reason="the Debian corpora are not installed")
def test_the_installed_corpora():
    corpora = C.read_all()
    sizes = {name: C.corpus_stats(records) for name, records in corpora.items()}
    assert 400 <= sizes["poems"][0] <= 420 and sizes["poems"][1] > 30_000
    assert sizes["quotes"][0] > 10_000 and sizes["jargon"][0] > 2_000 and sizes["devil"][0] > 900
    poems = corpora["poems"]
    assert {p.source for p in poems} == {"tang300", "song100"}
    assert all(p.title and p.author and p.body and "\x1b" not in p.text for p in poems)
    assert all("\b" not in q.quote for q in corpora["quotes"])
    assert any(d.headword == "hacker" for d in corpora["jargon"])
    assert any(d.headword == "cynic" for d in corpora["devil"])


# -- dialogues ------------------------------------------------------------------------------
RECORDS = [
    *C.parse_poems(TANG + SONG, "tang300"),
    Quote("The best way to predict the future is to invent it.", "Alan Kay", "computers"),
    Quote("Beware of bugs in the above code; I have only proved it correct, not tried it.", "Donald Knuth",
          "computers"),
    Quote("A gift of a flower will soon be made to you.", "", "fortunes"),
    Definition("hacker", "A person who enjoys exploring the details of programmable systems.", "jargon", "n."),
    Definition("cynic", "A blackguard whose faulty vision sees things as they are. Not as they ought to be.",
               "devil", "n."),
    Definition("kludge", "A clever programming trick intended to solve a particular nasty case.", "jargon", "n."),
]


def _many(n: int = 60) -> list:
    return [Quote(f"Quote number {i} about life and code.", f"Author {i}", "wisdom") for i in range(n)] + RECORDS


def test_pretraining_texts_are_the_records():
    texts = D.pretrain_texts(RECORDS, seed=1)
    assert sorted(texts) == sorted(r.text for r in RECORDS)
    assert texts == D.pretrain_texts(RECORDS, seed=1) and D.pretrain_texts(RECORDS, shuffle=False)[0] == RECORDS[0].text


def test_sft_conversations_are_seeded_and_answer_from_the_record():
    a = D.sft_conversations(RECORDS, seed=3, per_record=3)
    assert a == D.sft_conversations(RECORDS, seed=3, per_record=3)
    assert a != D.sft_conversations(RECORDS, seed=4, per_record=3)
    assert all([m["role"] for m in c] == ["user", "assistant"] for c in a)
    questions = {c[0]["content"] for c in a}
    assert len(questions) > 15  # several phrasings, in both languages
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in q) for q in questions if "诗" not in q)
    assert any(q.isascii() for q in questions)
    by_question = {c[0]["content"]: c[1]["content"] for c in a}
    for question, answer in by_question.items():
        if "静夜思" in question and "作者" not in question and "Who" not in question:
            assert "床前明月光，疑是地上霜。" in answer
        if question in ("What does hacker mean?", "Define hacker.", "hacker是什么意思？"):
            assert answer == RECORDS[-3].definition
    multi = D.sft_conversations(RECORDS, seed=0, max_turns=3, system_ratio=1.0)
    assert all(c[0]["role"] == "system" and c[1]["role"] == "user" for c in multi)
    assert max(len(c) for c in multi) > 3


def test_only_english_and_long_answers():
    english = D.sft_conversations(RECORDS, seed=0, per_record=5, languages=("en",))
    # English phrasings: all ASCII once the poem's own title and author are taken out
    assert all(re.sub("[\u4e00-\u9fff“”]", "", c[0]["content"]).isascii() for c in english)
    assert any(not c[0]["content"].isascii() for c in english)
    long_quote = Quote("word " * 400, "", "wisdom")
    assert D.sft_conversations([long_quote], max_answer_chars=800) == []
    long_def = Definition("x", "First paragraph is short.\n\n" + "More. " * 300, "jargon")
    (conv,) = D.sft_conversations([long_def], per_record=1, languages=("en",))
    assert conv[1]["content"] == "First paragraph is short."


def test_held_out_records_never_reach_training():
    records = _many(200)
    train, held = D.split_records(records, held_out=0.2, seed=5)
    assert 20 < len(held) < 70 and len(train) + len(held) == len(records)
    assert not {r.key for r in train} & {r.key for r in held}
    shuffled = records[::-1]  # the split depends on each record, not on the order
    assert {r.key for r in D.split_records(shuffled, held_out=0.2, seed=5)[1]} == {r.key for r in held}
    assert {r.key for r in D.split_records(records, held_out=0.2, seed=6)[1]} != {r.key for r in held}
    held_answers = {r.quote for r in held if isinstance(r, Quote)} | {r.body for r in held if isinstance(r, Poem)}
    for conv in D.sft_conversations(train, seed=1, per_record=2):
        assert not any(h in conv[1]["content"] for h in held_answers)
    for pair in D.dpo_pairs(train, seed=1):
        for side in ("chosen", "rejected"):
            assert not any(h in pair[side][1]["content"] for h in held_answers)
    # a duplicate (same quote, another file) goes with its twin
    twin = Quote(records[0].quote, records[0].attribution, "people")
    assert D.split_records([records[0], twin], held_out=0.5, seed=5)[0] in ([], [records[0], twin])


def test_dpo_pairs_reject_a_corrupted_answer():
    pairs = D.dpo_pairs(_many(), seed=2, per_record=2)
    assert pairs == D.dpo_pairs(_many(), seed=2, per_record=2)
    assert len(pairs) > 50
    for pair in pairs:
        assert set(pair) == {"chosen", "rejected"}
        assert pair["chosen"][0] == pair["rejected"][0] and pair["chosen"][0]["role"] == "user"
        assert pair["chosen"][1]["role"] == pair["rejected"][1]["role"] == "assistant"
        assert pair["chosen"][1]["content"] != pair["rejected"][1]["content"]
    for kind in D.CORRUPTIONS:
        assert D.dpo_pairs(_many(), seed=0, corruptions=[kind]), kind
    truncated = D.dpo_pairs(RECORDS, seed=0, corruptions=["truncated"])
    assert all(p["chosen"][1]["content"].startswith(p["rejected"][1]["content"]) for p in truncated)
    with pytest.raises(ValueError):
        D.dpo_pairs(RECORDS, corruptions=["nonsense"])


# -- token ids and loss masks -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = D.pretrain_texts(_many()) + [q for c in D.sft_conversations(_many(), per_record=4) for q in
                                         (c[0]["content"], c[1]["content"])]
    return train_bpe(texts * 3, 600, tmp_path_factory.mktemp("tok"))


def _labelled_text(tok, enc: D.Encoded) -> str:
    return tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != D.IGNORE_INDEX])


def test_sft_labels_cover_exactly_the_assistant_answers(tok):
    conv = [{"role": "user", "content": "Write a Tang poem titled “静夜思”."},
            {"role": "assistant", "content": "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"},
            {"role": "user", "content": "What does hacker mean?"},
            {"role": "assistant", "content": "A person who enjoys exploring the details of programmable systems."}]
    enc = D.encode_sft(conv, tok, templates.MINIMIND2, max_length=512)
    assert tok.decode(enc.input_ids) == templates.render(templates.MINIMIND2, conv, add_generation_prompt=False)
    assert _labelled_text(tok, enc) == conv[1]["content"] + "<|im_end|>\n" + conv[3]["content"] + "<|im_end|>\n"
    assert all(label in (D.IGNORE_INDEX, t) for t, label in zip(enc.input_ids, enc.labels))
    assert enc.labels[0] == D.IGNORE_INDEX and enc.loss_mask.count(1) == len(
        tok.encode(conv[1]["content"] + "<|im_end|>\n")) + len(tok.encode(conv[3]["content"] + "<|im_end|>\n"))
    # minimind-3: the (empty) think block belongs to the answer
    enc3 = D.encode_sft(conv[:2], tok, templates.MINIMIND3)
    assert _labelled_text(tok, enc3) == "<think>\n\n</think>\n\n" + conv[1]["content"] + "<|im_end|>\n"
    # the tokenizer's own template (MiniMind2's for ours) is the default
    assert D.encode_sft(conv, tok).input_ids == enc.input_ids


def test_sft_truncation_and_padding(tok):
    conv = [{"role": "user", "content": "Tell me a fortune."},
            {"role": "assistant", "content": "A gift of a flower will soon be made to you. " * 10}]
    full = D.encode_sft(conv, tok, max_length=4096)
    cut = D.encode_sft(conv, tok, max_length=len(full) - 5)
    assert cut.input_ids == full.input_ids[:len(full) - 5] and cut.labels == full.labels[:len(full) - 5]
    assert cut.labels[-1] != D.IGNORE_INDEX  # the cut answer is still learned up to the end
    padded = D.encode_sft(conv, tok, max_length=len(full) + 7, pad=True)
    assert len(padded) == len(full) + 7 and padded.input_ids[-7:] == [tok.pad_id] * 7
    assert padded.labels[-7:] == [D.IGNORE_INDEX] * 7 and padded.labels[:len(full)] == full.labels
    chosen, rejected = D.encode_dpo({"chosen": conv, "rejected": [conv[0], {"role": "assistant", "content": "No."}]},
                                    tok)
    assert _labelled_text(tok, rejected) == "No.<|im_end|>\n" and chosen.labels == full.labels


def test_pretraining_samples(tok):
    enc = D.encode_pretrain("床前明月光", tok, max_length=16, pad=True)
    n = len(tok.encode("床前明月光")) + 2
    assert enc.input_ids[:n] == [tok.bos_id, *tok.encode("床前明月光"), tok.eos_id]
    assert enc.labels[:n] == enc.input_ids[:n] and enc.labels[n:] == [D.IGNORE_INDEX] * (16 - n)
    long = D.encode_pretrain("word " * 100, tok, max_length=10)
    assert len(long) == 10 and long.input_ids[0] == tok.bos_id and long.input_ids[-1] == tok.eos_id
    ids, labels = D.collate([enc, long], tok.pad_id)
    assert tuple(ids.shape) == (2, 16) and int(labels[1, 12]) == D.IGNORE_INDEX
