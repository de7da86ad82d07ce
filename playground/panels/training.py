"""The Training tab: pick data, a model and hyper-parameters; watch the run learn, live.

Thin by design: the training loop is :func:`playground.ml.training.trainer.train`, run
as a job on the pool; this module only builds the form, draws what the job yields and
manages the runs table.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGraphicsItem,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from scipy.signal import lfilter  # imported up front: its first import takes ~0.2 s

from ..ml.training import runs as runstore
from ..ml.training.data import DATASETS, IMAGE_FOLDER
from ..ml.training.models import MODELS
from ..ml.training.trainer import (
    OPTIMIZERS,
    SCHEDULES,
    Diverged,
    EpochPictures,
    EpochPoint,
    RunStarted,
    StepPoint,
    TrainConfig,
    train,
)
from ..widgets.forms import JobControls, compact_form
from ..widgets.pictures import ConfusionView, FilterGrid, PaintMeter, SampleGrid, metered

#: Which models fit each built-in data set before it is loaded (sequences vs images).
SEQUENCE_DATASETS = {"mnist1d"}
SEQUENCE_MODELS = ["softmax", "mlp", "cnn1d", "gru"]
IMAGE_MODELS = ["softmax", "mlp", "lenet", "vgg", "nin", "resnet"]

#: Sensible starting points per model (the optimiser and learning rate the form switches to).
MODEL_DEFAULTS = {
    "softmax": ("adam", 1e-2), "mlp": ("adam", 1e-3), "lenet": ("adam", 1e-2), "vgg": ("adam", 1e-3),
    "nin": ("adam", 1e-3), "resnet": ("adam", 1e-3), "cnn1d": ("adam", 1e-2), "gru": ("adam", 1e-2),
}


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


class RunCurves:
    """One run's data and its curves in every plot."""

    STEP_KEYS = ("step", "epoch", "time", "loss", "lr", "grad_norm")
    EPOCH_KEYS = ("step", "epoch", "time", "train_loss", "train_acc", "val_loss", "val_acc")

    def __init__(self, run_id: str, name: str, color, plots: dict[str, pg.PlotItem]) -> None:
        self.run_id, self.name, self.color = run_id, name, color
        self.status = runstore.RUNNING
        self.steps = {k: Series() for k in self.STEP_KEYS}
        self.epochs = {k: Series() for k in self.EPOCH_KEYS}
        pen = pg.mkPen(color, width=1.6)
        dash = pg.mkPen(color, width=1.6, style=Qt.PenStyle.DashLine)
        raw_color = pg.mkColor(color)
        raw_color.setAlpha(60)

        def curve(plot: str, pen, symbol=None, name=None):
            return plots[plot].plot([], [], pen=pen, symbol=symbol, symbolSize=5, symbolBrush=color,
                                    symbolPen=None, name=name, skipFiniteCheck=True,
                                    autoDownsample=True, clipToView=True, downsampleMethod="peak")

        self.items = {
            "loss_raw": curve("loss", pg.mkPen(raw_color, width=1)),
            "loss": curve("loss", pen, name=name),
            "val_loss": curve("val", dash, "o", name=f"{name} · val loss"),
            "val_acc": curve("acc", pen, "o", name=name),
            "train_acc": curve("acc", dash, None),
            "lr": curve("lr", pen, name=name),
            "grad_norm": curve("grad", pen, name=name),
        }

    def add_steps(self, points: list[dict]) -> None:
        for k in self.STEP_KEYS:
            self.steps[k].extend([p[k] for p in points])

    def add_epochs(self, points: list[dict]) -> None:
        for k in self.EPOCH_KEYS:
            self.epochs[k].extend([p[k] for p in points])

    def add_columns(self, steps: dict[str, np.ndarray], epochs: dict[str, np.ndarray]) -> None:
        """A stored run's metrics, as :meth:`RunStore.metric_columns` gives them."""
        for table, keys, columns in ((self.steps, self.STEP_KEYS, steps), (self.epochs, self.EPOCH_KEYS, epochs)):
            n = max((len(v) for v in columns.values()), default=0)
            for k in keys:
                table[k].extend(columns.get(k, np.full(n, np.nan)))

    #: The curves drawn in each plot (a live refresh redraws one plot at a time).
    PLOT_ITEMS = {"loss": ("loss_raw", "loss"), "val": ("val_loss",), "acc": ("val_acc", "train_acc"),
                  "lr": ("lr",), "grad": ("grad_norm",)}

    def redraw(self, xkey: str, smoothing: float, plot: str | None = None) -> None:
        """Give the curves their data (every plot's, or only ``plot``'s)."""
        names = self.PLOT_ITEMS[plot] if plot else [n for group in self.PLOT_ITEMS.values() for n in group]
        xs, xe = self.steps[xkey].values, self.epochs[xkey].values
        for name in names:
            if name == "loss_raw":
                self.items[name].setData(xs, self.steps["loss"].values)
            elif name == "loss":
                self.items[name].setData(xs, ema(self.steps["loss"].values, smoothing))
            elif name in self.steps:
                self.items[name].setData(xs, self.steps[name].values)
            else:
                self.items[name].setData(xe, self.epochs[name].values)

    def set_visible(self, visible: bool) -> None:
        for item in self.items.values():
            item.setVisible(visible)

    def remove(self, plots: dict[str, pg.PlotItem]) -> None:
        for item in self.items.values():
            for plot in plots.values():
                if item in plot.listDataItems():
                    plot.removeItem(item)


