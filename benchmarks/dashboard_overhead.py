"""Figure: what the live dashboard costs a training run, and how responsive the GUI stays.

Trains the same model on the same data, alternately

* headless: the trainer's generator drained in a plain loop (``run_to_end``), and
* in the app: the Training tab's Start button, the run on the worker pool, every point
  plotted live (offscreen Qt), with a 10 ms QTimer measuring the event loop's worst delay,

and prints throughput (optimisation steps per second of training time) with the dashboard
divided by without. The timer probe runs in separate runs of its own, so that its 100
wake-ups a second do not count against the dashboard's throughput.
Goals (issue 2): ratio >= 0.97, worst timer delay < 50 ms.

    python benchmarks/dashboard_overhead.py [--dataset digits --model mlp --epochs 100 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PLAYGROUND_DATA_DIR", tempfile.mkdtemp(prefix="bench-dashboard-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from playground.app import AppContext, MainWindow
    from playground.settings import Settings
    from playground.devices import configure_torch_threads
    from playground.ml.training.data import load_dataset_now
    from playground.ml.training.runs import RunStore
    from playground.ml.training.trainer import TrainConfig, run_to_end
    from playground.panels.training import TrainingPanel

    threads = configure_torch_threads()  # as the app does, for both paths
    _app = QApplication.instance() or QApplication([])
    data = load_dataset_now(args.dataset)
    cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size)
    store = RunStore(Path(os.environ["PLAYGROUND_DATA_DIR"]) / "headless-runs")

    def headless() -> float:
        result = run_to_end(cfg, store, data=data)
        return result.steps / result.seconds

    def dashboard(probe: bool) -> tuple[float, float]:
        settings = Settings(tempfile.mktemp(suffix=".json"))
        win = MainWindow(AppContext(settings))
        win.resize(1400, 900)
        win.show()
        panel = win.panel(TrainingPanel)
        panel.set_config(cfg)
        panel.model.setCurrentIndex(panel.model.findData(cfg.model))
        panel.lr.setText(f"{cfg.lr:g}")
        panel.optimizer.setCurrentIndex(panel.optimizer.findData(cfg.optimizer))
        # Let the new window paint itself first (its first paint takes ~0.1 s): a user
        # presses Start in a window that is already on the screen.
        settle = QEventLoop()
        QTimer.singleShot(300, settle.quit)
        settle.exec()
        delays: list[tuple[float, float]] = []  # (delay ms, seconds since start)
        clock = QElapsedTimer()
        since = time.perf_counter()
        timer = QTimer(interval=10)

        def tick():
            if clock.isValid():
                delays.append((clock.nsecsElapsed() / 1e6 - 10.0, time.perf_counter() - since))
            clock.restart()

        timer.timeout.connect(tick)
        if probe:
            timer.start()
        panel.start()
        job = panel.job
        loop = QEventLoop()  # the app's own event loop: it sleeps until something happens
        job.ended.connect(loop.quit)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        if not job.is_done:
            loop.exec()
        gui_share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
        timer.stop()
        result = job.value
        win.close()
        assert result is not None and result.status == "finished", job.error
        if not probe:
            gui_shares.append(gui_share)
        if os.environ.get("BENCH_VERBOSE"):
            worst = ", ".join(f"{d:.0f}@{t:.2f}" for d, t in sorted(delays)[-5:])
            print(f"  GUI thread busy {gui_share:.1%} of the run; largest delays (ms @ s):", worst)
        return result.steps / result.seconds, max((d for d, _ in delays), default=float("nan"))

    # Warm-up both paths once (imports, first allocations), then alternate.
    headless()
    dashboard(probe=True)
    without, with_, delays, gui_shares = [], [], [], []
    for _ in range(args.repeats):
        without.append(headless())
        with_.append(dashboard(probe=False)[0])  # throughput: no probe timer to disturb it
        delays.append(dashboard(probe=True)[1])  # responsiveness: a separate run with the probe
    a, b = statistics.median(without), statistics.median(with_)
    print(f"model {args.model} on {args.dataset}, {args.epochs} epochs, batch {args.batch_size}, "
          f"{args.repeats} alternating repeats, {os.cpu_count()} CPUs, {threads} torch threads")
    print(f"throughput without dashboard: {a:8.1f} steps/s   (runs: {', '.join(f'{x:.0f}' for x in without)})")
    print(f"throughput with dashboard:    {b:8.1f} steps/s   (runs: {', '.join(f'{x:.0f}' for x in with_)})")
    pairs = [w / h for w, h in zip(with_, without)]  # each pair ran back to back: less drift
    print(f"ratio with/without: {statistics.median(pairs):.3f} median of pairs "
          f"({', '.join(f'{r:.3f}' for r in pairs)}); ratio of medians {b / a:.3f}   (goal >= 0.97)")
    print(f"GUI thread CPU while training: {statistics.median(gui_shares):.1%} of wall time (median): "
          "the GIL it holds is the most the dashboard can take from training")
    print(f"worst 10 ms QTimer delay while training: {max(delays):.1f} ms "
          f"(median over runs {statistics.median(delays):.1f} ms; goal < 50 ms)")


if __name__ == "__main__":
    main()
