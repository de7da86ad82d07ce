"""Our MiniMind tokenizer wrapper: a tiny BPE trained here, special ids, round trips, and a
stream decoder that gives the same text as a full decode without splitting characters."""

from __future__ import annotations

import json
import random

import pytest

from playground.errors import BadFileError
from playground.ml.minimind import templates
from playground.ml.minimind.tokenizer import MiniMindTokenizer, StreamDecoder, byte_to_unicode, train_bpe

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the ones before it.",
    "What does hacker mean? A person who enjoys exploring the details of programmable systems.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "请写一首唐诗。你好，世界！",
    "Give me a quote about computers. -- Anonymous",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> MiniMindTokenizer:
    return train_bpe(TEXTS, 420, tmp_path_factory.mktemp("tok"))


def test_the_byte_alphabet_is_the_byte_level_one():
    from tokenizers import pre_tokenizers

    table = byte_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"


def test_special_tokens_have_minimind_ids(tok):
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.token_to_id("<think>") == 3 and tok.token_to_id("</think>") == 4
    assert tok.special_ids == {0, 1, 2}  # <think> is an added token, not a special one
    assert 261 < tok.vocab_size <= 420
    assert tok.encode("<|im_start|>user\nhi<|im_end|>")[0] == 1
    assert tok.encode("<|im_start|>user\nhi<|im_end|>")[-1] == 2


def test_mixed_english_and_chinese_round_trip(tok):
    text = "Hello, 世界! 床前明月光 — naïve café 🎉\n\tindented <think>why</think> answer"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)
    # unseen characters fall back to bytes: nothing is lost
    assert tok.decode(tok.encode("ß∑𝄞")) == "ß∑𝄞"


def test_decoding_can_drop_special_tokens_but_keeps_think(tok):
    ids = tok.encode("<|im_start|>assistant\n<think>x</think>y<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>x</think>y"
    assert tok.decode(ids) == "<|im_start|>assistant\n<think>x</think>y<|im_end|>"


@pytest.mark.parametrize("skip", [True, False])
def test_stream_decoder_equals_a_full_decode_for_random_ids(tok, skip):
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 30))]
        decoder = tok.stream_decoder(skip_special_tokens=skip)
        pieces = [decoder.push(i) for i in ids] + [decoder.finish()]
        assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip)


def test_stream_decoder_never_splits_a_character(tok):
    text = "床前明月光，疑是地上霜。举头望明月，低头思故乡。🎉 ok"
    ids = tok.encode(text)
    # byte-level tokens may end inside a character: at least one id alone is not valid text here
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + decoder.finish() == text
    assert decoder.text == text and decoder.ids == ids
    # a character cut off at the end becomes U+FFFD, as in a full decode
    cut = tok.encode("月")[:1] if len(tok.encode("月")) > 1 else [tok.token_to_id(byte_to_unicode()[0xE6])]
    decoder = StreamDecoder(tok)
    assert decoder.push_many(cut) == "" and decoder.finish() == tok.decode(cut) == "\ufffd"


def test_training_is_deterministic(tmp_path):
    a = train_bpe(TEXTS, 400, tmp_path / "a")
    b = train_bpe(list(TEXTS), 400, tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.encode(TEXTS[3]) == b.encode(TEXTS[3])
    with pytest.raises(ValueError):
        train_bpe(TEXTS, 100, tmp_path / "c")


def test_the_trained_folder_reads_back_with_its_config_and_template(tok, tmp_path):
    folder = tmp_path / "model"
    train_bpe(TEXTS, 400, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["bos_token"] == "<|im_start|>" and config["eos_token"] == "<|im_end|>"
    assert config["added_tokens_decoder"]["3"]["content"] == "<think>"
    assert config["added_tokens_decoder"]["3"]["special"] is False
    back = MiniMindTokenizer.from_dir(folder)
    assert back.chat_template == templates.MINIMIND2.source
    assert back.apply_chat_template([{"role": "user", "content": "你好"}]) == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    # a chat_template.jinja beside the files wins over the config's
    (folder / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[-1]['content'] }}", encoding="utf-8")
    assert MiniMindTokenizer.from_dir(folder).apply_chat_template([{"role": "user", "content": "q"}]) == "<|im_start|>q"


def test_special_tokens_named_as_added_token_objects(tok, tmp_path):
    folder = tmp_path / "m"
    train_bpe(TEXTS, 400, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["eos_token"] = {"content": "<|endoftext|>", "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert MiniMindTokenizer.from_dir(folder).eos_id == 0


def test_bad_tokenizer_files_are_refused(tmp_path):
    with pytest.raises(BadFileError, match="no tokenizer.json"):
        MiniMindTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BadFileError, match="tokenizer.json"):
        MiniMindTokenizer.from_dir(tmp_path)
