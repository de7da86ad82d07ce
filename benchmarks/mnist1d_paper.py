"""Figure: our MNIST-1D models against the published test accuracies of "Scaling down Deep Learning".

Each model is trained by the dashboard's own trainer with the paper's recipe (Adam, learning
rate 1e-2, batch 100, 6000 steps = 150 epochs of the 4000 training examples, no weight
decay) and evaluated on the official 1000-example test split. Prints ours next to the paper's.

    python benchmarks/mnist1d_paper.py [--models softmax mlp cnn1d gru] [--epochs 150]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The README of the mnist1d repository / the paper's abstract (test accuracy, %).
PAPER = {"softmax": ("logistic regression", 32), "mlp": ("MLP", 68), "cnn1d": ("CNN", 94), "gru": ("GRU", 91)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(PAPER), choices=list(PAPER))
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from playground.devices import configure_torch_threads
    from playground.ml.training.data import load_mnist1d
    from playground.ml.training.trainer import TrainConfig, run_to_end

    configure_torch_threads()
    data = load_mnist1d()
    rows = []
    for model in args.models:
        cfg = TrainConfig(dataset="mnist1d", model=model, optimizer="adam", lr=1e-2, batch_size=100,
                          epochs=args.epochs, weight_decay=0.0, dropout=0.0, seed=42, device=args.device)
        t0 = time.perf_counter()
        result = run_to_end(cfg, data=data)
        rows.append((model, result.final_val_acc * 100, result.best_val_acc * 100, result.steps,
                     time.perf_counter() - t0))
        print(f"  {model}: final {rows[-1][1]:.1f}%  best {rows[-1][2]:.1f}%  ({rows[-1][4]:.0f} s)", flush=True)
    print()
    print(f"{'model':<32}{'paper':>8}{'ours (final)':>14}{'ours (best)':>13}{'diff':>8}{'steps':>8}{'time':>8}")
    for model, final, best, steps, secs in rows:
        label, paper = PAPER[model]
        print(f"{model + ' (' + label + ')':<32}{paper:>7}%{final:>13.1f}%{best:>12.1f}%{final - paper:>+8.1f}"
              f"{steps:>8}{secs:>7.0f}s")


if __name__ == "__main__":
    main()
