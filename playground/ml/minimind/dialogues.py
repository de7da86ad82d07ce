"""Training data for the three stages MiniMind teaches, made from the offline corpora.

* **Pretraining** (:func:`pretrain_texts`): each record as plain text, like MiniMind's
  ``{"text": ...}`` lines; encoded as ``[bos] + text + [eos]`` (:func:`encode_pretrain`).
* **SFT** (:func:`sft_conversations`): ``[{"role": "user", ...}, {"role": "assistant", ...}]``
  made from templates over the records, in English and Chinese ("Write a Tang poem titled
  X" -> the poem, "Give me a quote about Y" -> a quote, "What does FOO mean?" -> the
  definition). :func:`encode_sft` renders a conversation with a chat template and puts
  labels only on the assistant spans, from after ``<|im_start|>assistant\\n`` up to and
  including ``<|im_end|>\\n``; everything else is -100, as MiniMind's SFT does.
* **DPO** (:func:`dpo_pairs`): ``{"chosen": [...], "rejected": [...]}`` where the rejected
  answer is a corrupted one (another record's answer, shuffled lines, cut short, or an
  answer to another kind of question).

Everything is deterministic for a seed. :func:`split_records` holds records out by their
key, and every builder draws only from the records it is given (the "another record's
answer" of a DPO pair too), so nothing held out ever reaches training.

Labels are *not* shifted: ``labels[i]`` is the token at position ``i`` or -100, and the
model compares the logits at ``i`` with ``labels[i + 1]`` (as MiniMind's does).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .corpora import Definition, Poem, Quote, Record

IGNORE_INDEX = -100

Message = dict[str, str]
Conversation = list[Message]

# -- plain text --------------------------------------------------------------------------------


def pretrain_texts(records: Sequence[Record], seed: int = 0, shuffle: bool = True) -> list[str]:
    """Each record's text, in a seeded random order (or as given)."""
    texts = [r.text for r in records]
    if shuffle:
        random.Random(seed).shuffle(texts)
    return texts


