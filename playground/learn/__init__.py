"""What the Learn panel shows: a tab's governing formulas, their symbols and a reading note.

This package is the content, free of Qt, so that it can be tested (and read) on its own:
a :class:`Sheet` holds :class:`Formula` objects written in matplotlib's *mathtext* (a
subset of TeX that matplotlib draws itself, with no LaTeX installed), and each formula
lists its :class:`Symbol` objects, which name the key of their live value in the values
dict a panel sends (``{"lr": 0.001, "step": 120, ...}``).

Some values are not sent by the panels but follow from the ones that are (Adam's bias
corrections from the step, the learning-rate factor from the current and the starting
rate); :func:`derived_values` computes them, and :meth:`Sheet.values_for` merges a sheet's
constants (torch's defaults such as beta_1 = 0.9), the live values and the derived ones.
:func:`render_alpha` draws a formula as a grey-level mask, the one piece of drawing that
does not need Qt (the panel colours it and turns it into a pixmap).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

MISSING = "\u2013"  # an en dash: what a value that is not known (yet) shows as


@dataclass(frozen=True)
class Symbol:
    """One symbol of a formula: how it is written (mathtext), where its live value is, what it means.

    ``key`` is the key of its value in the values dict; an empty key marks a symbol that has
    no single live value (an index, a grid distance), shown with its meaning only.
    """

    name: str
    key: str
    meaning: str
    fmt: str = "{:.4g}"

    def format(self, values: Mapping[str, object]) -> str:
        """The symbol's value from ``values`` as text; "–" when it is missing, NaN or not a number."""
        return format_value(values.get(self.key) if self.key else None, self.fmt)


@dataclass(frozen=True)
class Formula:
    """A titled formula: ``tex`` is matplotlib mathtext source, without the surrounding dollars."""

    title: str
    tex: str
    symbols: list[Symbol] = field(default_factory=list)


@dataclass(frozen=True)
class Sheet:
    """Everything the Learn panel shows for one tab in one configuration.

    ``constants`` are values that do not change during a run but that a reader wants to
    see next to the formula (torch's defaults); live values with the same key win.
    """

    title: str
    formulas: list[Formula]
    note: str
    constants: dict[str, float] = field(default_factory=dict)

    def symbols(self) -> list[Symbol]:
        """Every symbol of every formula, in order (a symbol may appear in several formulas)."""
        return [s for f in self.formulas for s in f.symbols]

    def values_for(self, live: Mapping[str, object]) -> dict[str, object]:
        """Constants, then ``live`` values over them, then what follows from both."""
        merged: dict[str, object] = {**self.constants, **live}
        merged.update(derived_values(merged))
        return merged


def format_value(value: object, fmt: str = "{:.4g}") -> str:
    """``value`` through ``fmt``; "–" for None, NaN and anything that is not a number.

    Booleans are refused too: a True that slipped into the values is not a reading.
    """
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        number = float(value)  # numpy scalars, ints, floats
    except (TypeError, ValueError):
        return MISSING
    if math.isnan(number):
        return MISSING
    for candidate in (value, number, int(number) if number.is_integer() else None):
        try:  # the value as given, as a float, as an int ("{:d}" wants one)
            return fmt.format(candidate)
        except (ValueError, TypeError):
            continue
    return f"{number:.4g}"


def _number(values: Mapping[str, object], key: str) -> float | None:
    """``values[key]`` as a finite float, or None when it is absent or not a usable number."""
    v = values.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def derived_values(values: Mapping[str, object]) -> dict[str, float]:
    """Values that follow from others in ``values``; only those whose inputs are there.

    - ``bias1`` = 1 - beta1^t and ``bias2`` = 1 - beta2^t: Adam's bias-correction
      denominators at step t (``step``; ``beta1``/``beta2``, torch's 0.9/0.999 by default).
      torch counts t from 1 at the first update, and the trainer's ``step`` is the number of
      updates done, so they are the same t.
    - ``progress`` = (t - 1) / T: where in the run the learning rate of update t was taken
      (the trainer computes it from the steps done *before* that update), with T =
      ``total_steps``; clipped at 0 before the first update.
    - ``lr_factor`` = ``lr`` / ``lr0``: the schedule's multiplier, measured.
    """
    out: dict[str, float] = {}
    t = _number(values, "step")
    if t is not None:
        beta1 = _number(values, "beta1")
        beta2 = _number(values, "beta2")
        out["bias1"] = 1.0 - (0.9 if beta1 is None else beta1) ** t
        out["bias2"] = 1.0 - (0.999 if beta2 is None else beta2) ** t
        total = _number(values, "total_steps")
        if total is not None and total > 0:
            out["progress"] = max(t - 1.0, 0.0) / total
    lr, lr0 = _number(values, "lr"), _number(values, "lr0")
    if lr is not None and lr0 is not None and lr0 > 0:
        out["lr_factor"] = lr / lr0
    return out


def render_alpha(tex: str, fontsize: float, dpi: float = 96.0) -> np.ndarray:
    """Draw mathtext ``tex`` (no dollars) at ``fontsize`` points: a uint8 (H, W) coverage mask.

    matplotlib's own rasteriser is used directly (no Figure, no file), which takes a few
    milliseconds a formula. Invalid mathtext raises ValueError, whose message shows the
    source and where the parser stopped.
    """
    from matplotlib.font_manager import FontProperties

    parsed = _parser().parse(f"${tex}$", dpi=dpi, prop=FontProperties(size=fontsize))
    return np.ascontiguousarray(np.asarray(parsed.image, dtype=np.uint8))


@functools.cache
def _parser():
    """One agg MathTextParser for the process (imported late: only drawing needs matplotlib)."""
    from matplotlib.mathtext import MathTextParser

    return MathTextParser("agg")
