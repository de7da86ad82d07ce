"""A chat with a MiniMind model: what the Chat tab asks of the ML core, free of Qt.

:class:`ChatModel` ties a network to its tokenizer and chat template (the model's own, or the
built-in one for its generation when a ``.pth`` carries none). :func:`prompt_messages`
chooses what is sent (a system prompt, the last N turns, the new question);
:func:`reply` renders the prompt with the template, streams the answer through
:func:`.generate.stream` and yields one :class:`ReplyPiece` per token, text decoded without
splitting a character, with what the Learn panel shows (the top candidates after
temperature / top-k / top-p, the newest token's attention). Its return value is a
:class:`ReplyDone` with the whole text, the reasoning split from the answer, the speed and
the context used.

The key-value cache lives in the :class:`ChatModel` and is reused from one turn to the
next: a follow-up question only computes the tokens that are new since the last answer.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import BadFileError, UserError
from ... import paths
from ...progress import Progress
from ..checkpoints import LoadedModel
from . import templates
from .generate import GenerationStats, SamplingSettings, stream
from .model import KVCache, parameter_count
from .tokenizer import MiniMindTokenizer

DEFAULT_DIR = "minimind-demo"          # resources/minimind-demo: tokenizer + the DPO stage's weights
DEFAULT_WEIGHTS = "dpo.safetensors"
DEMO_NOTE = ("A tiny demo model (a few million parameters), trained here on Debian's fortunes, Tang poems, "
             "Song lyrics, the Jargon File and the Devil's Dictionary. Ask it for a poem, a quote or a "
             "definition. For a real MiniMind, download one (e.g. MiniMind2-Small: full_sft_512.pth with the "
             "repository's model/tokenizer.json, or a Hugging Face folder) and open it here.")


@dataclass
class ChatModel:
    """A network, its tokenizer and template, and the cache kept between turns."""

    model: Any                         # MiniMindForCausalLM
    tokenizer: MiniMindTokenizer
    template: Any                      # Jinja source or a templates.ChatTemplate
    template_name: str
    generation: str                    # "minimind2", "minimind3", "legacy" or "base"
    description: str
    is_demo: bool = False
    note: str = ""
    cache: KVCache | None = field(default=None, repr=False)

    @property
    def context_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def thinks(self) -> bool:
        """minimind-3 writes a <think> block; its template can leave it open for reasoning."""
        return self.generation == "minimind3"

    @property
    def stop_ids(self) -> tuple[int, ...]:
        ids = {self.tokenizer.eos_id} if self.tokenizer.eos_id is not None else set()
        end = self.tokenizer.token_to_id("<|im_end|>")
        if end is not None:
            ids.add(end)
        return tuple(sorted(i for i in ids if i is not None)) or (int(self.model.config.eos_token_id),)

    def token_text(self, token_id: int) -> str:
        """One token as a person can read it: its text, or, for a byte-level token that holds only
        part of a character (common for Chinese: 3 bytes a character), its bytes as ⟨e6 9c⟩."""
        special = self.tokenizer.added_tokens.get(int(token_id))
        if special is not None:
            return special
        raw = self.tokenizer.token_bytes(int(token_id))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "⟨" + " ".join(f"{b:02x}" for b in raw) + "⟩"


def prompt_messages(history: Sequence[dict[str, str]], question: str | None, *, system: str = "",
                    history_turns: int = 0) -> list[dict[str, str]]:
    """What is sent: the system prompt (when given), the last ``history_turns`` question/answer
    pairs of ``history`` and the ``question`` (None: ``history`` already ends with it)."""
    turns = [dict(m) for m in history if m.get("role") in ("user", "assistant")]
    if question is None:
        if not turns or turns[-1]["role"] != "user":
            raise UserError("There is no question to answer.")
        question, turns = turns[-1]["content"], turns[:-1]
    kept = turns[len(turns) - 2 * history_turns:] if history_turns > 0 else []
    while kept and kept[0]["role"] != "user":   # start on a question
        kept = kept[1:]
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + kept + [{"role": "user", "content": question}]


def render_prompt(chat: ChatModel, messages: Sequence[dict[str, str]], open_thinking: bool = False) -> str:
    flags: dict[str, Any] = {}
    if chat.thinks:
        flags["open_thinking"] = bool(open_thinking)
    return chat.tokenizer.apply_chat_template(messages, add_generation_prompt=True, template=chat.template, **flags)


@dataclass(frozen=True)
class ReplyPiece:
    """One new token: its text (may be "" while a character is half there) and why it was chosen."""

    index: int
    text: str                          # what this token adds to the visible text
    token: str                         # the token itself, readable
    probability: float
    candidates: tuple[tuple[str, float], ...]   # (token text, probability) after temperature/top-k/top-p
    attention: Any                     # numpy [S] (a head) or [H, S], or None
    tokens_per_s: float
    time_to_first_token_s: float
    context_used: int
    kept: int = 0                      # how many tokens survived top-k / top-p


@dataclass(frozen=True)
class ReplyDone:
    prompt: str                        # the rendered prompt string the model received
    prompt_tokens: tuple[str, ...]     # the prompt as tokens (the attention strip's labels)
    text: str                          # everything generated (the <think> block included)
    reasoning: str | None
    answer: str
    stats: GenerationStats
    context_used: int
    context_length: int


@dataclass(frozen=True)
class PromptInfo:
    """Sent first: the rendered prompt, so the Learn panel shows it while the answer streams."""

    prompt: str
    prompt_tokens: tuple[str, ...]
    tokens: int
    reused: int = 0


def reply(chat: ChatModel, messages: Sequence[dict[str, str]], settings: SamplingSettings, *,
          open_thinking: bool = False, device: str | torch.device | None = None
          ) -> Generator[PromptInfo | ReplyPiece | Progress, None, ReplyDone]:
    """Stream the model's answer to ``messages`` (a job: closing it stops between tokens)."""
    prompt = render_prompt(chat, messages, open_thinking)
    ids = chat.tokenizer.encode(prompt)
    if not ids:
        raise UserError("The prompt is empty.")
    if len(ids) >= chat.context_length:
        raise UserError(f"The conversation is {len(ids):,} tokens, more than the model's context of "
                        f"{chat.context_length:,}: send fewer past turns.")
    if device is not None:
        chat.model.to(device)
    settings = SamplingSettings(**{**settings.__dict__, "stop_ids": chat.stop_ids,
                                   "max_new_tokens": min(settings.max_new_tokens, chat.context_length - len(ids))})
    if chat.cache is None:
        chat.cache = KVCache(capacity=len(ids) + settings.max_new_tokens)
    prompt_tokens = tuple(chat.token_text(i) for i in ids)
    yield PromptInfo(prompt, prompt_tokens, len(ids), chat.cache.common_prefix(ids))
    decoder = chat.tokenizer.stream_decoder(skip_special_tokens=True)
    stats = GenerationStats()
    for event in stream(chat.model, ids, settings, cache=chat.cache, stats=stats):
        text = "" if event.is_stop else decoder.push(event.token_id)
        attention = event.attention.float().numpy() if event.attention is not None else None
        yield ReplyPiece(event.index, text, chat.token_text(event.token_id), event.probability,
                         tuple((chat.token_text(i), p) for i, p in event.candidates), attention,
                         event.tokens_per_s, event.time_to_first_token_s, len(ids) + event.index + 1, event.kept)
    tail = decoder.finish()
    if tail:
        yield ReplyPiece(stats.new_tokens, tail, "", 1.0, (), None, stats.tokens_per_s,
                         stats.time_to_first_token_s, len(ids) + stats.new_tokens)
    text = decoder.text
    split = templates.split_thinking(text, starts_in_thinking=chat.thinks and open_thinking)
    reasoning = split.reasoning if split.had_thinking and split.reasoning.strip() else None
    return ReplyDone(prompt, prompt_tokens, text, reasoning, split.answer, stats, len(ids) + stats.new_tokens,
                     chat.context_length)