class TrainingPanel(QWidget):
    COLUMNS = ["", "Name", "Data set", "Model", "Best val acc", "Status"]
    #: While a run is live, points are stored as they arrive and drawn by a timer, at most
    #: every REDRAW_MS and less often when drawing is slow: the GUI thread shares the GIL
    #: with the training thread, so the interval stretches to keep the time spent drawing
    #: (measured by PaintMeter) under DRAW_DUTY of the wall time.
    REDRAW_MS = 250
    DELIVERY_MS = 250  # points arrive in batches at most 4 times a second (and are drawn less often)
    MAX_REDRAW_MS = 3000
    DRAW_DUTY = 0.01

    def __init__(self, ctx) -> None:
        super().__init__()
        self.ctx = ctx
        self.store = runstore.RunStore()
        self.job = None
        self.current: RunCurves | None = None
        self.curves: dict[str, RunCurves] = {}
        self.classes: list[str] = []
        self._pending_steps: list[dict] = []
        self._color_index = 0
        self._dirty = False
        self._pending_pictures: EpochPictures | None = None
        self._pending_status = ""
        self._paint_mark = PaintMeter.total
        self._refresh_cost = 0.0
        self._plot_order = list(RunCurves.PLOT_ITEMS)
        self._plot_turn = 0
        self._pictures_drawn_last = False
        self.redraw_timer = QTimer(self, interval=self.REDRAW_MS)
        self.redraw_timer.timeout.connect(self._refresh)
        self._build()
        self.load_settings()
        self.refresh_runs()
        self._update_buttons()

    # -- layout --------------------------------------------------------------------------
    def _build(self) -> None:
        root = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        root.addWidget(split)
        split.addWidget(self._build_form())
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self._build_plots())
        bottom = QTabWidget()
        bottom.addTab(self._build_pictures(), "Pictures")
        bottom.addTab(self._build_runs(), "Runs")
        self.bottom_tabs = bottom
        right.addWidget(bottom)
        right.setSizes([520, 330])
        split.addWidget(right)
        split.setSizes([300, 980])
        split.setStretchFactor(1, 1)

    def _build_form(self) -> QWidget:
        form_box = QWidget()
        form = QFormLayout(form_box)
        d = TrainConfig()
        self.dataset = QComboBox()
        for key, label in DATASETS.items():
            self.dataset.addItem(label, key)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder with one sub-folder per class")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder)
        folder_row.addWidget(browse)
        self.folder_row = QWidget()
        self.folder_row.setLayout(folder_row)
        folder_row.setContentsMargins(0, 0, 0, 0)
        self.data_note = QLabel("")
        self.data_note.setWordWrap(True)
        self.data_note.setStyleSheet("color: gray")
        self.model = QComboBox()
        self.optimizer = QComboBox()
        for key, label in OPTIMIZERS.items():
            self.optimizer.addItem(label, key)
        self.lr = QLineEdit(f"{d.lr:g}")
        self.schedule = QComboBox()
        for key, label in SCHEDULES.items():
            self.schedule.addItem(label, key)
        self.batch_size = QSpinBox(minimum=1, maximum=65536, value=d.batch_size)
        self.epochs = QSpinBox(minimum=1, maximum=100000, value=d.epochs)
        self.weight_decay = QLineEdit(f"{d.weight_decay:g}")
        self.dropout = QDoubleSpinBox(minimum=0.0, maximum=0.95, singleStep=0.05, value=d.dropout)
        self.val_fraction = QDoubleSpinBox(minimum=0.05, maximum=0.5, singleStep=0.05, value=d.val_fraction)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=d.seed)
        self.run_name = QLineEdit()
        self.run_name.setPlaceholderText("automatic")
        form.addRow("Data set", self.dataset)
        form.addRow("", self.folder_row)
        form.addRow(self.data_note)
        form.addRow("Model", self.model)
        form.addRow("Optimizer", self.optimizer)
        form.addRow("Learning rate", self.lr)
        form.addRow("LR schedule", self.schedule)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Epochs", self.epochs)
        form.addRow("Weight decay", self.weight_decay)
        form.addRow("Dropout", self.dropout)
        form.addRow("Validation split", self.val_fraction)
        form.addRow("Seed", self.seed)
        form.addRow("Run name", self.run_name)
        self.controls = JobControls(self, form, start_text="Start", start_tip="Start a run",
                                    stop_tip="Stop the run; what it learned so far is kept",
                                    start=self.start, stop=self.stop, pause=self.toggle_pause)
        c = self.controls
        self.form_error, self.progress, self.status = c.form_error, c.progress, c.status
        self.start_button, self.pause_button, self.stop_button = c.start_button, c.pause_button, c.stop_button
        self.dataset.currentIndexChanged.connect(self._on_dataset_changed)
        self.model.currentIndexChanged.connect(self._on_model_changed)
        self._on_dataset_changed()
        self.set_config(TrainConfig())  # the defaults, until the saved settings are loaded

        return compact_form(form_box)

    def _build_plots(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Smoothing"))
        self.smoothing = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=99, value=60)
        self.smoothing.setMaximumWidth(160)
        self.smoothing_label = QLabel("0.60")
        controls.addWidget(self.smoothing)
        controls.addWidget(self.smoothing_label)
        controls.addSpacing(12)
        controls.addWidget(QLabel("x axis"))
        self.xaxis = QComboBox()
        for key, label in (("step", "Step"), ("epoch", "Epoch"), ("time", "Wall time (s)")):
            self.xaxis.addItem(label, key)
        controls.addWidget(self.xaxis)
        self.logscale = QCheckBox("Log scale")
        controls.addWidget(self.logscale)
        controls.addStretch(1)
        layout.addLayout(controls)

        pg.setConfigOptions(antialias=False, background="w", foreground="k")
        self.graphics = MeteredGraphics()
        layout.addWidget(self.graphics)
        g = self.graphics
        self.plots = {
            "loss": g.addPlot(row=0, col=0, title="Training loss", viewBox=StickyViewBox()),
            "val": g.addPlot(row=0, col=1, title="Validation loss", viewBox=StickyViewBox()),
            "acc": g.addPlot(row=0, col=2, title="Accuracy (val ●, train - -)", viewBox=StickyViewBox()),
            "lr": g.addPlot(row=1, col=0, title="Learning rate", viewBox=StickyViewBox()),
            "grad": g.addPlot(row=1, col=1, title="Gradient norm", viewBox=StickyViewBox()),
        }
        for plot in self.plots.values():
            plot.showGrid(x=False, y=True, alpha=0.2)
            # A fixed axis width: otherwise new tick labels resize the plots, and every
            # resize repaints all of them.
            plot.getAxis("left").setWidth(52)
            # Axes (with their grid lines) are kept as pixmaps between range changes: a
            # repaint of the plot then copies them instead of drawing every label again.
            for side in ("left", "bottom"):
                plot.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.plots["loss"].addLegend(offset=(-10, 10))
        self.plots["acc"].setYRange(0, 1, padding=0.02)
        self.smoothing.valueChanged.connect(self._on_smoothing)
        self.xaxis.currentIndexChanged.connect(lambda: self._redraw_all())
        self.logscale.toggled.connect(self._on_log)
        return box

    def _build_pictures(self) -> QWidget:
        box = QWidget()
        layout = QHBoxLayout(box)
        self.confusion = ConfusionView()
        self.samples = SampleGrid()
        self.filters = FilterGrid()
        for title, w, stretch in (("Confusion (validation)", self.confusion, 1),
                                  ("Validation samples: prediction ≠ truth in red", self.samples, 2),
                                  ("First-layer filters", self.filters, 1)):
            group = QGroupBox(title)
            QVBoxLayout(group).addWidget(w)
            layout.addWidget(group, stretch)
        return box

    def _build_runs(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.itemChanged.connect(self._on_item_changed)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        for text, slot, tip in (("Show in plots", self.open_selected, "Overlay the selected runs (compare)"),
                                ("Hide all", self.hide_all, "Remove every run from the plots"),
                                ("Rename", self.rename_selected, "Rename the selected run"),
                                ("Delete…", self.delete_selected, "Delete the selected runs from disk"),
                                ("Export CSV…", self.export_selected, "Save the selected runs' metrics as CSV"),
                                ("Refresh", self.refresh_runs, "Read the runs folder again")):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        return box

    # -- form ----------------------------------------------------------------------------
    def _on_dataset_changed(self) -> None:
        key = self.dataset.currentData()
        self.folder_row.setVisible(key == IMAGE_FOLDER)
        names = SEQUENCE_MODELS if key in SEQUENCE_DATASETS else IMAGE_MODELS
        current = self.model.currentData()
        self.model.blockSignals(True)
        self.model.clear()
        for name in names:
            self.model.addItem(MODELS[name], name)
        self.model.blockSignals(False)
        idx = self.model.findData(current)
        self.model.setCurrentIndex(idx if idx >= 0 else 0)
        notes = {"digits": "1797 scikit-learn digits, 8x8; 20% held out for validation (set below).",
                 "mnist1d": "MNIST-1D: 4000 train / 1000 test sequences of length 40 (built offline).",
                 "mnist": "Downloaded once (about 12 MB); 60000 train / 10000 test.",
                 "fashion_mnist": "Downloaded once (about 30 MB); 60000 train / 10000 test.",
                 "cifar10": "Downloaded once (about 170 MB); 50000 train / 10000 test.",
                 IMAGE_FOLDER: "Images resized to 32x32; validation split below."}
        self.data_note.setText(notes.get(key, ""))

    def _on_model_changed(self) -> None:
        opt, lr = MODEL_DEFAULTS.get(self.model.currentData(), ("adam", 1e-3))
        self.optimizer.setCurrentIndex(self.optimizer.findData(opt))
        self.lr.setText(f"{lr:g}")

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder (one sub-folder per class)", self.folder.text())
        if path:
            self.folder.setText(path)

    def config(self) -> tuple[TrainConfig | None, dict[str, str]]:
        """The form as a config, or the problems with it."""
        problems: dict[str, str] = {}

        def number(edit: QLineEdit, field: str, label: str) -> float:
            try:
                value = float(edit.text().strip())
                if not math.isfinite(value):
                    raise ValueError
                return value
            except ValueError:
                problems[field] = f"{label}: '{edit.text()}' is not a number."
                return float("nan")

        cfg = TrainConfig(dataset=self.dataset.currentData(), model=self.model.currentData() or "",
                          optimizer=self.optimizer.currentData(), lr=number(self.lr, "lr", "Learning rate"),
                          schedule=self.schedule.currentData(), batch_size=self.batch_size.value(),
                          epochs=self.epochs.value(),
                          weight_decay=number(self.weight_decay, "weight_decay", "Weight decay"),
                          dropout=self.dropout.value(), seed=self.seed.value(),
                          val_fraction=self.val_fraction.value(), folder=self.folder.text().strip(),
                          device=self.ctx.device, name=self.run_name.text().strip())
        if not problems:
            problems = cfg.validate()
        if cfg.dataset == IMAGE_FOLDER and cfg.folder and not Path(cfg.folder).is_dir():
            problems["folder"] = f"{cfg.folder} is not a folder."
        return (None if problems else cfg), problems

    def set_config(self, cfg: TrainConfig) -> None:
        self.dataset.setCurrentIndex(max(0, self.dataset.findData(cfg.dataset)))
        self.model.setCurrentIndex(max(0, self.model.findData(cfg.model)))
        self.optimizer.setCurrentIndex(max(0, self.optimizer.findData(cfg.optimizer)))
        self.lr.setText(f"{cfg.lr:g}")
        self.schedule.setCurrentIndex(max(0, self.schedule.findData(cfg.schedule)))
        self.batch_size.setValue(cfg.batch_size)
        self.epochs.setValue(cfg.epochs)
        self.weight_decay.setText(f"{cfg.weight_decay:g}")
        self.dropout.setValue(cfg.dropout)
        self.val_fraction.setValue(cfg.val_fraction)
        self.seed.setValue(cfg.seed)
        self.folder.setText(cfg.folder)

    # -- settings --------------------------------------------------------------------------
    def save_settings(self) -> None:
        cfg, _ = self.config()
        s = self.ctx.settings
        if cfg is not None:
            for key, value in cfg.to_dict().items():
                if key not in ("device", "name"):
                    s.setValue(f"training/{key}", value)
        s.setValue("training/smoothing", self.smoothing.value())
        s.setValue("training/xaxis", self.xaxis.currentData())
        s.setValue("training/log", self.logscale.isChecked())

    def load_settings(self) -> None:
        s = self.ctx.settings
        d = TrainConfig().to_dict()
        values = {}
        for key, default in d.items():
            raw = s.value(f"training/{key}", None)
            if raw is None:
                continue
            try:
                values[key] = type(default)(raw) if not isinstance(default, bool) else raw in (True, "true")
            except (TypeError, ValueError):
                pass
        if values:
            cfg = TrainConfig.from_dict({**d, **values})
            if not cfg.validate() or set(cfg.validate()) <= {"folder"}:
                self.set_config(cfg)
        self.smoothing.setValue(int(s.value("training/smoothing", 60)))
        self.xaxis.setCurrentIndex(max(0, self.xaxis.findData(s.value("training/xaxis", "step"))))
        self.logscale.setChecked(s.value("training/log", False) in (True, "true"))

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.job is not None and not self.job.is_done:
            return
        cfg, problems = self.config()
        if cfg is None:
            self.form_error.setText("\n".join(problems.values()))
            return
        self.form_error.setText("")
        self.save_settings()
        # The run's curves (and legend entry) are made now, on the click, not while it trains.
        self.current = self._new_curves(f"pending-{self._color_index}",
                                        cfg.name or f"{MODELS[cfg.model]} · {cfg.dataset}")
        self.progress.setValue(0)
        self.controls.set_status("")
        self.status.setText(f"Starting {MODELS[cfg.model]} on {DATASETS[cfg.dataset]}…")
        self.job = self.ctx.pool.submit(train, cfg, self.store, name=f"Train {MODELS[cfg.model]}",
                                        device=cfg.device, delivery_ms=self.DELIVERY_MS)
        self.job.results.connect(self._on_results)
        self.job.progress.connect(self._on_progress)
        self.job.failed.connect(self._on_failed)
        self.job.ended.connect(self._on_ended)
        self.job.stateChanged.connect(lambda _s: self._update_buttons())
        self._started_at = time.monotonic()
        self._update_buttons()

    def toggle_pause(self) -> None:
        if self.job is None or self.job.is_done:
            return
        if self.job.state == "paused":
            self.job.resume()
            self.status.setText("Resumed")
        else:
            self.job.pause()
            if self.job.state == "paused":
                self.status.setText("Paused")
        self._update_buttons()

    def stop(self) -> None:
        if self.job is not None and not self.job.is_done:
            self.job.cancel()
            self.status.setText("Stopping…")

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.is_done

    def _update_buttons(self) -> None:
        running = self.running
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.pause_button.setText("Resume" if running and self.job.state == "paused" else "Pause")

    def _on_progress(self, fraction: float, text: str) -> None:
        if fraction >= 0:
            self.progress.setValue(int(fraction * 1000))
        if text and (self.job is None or self.job.state != "paused"):
            self.status.setText(text)

    def _on_results(self, items: list) -> None:
        steps, epochs = [], []
        for item in items:
            if isinstance(item, StepPoint):
                steps.append(item.__dict__)
            elif isinstance(item, EpochPoint):
                epochs.append(item.__dict__)
            elif isinstance(item, RunStarted):
                self._flush(steps, epochs)
                steps, epochs = [], []
                self._on_run_started(item)
            elif isinstance(item, EpochPictures):
                self._pending_pictures = item
            elif isinstance(item, Diverged):
                self._flush(steps, epochs)
                steps, epochs = [], []
                if self.current:
                    self.current.status = runstore.DIVERGED
                self.controls.set_status(item.message, error=True)
                self.ctx.show_message(item.message, 15000)
        self._flush(steps, epochs)
        self._dirty = True
        if not self.redraw_timer.isActive():
            self.redraw_timer.start()

    def _flush(self, steps: list[dict], epochs: list[dict]) -> None:
        if self.current is None or not (steps or epochs):
            return
        if steps:
            self.current.add_steps(steps)
        if epochs:
            self.current.add_epochs(epochs)
            last = epochs[-1]
            self._pending_status = (f"Epoch {last['epoch']}: val acc {last['val_acc']:.1%}, "
                                    f"val loss {last['val_loss']:.4f}")

    def _refresh(self) -> None:
        """Draw what arrived since the last refresh: curves, progress, status, pictures."""
        # What the last refresh cost: its own Python time plus the paints that followed it.
        spent = self._refresh_cost + (PaintMeter.total - self._paint_mark)
        t0 = time.perf_counter()
        if self._pending_pictures is not None and not self._pictures_drawn_last:
            # The epoch's pictures get a tick of their own (every other tick at most), so no
            # tick paints much and short epochs do not starve the plots.
            self._on_pictures(self._pending_pictures)
            self._pending_pictures = None
            self._pictures_drawn_last = True
        elif self._dirty and self.current is not None:
            # One plot per tick, in turn: a paint of one plot is short, so the event loop never
            # waits long, whereas a paint of all five at once can take 50 ms on a slow machine.
            self._pictures_drawn_last = False
            plot = self._plot_order[self._plot_turn % len(self._plot_order)]
            self._plot_turn += 1
            self._dirty = self._plot_turn % len(self._plot_order) != 0
            self.current.redraw(self.xaxis.currentData(), self.smoothing.value() / 100, plot)
            if plot == "lr":
                self._fit_lr_axis()
            if self.total_steps:
                self.progress.setValue(int(1000 * self.current.steps["step"].n / self.total_steps))
            if self._pending_status:
                self.status.setText(self._pending_status)
                self._pending_status = ""
        else:
            self._pictures_drawn_last = False
            if not self.running:
                self.redraw_timer.stop()
        self._refresh_cost = time.perf_counter() - t0
        self._paint_mark = PaintMeter.total
        # Each tick draws one of the plots, so the limits are per plot.
        n = len(self._plot_order)
        interval_ms = spent / self.DRAW_DUTY * 1000
        self.redraw_timer.setInterval(int(min(self.MAX_REDRAW_MS / n, max(self.REDRAW_MS / n, interval_ms))))

    def _fit_lr_axis(self) -> None:
        """Start the learning-rate axis at 0 (a constant rate would otherwise float in mid-air)."""
        if self.logscale.isChecked():
            return
        tops = [c.steps["lr"].values.max() for c in self.curves.values()
                if c.steps["lr"].n and c.items["lr"].isVisible()]
        if tops:
            self.plots["lr"].setYRange(0, max(tops) * 1.1, padding=0)

    def _on_run_started(self, item: RunStarted) -> None:
        self.classes = item.classes
        self.total_steps, self.steps_per_epoch = item.total_steps, item.steps_per_epoch
        self._set_x_end()
        if self.current is not None:  # the curves made on Start now belong to this run
            run_id = item.run_id or f"unsaved-{len(self.curves)}"
            self.curves[run_id] = self.curves.pop(self.current.run_id)
            self.current.run_id = run_id
        self.data_note.setText(item.data_note + f" · {item.parameters:,} parameters")
        if item.run_id:
            self._update_run_row(item.run_id)

    def _new_curves(self, run_id: str, name: str) -> RunCurves:
        if run_id in self.curves:
            self.curves.pop(run_id).remove(self.plots)
        color = pg.intColor(self._color_index, hues=9, values=1, maxValue=220)
        self._color_index += 1
        curves = RunCurves(run_id, name, color, self.plots)
        self.curves[run_id] = curves
        return curves

    def _on_pictures(self, pics: EpochPictures) -> None:
        self.confusion.set_matrix(pics.confusion, self.classes, f"Confusion · epoch {pics.epoch}")
        self.samples.set_samples(pics.samples, pics.sample_labels, pics.sample_preds, self.classes)
        self.filters.set_filters(pics.filters)

    def _drop_empty_current(self) -> None:
        """A run that never started (bad folder, offline download) leaves no empty curves behind."""
        if self.current is not None and self.current.run_id.startswith("pending-"):
            self.curves.pop(self.current.run_id).remove(self.plots)
            self.current = None

    def _on_failed(self, message: str) -> None:
        self.controls.set_status(f"The run failed: {message}", error=True)

    def _on_ended(self, state: str) -> None:
        self._drop_empty_current()
        if self.current is not None:
            self.current.redraw(self.xaxis.currentData(), self.smoothing.value() / 100)
            self._fit_lr_axis()
        self._set_x_end()  # no longer running: the axes fit all the data, the last points included
        if self._pending_pictures is not None:
            self._on_pictures(self._pending_pictures)
            self._pending_pictures = None
        self._dirty = True
        self._refresh()
        if state == "finished" and self.job is not None and self.job.value is not None:
            result = self.job.value
            if result.status == runstore.FINISHED:
                best = f"{result.best_val_acc:.1%}" if result.best_val_acc is not None else "n/a"
                self.status.setText(f"Finished: best validation accuracy {best} in {result.seconds:.1f} s")
                self.progress.setValue(1000)
        elif state == "cancelled":
            self.status.setText("Stopped. What the run learned so far is kept in the runs table.")
        self._update_buttons()
        if self.current is not None and not self.current.run_id.startswith("unsaved-"):
            self._update_run_row(self.current.run_id)

    # -- plots -------------------------------------------------------------------------------
    total_steps = steps_per_epoch = 0

    def _set_x_end(self) -> None:
        """While a run is live, its x axis spans the whole run from the start (by step or epoch)."""
        end = None
        if self.running and self.total_steps and self.steps_per_epoch:
            end = {"step": self.total_steps, "epoch": self.total_steps / self.steps_per_epoch}.get(
                self.xaxis.currentData())
        for plot in self.plots.values():
            plot.getViewBox().x_end = end
            if end is None:
                plot.getViewBox().fit_now()

    def _redraw_all(self) -> None:
        self._set_x_end()
        xkey = self.xaxis.currentData()
        for curves in self.curves.values():
            curves.redraw(xkey, self.smoothing.value() / 100)
        label = self.xaxis.currentText()
        for plot in self.plots.values():
            plot.setLabel("bottom", label)
        self._fit_lr_axis()

    def _on_smoothing(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        self._redraw_all()

    def _on_log(self, on: bool) -> None:
        for key in ("loss", "val", "grad", "lr"):
            self.plots[key].setLogMode(y=on)

    # -- runs table ----------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        """Read the runs folder again and list every run, newest first."""
        self.table.blockSignals(True)
        runs = list(reversed(self.store.list_runs()))
        self.table.setRowCount(len(runs))
        for r, info in enumerate(runs):
            self._fill_row(r, info)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.blockSignals(False)

    def _update_run_row(self, run_id: str) -> None:
        """Show one run's current state in its row (a new run gets a new top row)."""
        self.table.blockSignals(True)
        rows = [r for r in range(self.table.rowCount()) if self._row_id(r) == run_id]
        if rows:
            row = rows[0]
        else:
            row = 0
            self.table.insertRow(0)
        self._fill_row(row, self.store.info(run_id))
        self.table.blockSignals(False)

    def _fill_row(self, r: int, info: runstore.RunInfo) -> None:
        shown = QTableWidgetItem()
        shown.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        shown.setCheckState(Qt.CheckState.Checked if info.id in self.curves and
                            self.curves[info.id].items["loss"].isVisible() else Qt.CheckState.Unchecked)
        shown.setData(Qt.ItemDataRole.UserRole, info.id)
        shown.setToolTip("Show this run in the plots")
        cells = [shown, QTableWidgetItem(info.name), QTableWidgetItem(DATASETS.get(info.dataset, info.dataset)),
                 QTableWidgetItem(MODELS.get(info.model, info.model)),
                 QTableWidgetItem("" if info.best_val_acc is None else f"{info.best_val_acc:.2%}"),
                 QTableWidgetItem(info.status)]
        for c, item in enumerate(cells):
            if c > 1:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(r, c, item)

    def _row_id(self, row: int) -> str:
        return self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)

    def selected_ids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self._row_id(r) for r in rows]

    def _gone(self, run_id: str) -> bool:
        """True (and the table refreshed, with a message) when a run's folder has vanished,
        for instance deleted outside the app."""
        if self.store.exists(run_id):
            return False
        self.controls.set_status(f"The run {run_id} is no longer on disk; the table was refreshed.", error=True)
        QTimer.singleShot(0, self.refresh_runs)  # not from inside the table's own signal
        return True

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        run_id = self._row_id(item.row())
        if run_id not in self.curves and self._gone(run_id):
            return
        if item.column() == 0:
            if item.checkState() == Qt.CheckState.Checked:
                self.show_run(run_id)
            elif run_id in self.curves:
                self.curves[run_id].set_visible(False)
        elif item.column() == 1:
            if self._gone(run_id):
                return
            self.store.rename(run_id, item.text())
            if run_id in self.curves:
                self.curves[run_id].name = item.text()

    def show_run(self, run_id: str):
        """Overlay a stored run (or unhide one already drawn). Its file is read by a job (a
        long run's metrics take seconds to parse); the curves fill in when it is done."""
        if run_id in self.curves:
            self.curves[run_id].set_visible(True)
            return None
        if self._gone(run_id):
            return None
        curves = self._new_curves(run_id, self.store.info(run_id).name)
        job = self.ctx.pool.submit(self.store.metric_columns, run_id, name=f"Open run {curves.name}")

        def loaded(state: str) -> None:
            if self.curves.get(run_id) is not curves:
                return  # removed or replaced meanwhile
            if state == "finished":
                curves.add_columns(*job.value)
                curves.redraw(self.xaxis.currentData(), self.smoothing.value() / 100)
                self._fit_lr_axis()
            else:  # failed or cancelled: no empty curves left behind (a later tick tries again)
                self.curves.pop(run_id).remove(self.plots)
                self._update_run_row(run_id)

        job.ended.connect(loaded)
        job.failed.connect(lambda message: self.controls.set_status(f"Could not open the run: {message}", error=True))
        return job

    def open_selected(self) -> None:
        for run_id in self.selected_ids():
            self.show_run(run_id)
        self.refresh_runs()

    def hide_all(self) -> None:
        for curves in self.curves.values():
            curves.set_visible(False)
        self.refresh_runs()

    def rename_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if rows:
            self.table.editItem(self.table.item(rows[0], 1))

    def delete_selected(self, confirm: bool = True) -> None:
        ids = [i for i in self.selected_ids() if not (self.running and self.current and i == self.current.run_id)]
        if not ids:
            return
        if confirm and QMessageBox.question(self, "Delete runs", f"Delete {len(ids)} run(s) from disk?") \
                != QMessageBox.StandardButton.Yes:
            return
        for run_id in ids:
            if run_id in self.curves:
                self.curves.pop(run_id).remove(self.plots)
            if self.store.exists(run_id):  # (already gone, if deleted outside the app)
                self.store.delete(run_id)
        self.refresh_runs()

    def export_selected(self, path: str | None = None):
        ids = self.selected_ids() or [self._row_id(r) for r in range(self.table.rowCount())]
        if not ids:
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export runs as CSV", "runs.csv", "CSV files (*.csv)")
        if not path:
            return None
        job = self.ctx.pool.submit(self.store.export_csv, ids, path, name="Export runs")
        job.ended.connect(lambda state: state == "finished" and self.ctx.show_message(
            f"Exported {len(ids)} run(s) to {path}"))
        job.failed.connect(lambda message: self.controls.set_status(f"Could not export: {message}", error=True))
        return job
