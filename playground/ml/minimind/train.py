"""Train the Chat tab's embedded MiniMind: a tokenizer, then the three stages MiniMind teaches.

    python -m playground.ml.minimind.train all --threads 2 --out-dir resources/minimind-demo \\
        [--pretrain-minutes 40 --sft-minutes 15 --dpo-minutes 5] [--minutes N] [--max-steps N] \\
        [--state-dir data/minimind-state]
    python -m playground.ml.minimind.train tokenizer|pretrain|sft|dpo ...     (one stage)
    torchrun --nproc-per-node 2 -m playground.ml.minimind.train all ...      (data parallel, DDP)

Stages (each starts from the previous one's files in ``--out-dir``):

1. **tokenizer**: a byte-level BPE (:func:`.tokenizer.train_bpe`, 2,048 ids by default) on the
   training split of the pretraining text -> ``tokenizer.json``, ``tokenizer_config.json``.
2. **pretrain**: next-token prediction on plain text (MiniMind's ``[bos] text [eos]``). The
   texts of an epoch are shuffled and *packed*: concatenated and cut into rows of exactly
   ``pretrain_seq_len`` tokens (no padding, so no compute is spent on pads; a row may hold
   the end of one text and the start of the next, as GPT pretraining does). The loss counts
   every position -> ``pretrain.safetensors``.
3. **sft**: supervised fine-tuning on dialogues made from the same records (:mod:`.dialogues`:
   "write the poem titled X", "a quote about Y", "what does Z mean?"), rendered with the chat
   template; the loss counts only the assistant answers (labels -100 elsewhere). Batches are
   padded to their longest sample; samples of similar length are grouped (sorted within
   windows of 32 batches) so little is padding -> ``sft.safetensors``.
4. **dpo**: direct preference optimisation (Rafailov et al. 2023) on pairs of the right answer
   (chosen) and a corrupted one (rejected: another record's answer, its lines shuffled, cut
   short, or an answer to another kind of question). With sequence log-probabilities summed
   over the answer tokens, ``loss = -log sigmoid(beta * ((log pi_c - log pi_r) - (log ref_c -
   log ref_r)))``, the reference being a frozen copy of the SFT model -> ``dpo.safetensors``
   (the weights the Chat tab loads).

**Data**: Debian's offline corpora (:mod:`.corpora`): fortunes-zh (Tang and Song poems),
fortunes (English quotes), jargon-text and dict-devil (definitions). Records are held out by
their key (:func:`.dialogues.split_records`), so no held-out poem, quote or definition is
trained on in any stage. Quotes dominate the corpus (about 15,000 quotes, 2,300 jargon
entries, 1,000 devil definitions, 409 poems), so every stage has a *mix*: ``poems=8`` uses each
poem 8 times an epoch (8 phrasings in SFT), ``quotes=0.5`` half the quotes an epoch (another
half the next epoch: a window that moves on over a seeded order).

**Optimiser**: AdamW (betas 0.9/0.95, weight decay on matrices only), gradient clipping at
norm 1, linear warm-up then a cosine to 0.1 x lr. With a minute budget the number of steps is
estimated after the first steps (from their speed and the held-out check's) and the cosine
is laid over it; the sidecar's ``reproduce`` command repeats a stage step for step with that
step count. Learning rates are much higher than MiniMind's SFT (5e-7) and DPO (1e-8) rates:
those fine-tune a model pretrained on billions of tokens and must not disturb it, while this
few-million-parameter model, trained from scratch for minutes, has to learn the chat format
and the question -> answer mapping in a few thousand steps (SFT 3e-4) and its preferences in
a few hundred (DPO 3e-5).

**Checks**: held-out perplexity after each stage (and every ``check_every`` steps, as the run's
validation loss = log perplexity): on held-out pretraining text for pretrain, on the answers
of held-out dialogues (answer tokens only) for sft and dpo; dpo also gives the preference
accuracy on held-out pairs (the share where the chosen answer's implicit reward
``beta * (log pi - log ref)`` is above the rejected one's).

**Files**: each weights file is safetensors plus a JSON sidecar with the command, the model
config, the training config, seed, steps, seconds, held-out perplexity and data sizes. Each
stage is also a run of the Training tab (``config.json``, ``metrics.jsonl`` ...), so the
dashboard shows its loss curve. SIGTERM (or Ctrl-C) stops after the current step and saves;
a second one stops at once. A NaN loss stops the stage as ``diverged``, saving nothing.

**Several processes** (:mod:`.ddp`): under ``torchrun`` each process takes its share of every
global batch (the same batches as one process with the same seed), DistributedDataParallel
averages the gradients (gloo on CPUs, NCCL on GPUs), rank 0 writes all files and decides when
to stop (the minute budget is rank 0's clock), and all ranks stop at the same step. Across
nodes, ``--out-dir`` (and ``--state-dir``) must be a shared folder: every rank reads the
tokenizer and the previous stage's weights that rank 0 wrote.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UserError
from ...progress import Progress
from ..training import runs as runstore
from ..training import script
from . import ddp
from . import dialogues as D
from .corpora import Definition, Poem, Quote, Record
from .model import MiniMindConfig, MiniMindForCausalLM, parameter_count

STAGES = ("tokenizer", "pretrain", "sft", "dpo")
MODEL_STAGES = ("pretrain", "sft", "dpo")
PREVIOUS = {"sft": "pretrain", "dpo": "sft"}
MADE_BY = "playground.ml.minimind.train"
PROG = "python -m playground.ml.minimind.train"
TRAINING_DATA = ("Debian's offline corpora: fortunes-zh (Tang and Song poems; public domain poems, package GPL-3+), "
                 "fortunes / fortunes-min (English quotes, BSD), jargon-text (the Jargon File, public domain), "
                 "dict-devil (The Devil's Dictionary, public domain)")


@dataclass
class TrainConfig:
    corpus: str = "debian"          # "debian" (the offline Debian packages) or "synthetic" (a tiny made-up one, tests)
    sources: str = "poems,quotes,jargon,devil"
    seed: int = 0
    held_out: float = 0.05          # share of records (by key) kept out of every stage
    vocab_size: int = 2048
    # the model (pretrain; the later stages take the previous stage's)
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    moe_experts: int = 0            # 0: dense; n > 0: a MiniMind2 MoE with n routed experts (top-2, 1 shared)
    # pretraining
    pretrain_mix: str = "poems=8,quotes=0.5,jargon=1,devil=2"
    pretrain_seq_len: int = 256
    pretrain_batch: int = 16
    pretrain_lr: float = 1e-3
    pretrain_warmup: int = 100
    pretrain_minutes: float = 40.0  # time budget (0: none); resumed runs included
    pretrain_max_steps: int = 0     # 0: no limit
    # supervised fine-tuning
    sft_mix: str = "poems=6,quotes=0.3,jargon=2,devil=3"
    sft_seq_len: int = 384
    sft_batch: int = 16
    sft_lr: float = 3e-4
    sft_warmup: int = 50
    sft_minutes: float = 15.0
    sft_max_steps: int = 0
    # direct preference optimisation
    dpo_mix: str = "poems=2,quotes=0.2,jargon=0.5,devil=1"
    dpo_seq_len: int = 384
    dpo_batch: int = 8              # pairs
    dpo_lr: float = 3e-5
    dpo_beta: float = 0.1
    dpo_warmup: int = 20
    dpo_minutes: float = 5.0
    dpo_max_steps: int = 0
    # every stage
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    check_every: int = 100          # steps between held-out checks
    eval_tokens: int = 8192         # held-out pretraining tokens per source
    eval_samples: int = 48          # held-out dialogues / pairs per source

    def stage(self, stage: str, name: str) -> Any:
        return getattr(self, f"{stage}_{name}")


@dataclass
class MiniMindStep:
    """One optimiser step (what the terminal prints and the Training tab could plot)."""

    stage: str
    step: int
    loss: float
    lr: float
    seconds: float
    tokens_per_s: float


# -- the corpus ---------------------------------------------------------------------------------
@dataclass
class Corpus:
    train: dict[str, list[Record]]
    held: dict[str, list[Record]]

    def sizes(self) -> dict[str, dict[str, int]]:
        return {s: {"train": len(self.train[s]), "held_out": len(self.held[s])} for s in self.train}


def synthetic_records(seed: int = 0, count: int = 24) -> dict[str, list[Record]]:
    """A tiny made-up corpus with every kind of record (for tests and smoke runs)."""
    rng = random.Random(seed)
    hanzi = "春风明月山水花鸟云天江河夜雨秋霜白日青松长安故乡"
    words = ["time", "code", "love", "cats", "tea", "rain", "night", "bugs", "work", "dreams", "books", "stars"]
    poems, quotes, jargon, devil = [], [], [], []
    for i in range(count):
        verse = lambda: "".join(rng.choice(hanzi) for _ in range(5))  # noqa: E731
        lines = [f"{verse()}，{verse()}。" for _ in range(2)]
        poems.append(Poem(title="".join(rng.choice(hanzi) for _ in range(3)) + str(i), author=f"诗人{i % 5}",
                          body="\n".join(lines), source="tang300" if i % 2 else "song100"))
        a, b = rng.sample(words, 2)
        quotes.append(Quote(quote=f"{a.capitalize()} is like {b}, number {i}: it never stops.",
                            attribution=f"Person {i % 4}" if i % 3 else "", topic="wisdom"))
        jargon.append(Definition(headword=f"{a}{i}", definition=f"A program that turns {a} into {b}.",
                                 source="jargon", grammar="n."))
        devil.append(Definition(headword=f"{b.upper()}{i}", definition=f"The {a} of a man who has no {b}.",
                                source="devil", grammar="n."))
    return {"poems": poems, "quotes": quotes, "jargon": jargon, "devil": devil}


def load_corpus(cfg: TrainConfig) -> Corpus:
    """The records of ``cfg.sources``, split into training and held-out by key."""
    sources = [s.strip() for s in cfg.sources.split(",") if s.strip()]
    if cfg.corpus == "debian":
        from .corpora import read_all

        records = read_all(sources)
    elif cfg.corpus == "synthetic":
        made = synthetic_records(cfg.seed)
        unknown = sorted(set(sources) - set(made))
        if unknown:
            raise UserError(f"Unknown corpus sources: {', '.join(unknown)}.")
        records = {s: made[s] for s in sources}
    else:
        raise UserError(f"The corpus must be debian or synthetic, not {cfg.corpus!r}.")
    train, held = {}, {}
    for source, recs in records.items():
        train[source], held[source] = D.split_records(recs, cfg.held_out, cfg.seed)
    return Corpus(train, held)


def parse_mix(text: str, sources: Sequence[str]) -> dict[str, float]:
    """``"poems=8,quotes=0.5"`` -> {"poems": 8.0, "quotes": 0.5, <others>: 1.0}."""
    mix = {s: 1.0 for s in sources}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not sep or factor < 0 or not math.isfinite(factor):
            raise UserError(f"A mix is source=factor, ... (e.g. poems=8,quotes=0.5), not {text!r}.")
        if name.strip() in mix:
            mix[name.strip()] = factor
    return mix


# -- which items an epoch uses -------------------------------------------------------------------
class EpochMix:
    """Per group of items, ``m`` of its ``n`` an epoch: all when m == n, else a window that moves
    on by ``m`` each epoch over a seeded order (so every item comes round); then all shuffled.

    Everything is a function of (seed, epoch): a step's batch needs no state to be found again.
    """

    def __init__(self, groups: Sequence[tuple[int, int]], seed: int):
        self.groups = [(n, min(m, n)) for n, m in groups]
        self.seed = seed
        self.offsets = np.cumsum([0] + [n for n, _ in self.groups])[:-1]
        self.orders = [np.random.default_rng([seed, 17, g]).permutation(n) for g, (n, _) in enumerate(self.groups)]
        self.per_epoch = sum(m for _, m in self.groups)

    @classmethod
    def of(cls, sizes: Sequence[int], factors: Sequence[float], copies: Sequence[int], seed: int) -> EpochMix:
        """Groups of ``sizes[i]`` items made as ``copies[i]`` per record; ``factors[i]`` per record an epoch."""
        return cls([(n, int(round(n * f / c)) if c else 0) for n, f, c in zip(sizes, factors, copies)], seed)

    def items(self, epoch: int) -> np.ndarray:
        parts = []
        for (n, m), offset, order in zip(self.groups, self.offsets, self.orders):
            if m == 0:
                continue
            take = np.arange(n) if m == n else order[(epoch * m + np.arange(m)) % n]
            parts.append(offset + take)
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        np.random.default_rng([self.seed, 23, epoch]).shuffle(out)
        return out


def copies_for(factor: float) -> int:
    return max(1, math.ceil(factor)) if factor > 0 else 0


class PackedText:
    """Pretraining rows: each epoch's texts concatenated and cut into rows of ``seq_len`` tokens."""

    def __init__(self, tokens: Sequence[np.ndarray], mix: EpochMix, seq_len: int, seed: int):
        self.tokens = list(tokens)
        self.lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        self.mix, self.seq_len, self.seed = mix, seq_len, seed
        self._starts = [0]              # first row of each epoch
        self._rows: dict[int, int] = {}
        self._cache: dict[int, np.ndarray] = {}
        if self.rows_in(0) < 1:
            raise UserError(f"The pretraining text is shorter than one row of {seq_len} tokens.")

    def rows_in(self, epoch: int) -> int:
        if epoch not in self._rows:
            self._rows[epoch] = int(self.lengths[self.mix.items(epoch)].sum()) // self.seq_len
        return self._rows[epoch]

    def _epoch_of(self, row: int) -> tuple[int, int]:
        while self._starts[-1] <= row:
            self._starts.append(self._starts[-1] + self.rows_in(len(self._starts) - 1))
        epoch = int(np.searchsorted(self._starts, row, side="right")) - 1
        return epoch, row - self._starts[epoch]

    def epoch_rows(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 1:
                self._cache.pop(min(self._cache))
            flat = np.concatenate([self.tokens[i] for i in self.mix.items(epoch)])
            n = len(flat) // self.seq_len
            rows = flat[:n * self.seq_len].reshape(n, self.seq_len)
            self._cache[epoch] = rows[np.random.default_rng([self.seed, 29, epoch]).permutation(n)]
        return self._cache[epoch]

    def rows(self, start: int, count: int) -> np.ndarray:
        """Rows ``start`` .. ``start + count - 1`` of the endless sequence of epochs: [count, seq_len]."""
        out = []
        for row in range(start, start + count):
            epoch, k = self._epoch_of(row)
            out.append(self.epoch_rows(epoch)[k])
        return np.stack(out)

    def epoch_at(self, row: int) -> float:
        epoch, k = self._epoch_of(row)
        return epoch + k / max(1, self.rows_in(epoch))


class Batches:
    """Global batches of SFT samples or DPO pairs: per epoch the mix's items, grouped by length
    (sorted within windows of 32 batches), cut into full batches, in a seeded order."""

    def __init__(self, lengths: Sequence[int], mix: EpochMix, batch: int, seed: int):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.mix, self.batch, self.seed = mix, batch, seed
        self.per_epoch = mix.per_epoch // batch
        if self.per_epoch < 1:
            raise UserError(f"There are {mix.per_epoch} training samples, fewer than one batch of {batch}.")
        self._cache: dict[int, list[np.ndarray]] = {}

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._cache:
            if len(self._cache) > 1:
                self._cache.pop(min(self._cache))
            items = self.mix.items(epoch)
            window = 32 * self.batch
            batches = []
            for k in range(0, len(items), window):
                part = items[k:k + window]
                part = part[np.argsort(-self.lengths[part], kind="stable")]
                batches += [part[j:j + self.batch] for j in range(0, len(part) - self.batch + 1, self.batch)]
            order = np.random.default_rng([self.seed, 31, epoch]).permutation(len(batches))
            self._cache[epoch] = [batches[i] for i in order[:self.per_epoch]]
        return self._cache[epoch]

    def indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        return self.epoch_batches(epoch)[k]

    def epoch_at(self, step: int) -> float:
        return step / self.per_epoch


# -- losses -------------------------------------------------------------------------------------
def next_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of -log p(labels[i+1] | ..i), number of such tokens) over labels that are not -100.

    The labels are not shifted: the logits at position i are scored against labels[i + 1]."""
    lg = logits[:, :-1].float()
    target = labels[:, 1:]
    nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), target.reshape(-1), ignore_index=D.IGNORE_INDEX,
                          reduction="sum")
    return nll, (target != D.IGNORE_INDEX).sum()


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over the labelled tokens (SFT: the answers only)."""
    nll, count = next_token_nll(logits, labels)
    return nll / count.clamp(min=1)


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of log p(labels[i+1] | ..i) over the labelled tokens: [B]."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    mask = target != D.IGNORE_INDEX
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Per pair: ``-log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))`` (log 2 when policy == reference)."""
    margin = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return -F.logsigmoid(beta * margin)


def lr_at(step: int, peak: float, warmup: int, total: int | None, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``peak`` to ``min_ratio * peak`` at
    step ``total - 1`` (the peak while ``total`` is not known yet)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if not total or total - 1 <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / (total - 1 - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# -- encoding -----------------------------------------------------------------------------------
def text_tokens(texts: Sequence[str], tokenizer: Any) -> list[np.ndarray]:
    """``[bos] + text + [eos]`` ids of each text, uncut (MiniMind's pretraining sample, before packing)."""
    encoded = tokenizer.backend.encode_batch(list(texts), add_special_tokens=False)
    return [np.array([tokenizer.bos_id, *e.ids, tokenizer.eos_id], dtype=np.int64) for e in encoded]


def next_token_count(sample: D.Encoded) -> int:
    """Labelled next tokens of a sample (positions 1.. with a label)."""
    return sum(1 for label in sample.labels[1:] if label != D.IGNORE_INDEX)


def pretrain_items(records: dict[str, list[Record]], mix: dict[str, float]) -> tuple[list[str], list[tuple]]:
    """Texts (each record ``copies`` times) and (group size, factor, copies) per source, for :class:`EpochMix`."""
    texts, groups = [], []
    for source, recs in records.items():
        c = copies_for(mix[source])
        if not c or not recs:
            continue
        texts += [r.text for r in recs] * c
        groups.append((len(recs) * c, mix[source], c))
    return texts, groups


def _made_items(records: dict[str, list[Record]], mix: dict[str, float], seed: int, make) -> tuple[list, list]:
    """``make(records, seed=, per_record=)`` over each source, as many per record as its mix says."""
    items, groups = [], []
    for k, (source, recs) in enumerate(records.items()):
        c = copies_for(mix[source])
        if not c or not recs:
            continue
        made = make(recs, seed=seed + 101 * k, per_record=c)
        items += made
        groups.append((len(made), mix[source], c))
    return items, groups


def sft_items(records: dict[str, list[Record]], mix: dict[str, float], seed: int) -> tuple[list, list]:
    return _made_items(records, mix, seed, D.sft_conversations)


def dpo_items(records: dict[str, list[Record]], mix: dict[str, float], seed: int) -> tuple[list, list]:
    return _made_items(records, mix, seed, D.dpo_pairs)


# -- held-out sets and checks --------------------------------------------------------------------
EVAL_BATCH = 8


def _batches(samples: list[D.Encoded], pad_id: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    samples = sorted(samples, key=len)
    return [D.collate(samples[k:k + EVAL_BATCH], pad_id) for k in range(0, len(samples), EVAL_BATCH)]


def text_eval_set(held: dict[str, list[Record]], tokenizer: Any, seq_len: int, max_tokens: int,
                  seed: int) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per source, held-out texts packed into rows (at most ``max_tokens`` of them)."""
    out = {}
    for source, recs in held.items():
        if not recs:
            continue
        flat = np.concatenate(text_tokens(D.pretrain_texts(recs, seed=seed), tokenizer))
        flat = flat[:max(max_tokens, seq_len)]
        rows = [flat[k:k + seq_len] for k in range(0, len(flat), seq_len)]
        rows = [r for r in rows if len(r) > 1]
        samples = [D.Encoded(r.tolist(), r.tolist()) for r in rows]
        out[source] = _batches(samples, tokenizer.pad_id)
    return out


def sft_eval_set(held: dict[str, list[Record]], tokenizer: Any, seq_len: int, count: int,
                 seed: int) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per source, held-out dialogues (labels on the answers only)."""
    out = {}
    for source, recs in held.items():
        convs = D.sft_conversations(recs, seed=seed + 7, per_record=1)[:count]
        samples = [s for s in (D.encode_sft(c, tokenizer, max_length=seq_len) for c in convs)
                   if next_token_count(s)]
        if samples:
            out[source] = _batches(samples, tokenizer.pad_id)
    return out


def dpo_eval_set(held: dict[str, list[Record]], tokenizer: Any, seq_len: int, count: int,
                 seed: int) -> dict[str, list[tuple[torch.Tensor, torch.Tensor, int]]]:
    """Per source, held-out preference pairs, batched as (ids, labels, pairs): chosen rows, then rejected."""
    out = {}
    for source, recs in held.items():
        pairs = [D.encode_dpo(p, tokenizer, max_length=seq_len) for p in D.dpo_pairs(recs, seed=seed + 11)[:count]]
        pairs = [(c, r) for c, r in pairs if next_token_count(c) and next_token_count(r)]
        if not pairs:
            continue
        batches = []
        for k in range(0, len(pairs), EVAL_BATCH // 2):
            part = pairs[k:k + EVAL_BATCH // 2]
            ids, labels = D.collate([c for c, _ in part] + [r for _, r in part], tokenizer.pad_id)
            batches.append((ids, labels, len(part)))
        out[source] = batches
    return out


def _ppl(nll: float, count: float) -> float | None:
    return math.exp(min(nll / count, 700.0)) if count else None


def evaluate_lm(model: torch.nn.Module, sets: dict[str, list], device: torch.device) -> dict:
    """Held-out perplexity (answer tokens only where labels say so), next-token accuracy, per source."""
    was_training = model.training
    model.eval()
    by_source, total_nll, total_n, total_right = {}, 0.0, 0, 0
    try:
        with torch.inference_mode():
            for source, batches in sets.items():
                s_nll, s_n = 0.0, 0
                for ids, labels in batches:
                    ids, labels = ids.to(device), labels.to(device)
                    logits = model(ids).logits
                    nll, n = next_token_nll(logits, labels)
                    target = labels[:, 1:]
                    right = ((logits[:, :-1].argmax(-1) == target) & (target != D.IGNORE_INDEX)).sum()
                    s_nll, s_n, total_right = s_nll + float(nll), s_n + int(n), total_right + int(right)
                by_source[source] = _ppl(s_nll, s_n)
                total_nll, total_n = total_nll + s_nll, total_n + s_n
    finally:
        model.train(was_training)
    return {"perplexity": _ppl(total_nll, total_n), "loss": total_nll / total_n if total_n else None,
            "accuracy": total_right / total_n if total_n else None, "tokens": total_n, "by_source": by_source}


def reference_logprobs(ref: torch.nn.Module, sets: dict[str, list], device: torch.device) -> dict[str, list]:
    with torch.inference_mode():
        return {s: [sequence_logprobs(ref(ids.to(device)).logits, labels.to(device)).cpu() for ids, labels, _ in b]
                for s, b in sets.items()}


def evaluate_dpo(model: torch.nn.Module, sets: dict[str, list], ref_logps: dict[str, list], beta: float,
                 device: torch.device) -> dict:
    """Held-out DPO loss, preference accuracy (reward chosen > rejected) and likelihood accuracy
    (log pi(chosen) > log pi(rejected)), per source."""
    was_training = model.training
    model.eval()
    by_source, loss_sum, right, likely, pairs = {}, 0.0, 0, 0, 0
    try:
        with torch.inference_mode():
            for source, batches in sets.items():
                s_right, s_pairs = 0, 0
                for (ids, labels, n), ref in zip(batches, ref_logps[source]):
                    lp = sequence_logprobs(model(ids.to(device)).logits, labels.to(device)).cpu()
                    margin = (lp[:n] - lp[n:]) - (ref[:n] - ref[n:])
                    loss_sum += float(-F.logsigmoid(beta * margin).sum())
                    s_right += int((margin > 0).sum())
                    likely += int((lp[:n] > lp[n:]).sum())
                    s_pairs += n
                by_source[source] = s_right / s_pairs if s_pairs else None
                right, pairs = right + s_right, pairs + s_pairs
    finally:
        model.train(was_training)
    return {"loss": loss_sum / pairs if pairs else None, "preference_accuracy": right / pairs if pairs else None,
            "likelihood_accuracy": likely / pairs if pairs else None, "pairs": pairs, "by_source": by_source}


def _fmt(result: dict) -> str:
    if "preference_accuracy" in result:
        acc = result["preference_accuracy"]
        parts = ", ".join(f"{s} {v:.0%}" for s, v in result["by_source"].items() if v is not None)
        return (f"preference accuracy {acc:.1%} ({parts}), log pi(chosen) > log pi(rejected) "
                f"{result['likelihood_accuracy']:.1%}" if acc is not None else "no held-out pairs")
    ppl = result["perplexity"]
    if ppl is None:
        return "no held-out tokens"
    parts = ", ".join(f"{s} {v:.1f}" for s, v in result["by_source"].items() if v is not None)
    return f"held-out perplexity {ppl:.2f} ({parts})"


# -- weights ------------------------------------------------------------------------------------
def model_tensors(model: MiniMindForCausalLM) -> dict[str, torch.Tensor]:
    """The state dict for a run folder's weights (a tied head stored once, as :func:`.loaders.save_minimind` does)."""
    tied = model.config.tie_word_embeddings
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}


def save_model(path: Path, model: MiniMindForCausalLM, sidecar: dict) -> Path:
    """``path`` (safetensors) and its JSON (kind "minimind", the MiniMindConfig, then what made it)."""
    from .loaders import save_minimind

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_minimind(path, model, sidecar)


def load_model(path: Path) -> tuple[MiniMindForCausalLM, dict]:
    """A model saved by :func:`save_model` (in training mode) and its sidecar."""
    from .loaders import load_minimind

    found = load_minimind(path)
    if found.sidecar.get("made_by") != MADE_BY:
        raise UserError(f"{path.name} was not written by {PROG}.")
    return found.model.train(), found.sidecar


def model_config(cfg: TrainConfig, vocab_size: int) -> MiniMindConfig:
    """The model of ``cfg`` (MiniMind2's layout; trained on rows of up to max(seq_len) tokens, its
    context is set to 1,024 positions, RoPE stretching a little past what it saw)."""
    max_len = max(cfg.pretrain_seq_len, cfg.sft_seq_len, cfg.dpo_seq_len, 1024)
    return MiniMindConfig(generation="minimind2", vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                          num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                          num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=max_len,
                          use_moe=cfg.moe_experts > 0, n_routed_experts=max(cfg.moe_experts, 2),
                          num_experts_per_tok=2, n_shared_experts=1, tie_word_embeddings=True)


def reproduce_command(stage: str, cfg: TrainConfig, steps: int, out_dir: Path) -> str:
    """A command that repeats ``stage`` step for step (its step count, no time budget)."""
    defaults = asdict(TrainConfig())
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in asdict(cfg).items()
               if v != defaults[k] and not k.endswith(("_minutes", "_max_steps"))]
    return " ".join([PROG, stage, "--out-dir", str(out_dir), *changed, f"--{stage}-minutes 0",
                     f"--{stage}-max-steps {steps}"])


# -- the stages ---------------------------------------------------------------------------------
def train_tokenizer(cfg: TrainConfig, out_dir: Path, corpus: Corpus | None = None, dist: ddp.Dist | None = None,
                    command: str = "") -> Generator[Any, None, dict]:
    """The byte-level BPE, on the training split of the pretraining text as the pretraining mix weighs it."""
    from .tokenizer import train_bpe

    dist = dist or ddp.Dist()
    corpus = corpus or load_corpus(cfg)
    started = time.perf_counter()
    mix = parse_mix(cfg.pretrain_mix, list(corpus.train))
    texts, groups = pretrain_items(corpus.train, mix)
    chosen = EpochMix.of([g[0] for g in groups], [g[1] for g in groups], [g[2] for g in groups], cfg.seed).items(0)
    if dist.is_main:
        yield Progress(None, f"tokenizer: training a byte-level BPE of {cfg.vocab_size:,} ids on "
                             f"{len(chosen):,} texts")
        tok = train_bpe((texts[i] for i in sorted(chosen)), cfg.vocab_size, out_dir)
        yield Progress(None, f"tokenizer: {tok.vocab_size:,} ids written to {out_dir}")
    dist.barrier()
    from .tokenizer import MiniMindTokenizer

    tok = MiniMindTokenizer.from_dir(out_dir)
    return {"stage": "tokenizer", "status": runstore.FINISHED, "vocab_size": tok.vocab_size,
            "seconds": time.perf_counter() - started, "texts": len(chosen)}


class _Stage:
    """What differs between pretrain, sft and dpo: their data, one step's loss, their checks."""

    def __init__(self, stage: str, cfg: TrainConfig, corpus: Corpus, tokenizer: Any, dist: ddp.Dist):
        self.stage, self.cfg, self.dist, self.tok = stage, cfg, dist, tokenizer
        self.batch = cfg.stage(stage, "batch")
        self.seq_len = cfg.stage(stage, "seq_len")
        if self.batch < dist.world:
            raise UserError(f"The {stage} batch ({self.batch}) must be at least the number of processes "
                            f"({dist.world}).")
        mix = parse_mix(cfg.stage(stage, "mix"), list(corpus.train))
        seed = cfg.seed
        if stage == "pretrain":
            texts, groups = pretrain_items(corpus.train, mix)
            self.mix = EpochMix.of(*zip(*groups), seed) if groups else EpochMix([], seed)
            self.data = PackedText(text_tokens(texts, tokenizer), self.mix, self.seq_len, seed)
            self.eval_set = text_eval_set(corpus.held, tokenizer, self.seq_len, cfg.eval_tokens, seed)
            self.samples = len(texts)
        elif stage == "sft":
            convs, groups = sft_items(corpus.train, mix, seed)
            self.mix = EpochMix.of(*zip(*groups), seed) if groups else EpochMix([], seed)
            self.items = [D.encode_sft(c, tokenizer, max_length=self.seq_len) for c in convs]
            self.data = Batches([len(s) for s in self.items], self.mix, self.batch, seed)
            self.eval_set = sft_eval_set(corpus.held, tokenizer, self.seq_len, cfg.eval_samples, seed)
            self.samples = len(convs)
        else:
            pairs, groups = dpo_items(corpus.train, mix, seed)
            self.mix = EpochMix.of(*zip(*groups), seed) if groups else EpochMix([], seed)
            self.items = [D.encode_dpo(p, tokenizer, max_length=self.seq_len) for p in pairs]
            self.data = Batches([max(len(c), len(r)) for c, r in self.items], self.mix, self.batch, seed)
            self.eval_set = sft_eval_set(corpus.held, tokenizer, self.seq_len, cfg.eval_samples, seed)
            self.pair_set = dpo_eval_set(corpus.held, tokenizer, self.seq_len, cfg.eval_samples, seed)
            self.samples = len(pairs)
        self.ref: MiniMindForCausalLM | None = None
        self.ref_logps: dict[str, list] = {}

    def data_sizes(self) -> dict:
        return {"samples": self.samples, "samples_per_epoch": self.mix.per_epoch,
                "held_out_sets": {s: sum(len(b[0]) for b in batches) for s, batches in self.eval_set.items()}}

    def epoch_at(self, step: int) -> float:
        if self.stage == "pretrain":
            return self.data.epoch_at(step * self.batch)
        return self.data.epoch_at(step)

    def loss(self, model: torch.nn.Module, step: int, device: torch.device) -> tuple[torch.Tensor, list[float]]:
        """(this rank's loss to back-propagate, [numbers to sum over ranks: loss share, tokens, ...])."""
        world = self.dist.world
        if self.stage == "pretrain":
            rows = self.data.rows(step * self.batch, self.batch)
            ids = torch.from_numpy(np.ascontiguousarray(rows[self.dist.rank::world])).to(device)
            out = model(ids)
            nll, n = next_token_nll(out.logits, ids)
            total = self.batch * (self.seq_len - 1)
            share = nll / total
            return share * world + out.aux_loss, [float(share.detach()), float(ids.numel())]
        batch = [self.items[i] for i in self.data.indices(step)]
        if self.stage == "sft":
            total = sum(next_token_count(s) for s in batch)
            local = self.dist.shard(batch)
            ids, labels = D.collate(local, self.tok.pad_id)
            ids, labels = ids.to(device), labels.to(device)
            out = model(ids)
            nll, n = next_token_nll(out.logits, labels)
            share = nll / max(total, 1)
            return share * world + out.aux_loss, [float(share.detach()), float(sum(len(s) for s in local))]
        local = self.dist.shard(batch)
        b = len(local)
        ids, labels = D.collate([c for c, _ in local] + [r for _, r in local], self.tok.pad_id)
        ids, labels = ids.to(device), labels.to(device)
        out = model(ids)
        lp = sequence_logprobs(out.logits, labels)
        with torch.no_grad():
            ref = sequence_logprobs(self.ref(ids).logits, labels)
        losses = dpo_loss(lp[:b], lp[b:], ref[:b], ref[b:], self.cfg.dpo_beta)
        share = losses.sum() / len(batch)
        margin = (lp[:b] - lp[b:]) - (ref[:b] - ref[b:])
        tokens = sum(len(c) + len(r) for c, r in local)
        return share * world + out.aux_loss, [float(share.detach()), float(tokens), float((margin > 0).sum())]

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> dict:
        result = {"answers" if self.stage != "pretrain" else "text": evaluate_lm(model, self.eval_set, device)}
        if self.stage == "dpo":
            if not self.ref_logps:
                self.ref_logps = reference_logprobs(self.ref, self.pair_set, device)
            result["pairs"] = evaluate_dpo(model, self.pair_set, self.ref_logps, self.cfg.dpo_beta, device)
        return result


def _main_result(result: dict) -> dict:
    return result.get("text") or result["answers"]


def _check_line(stage: str, step: int, result: dict) -> str:
    line = f"{stage} step {step}: {_fmt(_main_result(result))}"
    if "pairs" in result:
        line += f"; {_fmt(result['pairs'])}"
    return line


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def train_stage(stage: str, cfg: TrainConfig, out_dir: Path, *, store: runstore.RunStore | None = None,
                state_dir: Path | None = None, command: str = "", dist: ddp.Dist | None = None,
                corpus: Corpus | None = None, should_stop: Callable[[], bool] | None = None
                ) -> Generator[Any, None, dict]:
    """Train one of pretrain, sft, dpo to its budget; yields :class:`MiniMindStep` and Progress,
    returns a summary (status, steps, seconds, the held-out checks, the model)."""
    from .tokenizer import MiniMindTokenizer

    if stage not in MODEL_STAGES:
        raise UserError(f"The stage must be one of {', '.join(MODEL_STAGES)}, not {stage!r}.")
    dist = dist or ddp.Dist()
    device = dist.device
    should_stop = should_stop or (lambda: False)
    budget = cfg.stage(stage, "minutes") * 60
    max_steps = cfg.stage(stage, "max_steps")
    if budget <= 0 and max_steps <= 0:
        raise UserError(f"Give the {stage} stage a budget: --{stage}-minutes or --{stage}-max-steps.")
    if not (out_dir / "tokenizer.json").is_file():
        raise UserError(f"{out_dir} has no tokenizer.json: run the tokenizer stage first ({PROG} tokenizer).")
    tok = MiniMindTokenizer.from_dir(out_dir)
    corpus = corpus or load_corpus(cfg)
    if dist.is_main:
        yield Progress(None, f"{stage}: preparing the data")
    work = _Stage(stage, cfg, corpus, tok, dist)
    if stage == "pretrain":
        torch.manual_seed(cfg.seed)
        model = MiniMindForCausalLM(model_config(cfg, tok.vocab_size))
        previous = {}
    else:
        prev_path = out_dir / f"{PREVIOUS[stage]}.safetensors"
        if not prev_path.is_file():
            raise UserError(f"{prev_path} is missing: run the {PREVIOUS[stage]} stage first.")
        model, previous = load_model(prev_path)
        if tok.vocab_size > model.config.vocab_size:
            raise UserError(f"The tokenizer in {out_dir} has more ids ({tok.vocab_size}) than {prev_path.name} "
                            f"({model.config.vocab_size}): they are not a pair.")
    model.to(device).train()
    if stage == "dpo":
        work.ref = copy.deepcopy(model).eval().requires_grad_(False)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    peak = cfg.stage(stage, "lr")
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=peak, betas=(0.9, 0.95))
    warmup = cfg.stage(stage, "warmup")
    step, elapsed, train_seconds, tokens_done = 0, 0.0, 0.0, 0.0
    total: int | None = max_steps if budget <= 0 else None
    state_path = state_dir / f"{stage}.state.pt" if state_dir is not None else None
    if state_path is not None and state_path.exists():
        from ..checkpoints import load_state_dict_strict, torch_load

        state = torch_load(state_path)
        load_state_dict_strict(model, state["model"], what=f"the resumed {stage} model")
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["seconds"])
        train_seconds, tokens_done = float(state["train_seconds"]), float(state["tokens"])
        total = int(state["total"]) or total
        if dist.is_main:
            yield Progress(None, f"{stage}: resumed at step {step}")
    net = dist.wrap(model, find_unused_parameters=model.config.use_moe)
    params = parameter_count(model)
    writer = None
    if store is not None and dist.is_main:
        corpus_name = "Debian text corpora" if cfg.corpus == "debian" else f"{cfg.corpus} corpus"
        run_config = {"dataset": f"{corpus_name} ({cfg.sources})", "model": f"minimind-{stage}",
                      "stage": stage, **asdict(cfg), "parameters": params, "model_config": model.config.to_dict(),
                      "processes": dist.world,
                      "data_note": ("Training loss = next-token cross-entropy (sft: answer tokens only; dpo: the DPO "
                                    "loss); validation loss = the log of the held-out perplexity, validation "
                                    "accuracy = next-token accuracy (dpo: preference accuracy).")}
        size = f"{params / 1e6:.1f} M" if params >= 1e5 else f"{params / 1e3:.0f} K"
        writer = store.create(run_config, f"MiniMind {stage} ({size} parameters)")
    if dist.is_main:
        yield Progress(None, f"{stage}: {params:,} parameters, {work.samples:,} samples "
                             f"({work.mix.per_epoch:,} an epoch), batch {work.batch}, lr {peak:g}, "
                             f"{dist.world} process(es) on {device}")
    status = runstore.RUNNING
    start = time.perf_counter() - elapsed
    last_state = time.perf_counter()
    check_seconds = 0.0
    first: dict | None = None
    result: dict | None = None
    recent: list[float] = []
    recent_acc: list[float] = []
    calibrate_at = step + max(5, min(warmup, 20))
    timing_from: tuple[int, float] | None = None
    best_acc: float | None = None
    requested = False

    def check() -> dict:
        nonlocal check_seconds, best_acc
        t = time.perf_counter()
        res = work.evaluate(model, device)
        check_seconds = time.perf_counter() - t
        main = _main_result(res)
        acc = res["pairs"]["preference_accuracy"] if "pairs" in res else main["accuracy"]
        if writer:
            seconds = time.perf_counter() - start
            val_loss = res["pairs"]["loss"] if "pairs" in res else main["loss"]
            writer.append({"kind": "epoch", "epoch": work.epoch_at(step), "step": step, "time": seconds,
                           "train_loss": float(np.mean(recent)) if recent else float("nan"),
                           "val_loss": val_loss if val_loss is not None else float("nan"),
                           "train_acc": float(np.mean(recent_acc)) if recent_acc else float("nan"),
                           "val_acc": acc if acc is not None else float("nan"),
                           "val_perplexity": main["perplexity"] if main["perplexity"] is not None else float("nan")})
            if acc is not None and (best_acc is None or acc > best_acc):
                best_acc = acc
            writer.update(epochs_done=int(work.epoch_at(step)), best_val_acc=best_acc)
        return res

    try:
        if dist.is_main and step == 0:
            first = check()
            yield Progress(0.0, _check_line(stage, 0, first) + " (before training)")
        while True:
            code = 0.0
            if dist.is_main:
                now = time.perf_counter()
                if total is None and budget > 0 and step >= calibrate_at and timing_from is not None:
                    per_step = (now - timing_from[1]) / max(1, step - timing_from[0])
                    left = budget - (now - start) - check_seconds
                    total = step + max(1, int(0.97 * left / (per_step + check_seconds / cfg.check_every)))
                    if max_steps > 0:
                        total = min(total, max_steps)
                if should_stop():
                    code = 2.0
                elif ((max_steps and step >= max_steps) or (total and step >= total)
                      or (budget > 0 and now - start >= budget)):
                    code = 1.0
            code, shared_total = dist.broadcast_floats([code, float(total or 0)])
            total = int(shared_total) or None
            if code:
                requested = code == 2.0
                break
            lr = lr_at(step, peak, warmup, total, cfg.min_lr_ratio)
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            loss, numbers = work.loss(net, step, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            numbers = dist.all_reduce_sum(numbers)
            value = numbers[0]
            if not math.isfinite(value) or not math.isfinite(float(loss.detach())):
                status = runstore.DIVERGED
                raise ArithmeticError(f"The {stage} loss became {value} at step {step + 1}: training diverged "
                                      f"(try a lower --{stage}-lr).")
            opt.step()
            step += 1
            train_seconds += time.perf_counter() - t0
            tokens_done += numbers[1]
            if timing_from is None:
                timing_from = (step, time.perf_counter())  # the first step (allocations) is not timed
            recent.append(value)
            if stage == "dpo":
                recent_acc.append(numbers[2] / work.batch)
            seconds = time.perf_counter() - start
            rate = tokens_done / train_seconds if train_seconds else 0.0
            if writer:
                writer.append({"kind": "step", "step": step, "epoch": work.epoch_at(step), "time": seconds,
                               "loss": value, "lr": lr, "grad_norm": grad_norm})
            yield MiniMindStep(stage, step, value, lr, seconds, rate)
            if step % cfg.check_every == 0 and dist.is_main:
                res = check()
                recent, recent_acc = [], []
                yield Progress(min(step / total, 1.0) if total else None,
                               f"{_check_line(stage, step, res)}; loss {value:.3f}, {rate:,.0f} tokens/s")
            if state_path is not None and dist.is_main and time.perf_counter() - last_state > 300:
                last_state = time.perf_counter()
                _save_state(state_path, model, opt, step, time.perf_counter() - start, train_seconds, tokens_done,
                            total)
        status = runstore.STOPPED if requested else runstore.FINISHED
    finally:
        status = script.ended_status(status)
        seconds = time.perf_counter() - start
        keep = status in (runstore.FINISHED, runstore.STOPPED)
        if dist.is_main and keep:
            if state_path is not None:
                _save_state(state_path, model, opt, step, seconds, train_seconds, tokens_done, total or step)
            result = work.evaluate(model, device)
            main = _main_result(result)
            sidecar = {
                "command": command, "stage": stage, "made_by": MADE_BY, "status": status, "seed": cfg.seed,
                "steps": step, "schedule_steps": total or step, "seconds": round(seconds, 1),
                "train_seconds": round(train_seconds, 1), "tokens": int(tokens_done),
                "tokens_per_second": round(tokens_done / train_seconds, 1) if train_seconds else None,
                "processes": dist.world, "device": str(device), "parameters": params,
                "held_out_perplexity": main["perplexity"],
                "held_out_perplexity_is": ("held-out pretraining text" if stage == "pretrain"
                                           else "answers of held-out dialogues (answer tokens only)"),
                "held_out": _rounded(result), "held_out_before": _rounded(first) if first else None,
                "train_config": asdict(cfg), "data": {"records": corpus.sizes(), **work.data_sizes()},
                "tokenizer": {"file": "tokenizer.json", "vocab_size": tok.vocab_size},
                "starts_from": f"{PREVIOUS[stage]}.safetensors" if stage in PREVIOUS else None,
                "previous_stage": {k: previous.get(k) for k in ("stage", "steps", "seconds", "held_out_perplexity")}
                if previous else None,
                "reproduce": reproduce_command(stage, cfg, total or step, out_dir),
                "training_data": TRAINING_DATA if cfg.corpus == "debian" else "a synthetic test corpus"}
            if "pairs" in result:
                sidecar["preference_accuracy"] = result["pairs"]["preference_accuracy"]
            save_model(out_dir / f"{stage}.safetensors", model, sidecar)
        if writer:
            if keep:
                writer.save_weights(model_tensors(model))
            writer.close(status, seconds=seconds, steps=step)
    summary = {"stage": stage, "status": status, "steps": step, "seconds": seconds, "model": model,
               "held_out": result, "held_out_before": first,
               "tokens_per_second": tokens_done / train_seconds if train_seconds else 0.0}
    if dist.is_main and result is not None:
        yield Progress(1.0, f"{stage} {status} after {step} steps ({seconds:.0f} s, "
                            f"{summary['tokens_per_second']:,.0f} tokens/s): {_fmt(_main_result(result))}"
                            + (f"; {_fmt(result['pairs'])}" if "pairs" in result else ""))
    return summary


def _save_state(path: Path, model, opt, step: int, seconds: float, train_seconds: float, tokens: float,
                total: int | None) -> None:
    script.save_state(path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                             "seconds": seconds, "train_seconds": train_seconds, "tokens": tokens,
                             "total": int(total or 0)})


