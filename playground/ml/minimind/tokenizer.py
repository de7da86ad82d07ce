"""MiniMind's tokenizer: a byte-level BPE in Hugging Face ``tokenizers`` JSON, read without transformers.

A MiniMind folder holds ``tokenizer.json`` (the BPE: vocabulary, merges, added tokens) and
``tokenizer_config.json`` (which added token is bos / eos / pad, and the ``chat_template``),
sometimes with the template in a ``chat_template.jinja`` beside them. Every MiniMind
generation uses the same configuration: ByteLevel pre-tokenizer (``add_prefix_space`` false,
GPT-2 regex on), ByteLevel decoder, no normalizer, no post-processor, so ``encode`` never adds
tokens by itself. Since 250426: ``<|endoftext|>`` (pad / unk, id 0), ``<|im_start|>`` (bos, 1),
``<|im_end|>`` (eos, 2); before it ``<unk>``, ``<s>``, ``</s>`` at the same ids. The vocabularies
of MiniMind2 and minimind-3 differ: a model only works with its own tokenizer.

:class:`StreamDecoder` turns generated ids into text one id at a time. A byte-level token is a
run of *bytes*, and a Chinese character (3 bytes in UTF-8) is often split over two tokens, so
the decoder holds back an incomplete character until its last byte arrives; what it emits,
joined, is exactly :meth:`MiniMindTokenizer.decode` of all the ids.

:func:`train_bpe` trains our own tokenizer configured as MiniMind's (for models we train here).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import BadFileError

#: The three special tokens of MiniMind (since 250426), at ids 0, 1, 2.
PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
#: Reasoning markers: added tokens that are *not* special (decoding keeps them).
THINK_TOKENS = ("<think>", "</think>")
#: Before 250426 the same ids were ``<unk> <s> </s>``.
LEGACY_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")

#: A tokenizer file larger than this is refused (MiniMind's is 440 kB; big multilingual ones ~30 MB).
MAX_TOKENIZER_BYTES = 64 * 2**20
MAX_CONFIG_BYTES = 8 * 2**20


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet (GPT-2's): each byte as one printable character.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, ...) are
    moved, in order, to the characters from U+0100 up.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def _token_content(value: Any) -> str | None:
    """A special token named in tokenizer_config.json: a string or a serialised AddedToken."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path, limit: int) -> Any:
    try:
        size = path.stat().st_size
        if size > limit:
            raise BadFileError(f"{path.name} is too large to be a tokenizer file ({size:,} bytes).")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadFileError(f"{path.name} cannot be read as JSON: {exc}") from exc


def _config_template(config: dict[str, Any]) -> str | None:
    """``chat_template`` of a tokenizer_config.json: a string, or a list of named templates."""
    value = config.get("chat_template")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next((t for t in named.values() if isinstance(t, str)), None)
        return chosen if isinstance(chosen, str) else None
    return None


class MiniMindTokenizer:
    """A ``tokenizers.Tokenizer`` with MiniMind's special tokens and chat template.

    Build it with :meth:`from_dir` (a folder with tokenizer.json) or :meth:`from_file`.
    ``bos_token`` / ``eos_token`` / ``pad_token`` come from tokenizer_config.json when it has
    them, else from the vocabulary (``<|im_start|>`` ... or the legacy ``<s>`` ...).
    """

    def __init__(self, tokenizer: Any, config: dict[str, Any] | None = None, chat_template: str | None = None,
                 name: str = "tokenizer"):
        self._tok = tokenizer
        self.config: dict[str, Any] = dict(config or {})
        self.name = name
        self.chat_template: str | None = chat_template if chat_template is not None else _config_template(self.config)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        defaults = SPECIAL_TOKENS if BOS_TOKEN in vocab or "<s>" not in vocab else LEGACY_SPECIAL_TOKENS
        self.pad_token = self._pick("pad_token", defaults[0], vocab) or self._pick("unk_token", defaults[0], vocab)
        self.bos_token = self._pick("bos_token", defaults[1], vocab)
        self.eos_token = self._pick("eos_token", defaults[2], vocab)
        self.unk_token = self._pick("unk_token", defaults[0], vocab)
        self.bos_id = vocab.get(self.bos_token) if self.bos_token else None
        self.eos_id = vocab.get(self.eos_token) if self.eos_token else None
        self.pad_id = vocab.get(self.pad_token) if self.pad_token else None
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, t in added.items() if t.special)
        self.added_tokens = {i: t.content for i, t in added.items()}
        self._byte_level = self._decoder_type() == "ByteLevel"
        self._bytes_cache: dict[int, bytes] = {}

    def _pick(self, key: str, default: str, vocab: dict[str, int]) -> str | None:
        token = _token_content(self.config.get(key))
        if token is not None and token in vocab:
            return token
        return default if default in vocab else None

    def _decoder_type(self) -> str | None:
        try:
            decoder = json.loads(self._tok.to_str()).get("decoder") or {}
        except ValueError:
            return None
        return decoder.get("type")

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, config: dict[str, Any] | None = None,
                  chat_template: str | None = None) -> MiniMindTokenizer:
        """Read a tokenizer.json (config and template: as given, not looked up)."""
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise BadFileError(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
        if size > MAX_TOKENIZER_BYTES:
            raise BadFileError(f"{path.name} is too large to be a tokenizer ({size:,} bytes).")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a plain Exception for a bad file
            raise BadFileError(f"{path.name} is not a tokenizers JSON file: {exc}") from exc
        return cls(tok, config, chat_template, name=path.parent.name or path.name)

    @classmethod
    def from_dir(cls, folder: str | os.PathLike) -> MiniMindTokenizer:
        """Read ``folder``/tokenizer.json, with tokenizer_config.json and chat_template.jinja if present."""
        folder = Path(folder)
        tok_path = folder / "tokenizer.json"
        if not tok_path.is_file():
            raise BadFileError(f"{folder} has no tokenizer.json.")
        config: dict[str, Any] = {}
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            loaded = _read_json(config_path, MAX_CONFIG_BYTES)
            if not isinstance(loaded, dict):
                raise BadFileError(f"{config_path.name} is not a JSON object.")
            config = loaded
        template = None
        jinja_path = folder / "chat_template.jinja"
        if jinja_path.is_file():
            try:
                if jinja_path.stat().st_size > MAX_CONFIG_BYTES:
                    raise BadFileError(f"{jinja_path.name} is too large to be a chat template.")
                template = jinja_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise BadFileError(f"{jinja_path.name} cannot be read: {exc}") from exc
        tokenizer = cls.from_file(tok_path, config, template)
        tokenizer.name = folder.name
        return tokenizer

    # -- ids and text -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (MiniMind: 6400)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Any:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; added tokens written in the text (``<|im_start|>``) become their ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; invalid UTF-8 (a character cut off) becomes U+FFFD."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (byte-level tokenizers only; added tokens as UTF-8)."""
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        if token_id in self.added_tokens:
            out = self.added_tokens[token_id].encode("utf-8")
        else:
            token = self._tok.id_to_token(token_id)
            if token is None:
                raise ValueError(f"token id {token_id} is outside the vocabulary ({self.vocab_size})")
            table = unicode_to_byte()
            out = bytes(table[c] for c in token) if all(c in table for c in token) else token.encode("utf-8")
        self._bytes_cache[token_id] = out
        return out

    def stream_decoder(self, skip_special_tokens: bool = True) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                            template: Any = None, **flags: Any) -> str:
        """The prompt text for ``messages``: ``template`` (source or a built-in), else this
        tokenizer's own template, else the MiniMind2 built-in (see :mod:`.templates`)."""
        from . import templates

        chosen = template if template is not None else (self.chat_template or templates.MINIMIND2)
        context = {"bos_token": self.bos_token or "", "eos_token": self.eos_token or "",
                   "pad_token": self.pad_token or "", "unk_token": self.unk_token or ""}
        context.update(flags)
        return templates.render(chosen, messages, add_generation_prompt=add_generation_prompt, **context)


