"""Turn exceptions into messages a person can read (no tracebacks in dialogs)."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is already written for the user (bad input, offline, ...)."""


def friendly_message(exc: BaseException) -> str:
    """One or two readable sentences for ``exc``; the traceback goes to the log instead."""
    if isinstance(exc, UserError):
        return str(exc)
    name = type(exc).__name__
    text = str(exc).strip() or name
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        return ("Out of memory on the compute device. Try a smaller batch size or model, "
                "or switch the device to CPU. (" + text.splitlines()[0][:200] + ")")
    if isinstance(exc, MemoryError):
        return "Out of memory. Try a smaller batch size, model or data set."
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {exc.filename or text}"
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename or text}"
    first = text.splitlines()[0][:300]
    return f"{name}: {first}" if name not in first else first