def train_all(cfg: TrainConfig, out_dir: Path, stages: Sequence[str] = STAGES, *,
              store: runstore.RunStore | None = None, state_dir: Path | None = None, command: str = "",
              dist: ddp.Dist | None = None, corpus: Corpus | None = None,
              should_stop: Callable[[], bool] | None = None) -> Generator[Any, None, dict]:
    """The stages in order, each from the previous one's files; stops after a stage that did not finish."""
    dist = dist or ddp.Dist()
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus or load_corpus(cfg)
    if dist.is_main:
        sizes = ", ".join(f"{s} {n['train']:,}+{n['held_out']:,}" for s, n in corpus.sizes().items())
        yield Progress(None, f"corpus ({cfg.corpus}), training + held-out records: {sizes}")
    results: dict[str, dict] = {}
    status = runstore.FINISHED
    for stage in stages:
        if stage == "tokenizer":
            result = yield from train_tokenizer(cfg, out_dir, corpus, dist, command)
        else:
            result = yield from train_stage(stage, cfg, out_dir, store=store, state_dir=state_dir, command=command,
                                            dist=dist, corpus=corpus, should_stop=should_stop)
        results[stage] = result
        status = result["status"]
        if status != runstore.FINISHED:
            break
    return {"status": status, "stages": results}


