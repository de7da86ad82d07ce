"""Our SOM against MiniSom 2.3.6 on the same work, side by side.

Work: scikit-learn's digits divided by 16 (1797 x 64), a 30 x 30 rectangular map, the
same PCA starting weights for both (computed once by our ``init_weights`` and copied into
MiniSom), gaussian neighbourhood, radius falling linearly from half the map (15) to 1,
learning rate linearly from 0.5 to 0, 10 epochs.

(a) online: MiniSom ``train(data, 10 * n, random_order=True)`` with
    ``decay_function='linear_decay_to_zero'`` and ``sigma_decay_function='linear_decay_to_one'``,
    against ours in online mode, random order (a fresh permutation every epoch).
(b) batch: MiniSom ``train_batch_offline(data, 10)`` against ours in batch mode.
    (MiniSom's batch blends old and new weights with the decaying learning rate; ours
    is Kohonen's plain batch map, where the learning rate plays no part.)

Both maps are scored with MiniSom's own ``quantization_error`` and ``topographic_error``
(our weights are copied into a MiniSom object's ``_weights``); TE(4) is our topographic
error with only the 4 edge neighbours counted as adjacent. Times are the median of
``--repeats`` runs after a warm-up, the two run alternately, training only (for ours: the whole ``fit`` call,
including setup and the final snapshot's QE/TE; snapshots=0 so no intermediate ones).

Torch gets the app's thread setting (``playground.devices.configure_torch_threads``:
one thread per core but one, left to the GUI) unless ``--threads`` says otherwise.
MiniSom is plain numpy and runs its training loop on one core either way.

Usage:  python benchmarks/som_vs_minisom.py [--repeats 5] [--device cpu|cuda] [--size 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

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


def timed_pair(fn_a, fn_b, repeats: int):
    """Median wall times of two functions, run alternately (a, b, a, b, ...) after a warm-up
    of each, so that a change in the machine's load hits both alike. Returns
    (median a, median b, last result of a, last result of b)."""
    result_a, result_b = fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result_a = fn_a()
        times_a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result_b = fn_b()
        times_b.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b), result_a, result_b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="torch device for our map: cpu or cuda")
    ap.add_argument("--size", type=int, default=30, help="map side (default 30)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default="online,batch")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: as the app sets them)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        configure_torch_threads()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu.", file=sys.stderr)
        return 2

    x = (load_digits().data / 16.0).astype(np.float64)
    n, dim = x.shape
    size, epochs = args.size, args.epochs
    sigma0 = size / 2
    start = SOM(SOMConfig(rows=size, cols=size), dim)
    start.init_weights(x, "pca")
    w0 = start.weights.numpy().astype(np.float64)  # (size*size, dim), the same start for both

    print(f"digits/16 ({n} x {dim}), {size} x {size} map, PCA init (shared), gaussian, sigma {sigma0:g} -> 1 "
          f"linear, lr 0.5 -> 0 linear, {epochs} epochs; ours on {args.device}; "
          f"median of {args.repeats} after a warm-up; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"start: QE {minisom_scores(w0, x, size, sigma0)[0]:.4f}")
    header = f"{'mode':7s} {'':9s} {'time s':>8s} {'QE':>7s} {'TE':>7s} {'TE(4)':>7s}"
    print(header)
    print("-" * len(header))
    ok = True
    for mode in args.modes.split(","):
        def run_minisom():
            ms = minisom_for(size, dim, sigma0, args.seed)
            ms._weights = w0.reshape(size, size, dim).copy()
            if mode == "online":
                ms.train(x, epochs * n, random_order=True)
            else:
                ms.train_batch_offline(x, epochs)
            return ms._weights.copy()

        config = SOMConfig(rows=size, cols=size, mode=mode, order="random", neighborhood="gaussian",
                           sigma0=sigma0, sigma_end=1.0, lr0=0.5, lr_end=0.0, epochs=epochs,
                           seed=args.seed, snapshots=0)
        x32 = x.astype(np.float32)

        def run_ours():
            som = fit(x32, config, device=args.device, initial_weights=w0)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return som

        t_ms, t_us, w_ms, som = timed_pair(run_minisom, run_ours, args.repeats)
        qe_ms, te_ms = minisom_scores(w_ms, x, size, sigma0)
        qe_us, te_us = minisom_scores(som.weights_grid(), x, size, sigma0)
        ref = SOM(config, dim, weights=w_ms.reshape(-1, dim))
        te4_ms, te4_us = ref.topographic_error(x32, diagonals=False), som.topographic_error(x32, diagonals=False)
        speedup, qe_ratio, te_diff = t_ms / t_us, qe_us / qe_ms, te_us - te_ms
        print(f"{mode:7s} {'MiniSom':9s} {t_ms:8.3f} {qe_ms:7.4f} {te_ms:7.4f} {te4_ms:7.4f}")
        print(f"{'':7s} {'ours':9s} {t_us:8.3f} {qe_us:7.4f} {te_us:7.4f} {te4_us:7.4f}")
        goals = [speedup >= GOAL_SPEEDUP, qe_ratio <= GOAL_QE_RATIO, abs(te_diff) <= GOAL_TE_DIFF]
        ok &= all(goals)
        marks = ["ok" if g else "MISSED" for g in goals]
        print(f"{'':7s} {'ratio':9s} speed-up {speedup:.1f}x ({marks[0]}), QE ratio {qe_ratio:.3f} ({marks[1]}), "
              f"TE difference {te_diff:+.4f} ({marks[2]})")
    print("all goals met" if ok else "some goals missed")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