class StreamDecoder:
    """Ids in, text pieces out, never splitting a UTF-8 character.

    ``push(id)`` returns the text that is complete so far (often ``""`` while a multi-byte
    character is half there); ``finish()`` returns what is left (an incomplete character at
    the very end becomes U+FFFD, as in a full decode). ``"".join`` of all the pieces equals
    ``tokenizer.decode(ids, skip_special_tokens)``.
    """

    def __init__(self, tokenizer: MiniMindTokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[int] = []  # for a tokenizer that is not byte-level

    def _skipped(self, token_id: int) -> bool:
        return self.skip_special_tokens and token_id in self.tokenizer.special_ids

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        self.ids.append(token_id)
        if self._skipped(token_id):
            return ""
        if self.tokenizer._byte_level:
            piece = self._utf8.decode(self.tokenizer.token_bytes(token_id))
        else:  # generic: re-decode the ids since the last complete piece
            self._pending.append(token_id)
            decoded = self.tokenizer.decode(self._pending, self.skip_special_tokens)
            if decoded.endswith("\ufffd"):
                return ""
            piece, self._pending = decoded, []
        self.text += piece
        return piece

    def push_many(self, ids: Iterable[int]) -> str:
        return "".join(self.push(i) for i in ids)

    def finish(self) -> str:
        """The held-back rest, and a fresh start for the next sequence."""
        if self.tokenizer._byte_level:
            piece = self._utf8.decode(b"", final=True)
        else:
            piece = self.tokenizer.decode(self._pending, self.skip_special_tokens) if self._pending else ""
            self._pending = []
        self._utf8.reset()
        self.text += piece
        return piece


# -- training our own ----------------------------------------------------------------------
def train_bpe(texts: Iterable[str], vocab_size: int, path: str | os.PathLike, *, min_frequency: int = 2,
              chat_template: str | None = None, model_max_length: int = 32768) -> MiniMindTokenizer:
    """Train a byte-level BPE configured as MiniMind's and write it to the folder ``path``.

    Special tokens ``<|endoftext|>`` ``<|im_start|>`` ``<|im_end|>`` get ids 0, 1, 2 and
    ``<think>`` ``</think>`` ids 3, 4 (added tokens, not special: decoding keeps them); then
    the 256 byte tokens, then the merges. Deterministic: the same texts give the same files.
    Writes tokenizer.json and tokenizer_config.json (bos/eos/pad and ``chat_template``,
    MiniMind2's built-in unless one is given).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from . import templates

    specials = [*SPECIAL_TOKENS, *THINK_TOKENS]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least {256 + len(specials)} (bytes and special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=specials)
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    data = json.loads(tok.to_str())
    for added in data.get("added_tokens", []):
        added["special"] = added["content"] in SPECIAL_TOKENS
    text = json.dumps(data, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_str(text)

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    template = chat_template if chat_template is not None else templates.MINIMIND2.source
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": t in SPECIAL_TOKENS}
            for t in specials
        },
        "additional_special_tokens": [BOS_TOKEN, EOS_TOKEN],
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": PAD_TOKEN,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": template,
    }
    _write_text(folder / "tokenizer.json", text)
    _write_text(folder / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2))
    return MiniMindTokenizer(tok, config, name=folder.name)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
