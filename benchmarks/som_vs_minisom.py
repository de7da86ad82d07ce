"""Our SOM against MiniSom 2.3.6 on the same work, side by side.

Work: scikit-learn's digits divided by 16 (1797 x 64), a 30 x 30 rectangular map, the
same starting weights for both (PCA unless ``--init`` says otherwise, computed by our
``init_weights`` and copied into MiniSom), gaussian neighbourhood, radius falling linearly from half the map (15) to 1,
learning rate linearly from 0.5 to 0, 10 epochs.

(a) online: MiniSom ``train(data, 10 * n, random_order=True)`` with
    ``decay_function='linear_decay_to_zero'`` and ``sigma_decay_function='linear_decay_to_one'``,
    against ours in online mode, random order (a fresh permutation every epoch).
(b) batch: MiniSom ``train_batch_offline(data, 10)`` against ours in batch mode.
    (MiniSom's batch blends old and new weights with the decaying learning rate; ours
    is Kohonen's plain batch map, where the learning rate plays no part.)

Both maps are scored with MiniSom's own ``quantization_error`` and ``topographic_error``
(our weights are copied into a MiniSom object's ``_weights``); TE(4) is our topographic
error with only the 4 edge neighbours counted as adjacent.

QE and TE depend on the seed (the order samples are visited in online mode, and the
starting weights with ``--init random`` or ``samples``; the default PCA start is the same
for every seed, which leaves batch mode, random in nothing else, deterministic). So both
are trained once per seed (``--seeds``, default 5) and QE and TE are given as the mean ±
standard deviation over the seeds. Times are the median of ``--repeats`` timed rounds
after a warm-up, the two run alternately, round r on the (r mod seeds)-th seed, training
only (for ours: the whole ``fit`` call, including setup and the final snapshot's QE/TE;
snapshots=0 so no intermediate ones). The speed-up is the ratio of the two medians,
measured side by side in the same run.

Goals, per mode: speed-up at least 10x; our mean QE at most 5% above MiniSom's mean QE;
the two mean TEs within 0.02 of each other. The last line printed is ``all goals met``
or ``goals missed: ...`` naming each miss; the exit status is 0 or 1 to match.

Torch gets the app's thread setting (``playground.devices.configure_torch_threads``:
one thread per core but one, left to the GUI) unless ``--threads`` says otherwise.
MiniSom is plain numpy and runs its training loop on one core either way.

Usage:  python benchmarks/som_vs_minisom.py [--repeats 5] [--seeds 5] [--first-seed 0] [--init pca|random|samples]
                                           [--device cpu|cuda] [--size 30] [--epochs 10] [--modes online,batch]
                                           [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from minisom import MiniSom
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from playground.devices import configure_torch_threads  # noqa: E402
from playground.ml.som import SOM, SOMConfig, fit  # noqa: E402

GOAL_SPEEDUP = 10.0
GOAL_QE_RATIO = 1.05  # ours at most 5% above MiniSom's
GOAL_TE_DIFF = 0.02  # |ours - MiniSom's|


def minisom_for(size: int, dim: int, sigma0: float, seed: int) -> MiniSom:
    return MiniSom(size, size, dim, sigma=sigma0, learning_rate=0.5, neighborhood_function="gaussian",
                   topology="rectangular", decay_function="linear_decay_to_zero",
                   sigma_decay_function="linear_decay_to_one", random_seed=seed)


def minisom_scores(weights: np.ndarray, data: np.ndarray, size: int, sigma0: float) -> tuple[float, float]:
    """QE and TE by MiniSom's own methods, for any weights (rows, cols, dim)."""
    judge = minisom_for(size, data.shape[1], sigma0, seed=0)
    judge._weights = np.asarray(weights, dtype=np.float64).reshape(size, size, -1).copy()
    return float(judge.quantization_error(data)), float(judge.topographic_error(data))


def spread(values: list[float]) -> str:
    """``mean ± sd`` over the seeds; the sd is the sample one (n - 1), 0 for a single seed."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


@dataclass
class Side:
    """One contender's results in one mode: wall times of the timed rounds, scores per seed."""

    times: list[float] = field(default_factory=list)
    qe: dict[int, float] = field(default_factory=dict)
    te: dict[int, float] = field(default_factory=dict)
    te4: dict[int, float] = field(default_factory=dict)


