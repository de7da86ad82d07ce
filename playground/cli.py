"""Command line: ``python -m playground`` opens the app; ``python -m playground train ...`` trains headless.

A headless run writes the same run files as the dashboard, so it shows up in the app's runs table.
Ctrl-C or a SIGTERM stops it the way the dashboard's Stop does: the weights so far and the
status ``stopped`` are written before the process exits (more signals meanwhile only wait).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .progress import Progress


@contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """While training: the first SIGINT or SIGTERM raises KeyboardInterrupt (the trainer then
    saves and closes the run); later ones only say that the run is being saved, so that a
    second Ctrl-C cannot cut the saving short, and after the block they are ignored (the
    process is on its way out). Yields the list of signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame) -> None:
        received.append(signum)
        if len(received) == 1:
            raise KeyboardInterrupt
        print("stopping: saving the run first", file=sys.stderr, flush=True)

    wanted = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None]
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield received
    finally:
        for s, old in previous.items():
            # Once stopped, later signals are ignored until the process exits: a late Ctrl-C would
            # otherwise print a traceback, or kill it while Python shuts down (handlers reset then).
            signal.signal(s, signal.SIG_IGN if received else old if old is not None else signal.SIG_DFL)


def _train_parser(sub) -> None:
    from .ml.training.data import DATASETS
    from .ml.training.models import MODELS
    from .ml.training.trainer import OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model headless, writing a run like the dashboard does")
    p.add_argument("--dataset", default=d.dataset, choices=list(DATASETS))
    p.add_argument("--folder", default="", help="image folder (one sub-folder per class) for --dataset folder")
    p.add_argument("--model", default=d.model, choices=list(MODELS))
    p.add_argument("--optimizer", default=d.optimizer, choices=list(OPTIMIZERS))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--schedule", default=d.schedule, choices=list(SCHEDULES))
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:0, mps or auto (default)")
    p.add_argument("--name", default="")
    p.add_argument("--no-save", action="store_true", help="do not keep the run on disk")


def train_main(args: argparse.Namespace) -> int:
    from .devices import parse_device
    from .errors import UserError, friendly_message
    from .ml.training import runs as runstore
    from .ml.training.runs import RunStore
    from .ml.training.trainer import Diverged, EpochPoint, RunStarted, TrainConfig, run_to_end

    try:
        device = parse_device(args.device)
    except UserError as exc:
        print(f"error: --device: {exc}", file=sys.stderr)
        return 2
    cfg = TrainConfig(dataset=args.dataset, model=args.model, optimizer=args.optimizer, lr=args.lr,
                      schedule=args.schedule, batch_size=args.batch_size, epochs=args.epochs,
                      weight_decay=args.weight_decay, dropout=args.dropout, seed=args.seed,
                      folder=args.folder, device=device, name=args.name)
    problems = cfg.validate()
    if problems:
        for field, msg in problems.items():
            print(f"error: --{field.replace('_', '-')}: {msg}", file=sys.stderr)
        return 2

    def show(item):
        if isinstance(item, RunStarted):
            print(f"run {item.run_id or '(not saved)'}: {item.data_note}; {item.parameters:,} parameters on {device}")
        elif isinstance(item, EpochPoint):
            print(f"epoch {item.epoch:3d}  train loss {item.train_loss:.4f}  train acc {item.train_acc:.2%}  "
                  f"val loss {item.val_loss:.4f}  val acc {item.val_acc:.2%}  ({item.time:.1f} s)", flush=True)
        elif isinstance(item, Diverged):
            print(item.message, file=sys.stderr)
        elif isinstance(item, Progress) and item.text.startswith("Downloading") and (item.fraction or 0) >= 1:
            print(item.text)

    with _stop_on_signals() as received:
        try:
            result = run_to_end(cfg, None if args.no_save else RunStore(), on_item=show)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
            return 128 + int(received[0] if received else signal.SIGINT)  # 130 for Ctrl-C, 143 for SIGTERM
        except Exception as exc:  # noqa: BLE001 - the command line prints a message, not a traceback
            print(f"error: {friendly_message(exc)}", file=sys.stderr)
            return 1
    best = f"{result.best_val_acc:.2%}" if result.best_val_acc is not None else "n/a"
    print(f"{result.status}: best val acc {best} in {result.seconds:.1f} s")
    return 0 if result.status == runstore.FINISHED else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="playground", description="Deep Learning Playground")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("gui", help="open the app (the default)")
    _train_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "train":
        return train_main(args)
    from .app import run_app

    return run_app()
