"""The shared live-plot pieces: Series, RunCurves from CurveSpecs, MeteredRedraw, TwinAxisPlot."""

import time

import numpy as np
import pyqtgraph as pg

from playground.widgets.plots import CurveSpec, MeteredRedraw, RunCurves, Series, TwinAxisPlot, ema, live_plot


def test_series_grows_and_keeps_order():
    s = Series()
    s.extend(range(200))
    s.extend(np.arange(200, 1000))
    assert s.n == 1000 and np.array_equal(s.values, np.arange(1000))


def test_run_curves_draw_each_spec_from_its_table(qtbot):
    w = pg.GraphicsLayoutWidget()
    qtbot.addWidget(w)
    plots = {"a": live_plot(w, 0, 0, "A"), "b": live_plot(w, 0, 1, "B")}
    plots["a"].addLegend()
    specs = [CurveSpec("raw", "a", "steps", "loss", style="faint"),
             CurveSpec("smooth", "a", "steps", "loss", smoothed=True, legend="{name}"),
             CurveSpec("acc", "b", "epochs", "acc", symbol="o")]
    c = RunCurves("r1", "run one", (200, 0, 0), plots, specs, ("step", "loss"), ("step", "acc"))
    c.add_steps([{"step": k, "loss": float(10 - k)} for k in range(10)])
    c.add_epochs([{"step": 5, "acc": 0.5}, {"step": 10}])  # a missing value becomes NaN
    c.redraw("step", 0.5)
    x, y = c.items["raw"].getData()
    assert np.array_equal(x, np.arange(10)) and np.array_equal(y, 10 - np.arange(10))
    assert np.allclose(c.items["smooth"].getData()[1], ema(10 - np.arange(10.0), 0.5))
    assert c.epochs["acc"].n == 2 and np.isnan(c.epochs["acc"].values[1])
    assert c.plot_items == {"a": ("raw", "smooth"), "b": ("acc",)}
    c.redraw("step", 0.0, plot="b")  # only plot b's curves
    assert len(c.items["acc"].getData()[0]) == 2
    c.set_visible(False)
    assert not c.visible
    c.remove(plots)
    assert not plots["a"].listDataItems() and not plots["b"].listDataItems()


def test_metered_redraw_stretches_its_interval_when_ticks_are_slow(qtbot):
    calls = []

    def tick():
        calls.append(time.perf_counter())
        time.sleep(0.02)  # 20 ms of drawing per tick
        return len(calls) < 4

    m = MeteredRedraw(tick, min_ms=10, max_ms=5000, duty=0.1)
    m.poke()
    qtbot.waitUntil(lambda: len(calls) >= 3, timeout=5000)
    # 20 ms per tick at a 10% duty: about 200 ms between ticks, not 10 ms.
    assert m.interval_ms >= 150
    assert calls[2] - calls[1] >= 0.15
    qtbot.waitUntil(lambda: not m.timer.isActive(), timeout=5000)  # nothing more to draw: it stops


def test_twin_axis_plot_puts_each_curve_on_its_axis(qtbot):
    p = TwinAxisPlot("t", "x", ("QE", "quantization"), ("TE", "topographic"))
    qtbot.addWidget(p)
    p.set_data([0, 1, 2], [3.0, 2.0, 1.0], [0.1, 0.05, 0.0])
    assert list(p.left_curve.getData()[1]) == [3.0, 2.0, 1.0]
    assert list(p.right_curve.getData()[1]) == [0.1, 0.05, 0.0]
    assert p.right_curve in p.right_view.addedItems
