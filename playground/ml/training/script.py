"""What every headless training script shares: its command line, its state file, its end.

The model trainers (:mod:`playground.ml.separation.train`, :mod:`playground.ml.diffusion.train`)
are generators like every job; these helpers make them runnable from a terminal in one way:

* :func:`add_config_arguments` / :func:`config_from_arguments`: one ``--flag`` per field of a
  config dataclass;
* :func:`save_state`: the resumable state, written atomically (a crash never leaves half a file);
* :func:`ended_status`: the run's status in a ``finally`` block (finished, stopped or failed);
* :func:`run_in_terminal`: SIGTERM stops a background run like Ctrl-C, torch gets its threads,
  progress lines are printed, and a stop still saves (exit code 130).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...progress import Progress
from . import runs as runstore


def add_config_arguments(parser: argparse.ArgumentParser, config: Any) -> None:
    for name, default in asdict(config).items():
        kind = _boolean if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)


def _boolean(text: str) -> bool:
    """``--flag yes`` / ``no`` (also true/false, on/off, 1/0): ``bool("no")`` would be True."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, not {text!r}")


def config_from_arguments(cls: type, args: argparse.Namespace) -> Any:
    return cls(**{name: getattr(args, name) for name in asdict(cls())})


def save_state(path: Path, state: dict) -> None:
    """``torch.save(state)`` to ``path`` through a temporary file, so the old state stays until the new one is whole."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def ended_status(status: str) -> str:
    """In a ``finally`` block: a run still RUNNING ended by an exception (FAILED) or by a stop (STOPPED)."""
    if status != runstore.RUNNING:
        return status
    return runstore.FAILED if sys.exc_info()[0] not in (None, GeneratorExit, KeyboardInterrupt) else runstore.STOPPED


def run_in_terminal(gen: Generator[Any, None, dict], threads: int, step_type: type,
                    step_line: Callable[[Any], str], summary: Callable[[dict], str]) -> int:
    """Drive a trainer from the command line: print its progress texts and a step line a minute."""
    def stop_on_term(signum, frame):  # a background run (where Ctrl-C is ignored) stops on SIGTERM
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    if threads:
        import torch

        torch.set_num_threads(threads)
    else:
        from ...devices import configure_torch_threads

        configure_torch_threads()
    last = 0.0
    try:
        while True:
            item = next(gen)
            if isinstance(item, Progress) and item.text:
                print(item.text, flush=True)
            elif isinstance(item, step_type) and time.monotonic() - last > 60:
                last = time.monotonic()
                print(step_line(item), flush=True)
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        gen.close()
        print("stopped: the weights so far are saved", file=sys.stderr)
        return 130
    print(summary(result), flush=True)
    return 0