def held_out_fraction(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by the key and the seed (not by the order of the records)."""
    digest = hashlib.blake2s(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_records(records: Sequence[Record], held_out: float = 0.1, seed: int = 0) -> tuple[list[Record],
                                                                                               list[Record]]:
    """(training, held-out) records; a record is held out by its key, so duplicates go together."""
    if not 0.0 <= held_out < 1.0:
        raise ValueError("held_out must be in [0, 1)")
    train, held = [], []
    for r in records:
        (held if held_out_fraction(r.key, seed) < held_out else train).append(r)
    return train, held


# -- answers -----------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def shorten(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` at a paragraph, else a sentence boundary ("" if it can't)."""
    if len(text) <= max_chars:
        return text
    out = ""
    for para in text.split("\n\n"):
        candidate = f"{out}\n\n{para}" if out else para
        if len(candidate) > max_chars:
            break
        out = candidate
    if out:
        return out
    for sentence in _SENTENCE_END.split(text.split("\n\n")[0]):
        candidate = f"{out} {sentence}" if out else sentence
        if len(candidate) > max_chars:
            break
        out = candidate
    return out


def _quote_answer(q: Quote) -> str:
    return f"{q.quote}\n— {q.attribution}" if q.attribution else q.quote


# Each phrasing: (language, question, answer); fields are the record's, answer "{answer}" is
# the record's main answer (the poem's body, the quote, the definition).
_POEM_PHRASES = [
    ("en", "Write a {dynasty_en} poem titled “{title}”.", "{body}"),
    ("en", "Please recite the poem “{title}” by {author}.", "{body}"),
    ("en", "Can you write me the {dynasty_en} poem “{title}”?", "“{title}”\n{author}\n\n{body}"),
    ("en", "Who wrote the {dynasty_en} poem “{title}”?", "“{title}” was written by {author}."),
    ("en", "Recite a poem by {author}.", "“{title}”\n\n{body}"),
    ("zh", "请写一首题为《{title}》的{dynasty_zh}诗。", "{body}"),
    ("zh", "背诵{author}的《{title}》。", "{body}"),
    ("zh", "写一首{dynasty_zh}诗，题目是《{title}》。", "《{title}》\n{author}\n{body}"),
    ("zh", "《{title}》的作者是谁？", "《{title}》的作者是{author}。"),
    ("zh", "请背一首{author}的诗。", "《{title}》\n{body}"),
]
_QUOTE_PHRASES = [
    ("en", "Give me a quote about {topic}.", "{answer}"),
    ("en", "Tell me a fortune.", "{answer}"),
    ("en", "Say something clever about {topic}.", "{answer}"),
    ("en", "Do you know a saying about {topic}?", "Here is one:\n\n{answer}"),
    ("zh", "给我一句关于“{topic}”的英文名言。", "{answer}"),
    ("zh", "讲一句幸运饼干里的话。", "{answer}"),
    ("zh", "说一段关于“{topic}”的话。", "{answer}"),
]
_QUOTE_BY_PHRASES = [
    ("en", "Give me a quote by {attribution}.", "{quote}"),
    ("zh", "说一句{attribution}的名言。", "{quote}"),
]
_DEFINITION_PHRASES = [
    ("en", "What does {headword} mean?", "{answer}"),
    ("en", "Define {headword}.", "{answer}"),
    ("en", "What is the meaning of “{headword}”?", "{answer}"),
    ("zh", "{headword}是什么意思？", "{answer}"),
    ("zh", "请解释“{headword}”。", "{answer}"),
]
_SOURCE_PHRASES = {
    "jargon": [("en", "What is “{headword}” in hacker slang?", "{answer}"),
               ("en", "Explain the jargon term {headword}.", "{answer}"),
               ("zh", "“{headword}”在黑客行话里是什么意思？", "{answer}")],
    "devil": [("en", "What does the Devil's Dictionary say about {headword}?", "{answer}"),
              ("en", "Give me a cynical definition of {headword}.", "{answer}"),
              ("zh", "魔鬼辞典怎么定义“{headword}”？", "{answer}")],
}

#: Our own system prompts, used when ``system_ratio`` > 0.
SYSTEM_PROMPTS = (
    "You are a small language model trained on poems, quotes and dictionaries.",
    "You are a helpful assistant.",
    "你是一个小小的语言模型，会背诗，也会解释词语。",
    "Answer briefly.",
)

_DYNASTY = {"tang": ("Tang", "唐"), "song": ("Song", "宋")}


def _phrasings(record: Record, max_chars: int) -> list[tuple[str, str, str]]:
    """(language, question, answer) for every phrasing that fits this record."""
    if isinstance(record, Poem):
        en, zh = _DYNASTY.get(record.dynasty, ("classical Chinese", "古"))
        fields = {"title": record.title, "author": record.author, "body": record.body, "dynasty_en": en,
                  "dynasty_zh": zh}
        phrases = _POEM_PHRASES
    elif isinstance(record, Quote):
        answer = _quote_answer(record)
        if len(answer) > max_chars:
            return []
        fields = {"topic": record.topic_name, "answer": answer, "quote": record.quote,
                  "attribution": record.attribution}
        phrases = _QUOTE_PHRASES + (_QUOTE_BY_PHRASES if 0 < len(record.attribution) <= 60 else [])
    elif isinstance(record, Definition):
        answer = shorten(record.definition, max_chars)
        if not answer:
            return []
        fields = {"headword": record.headword, "answer": answer}
        phrases = _DEFINITION_PHRASES + _SOURCE_PHRASES.get(record.source, [])
    else:
        raise TypeError(f"not a corpus record: {type(record).__name__}")
    out = []
    for lang, question, answer in phrases:
        text = answer.format(**fields)
        if len(text) <= max_chars or isinstance(record, Poem):
            out.append((lang, question.format(**fields), text))
    return out


def qa_pairs(record: Record, rng: random.Random, count: int = 1, languages: Sequence[str] = ("en", "zh"),
             max_answer_chars: int = 800) -> list[tuple[str, str]]:
    """Up to ``count`` different (question, answer) pairs for one record."""
    options = [(q, a) for lang, q, a in _phrasings(record, max_answer_chars) if lang in languages]
    if not options:
        return []
    return rng.sample(options, min(count, len(options)))


def sft_conversations(records: Sequence[Record], seed: int = 0, per_record: int = 1,
                      languages: Sequence[str] = ("en", "zh"), max_answer_chars: int = 800, max_turns: int = 1,
                      system_ratio: float = 0.0) -> list[Conversation]:
    """Seeded user/assistant conversations over ``records`` (shuffled).

    ``per_record`` phrasings of each record; ``max_turns`` > 1 joins 1..max_turns question and
    answer pairs into one conversation; ``system_ratio`` of them start with one of our
    :data:`SYSTEM_PROMPTS`. Records whose answer is longer than ``max_answer_chars`` (a long
    quote) are left out; long definitions are cut at a paragraph or sentence.
    """
    rng = random.Random(seed)
    pairs = [p for r in records for p in qa_pairs(r, rng, per_record, languages, max_answer_chars)]
    rng.shuffle(pairs)
    conversations: list[Conversation] = []
    i = 0
    while i < len(pairs):
        n = rng.randint(1, max(1, max_turns))
        conv: Conversation = []
        if system_ratio > 0 and rng.random() < system_ratio:
            conv.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for question, answer in pairs[i:i + n]:
            conv += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        conversations.append(conv)
        i += n
    return conversations


# -- DPO -----------------------------------------------------------------------------------------
CORRUPTIONS = ("other", "shuffled", "truncated", "wrong_topic")


def _shuffled(answer: str, rng: random.Random) -> str | None:
    parts = answer.split("\n") if "\n" in answer.strip() else _SENTENCE_END.split(answer)
    parts = [p for p in parts if p.strip()]
    if len(parts) < 2:
        return None
    for _ in range(10):
        mixed = parts[:]
        rng.shuffle(mixed)
        if mixed != parts:
            return ("\n" if "\n" in answer.strip() else " ").join(mixed)
    return None


def _truncated(answer: str, rng: random.Random) -> str | None:
    if len(answer) < 8:
        return None
    cut = max(2, int(len(answer) * rng.uniform(0.2, 0.6)))
    return answer[:cut].rstrip()


def dpo_pairs(records: Sequence[Record], seed: int = 0, per_record: int = 1,
              languages: Sequence[str] = ("en", "zh"), max_answer_chars: int = 800,
              corruptions: Sequence[str] = CORRUPTIONS) -> list[dict[str, Conversation]]:
    """Seeded preference pairs: the right answer (chosen) and a corrupted one (rejected).

    Corruptions: ``other`` (another record's answer of the same kind), ``shuffled`` (its
    lines or sentences in another order), ``truncated`` (cut off after 20-60 %),
    ``wrong_topic`` (an answer to another kind of question). Drawn only from ``records``.
    """
    unknown = set(corruptions) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruptions {sorted(unknown)}; choose from {CORRUPTIONS}")
    rng = random.Random(seed)
    items = [(r, q, a) for r in records for q, a in qa_pairs(r, rng, per_record, languages, max_answer_chars)]
    answers_by_kind: dict[str, list[str]] = {}
    for r, _, a in items:
        answers_by_kind.setdefault(r.kind, []).append(a)
    makers: dict[str, Callable[[Record, str], str | None]] = {
        "other": lambda r, a: rng.choice(answers_by_kind[r.kind]),
        "shuffled": lambda r, a: _shuffled(a, rng),
        "truncated": lambda r, a: _truncated(a, rng),
        "wrong_topic": lambda r, a: (rng.choice(answers_by_kind[rng.choice(others)])
                                     if (others := [k for k in answers_by_kind if k != r.kind]) else None),
    }
    pairs = []
    for record, question, answer in items:
        order = list(corruptions)
        rng.shuffle(order)
        rejected = None
        for kind in order:
            for _ in range(4):
                candidate = makers[kind](record, answer)
                if candidate and candidate.strip() and candidate != answer:
                    rejected = candidate
                    break
            if rejected is not None:
                break
        if rejected is None:
            continue
        prompt = {"role": "user", "content": question}
        pairs.append({"chosen": [prompt, {"role": "assistant", "content": answer}],
                      "rejected": [dict(prompt), {"role": "assistant", "content": rejected}]})
    rng.shuffle(pairs)
    return pairs


# -- token ids and labels -------------------------------------------------------------------------
@dataclass
class Encoded:
    """Token ids and labels of one sample (labels: the id where the loss counts, else -100)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def loss_mask(self) -> list[int]:
        return [0 if label == IGNORE_INDEX else 1 for label in self.labels]

    def __len__(self) -> int:
        return len(self.input_ids)


def _pad(ids: list[int], labels: list[int], max_length: int, pad_id: int) -> Encoded:
    n = max_length - len(ids)
    return Encoded(ids + [pad_id] * n, labels + [IGNORE_INDEX] * n)


def encode_pretrain(text: str, tokenizer: Any, max_length: int = 512, pad: bool = False) -> Encoded:
    """``[bos] + text + [eos]`` (the text cut to fit ``max_length``); labels on every real token."""
    if max_length < 3:
        raise ValueError("max_length must leave room for bos, one token and eos")
    body = tokenizer.encode(text)[:max_length - 2]
    ids = [tokenizer.bos_id, *body, tokenizer.eos_id]
    out = Encoded(ids, list(ids))
    return _pad(out.input_ids, out.labels, max_length, tokenizer.pad_id) if pad else out


def _find(seq: list[int], pattern: list[int], start: int) -> int:
    n = len(pattern)
    first = pattern[0]
    for i in range(start, len(seq) - n + 1):
        if seq[i] == first and seq[i:i + n] == pattern:
            return i
    return -1


def assistant_labels(ids: list[int], start_ids: list[int], end_ids: list[int]) -> list[int]:
    """Labels on each span after ``start_ids`` up to and including ``end_ids`` (or to the end)."""
    labels = [IGNORE_INDEX] * len(ids)
    i = 0
    while True:
        found = _find(ids, start_ids, i)
        if found < 0:
            return labels
        begin = found + len(start_ids)
        end = _find(ids, end_ids, begin)
        stop = len(ids) if end < 0 else end + len(end_ids)
        labels[begin:stop] = ids[begin:stop]
        i = stop


def _markers(tokenizer: Any, template: Any) -> tuple[str, str]:
    from .templates import ChatTemplate

    if isinstance(template, ChatTemplate) and template.name != "base":
        return template.bos_token, template.eos_token
    return tokenizer.bos_token, tokenizer.eos_token


def encode_sft(messages: Sequence[dict[str, Any]], tokenizer: Any, template: Any = None, max_length: int = 512,
               pad: bool = False, **flags: Any) -> Encoded:
    """A conversation rendered with ``template`` (default: the tokenizer's own, else MiniMind2's),
    cut to ``max_length`` tokens, labelled on the assistant answers only.

    An assistant span runs from after ``<bos>assistant\\n`` up to and including ``<eos>\\n``
    (``<|im_start|>``/``<|im_end|>``, or ``<s>``/``</s>`` for the legacy template), searched
    in the token ids as MiniMind does; a span cut off by ``max_length`` is labelled to the end.
    """
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=False, template=template, **flags)
    bos, eos = _markers(tokenizer, template)
    ids = tokenizer.encode(text)[:max_length]
    labels = assistant_labels(ids, tokenizer.encode(f"{bos}assistant\n"), tokenizer.encode(f"{eos}\n"))
    return _pad(ids, labels, max_length, tokenizer.pad_id) if pad else Encoded(ids, labels)


def encode_dpo(pair: dict[str, Sequence[dict[str, Any]]], tokenizer: Any, template: Any = None,
               max_length: int = 1024, pad: bool = False, **flags: Any) -> tuple[Encoded, Encoded]:
    """(chosen, rejected), each as :func:`encode_sft` (the loss mask is where labels are set)."""
    return (encode_sft(pair["chosen"], tokenizer, template, max_length, pad, **flags),
            encode_sft(pair["rejected"], tokenizer, template, max_length, pad, **flags))


def collate(samples: Sequence[Encoded], pad_id: int, max_length: int | None = None) -> tuple[Any, Any]:
    """A batch as two int64 tensors (input ids, labels), padded to the longest sample."""
    import torch

    length = max(len(s) for s in samples)
    if max_length is not None:
        length = min(length, max_length)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(samples):
        n = min(len(s), length)
        ids[row, :n] = torch.tensor(s.input_ids[:n], dtype=torch.long)
        labels[row, :n] = torch.tensor(s.labels[:n], dtype=torch.long)
    return ids, labels
