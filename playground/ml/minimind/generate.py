"""Writing text one token at a time, and scoring text: what a language model is *for*.

A causal language model gives, for the last position of what it has read, a score
("logit") for every token of the vocabulary. Generation turns those scores into one
choice, appends it, and asks again:

1. **Repetition penalty** (the CTRL paper's, as Hugging Face implements it): for every
   token already in the prompt or the output, a positive logit is divided by the penalty
   and a negative one multiplied by it, so both move towards "less likely".
2. **Temperature** T: logits / T. Below 1 the distribution sharpens, above 1 it flattens;
   T = 0 means *greedy*: always the most likely token.
3. **Top-k**: only the k most likely tokens stay candidates.
4. **Top-p** (nucleus): of those, the smallest set of the most likely tokens whose
   probabilities add up to at least p.
5. **Sampling**: a draw from the softmax over what is left, from a seeded
   ``torch.Generator`` so that the same seed gives the same text.

Decoding reuses the key-value cache (:class:`~.model.KVCache`): the prompt is read once
("prefill"), then each step feeds one token. :func:`stream` is a generator: it yields a
:class:`TokenEvent` per token (with what the Learn panel shows: the top candidates and
their probabilities, the chosen one's probability, optionally the attention that chose
it), and stops when the caller closes it, between two tokens.

:func:`token_logprobs` and :func:`perplexity` score a given text instead: the log
probability the model gave to each actual next token, and exp(mean negative log
probability), the model's "effective number of choices" per token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import KVCache, MiniMindForCausalLM


@dataclass
class SamplingSettings:
    """How to choose each token; MiniMind's own defaults (eval_llm.py: 0.85 / 0.85, top-k 50)."""

    max_new_tokens: int = 512
    temperature: float = 0.85          # 0: greedy
    top_p: float = 0.85                # 1: off
    top_k: int = 50                    # 0: off
    repetition_penalty: float = 1.0    # 1: off
    stop_ids: tuple[int, ...] = (2,)   # end of turn: <|im_end|> (MiniMind2, minimind-3), </s> (legacy)
    seed: int | None = None            # None: a fresh random seed
    candidates: int = 5                # how many top candidates each event reports
    attention_layer: int | None = None  # report the newest query's attention in this layer (negative: from the end)
    attention_head: int | None = None  # ... for this head only (None: every head)

    def validate(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be at least 0, not {self.max_new_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"The temperature cannot be negative ({self.temperature}).")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"top_k cannot be negative ({self.top_k}).")
        if self.repetition_penalty <= 0:
            raise ValueError(f"The repetition penalty must be positive, not {self.repetition_penalty}.")


@dataclass
class TokenEvent:
    """One generated token, and what went into choosing it."""

    index: int                          # 0 for the first new token
    token_id: int
    probability: float                  # the chosen token's probability after temperature, top-k and top-p
    candidates: list[tuple[int, float]]  # the most likely tokens and their probabilities (same distribution)
    is_stop: bool                       # one of the stop ids: the last event
    attention: Tensor | None            # [heads, S] or [S]: the attention of the query that chose this token
    elapsed_s: float                    # since the stream started
    time_to_first_token_s: float        # prefill and the first choice
    tokens_per_s: float                 # decoding speed so far (after the first token; 0 until the second)
    kept: int = 0                       # how many tokens survived top-k and top-p (the draw was among these)


@dataclass
class GenerationStats:
    """What a finished (or closed) stream did; :func:`stream` fills it in as it goes."""

    prompt_tokens: int = 0
    reused_tokens: int = 0              # prompt tokens already in the cache (not computed again)
    new_tokens: int = 0
    time_to_first_token_s: float = 0.0
    tokens_per_s: float = 0.0
    total_s: float = 0.0
    stop_reason: str = ""               # "stop token", "max tokens", "context full", or "" while running
    token_ids: list[int] = field(default_factory=list)


