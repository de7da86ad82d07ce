"""Live plots re-range in jumps (so their axes are not laid out again at every redraw)."""

import numpy as np
import pyqtgraph as pg

from playground.panels.training import StickyViewBox


def _plot(qtbot):
    w = pg.GraphicsLayoutWidget()
    qtbot.addWidget(w)
    w.resize(400, 300)
    plot = w.addPlot(viewBox=StickyViewBox())
    curve = plot.plot([], [])
    w.show()
    return w, plot, curve


def _settle(qtbot, w):
    w.grab()  # a paint runs the auto-range
    qtbot.wait(10)
    w.grab()


def test_growing_data_changes_the_range_only_now_and_then(qtbot):
    w, plot, curve = _plot(qtbot)
    vb = plot.getViewBox()
    ranges = []
    for n in range(10, 1000, 10):  # a falling loss, 10 points at a time
        x = np.arange(n, dtype=float)
        curve.setData(x, 2.0 * np.exp(-x / 300) + 0.1)
        _settle(qtbot, w)
        ranges.append(tuple(map(tuple, vb.viewRange())))
        (x0, x1), (y0, y1) = ranges[-1]
        assert x0 <= 0 and x1 >= n - 1 and y0 <= 2.0 * np.exp(-(n - 1) / 300) + 0.1 and y1 >= 2.1  # data fits
    changes = sum(a != b for a, b in zip(ranges, ranges[1:]))
    assert changes < 20, changes  # plain auto-range would change at each of the 98 steps


def test_a_known_end_fixes_the_x_axis(qtbot):
    w, plot, curve = _plot(qtbot)
    vb = plot.getViewBox()
    vb.x_end = 500.0
    xs = []
    for n in range(10, 500, 25):
        curve.setData(np.arange(n, dtype=float), np.ones(n))
        _settle(qtbot, w)
        xs.append(tuple(vb.viewRange()[0]))
        assert xs[-1][1] >= 500
    assert len(set(xs[1:])) <= 2
    vb.x_end = None  # the run is over: back to fitting the data (loosely)
    curve.setData(np.arange(100, dtype=float), np.ones(100))
    _settle(qtbot, w)
    assert vb.viewRange()[0][1] < 200
    # A range the user chose is theirs.
    plot.setXRange(20, 30, padding=0)
    curve.setData(np.arange(120, dtype=float), np.ones(120))
    _settle(qtbot, w)
    assert np.allclose(vb.viewRange()[0], (20, 30))


def test_the_auto_range_button_fits_exactly_and_log_x_ignores_the_run_end(qtbot):
    w, plot, curve = _plot(qtbot)
    vb = plot.getViewBox()
    curve.setData(np.arange(130, dtype=float), np.ones(130))
    _settle(qtbot, w)
    vb.scaleBy(x=1.15)  # a small zoom out by the user
    _settle(qtbot, w)
    zoomed = tuple(vb.viewRange()[0])
    plot.autoBtnClicked()  # the 'A' button
    _settle(qtbot, w)
    x0, x1 = vb.viewRange()[0]
    assert (x0, x1) != zoomed and -10 < x0 <= 0 and 129 <= x1 < 140  # fitted, not kept loose
    # Log x from the plot's menu during a live run: the run's end is in linear units.
    vb.x_end = 1000.0
    plot.setLogMode(x=True, y=False)
    _settle(qtbot, w)
    x0, x1 = vb.viewRange()[0]
    assert -1 < x0 and x1 < 3  # log10 of 1..129, not the run's end
