"""Turn exceptions into messages a person can read (no tracebacks in dialogs), and a kind.

The kind (:class:`ErrorKind`) lets a panel react to *what* went wrong (offer a smaller
batch after running out of memory, keep the previous model after a bad file) without
parsing the message.
"""

from __future__ import annotations

from enum import Enum


class UserError(Exception):
    """An error whose message is already written for the user (bad input, offline, ...)."""


class BadFileError(UserError):
    """A file the user gave us cannot be used: truncated, the wrong format, unsafe, mismatched."""


class OfflineError(UserError):
    """Something had to be downloaded and the network could not be reached."""


class ErrorKind(Enum):
    OUT_OF_MEMORY = "out of memory"
    BAD_FILE = "bad file"
    OFFLINE = "offline"
    BAD_INPUT = "bad input"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def error_kind(exc: BaseException) -> ErrorKind:
    """What kind of failure ``exc`` is."""
    if _is_out_of_memory(exc):
        return ErrorKind.OUT_OF_MEMORY
    if isinstance(exc, BadFileError):
        return ErrorKind.BAD_FILE
    if isinstance(exc, OfflineError):
        return ErrorKind.OFFLINE
    if isinstance(exc, (UserError, ValueError)):
        return ErrorKind.BAD_INPUT
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return ErrorKind.BAD_FILE
    if isinstance(exc, (GeneratorExit, KeyboardInterrupt)) or type(exc).__name__ == "JobCancelled":
        return ErrorKind.CANCELLED
    return ErrorKind.INTERNAL


def friendly_message(exc: BaseException) -> str:
    """One or two readable sentences for ``exc``; the traceback goes to the log instead."""
    if isinstance(exc, UserError):
        return str(exc)
    name = type(exc).__name__
    text = str(exc).strip() or name
    if isinstance(exc, MemoryError):
        return "Out of memory. Try a smaller batch size, model or data set."
    if _is_out_of_memory(exc):
        return ("Out of memory on the compute device. Try a smaller batch size or model, "
                "or switch the device to CPU. (" + text.splitlines()[0][:200] + ")")
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {exc.filename or text}"
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename or text}"
    first = text.splitlines()[0][:300]
    return f"{name}: {first}" if name not in first else first