# -- loading ---------------------------------------------------------------------------------------
def _tokenizer_for(folder: Path | None, what: str) -> MiniMindTokenizer:
    if folder is None or not (folder / "tokenizer.json").is_file():
        raise BadFileError(f"No tokenizer.json was found for {what}. A .pth holds only the weights: put the "
                           "repository's model/tokenizer.json (and tokenizer_config.json) beside it, or open "
                           "the model's Hugging Face folder.")
    return MiniMindTokenizer.from_dir(folder)


def chat_from_loaded(found, *, is_demo: bool = False, note: str = "") -> ChatModel:
    """A :class:`ChatModel` from what :func:`.loaders.load_minimind` found (model, generation,
    description, and where a tokenizer may be)."""
    folder = getattr(found, "tokenizer_path", None)
    folder = Path(folder) if folder is not None else None
    if folder is not None and folder.is_file():
        folder = folder.parent
    tok = _tokenizer_for(folder, Path(str(getattr(found, "path", "the model"))).name)
    generation = found.generation
    if tok.chat_template:
        template, template_name = tok.chat_template, "the model's own chat template"
    else:
        builtin = templates.builtin_for(generation=generation if generation in templates.BUILTIN else None)
        template, template_name = builtin, f"built-in {builtin.name} template"
    vocab = found.model.config.vocab_size
    if tok.vocab_size > vocab:
        raise BadFileError(f"The tokenizer has {tok.vocab_size:,} tokens but the model only {vocab:,}: "
                           "they are not a pair (MiniMind2 and minimind-3 tokenizers are not interchangeable).")
    return ChatModel(found.model, tok, template, template_name, generation, found.description, is_demo, note)


