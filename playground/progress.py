"""The one value type that jobs yield to report progress.

It lives outside ``jobs`` so that the ML core can yield progress without importing Qt.
Anything else a job yields is a partial result, delivered to the panel as it is.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """How far a job has come: ``fraction`` in [0, 1] (or None when unknown) and a short text."""

    fraction: float | None
    text: str = ""


def finish(steps: Generator[Any, Any, T]) -> T:
    """Run a job's generator to its end, dropping what it yields, and return its result (for scripts)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