# -- choosing a token ---------------------------------------------------------------------------
def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Divide the positive logits of the ``seen`` tokens (a bool mask like ``logits``) by ``penalty``
    and multiply their negative logits by it (CTRL, Keskar et al. 2019; Hugging Face's rule)."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def candidate_distribution(logits: Tensor, temperature: float = 1.0, top_k: int = 0,
                           top_p: float = 1.0) -> tuple[Tensor, Tensor]:
    """The tokens still possible after temperature, top-k and top-p, most likely first: (ids [n], probs [n]).

    ``logits`` [V] (already penalised). ``probs`` sum to one over the ``n`` kept ids.
    Temperature 0 is treated as 1 here (greedy picks the first id; the distribution shown
    is the model's own).
    """
    logits = logits.float()
    if 0 < top_k < logits.shape[-1]:
        values, ids = logits.topk(top_k)                    # sorted, most likely first
    else:
        values, ids = logits.sort(descending=True)
    if temperature > 0 and temperature != 1.0:              # after the choice: the same order, k divisions
        values = values / temperature
    probs = values.softmax(dim=-1)
    if top_p < 1.0:
        before = probs.cumsum(dim=-1) - probs               # probability of the more likely tokens
        keep = int((before < top_p).sum())                  # the smallest prefix that reaches top_p (at least 1)
        ids, probs = ids[:keep], probs[:keep]
        probs = probs / probs.sum()
    return ids, probs


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """``logits`` [V] with every token that top-k and top-p remove set to -inf (for showing the sets)."""
    ids, _ = candidate_distribution(logits, 1.0, top_k, top_p)
    out = torch.full_like(logits, float("-inf"))
    out[ids] = logits[ids]
    return out


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


