"""Live plots that cost the GUI thread little: shared by every tab that draws curves.

* :func:`configure_pyqtgraph`: the app's pyqtgraph look, set once by the window (never
  from inside one panel).
* :func:`ema`: TensorBoard's smoothing (a debiased exponential moving average).
* :class:`Series`: a growable float64 column, appended in batches, drawn as a view.
* :class:`StickyViewBox`: a ViewBox whose automatic range moves in jumps, so a growing
  curve does not make the axes lay out their ticks again at every redraw.
* :class:`MeteredGraphics`: a pyqtgraph layout widget whose paint time is counted.
* :class:`RunCurves`: one run's data (step and epoch tables) and its curves in several
  plots, described by :class:`CurveSpec` rows.
* :class:`MeteredRedraw`: a timer that redraws a little at a time and stretches its
  interval so drawing stays under a share of the wall time (the GUI thread shares
  Python's GIL with the worker that trains).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QGraphicsItem
from scipy.signal import lfilter  # imported up front: its first import takes ~0.2 s

from .pictures import PaintMeter, metered

_configured = False


def configure_pyqtgraph() -> None:
    """White plots with black text, no antialiasing (cheaper lines): once, for the whole app."""
    global _configured
    if not _configured:
        pg.setConfigOptions(antialias=False, background="w", foreground="k")
        _configured = True


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average (weight 0 = raw)."""
    if weight <= 0 or len(values) == 0:
        return values
    finite = np.where(np.isfinite(values), values, 0.0)
    smoothed = lfilter([1 - weight], [1, -weight], finite)
    debias = 1 - weight ** np.arange(1, len(values) + 1)
    return smoothed / debias


class Series:
    """A growable float64 column (amortised appends, views for drawing)."""

    def __init__(self) -> None:
        self._data = np.empty(256)
        self.n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        need = self.n + len(values)
        if need > len(self._data):
            grown = np.empty(max(need, 2 * len(self._data)))
            grown[:self.n] = self._data[:self.n]
            self._data = grown
        self._data[self.n:need] = values
        self.n = need

    @property
    def values(self) -> np.ndarray:
        return self._data[:self.n]


class MeteredGraphics(pg.GraphicsLayoutWidget):
    """pyqtgraph's layout widget, with its painting time counted in :class:`PaintMeter`."""

    paintEvent = metered(pg.GraphicsLayoutWidget.paintEvent)


class StickyViewBox(pg.ViewBox):
    """A ViewBox whose automatic range moves in jumps, not at every new point.

    Auto-ranging to data that grows by a few points at a time changes the range at every
    redraw, and each change makes the axes lay out their ticks and texts again (most of
    the cost of a live plot's paint). Here the automatic range keeps what it has while the
    data still fits and fills at least 1/LOOSEST of it; when it must move, it leaves room
    ahead (HEADROOM of the span), so growing curves re-range only now and then. A range
    the user sets (zoom, pan) is theirs, as in pyqtgraph.
    """

    HEADROOM = 0.25
    LOOSEST = 1.6

    #: Where the x data will end (a live run's last step or epoch), when known: the x axis
    #: then spans it from the start and does not move at all.
    x_end: float | None = None

    _fit_next = False  # the user asked for auto-range ('A' button, menu): fit exactly once

    def enableAutoRange(self, axis=None, enable=True, x=None, y=None):  # noqa: N802 - pyqtgraph API
        # (setRange also calls this, to turn auto-range *off*: that is not a request to fit)
        if x not in (None, False) or y not in (None, False) or (x is None and y is None and enable):
            self._fit_next = True
        return super().enableAutoRange(axis, enable, x, y)

    def fit_now(self) -> None:
        """Fit the data exactly, once, on the axes where auto-range is on (a live run ended)."""
        if any(self.state["autoRange"]):
            self._fit_next = True
            self.updateAutoRange()

    def setRange(self, rect=None, xRange=None, yRange=None, *args, **kwargs):  # noqa: N802 - pyqtgraph API
        if self._updatingRange and rect is None and self._fit_next:
            self._fit_next = False  # a plain fit, as pyqtgraph would
        elif self._updatingRange and rect is None:  # called by updateAutoRange
            current = self.viewRange()
            log_x = self.state["logMode"][0]
            pan_x, pan_y = self.state["autoPan"]
            if pan_x or pan_y:  # "Auto pan only": pyqtgraph's own behaviour
                return super().setRange(rect, xRange, yRange, *args, **kwargs)
            if xRange is not None and self.x_end is not None and not log_x and xRange[1] <= self.x_end * 1.03:
                end, lo = self.x_end * 1.03, float(xRange[0])
                keep = current[0][1] == end and lo - 0.06 * end <= current[0][0] <= lo
                xRange = None if keep else (lo - 0.03 * end, end)
            else:
                xRange = self._sticky(current[0], xRange, grow_down=False)
            yRange = self._sticky(current[1], yRange, grow_down=True)
            if xRange is None and yRange is None:
                return
        return super().setRange(rect, xRange, yRange, *args, **kwargs)

    def _sticky(self, current, wanted, grow_down: bool):
        if wanted is None:
            return None
        lo, hi = float(wanted[0]), float(wanted[1])
        span = hi - lo
        c_lo, c_hi = current
        slack = 0.015 * span  # pyqtgraph pads the data by ~2%: a little less padding is fine
        if span > 0 and c_lo <= lo + slack and hi - slack <= c_hi and (c_hi - c_lo) <= span * self.LOOSEST:
            return None  # still fits, not too loose: keep the axes as they are
        room = span * self.HEADROOM
        return (lo - room if grow_down else lo, hi + room)