def describe(chat: ChatModel, name: str, source: str, fmt: str) -> LoadedModel:
    cfg = chat.model.config
    details = {"Architecture": chat.description, "Template": chat.template_name,
               "Context": f"{cfg.max_position_embeddings:,} tokens", "Vocabulary": f"{chat.tokenizer.vocab_size:,}"}
    return LoadedModel(chat, name, source, fmt, parameter_count(chat.model), details)


def default_folder() -> Path:
    return paths.RESOURCES / DEFAULT_DIR


def load_default() -> Generator[Progress, None, LoadedModel]:
    """The embedded demo model (resources/minimind-demo)."""
    from . import loaders

    yield Progress(None, "Loading the embedded MiniMind demo")
    folder = default_folder()
    weights = folder / DEFAULT_WEIGHTS
    if not weights.is_file():
        raise BadFileError(f"The embedded demo model is missing ({weights.name} in {folder}); train it with "
                           "python -m playground.ml.minimind.train all, or open a MiniMind model.")
    found = loaders.load_minimind(weights)
    chat = chat_from_loaded(found, is_demo=True, note=DEMO_NOTE)  # (its tokenizer is beside it)
    # "dpo · 3.5 M parameters · ..." (named after the file) -> the architecture it has
    chat.description = " · ".join(["MiniMind2 layout, tiny"] + chat.description.split(" · ")[1:])
    side = found.sidecar
    name = "MiniMind demo (tiny, embedded)"
    loaded = describe(chat, name, "", "safetensors")
    if side.get("held_out_perplexity"):
        loaded.details["Held-out perplexity"] = f"{side['held_out_perplexity']:.1f}"
    return loaded


def load_for_picker(path: str) -> Generator[Progress, None, LoadedModel]:
    from . import loaders

    yield Progress(None, f"Reading {Path(path).name}")
    found = loaders.load_minimind(path)
    chat = chat_from_loaded(found)
    p = Path(path)
    fmt = "Hugging Face folder" if p.is_dir() else ("PyTorch state dict" if p.suffix in (".pth", ".pt", ".bin")
                                                   else "safetensors")
    return describe(chat, p.name, str(p), fmt)


def elapsed_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