# -- the loop -----------------------------------------------------------------------------------
def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def stream(model: MiniMindForCausalLM, prompt_ids: Sequence[int], settings: SamplingSettings | None = None, *,
           cache: KVCache | None = None, stats: GenerationStats | None = None) -> Generator[TokenEvent, None, None]:
    """Generate after ``prompt_ids``, one :class:`TokenEvent` per token; close the generator to stop.

    ``cache``: a :class:`KVCache` to keep between calls (a chat): the part of ``prompt_ids``
    it already holds (from the start) is not computed again, and whatever differs after
    that is dropped from it. The last token chosen is not fed back, so after a stream the
    cache holds the prompt and all the output but its last token. ``stats`` is filled in
    as tokens come and is complete when the generator ends or is closed.
    """
    settings = settings or SamplingSettings()
    settings.validate()
    stats = stats if stats is not None else GenerationStats()
    ids = [int(t) for t in prompt_ids]
    if not ids:
        raise ValueError("Generation needs at least one prompt token.")
    device = _device_of(model)
    cfg = model.config
    vocab = cfg.vocab_size
    if max(ids) >= vocab or min(ids) < 0:
        raise ValueError(f"A prompt token id is outside the model's vocabulary of {vocab}.")
    cache = cache if cache is not None else KVCache(capacity=len(ids) + settings.max_new_tokens)
    if not cache.holds_for(cfg, 1, device, next(model.parameters()).dtype):
        cache.clear()   # made for another model, device or type: start again
    reuse = min(cache.common_prefix(ids), len(ids) - 1)     # at least one token must be fed to get logits
    cache.truncate(reuse)
    stats.prompt_tokens, stats.reused_tokens = len(ids), reuse
    stops = set(settings.stop_ids)
    layer = settings.attention_layer
    generator = make_generator(settings.seed, device)
    greedy = settings.temperature == 0
    penalty = settings.repetition_penalty
    with torch.inference_mode():
        seen = None                                         # the tokens so far, for the repetition penalty
        if penalty != 1.0:
            seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            seen[torch.tensor(ids, device=device)] = True
        feed = torch.tensor([ids[reuse:]], dtype=torch.long, device=device)
        step = torch.zeros(1, 1, dtype=torch.long, device=device)   # each later step's one token
    start = time.perf_counter()
    first_at = 0.0
    was_training = model.training
    model.eval()
    try:
        for index in range(settings.max_new_tokens):
            if cache.length + feed.shape[1] > cfg.max_position_embeddings:
                stats.stop_reason = "context full"
                break
            with torch.inference_mode():
                out = model(feed, cache, attention_layers=layer, last_only=True)
                logits = out.logits.view(-1)                            # [1, 1, V] -> [V]
                if seen is not None:
                    logits = apply_repetition_penalty(logits, seen, penalty)
                cand_ids, cand_probs = candidate_distribution(logits, settings.temperature, settings.top_k,
                                                              settings.top_p)
                if greedy:
                    pick = 0
                else:
                    pick = int(torch.multinomial(cand_probs, 1, generator=generator))
                kept = int(cand_ids.shape[0])
                shown = min(settings.candidates, kept)
                shown_ids, shown_probs = cand_ids[:shown].tolist(), cand_probs[:shown].tolist()
                candidates = list(zip(shown_ids, shown_probs))
                if pick < shown:
                    token, probability = shown_ids[pick], shown_probs[pick]
                else:
                    token, probability = int(cand_ids[pick]), float(cand_probs[pick])
                attention = None
                if layer is not None:
                    attention = next(iter(out.attention.values()))[0]   # [H, S]
                    if settings.attention_head is not None:
                        attention = attention[settings.attention_head]
                    attention = attention.clone()
                if seen is not None:
                    seen[token] = True
                feed = step
                feed.fill_(token)
            now = time.perf_counter() - start
            if index == 0:
                first_at = now
                stats.time_to_first_token_s = now
            elif now > first_at:
                stats.tokens_per_s = index / (now - first_at)
            stats.new_tokens = index + 1
            stats.total_s = now
            stats.token_ids.append(token)
            is_stop = token in stops
            if is_stop:
                stats.stop_reason = "stop token"
            elif index == settings.max_new_tokens - 1:
                stats.stop_reason = "max tokens"
            yield TokenEvent(index, token, probability, candidates, is_stop, attention, now,
                             stats.time_to_first_token_s, stats.tokens_per_s, kept)
            if is_stop:
                break
    finally:
        stats.total_s = time.perf_counter() - start
        if not stats.stop_reason:
            stats.stop_reason = "max tokens" if settings.max_new_tokens == 0 else "closed"
        if was_training:
            model.train()


def generate(model: MiniMindForCausalLM, prompt_ids: Sequence[int], settings: SamplingSettings | None = None, *,
             cache: KVCache | None = None) -> list[int]:
    """The new token ids (a stop token included when one ended the text)."""
    return [event.token_id for event in stream(model, prompt_ids, settings, cache=cache)]


# -- scoring text -------------------------------------------------------------------------------
def _wide(t: Tensor) -> Tensor:
    """Half-precision logits in float32 for the log-softmax (float32 and float64 as they are)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def token_logprobs(model: MiniMindForCausalLM, input_ids: Tensor) -> Tensor:
    """log p(token t | tokens < t) for t = 1 .. T-1: [B, T-1] (keeps gradients; wrap in no_grad to score)."""
    logits = _wide(model(input_ids).logits[:, :-1])                                  # [B, T-1, V]
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def perplexity(model: MiniMindForCausalLM, input_ids: Tensor, labels: Tensor | None = None) -> float:
    """exp(mean negative log-likelihood) of the next tokens; ``labels`` [B, T] with -100 where not scored
    (as MiniMind's SFT masks: only assistant tokens), ``input_ids`` itself by default."""
    labels = input_ids if labels is None else labels
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = _wide(model(input_ids).logits[:, :-1])
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                  ignore_index=-100, reduction="sum")
            count = int((labels[:, 1:] != -100).sum())
    finally:
        if was_training:
            model.train()
    if count == 0:
        raise ValueError("No token is scored (every label is -100).")
    return math.exp(float(nll) / count)
