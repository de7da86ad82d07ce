"""The SOM tab's sheet: best-matching unit, the update (online or batch), the neighbourhood, QE and TE.

Written after :mod:`playground.ml.som`: the neighbourhoods are its
:func:`~playground.ml.som.neighborhood_weights` (d is the grid distance on the plane, hex-
and torus-aware; 'halving' uses grid *steps* and no radius), online training multiplies
the neighbourhood by the learning rate, batch training ignores the learning rate and
uses each epoch's starting radius, and the errors are those of ``SOM.quality``, measured
on up to 5,000 samples.

Live values (keys): ``lr`` and ``sigma`` at the latest snapshot, ``step`` (samples seen
online, epochs done in batch mode), ``epoch``, ``qe`` and ``te``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import Formula, Sheet, Symbol

NEIGHBORHOOD_NAMES = {"gaussian": "gaussian", "bubble": "bubble", "mexican_hat": "Mexican hat",
                      "triangle": "triangle", "halving": "halving"}

# h(d, s, sigma) as each neighbourhood formula below writes it (d: grid distance, s: grid steps),
# for a test to hold against ml.som.neighborhood_weights.
NEIGHBORHOOD_FUNCTIONS: dict[str, Callable[[float, float, float], float]] = {
    "gaussian": lambda d, s, sigma: math.exp(-d**2 / (2 * sigma**2)),
    "mexican_hat": lambda d, s, sigma: (1 - d**2 / sigma**2) * math.exp(-d**2 / (2 * sigma**2)),
    "bubble": lambda d, s, sigma: 1.0 if d <= sigma else 0.0,
    "triangle": lambda d, s, sigma: max(0.0, 1 - d / sigma),
    "halving": lambda d, s, sigma: 2.0 ** -s,
}

SIGMA = Symbol(r"\sigma(t)", "sigma", "neighbourhood radius now, in grid steps")
LR = Symbol(r"\eta(t)", "lr", "learning rate now")
DIST = Symbol(r"d_{cj}", "", "distance on the grid between unit j and the BMU c (wrapping round on a torus)")
H = Symbol(r"h_{cj}(t)", "", "how strongly unit j follows a sample whose BMU is c")
STEP = Symbol("t", "step", "samples seen so far (online) or epochs done (batch)", "{:.0f}")
EPOCH = Symbol(r"\mathrm{epoch}", "epoch", "epochs completed", "{:.0f}")


def _bmu() -> Formula:
    return Formula("Best-matching unit (BMU) of a sample x",
                   r"c = \mathrm{arg\,min}_j\ \Vert x - w_j \Vert",
                   [Symbol("x", "", "a sample (a row of the data)"),
                    Symbol(r"w_j", "", "the weights of unit j, a point in the data space")])


def _update(mode: str) -> list[Formula]:
    if mode == "online":
        return [Formula("Online update, one sample at a time (every unit j)",
                        r"w_j \leftarrow w_j + \eta(t)\,h_{cj}(t)\,(x - w_j)", [LR, H, STEP, EPOCH])]
    if mode == "batch":
        return [Formula("Batch update, once an epoch: each unit moves to a weighted mean of the data",
                        r"w_j = \dfrac{\sum_i h_{c(i)j}\,x_i}{\sum_i h_{c(i)j}}",
                        [Symbol(r"c(i)", "", "the BMU of sample i at the start of the epoch"),
                         Symbol(r"h_{c(i)j}", "", "neighbourhood weight, with the epoch's starting radius "
                                                 "(a unit with no weight at all keeps its weights)"),
                         STEP, EPOCH])]
    raise ValueError(f"Unknown SOM mode {mode!r}")


def _neighbourhood(kind: str) -> Formula:
    title = f"Neighbourhood: {NEIGHBORHOOD_NAMES.get(kind, kind)}"
    if kind == "gaussian":
        return Formula(title, r"h_{cj}(t) = \exp\left(-\dfrac{d_{cj}^2}{2\,\sigma(t)^2}\right)", [SIGMA, DIST])
    if kind == "mexican_hat":
        return Formula(title + " (negative beyond d = \u03c3: pushes those units away)",
                       r"h_{cj}(t) = \left(1 - \dfrac{d_{cj}^2}{\sigma(t)^2}\right)"
                       r"\exp\left(-\dfrac{d_{cj}^2}{2\,\sigma(t)^2}\right)", [SIGMA, DIST])
    if kind == "bubble":
        return Formula(title + " (all or nothing)",
                       r"h_{cj}(t) = 1\ \mathrm{if}\ d_{cj} \leq \sigma(t),\ \mathrm{else}\ 0", [SIGMA, DIST])
    if kind == "triangle":
        return Formula(title, r"h_{cj}(t) = \max\left(0,\ 1 - \dfrac{d_{cj}}{\sigma(t)}\right)", [SIGMA, DIST])
    if kind == "halving":
        return Formula(title + " (the radius plays no part)", r"h_{cj} = 2^{-s_{cj}}",
                       [Symbol(r"s_{cj}", "", "grid steps from c to j: |rows| + |columns| apart on a "
                                              "rectangular grid, hops between neighbours on a hexagonal one")])
    raise ValueError(f"Unknown neighbourhood {kind!r}")


def _errors() -> list[Formula]:
    return [
        Formula("Quantization error: how far samples are from their BMU",
                r"\mathrm{QE} = \dfrac{1}{N}\sum_{i=1}^{N} \Vert x_i - w_{c(i)} \Vert",
                [Symbol(r"\mathrm{QE}", "qe", "quantization error at the latest snapshot"),
                 Symbol("N", "", "samples measured (all of them, or 5,000 drawn at random)")]),
        Formula("Topographic error: share of samples whose two best units are not neighbours",
                r"\mathrm{TE} = \dfrac{1}{N}\sum_{i=1}^{N} [\,c_2(i) \notin A(c(i))\,]",
                [Symbol(r"\mathrm{TE}", "te", "topographic error at the latest snapshot"),
                 Symbol(r"c_2(i)", "", "the second-best unit of sample i"),
                 Symbol(r"A(c)", "", "the units adjacent to c: the 8 around it on a rectangular grid "
                                     "(diagonals too), the 6 on a hexagonal one"),
                 Symbol(r"[\,\cdot\,]", "", "1 when the condition holds, else 0")]),
    ]


NOTE = (
    "What to look at. The U-matrix colours every unit by its mean weight distance to its "
    "neighbours: dark valleys are groups of similar units (clusters), light ridges are the "
    "borders between them, where the map stretches across a gap in the data. The "
    "quantization error falls as the map spreads over the data and keeps falling as the "
    "radius shrinks; it is how well the units stand for the samples. The topographic error "
    "says whether the map is well ordered: near 0, similar samples land on neighbouring "
    "units; if it climbs while the radius shrinks, the map has folded or twisted, and a "
    "larger starting radius or more epochs usually cures it. A very small QE with a high "
    "TE means the units fit the data but lost their order."
)


def som_sheet(neighborhood: str, mode: str) -> Sheet:
    """The sheet for the SOM tab with this neighbourhood and training mode (``ml.som``'s names)."""
    formulas = [_bmu(), *_update(mode), _neighbourhood(neighborhood), *_errors()]
    return Sheet("Self-organising map", formulas, NOTE)
