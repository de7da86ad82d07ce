"""Chat conversations kept on disk: one JSON file per conversation, written as they happen.

The files live in ``<data dir>/chat/conversations/<id>.json`` (:func:`default_folder`), each
written atomically (a temporary file, then a rename), so a crash mid-write leaves the
previous version. A file that cannot be read (damaged, hand-edited, not ours) is skipped by
:meth:`ConversationStore.list` with a note in ``problems``; it never breaks the listing.

No Qt in here: the Chat panel calls this from its own thread.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ...errors import BadFileError, UserError
from ...paths import data_dir

#: A conversation file larger than this is not read.
MAX_FILE_BYTES = 32 * 2**20
FORMAT_VERSION = 1
ROLES = ("system", "user", "assistant", "tool")
TITLE_CHARS = 60
_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def default_folder() -> Path:
    path = data_dir() / "chat" / "conversations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_id(now: float | None = None) -> str:
    """``20250101-120000-a1b2c3``: sortable by creation time, safe as a file name."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def title_from(text: str, limit: int = TITLE_CHARS) -> str:
    """A title from a question: its first non-empty line, cut at ``limit`` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Message:
    """One turn: ``role``, ``content``, the model's ``reasoning`` (its ``<think>`` text, if
    any), ``tokens_per_s`` for generated answers, and when it was ``created``."""

    role: str
    content: str
    reasoning: str | None = None
    tokens_per_s: float | None = None
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content, "created": self.created}
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        if self.tokens_per_s is not None:
            out["tokens_per_s"] = self.tokens_per_s
        return out

    @classmethod
    def from_json(cls, data: Any) -> Message:
        if not isinstance(data, dict):
            raise ValueError("a message is not a JSON object")
        role, content = data.get("role"), data.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise ValueError("a message has no valid role or content")
        reasoning = data.get("reasoning")
        return cls(role, content, reasoning if isinstance(reasoning, str) else None,
                   _number(data.get("tokens_per_s")), _number(data.get("created")) or 0.0)

    def chat(self) -> dict[str, str]:
        """As a chat-template message (``reasoning`` becomes ``reasoning_content``)."""
        out = {"role": self.role, "content": self.content}
        if self.reasoning:
            out["reasoning_content"] = self.reasoning
        return out


@dataclass
class Conversation:
    id: str = field(default_factory=new_id)
    title: str = ""
    created: float = field(default_factory=time.time)
    updated: float = 0.0
    model: str = ""                               # what answered: "MiniMind2-Small (full_sft_512.pth)"
    settings: dict[str, Any] = field(default_factory=dict)   # temperature, top_p, ... (JSON values)
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.updated:
            self.updated = self.created

    @property
    def display_title(self) -> str:
        """The title, else the first question, else "New conversation"."""
        if self.title.strip():
            return self.title.strip()
        first = next((m.content for m in self.messages if m.role == "user" and m.content.strip()), "")
        return title_from(first) if first else "New conversation"

    def add(self, role: str, content: str, reasoning: str | None = None,
            tokens_per_s: float | None = None) -> Message:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        message = Message(role, content, reasoning, tokens_per_s)
        self.messages.append(message)
        if not self.title and role == "user" and content.strip():
            self.title = title_from(content)
        return message

    def chat_messages(self) -> list[dict[str, str]]:
        return [m.chat() for m in self.messages]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "id": self.id, "title": self.title, "created": self.created,
                "updated": self.updated, "model": self.model, "settings": self.settings,
                "messages": [m.to_json() for m in self.messages]}

    @classmethod
    def from_json(cls, data: Any) -> Conversation:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        cid = data.get("id")
        if not isinstance(cid, str) or not _ID.match(cid):
            raise ValueError("no valid conversation id")
        messages = data.get("messages", [])
        if not isinstance(messages, list):
            raise ValueError("'messages' is not a list")
        settings = data.get("settings")
        created = _number(data.get("created")) or 0.0
        return cls(id=cid, title=data["title"] if isinstance(data.get("title"), str) else "",
                   created=created, updated=_number(data.get("updated")) or created,
                   model=data["model"] if isinstance(data.get("model"), str) else "",
                   settings=settings if isinstance(settings, dict) else {},
                   messages=[Message.from_json(m) for m in messages])


@dataclass(frozen=True)
class Summary:
    """What the conversation list shows, without the messages."""

    id: str
    title: str
    created: float
    updated: float
    model: str
    message_count: int
    path: Path


def _quote_block(text: str) -> str:
    return "\n".join(f"> {ln}" if ln else ">" for ln in text.split("\n"))


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "?"


def to_markdown(conv: Conversation) -> str:
    """The conversation as Markdown: a heading per turn, reasoning in a collapsible block."""
    lines = [f"# {conv.display_title}", ""]
    facts = [f"Started {_stamp(conv.created)}", f"last message {_stamp(conv.updated)}"]
    if conv.model:
        facts.append(f"model: {conv.model}")
    lines += [" · ".join(facts), ""]
    if conv.settings:
        lines += ["Settings: " + ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}"
                                           for k, v in sorted(conv.settings.items())), ""]
    names = {"system": "System", "user": "You", "assistant": "Assistant", "tool": "Tool"}
    for m in conv.messages:
        heading = f"## {names.get(m.role, m.role)}"
        if m.tokens_per_s is not None:
            heading += f" ({m.tokens_per_s:.1f} tokens/s)"
        lines += [heading, ""]
        if m.reasoning and m.reasoning.strip():
            lines += ["<details>", "<summary>Thinking</summary>", "", _quote_block(m.reasoning.strip()), "",
                      "</details>", ""]
        lines += [m.content.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ConversationStore:
    """The conversations in one folder (by default under the app's data directory)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        #: Notes on files :meth:`list` skipped (damaged or not ours), one line each.
        self.problems: list[str] = []

    def path(self, conv_id: str) -> Path:
        if not isinstance(conv_id, str) or not _ID.match(conv_id):
            raise UserError(f"{conv_id!r} is not a conversation id.")
        return self.folder / f"{conv_id}.json"

    def new(self, model: str = "", settings: dict[str, Any] | None = None) -> Conversation:
        """A new, empty conversation (written on the first :meth:`save`)."""
        return Conversation(model=model, settings=dict(settings or {}))

    def save(self, conv: Conversation, touch: bool = True) -> Path:
        """Write ``conv`` (atomically); ``touch`` sets its ``updated`` time to now."""
        if touch:
            conv.updated = max(time.time(), conv.created)
        path = self.path(conv.id)
        text = json.dumps(conv.to_json(), ensure_ascii=False, indent=1, allow_nan=False)
        try:
            _write_atomic(path, text)
        except OSError as exc:
            raise UserError(f"Could not save the conversation to {path}: {exc.strerror or exc}") from exc
        return path

    def _read(self, path: Path) -> Conversation:
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise BadFileError(f"{path.name} is too large to be a conversation ({size:,} bytes).")
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            conv = Conversation.from_json(data)
        except BadFileError:
            raise
        except OSError as exc:
            raise BadFileError(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
        except (ValueError, UnicodeDecodeError, RecursionError, KeyError, TypeError) as exc:
            raise BadFileError(f"{path.name} is not a valid conversation file: {exc}") from exc
        if conv.id != path.stem:
            raise BadFileError(f"{path.name} holds conversation {conv.id}, not {path.stem}.")
        return conv

    def load(self, conv_id: str) -> Conversation:
        path = self.path(conv_id)
        if not path.is_file():
            raise UserError(f"There is no conversation {conv_id}.")
        return self._read(path)

    def list(self) -> list[Summary]:
        """Every readable conversation, the most recently updated first."""
        self.problems = []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            if not _ID.match(path.stem):
                continue
            try:
                conv = self._read(path)
            except BadFileError as exc:
                self.problems.append(f"Skipped {exc}")
                continue
            out.append(Summary(conv.id, conv.display_title, conv.created, conv.updated, conv.model,
                               len(conv.messages), path))
        out.sort(key=lambda s: (s.updated, s.id), reverse=True)
        return out

    def rename(self, conv_id: str, title: str) -> Conversation:
        """Give a conversation a title ("" goes back to the first question); keeps ``updated``."""
        conv = self.load(conv_id)
        conv.title = " ".join(title.split())
        self.save(conv, touch=False)
        return conv

    def delete(self, conv_id: str) -> bool:
        """Remove a conversation's file; False if there was none."""
        path = self.path(conv_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise UserError(f"Could not delete {path}: {exc.strerror or exc}") from exc
        return True

    def export_markdown(self, conv_id: str, target: str | os.PathLike) -> Path:
        """Write the conversation as a Markdown file at ``target``."""
        target = Path(target)
        try:
            _write_atomic(target, to_markdown(self.load(conv_id)))
        except OSError as exc:
            raise UserError(f"Could not write {target}: {exc.strerror or exc}") from exc
        return target

    def delete_many(self, ids: Iterable[str]) -> int:
        return sum(self.delete(i) for i in ids)