def live_plot(layout: pg.GraphicsLayoutWidget, row: int, col: int, title: str, axis_width: int = 52) -> pg.PlotItem:
    """A plot made for live data: a sticky view box, a fixed left-axis width (new tick
    labels would otherwise resize the plots, and every resize repaints them all) and axes
    kept as pixmaps between range changes (a repaint copies them instead of drawing every
    label again)."""
    plot = layout.addPlot(row=row, col=col, title=title, viewBox=StickyViewBox())
    plot.showGrid(x=False, y=True, alpha=0.2)
    plot.getAxis("left").setWidth(axis_width)
    for side in ("left", "bottom"):
        plot.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    return plot


@dataclass(frozen=True)
class CurveSpec:
    """One curve of a run: which plot, which table and column, and how it looks."""

    name: str  # the curve's key in RunCurves.items
    plot: str  # the key of the plot it is drawn in
    table: str  # "steps" or "epochs"
    y: str  # the column drawn
    style: str = "solid"  # "solid", "dash" or "faint" (a light line under a smoothed one)
    symbol: str | None = None  # a pyqtgraph symbol ("o") at each point
    legend: str | None = None  # legend text; "{name}" is the run's name; None: no legend entry
    smoothed: bool = False  # drawn through ema() with the smoothing weight


class RunCurves:
    """One run's data and its curves in every plot, as ``specs`` describe them."""

    def __init__(self, run_id: str, name: str, color, plots: dict[str, pg.PlotItem], specs: Iterable[CurveSpec],
                 step_keys: Iterable[str], epoch_keys: Iterable[str]) -> None:
        self.run_id, self.name, self.color = run_id, name, color
        self.status = ""
        self.specs = {s.name: s for s in specs}
        self.steps = {k: Series() for k in step_keys}
        self.epochs = {k: Series() for k in epoch_keys}
        self.plot_items: dict[str, tuple[str, ...]] = {}
        for s in self.specs.values():
            self.plot_items[s.plot] = self.plot_items.get(s.plot, ()) + (s.name,)
        raw_color = pg.mkColor(color)
        raw_color.setAlpha(60)
        pens = {"solid": pg.mkPen(color, width=1.6), "dash": pg.mkPen(color, width=1.6, style=Qt.PenStyle.DashLine),
                "faint": pg.mkPen(raw_color, width=1)}
        self.items = {
            s.name: plots[s.plot].plot([], [], pen=pens[s.style], symbol=s.symbol, symbolSize=5, symbolBrush=color,
                                       symbolPen=None, name=s.legend.format(name=name) if s.legend else None,
                                       skipFiniteCheck=True, autoDownsample=True, clipToView=True,
                                       downsampleMethod="peak")
            for s in self.specs.values()}

    def add_steps(self, points: list[dict]) -> None:
        for k, column in self.steps.items():
            column.extend([p.get(k, np.nan) for p in points])

    def add_epochs(self, points: list[dict]) -> None:
        for k, column in self.epochs.items():
            column.extend([p.get(k, np.nan) for p in points])

    def add_columns(self, steps: dict[str, np.ndarray], epochs: dict[str, np.ndarray]) -> None:
        """A stored run's metrics as columns ({"step": array, "loss": array, ...})."""
        for table, columns in ((self.steps, steps), (self.epochs, epochs)):
            n = max((len(v) for v in columns.values()), default=0)
            for k, column in table.items():
                column.extend(columns.get(k, np.full(n, np.nan)))

    def redraw(self, xkey: str, smoothing: float, plot: str | None = None) -> None:
        """Give the curves their data (every plot's, or only ``plot``'s)."""
        names = self.plot_items[plot] if plot else list(self.specs)
        for name in names:
            s = self.specs[name]
            table = self.steps if s.table == "steps" else self.epochs
            y = table[s.y].values
            self.items[name].setData(table[xkey].values, ema(y, smoothing) if s.smoothed else y)

    def set_visible(self, visible: bool) -> None:
        for item in self.items.values():
            item.setVisible(visible)

    @property
    def visible(self) -> bool:
        return any(item.isVisible() for item in self.items.values())

    def remove(self, plots: dict[str, pg.PlotItem]) -> None:
        for item in self.items.values():
            for plot in plots.values():
                if item in plot.listDataItems():
                    plot.removeItem(item)