def run_rounds(fn_a: Callable[[int], Any], fn_b: Callable[[int], Any], seeds: list[int], repeats: int,
               score: Callable[[int, Any, Any], None]) -> tuple[list[float], list[float]]:
    """Wall times of two trainers, run alternately (a, b, a, b, ...) so that a change in the
    machine's load hits both alike, after a warm-up of each.

    Timed round r trains both on seed ``seeds[r % len(seeds)]``, so with as many repeats as
    seeds every timed run also gives one seed's scores; seeds left over when there are more
    seeds than repeats are trained once more, untimed. ``score(seed, result_a, result_b)``
    sees each seed's results once (a seed's run is deterministic, so repeats would add nothing).
    """
    fn_a(seeds[0]), fn_b(seeds[0])
    times_a: list[float] = []
    times_b: list[float] = []
    scored: set[int] = set()
    for r in range(repeats):
        seed = seeds[r % len(seeds)]
        t0 = time.perf_counter()
        result_a = fn_a(seed)
        times_a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result_b = fn_b(seed)
        times_b.append(time.perf_counter() - t0)
        if seed not in scored:
            score(seed, result_a, result_b)
            scored.add(seed)
    for seed in seeds:
        if seed not in scored:
            score(seed, fn_a(seed), fn_b(seed))
    return times_a, times_b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per mode (default 5)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per mode for QE and TE (default 5)")
    ap.add_argument("--first-seed", "--seed", dest="first_seed", type=int, default=0,
                    help="the seeds are first-seed, first-seed + 1, ... (default 0)")
    ap.add_argument("--init", default="pca", choices=["pca", "random", "samples"],
                    help="the shared starting weights (default pca, the same for every seed)")
    ap.add_argument("--device", default="cpu", help="torch device for our map: cpu or cuda")
    ap.add_argument("--size", type=int, default=30, help="map side (default 30)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--modes", default="online,batch")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: as the app sets them)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.seeds < 1:
        ap.error("--repeats and --seeds must be 1 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        configure_torch_threads()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu.", file=sys.stderr)
        return 2

    x = (load_digits().data / 16.0).astype(np.float64)
    x32 = x.astype(np.float32)
    n, dim = x.shape
    size, epochs = args.size, args.epochs
    sigma0 = size / 2
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    starts: dict[int, np.ndarray] = {}

    def start_weights(seed: int) -> np.ndarray:
        """The starting weights both maps get for ``seed``, (size*size, dim), computed once by
        our ``init_weights`` (PCA ignores the seed; random and samples draw with it)."""
        if seed not in starts:
            som = SOM(SOMConfig(rows=size, cols=size, seed=seed), dim)
            som.init_weights(x, args.init)
            starts[seed] = som.weights.numpy().astype(np.float64)
        return starts[seed]

    print(f"digits/16 ({n} x {dim}), {size} x {size} map, {args.init} init (shared), gaussian, sigma {sigma0:g} -> 1 "
          f"linear, lr 0.5 -> 0 linear, {epochs} epochs; ours on {args.device}; times: median of {args.repeats} "
          f"after a warm-up; QE/TE: mean ± sd over {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"start: QE {minisom_scores(start_weights(seeds[0]), x, size, sigma0)[0]:.4f} (seed {seeds[0]})")
    header = f"{'mode':7s} {'':9s} {'time s':>8s} {'QE':>17s} {'TE':>17s} {'TE(4)':>17s}"
    print(header)
    print("-" * len(header))
    missed: list[str] = []
    for mode in args.modes.split(","):
        def run_minisom(seed: int) -> np.ndarray:
            ms = minisom_for(size, dim, sigma0, seed)
            ms._weights = start_weights(seed).reshape(size, size, dim).copy()
            if mode == "online":
                ms.train(x, epochs * n, random_order=True)
            else:
                ms.train_batch_offline(x, epochs)
            return ms._weights.copy()

        def config_for(seed: int) -> SOMConfig:
            return SOMConfig(rows=size, cols=size, mode=mode, order="random", neighborhood="gaussian",
                             sigma0=sigma0, sigma_end=1.0, lr0=0.5, lr_end=0.0, epochs=epochs,
                             seed=seed, snapshots=0)

        def run_ours(seed: int) -> SOM:
            som = fit(x32, config_for(seed), device=args.device, initial_weights=start_weights(seed))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return som

        theirs, ours = Side(), Side()

        def score(seed: int, w_ms: np.ndarray, som: SOM) -> None:
            theirs.qe[seed], theirs.te[seed] = minisom_scores(w_ms, x, size, sigma0)
            ours.qe[seed], ours.te[seed] = minisom_scores(som.weights_grid(), x, size, sigma0)
            ref = SOM(config_for(seed), dim, weights=w_ms.reshape(-1, dim))
            theirs.te4[seed] = ref.topographic_error(x32, diagonals=False)
            ours.te4[seed] = som.topographic_error(x32, diagonals=False)
            print(f"  {mode} seed {seed}: MiniSom QE {theirs.qe[seed]:.4f} TE {theirs.te[seed]:.4f}, "
                  f"ours QE {ours.qe[seed]:.4f} TE {ours.te[seed]:.4f}", flush=True)

        theirs.times, ours.times = run_rounds(run_minisom, run_ours, seeds, args.repeats, score)
        for name, side in (("MiniSom", theirs), ("ours", ours)):
            print(f"{mode if side is theirs else '':7s} {name:9s} {statistics.median(side.times):8.3f} "
                  f"{spread(list(side.qe.values())):>17s} {spread(list(side.te.values())):>17s} "
                  f"{spread(list(side.te4.values())):>17s}")
        speedup = statistics.median(theirs.times) / statistics.median(ours.times)
        qe_ratio = statistics.fmean(ours.qe.values()) / statistics.fmean(theirs.qe.values())
        te_diff = statistics.fmean(ours.te.values()) - statistics.fmean(theirs.te.values())
        goals = {f"{mode} speed-up {speedup:.1f}x < {GOAL_SPEEDUP:g}x": speedup >= GOAL_SPEEDUP,
                 f"{mode} QE ratio {qe_ratio:.3f} > {GOAL_QE_RATIO:g}": qe_ratio <= GOAL_QE_RATIO,
                 f"{mode} TE difference {te_diff:+.4f} beyond ±{GOAL_TE_DIFF:g}": abs(te_diff) <= GOAL_TE_DIFF}
        missed += [what for what, met in goals.items() if not met]
        marks = ["ok" if met else "MISSED" for met in goals.values()]
        print(f"{'':7s} {'ratio':9s} speed-up {speedup:.1f}x ({marks[0]}), QE ratio of means {qe_ratio:.3f} "
              f"({marks[1]}), TE difference of means {te_diff:+.4f} ({marks[2]})")
    print("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