# -- the command line ---------------------------------------------------------------------------
class StopFlag:
    """SIGTERM / Ctrl-C: the first asks the stage to stop after its current step (and save), a
    second stops at once (KeyboardInterrupt; the weights are still saved)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> dict:
        """Install the handlers; returns the ones they replace (for :meth:`restore`)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("stopping after this step (send the signal again to stop at once)", file=sys.stderr, flush=True)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        return previous

    @staticmethod
    def restore(previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _summary(result: dict) -> str:
    lines = []
    for stage, r in result["stages"].items():
        if stage == "tokenizer":
            lines.append(f"tokenizer: {r['vocab_size']:,} ids")
        elif r.get("held_out"):
            held = r["held_out"]
            lines.append(f"{stage}: {r['status']}, {r['steps']} steps, {r['seconds']:.0f} s, "
                         f"{r['tokens_per_second']:,.0f} tokens/s, {_fmt(_main_result(held))}"
                         + (f"; {_fmt(held['pairs'])}" if "pairs" in held else ""))
        else:
            lines.append(f"{stage}: {r['status']} after {r['steps']} steps")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train the Chat tab's tiny MiniMind: tokenizer, pretraining, "
                                                       "SFT and DPO on Debian's offline corpora.")
    p.add_argument("stage", choices=(*STAGES, "all"), help="one stage, or all four in order")
    script.add_config_arguments(p, TrainConfig())
    p.add_argument("--out-dir", default="resources/minimind-demo", help="tokenizer and weights (read and written)")
    p.add_argument("--minutes", type=float, default=None, help="the time budget of every model stage")
    p.add_argument("--max-steps", type=int, default=None, help="the step limit of every model stage")
    p.add_argument("--state-dir", default="", help="keep each stage's resumable state here and continue from it "
                                                   "(a finished stage is not trained again: empty it to start over)")
    p.add_argument("--runs-dir", default="", help="where the run files go (default: the Training tab's folder)")
    p.add_argument("--no-run", action="store_true", help="do not write the Training tab's run files")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: the app's choice)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = script.config_from_arguments(TrainConfig, args)
    for stage in MODEL_STAGES:
        if args.minutes is not None:
            setattr(cfg, f"{stage}_minutes", args.minutes)
        if args.max_steps is not None:
            setattr(cfg, f"{stage}_max_steps", args.max_steps)
    command = f"{PROG} " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    elif not ddp.launched_by_torchrun():
        from ...devices import configure_torch_threads

        configure_torch_threads()
    dist = ddp.from_env(args.device)
    stop = StopFlag()
    previous_handlers = stop.install()
    store = None
    if not args.no_run and dist.is_main:
        store = runstore.RunStore(args.runs_dir or None)
    stages = STAGES if args.stage == "all" else (args.stage,)
    gen = train_all(cfg, Path(args.out_dir), stages, store=store, state_dir=Path(args.state_dir) if args.state_dir
                    else None, command=command, dist=dist, should_stop=stop)
    last = 0.0
    try:
        while True:
            item = next(gen)
            if not dist.is_main:
                continue
            if isinstance(item, Progress) and item.text:
                print(item.text, flush=True)
            elif isinstance(item, MiniMindStep) and time.monotonic() - last > 60:
                last = time.monotonic()
                print(f"{item.stage} step {item.step:6d}  loss {item.loss:.4f}  lr {item.lr:.2e}  "
                      f"{item.tokens_per_s:,.0f} tokens/s  ({item.seconds:.0f} s)", flush=True)
    except StopIteration as done:
        result = done.value
    except KeyboardInterrupt:
        gen.close()
        print("stopped: the weights so far are saved", file=sys.stderr)
        return 130
    except (UserError, ArithmeticError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        dist.close()
        StopFlag.restore(previous_handlers)  # (main() may run inside another program: a test, the app)
    if dist.is_main:
        print(_summary(result), flush=True)
    return 0 if result["status"] == runstore.FINISHED else 130


if __name__ == "__main__":
    sys.exit(main())
