"""The Diffusion tab's slider: moving it redraws a 4x4 grid in under 16 ms per step.

The tab (offscreen, 1280x800 window) samples a 4x4 grid (16 samples) with DDIM in ``--steps``
steps from the embedded digits model (``--faces``: the faces model; a random UNet of the same
architecture when the weights are not there: drawing does not depend on them). Then the slider
is moved step by step through the whole trajectory, forwards and back, and each move is
timed until every widget it changed is painted (x_t, x0 and noise grids, the
schedule plot's marker, the Learn panel's live values). Nothing is recomputed: the pictures
were made in the worker while sampling.

The anchor is the issue's budget (16 ms, one frame at 60 Hz): printed beside our median and
95th percentile as a ratio. The last line is ``all goals met`` or ``goals missed: ...``.

    python benchmarks/diffusion_slider.py [--steps 50] [--faces] [--repeats 2]
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
os.environ["PLAYGROUND_DATA_DIR"] = tempfile.mkdtemp(prefix="playground-bench-")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_MS = 16.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--faces", action="store_true", help="the 32 px RGB faces model instead of the digits")
    p.add_argument("--repeats", type=int, default=2, help="passes through the trajectory (forwards, then back)")
    args = p.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from playground.app import AppContext, MainWindow
    from playground.ml.diffusion import models, scrub
    from playground.panels.diffusion import DiffusionPanel
    from playground.settings import Settings

    name = "ddpm-faces-32.safetensors" if args.faces else "ddpm-digits-16.safetensors"
    if not (ROOT / "resources" / name).exists():
        unet = (models.faces_unet(0) if args.faces else models.digits_unet(0)).eval()
        loaded = models.describe(models.DiffusionModel(unet), f"random {name}", "benchmark")
        scrub.load_default = scrub.load_default_faces = lambda: loaded
        print(f"{name} is not there: a random UNet of its architecture stands in")

    app = QApplication.instance() or QApplication([])
    win = MainWindow(AppContext(Settings(Path(os.environ["PLAYGROUND_DATA_DIR"]) / "s.json")))
    win.resize(1280, 800)
    win.show()
    panel = win.panel(DiffusionPanel)
    win.tabs.setCurrentWidget(panel)

    def wait(condition, seconds=600.0):
        end = time.perf_counter() + seconds
        while not condition():
            app.processEvents()
            time.sleep(0.005)
            if time.perf_counter() > end:
                raise TimeoutError("the tab did not get there in time")

    wait(lambda: panel.model is not None)
    if args.faces:
        first = panel.model
        panel.builtin.setCurrentIndex(panel.builtin.findData("faces"))
        panel.picker.load_default()
        wait(lambda: panel.model is not first and not panel.picker.loading)
    panel.steps.setValue(args.steps)
    panel.batch.setValue(16)
    panel.sampler.setCurrentIndex(panel.sampler.findData("ddim"))
    t0 = time.perf_counter()
    panel.start()
    wait(lambda: not panel.running)
    n = len(panel.lanes[0])
    took = time.perf_counter() - t0
    print(f"model: {panel.picker.current.name}; sampled 16 images, {n} recorded steps, in {took:.1f} s")
    cell = panel.views["x_t"]._grid.cells[0].array.shape if panel.views["x_t"].is_grid else None
    print(f"grid: 4x4 samples of {cell} pixels in each of the three views; window {win.width()}x{win.height()}")

    times = []
    order = list(range(n)) + list(range(n - 1, -1, -1))
    for _ in range(args.repeats):
        for k in order:
            t = time.perf_counter()
            panel.slider.setValue(k)
            app.processEvents()    # the update requests: every changed widget is painted before the clock stops
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    median = statistics.median(times)
    p95 = times[int(0.95 * (len(times) - 1))]
    print(f"{len(times)} slider moves: median {median:.2f} ms, 95th percentile {p95:.2f} ms, worst {times[-1]:.2f} ms")
    print(f"ours (95th percentile) {p95:.2f} ms | anchor (budget) {BUDGET_MS:.0f} ms | ratio {p95 / BUDGET_MS:.2f}")
    win.close()
    missed = [] if p95 < BUDGET_MS else [f"slider redraw {p95:.1f} ms (95th percentile) >= {BUDGET_MS:.0f} ms"]
    print("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