class MeteredRedraw(QObject):
    """Calls ``tick()`` on a timer whose interval keeps drawing under ``duty`` of the time.

    ``tick()`` draws a little (one plot, say) and returns True while it has more to draw.
    What a tick cost is its own time plus the paints that followed it (counted by
    :class:`PaintMeter`); the next interval is that cost / ``duty``, kept between
    ``min_ms`` and ``max_ms``. The timer stops when ``tick()`` returns False and ``keep_going()`` is False.
    """

    def __init__(self, tick: Callable[[], bool], *, min_ms: int, max_ms: int, duty: float,
                 keep_going: Callable[[], bool] = lambda: False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tick, self._keep_going = tick, keep_going
        self.min_ms, self.max_ms, self.duty = min_ms, max_ms, duty
        self._paint_mark = PaintMeter.total
        self._cost = 0.0
        self.timer = QTimer(self, interval=min_ms)
        self.timer.timeout.connect(self.run_once)

    def poke(self) -> None:
        """There is something new to draw: make sure the timer runs."""
        if not self.timer.isActive():
            self.timer.start()

    def run_once(self) -> None:
        spent = self._cost + (PaintMeter.total - self._paint_mark)
        t0 = time.perf_counter()
        more = self._tick()
        if not more and not self._keep_going():
            self.timer.stop()
        self._cost = time.perf_counter() - t0
        self._paint_mark = PaintMeter.total
        self.timer.setInterval(int(min(self.max_ms, max(self.min_ms, spent / self.duty * 1000))))

    @property
    def interval_ms(self) -> int:
        return self.timer.interval()


class TwinAxisPlot(pg.PlotWidget):
    """One x axis, two y scales: a solid curve on the left axis and a dashed one on the right
    (the SOM's quantization error beside its topographic error; a loss beside a metric)."""

    def __init__(self, title: str, x_label: str, left: tuple[str, str], right: tuple[str, str],
                 colors=((30, 90, 200), (220, 90, 30)), parent=None) -> None:
        super().__init__(parent, title=title)
        self.setBackground("w")
        self.addLegend(offset=(-5, 5))
        self.setLabel("bottom", x_label)
        (left_axis, left_name), (right_axis, right_name) = left, right
        self.left_curve = self.plot([], [], pen=pg.mkPen(colors[0], width=2), name=left_name)
        self.right_view = pg.ViewBox()
        self.showAxis("right")
        self.scene().addItem(self.right_view)
        axis = self.getAxis("right")
        axis.linkToView(self.right_view)
        axis.setLabel(right_axis)
        axis.setWidth(48)  # room for the tick labels and the title
        axis.enableAutoSIPrefix(False)
        self.right_view.setXLink(self.getPlotItem())
        self.getAxis("left").enableAutoSIPrefix(False)
        self.getAxis("left").setLabel(left_axis)
        self.right_curve = pg.PlotDataItem([], [], pen=pg.mkPen(colors[1], width=2, style=Qt.PenStyle.DashLine))
        self.right_view.addItem(self.right_curve)
        self.getPlotItem().legend.addItem(self.right_curve, right_name)
        main = self.getPlotItem().vb
        main.sigResized.connect(lambda: self.right_view.setGeometry(main.sceneBoundingRect()))

    def set_data(self, x, left_y, right_y) -> None:
        self.left_curve.setData(x, left_y)
        self.right_curve.setData(x, right_y)
