"""The Training tab: pick data, a model and hyper-parameters; watch the run learn, live.

Thin by design: the training loop is :func:`playground.ml.training.trainer.train`, run
as a job on the pool; this module only builds the form, draws what the job yields and
manages the runs table.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMessageBox, QPushButton, QSlider, QSpinBox,
                               QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from ..ml.training import runs as runstore
from ..ml.training.data import DATASETS, IMAGE_FOLDER
from ..ml.training.models import MODELS
from ..ml.training.trainer import (OPTIMIZERS, SCHEDULES, Diverged, EpochPictures, EpochPoint, RunStarted,
                                   StepPoint, TrainConfig, train)
from ..errors import friendly_message
from ..jobs import JobState
from ..learn.training import training_sheet
from ..widgets.forms import JobControls, compact_form
from ..widgets.pictures import ConfusionView, FilterGrid, SampleGrid
from ..widgets.plots import (CurveSpec, MeteredGraphics, MeteredRedraw, RunCurves, StickyViewBox,  # noqa: F401
                             ema, live_plot)
from .base import JobRunner, Panel

#: Which models fit each built-in data set before it is loaded (sequences vs images).
SEQUENCE_DATASETS = {"mnist1d"}
SEQUENCE_MODELS = ["softmax", "mlp", "cnn1d", "gru"]
IMAGE_MODELS = ["softmax", "mlp", "lenet", "vgg", "nin", "resnet"]

#: Sensible starting points per model (the optimiser and learning rate the form switches to).
MODEL_DEFAULTS = {
    "softmax": ("adam", 1e-2), "mlp": ("adam", 1e-3), "lenet": ("adam", 1e-2), "vgg": ("adam", 1e-3),
    "nin": ("adam", 1e-3), "resnet": ("adam", 1e-3), "cnn1d": ("adam", 1e-2), "gru": ("adam", 1e-2),
}


@dataclass
class TrainingSettings:
    """What the Training tab remembers between launches (the kit saves it as JSON)."""

    config: TrainConfig = field(default_factory=TrainConfig)
    smoothing: int = 60
    xaxis: str = "step"
    log: bool = False

    def validate(self) -> dict[str, str]:
        return {} if 0 <= self.smoothing <= 99 else {"smoothing": "from 0 to 99"}


#: The curves of a run, in which plot, from which table.
STEP_KEYS = ("step", "epoch", "time", "loss", "lr", "grad_norm")
EPOCH_KEYS = ("step", "epoch", "time", "train_loss", "train_acc", "val_loss", "val_acc")
CURVES = (
    CurveSpec("loss_raw", "loss", "steps", "loss", style="faint"),
    CurveSpec("loss", "loss", "steps", "loss", smoothed=True, legend="{name}"),
    CurveSpec("val_loss", "val", "epochs", "val_loss", style="dash", symbol="o", legend="{name} · val loss"),
    CurveSpec("val_acc", "acc", "epochs", "val_acc", symbol="o", legend="{name}"),
    CurveSpec("train_acc", "acc", "epochs", "train_acc", style="dash"),
    CurveSpec("lr", "lr", "steps", "lr", legend="{name}"),
    CurveSpec("grad_norm", "grad", "steps", "grad_norm", legend="{name}"),
)
PLOTS = ("loss", "val", "acc", "lr", "grad")


class TrainingPanel(Panel):
    title = "&Training"
    settings_key = "training"
    Settings = TrainingSettings
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
        super().__init__(ctx)
        self.store = runstore.RunStore()
        self.current: RunCurves | None = None
        self.curves: dict[str, RunCurves] = {}
        self.classes: list[str] = []
        self._pending_steps: list[dict] = []
        self._color_index = 0
        self._dirty = False
        self._pending_pictures: EpochPictures | None = None
        self._pending_status = ""
        self._learn_values: dict = {}
        self._saved_config = TrainConfig()
        self._plot_order = list(PLOTS)
        self._plot_turn = 0
        self._pictures_drawn_last = False
        # Each tick draws one of the plots, so the interval limits are per plot.
        n = len(self._plot_order)
        self.redraw = MeteredRedraw(self._tick, min_ms=self.REDRAW_MS // n, max_ms=self.MAX_REDRAW_MS // n,
                                    duty=self.DRAW_DUTY, keep_going=lambda: self.running, parent=self)
        self.redraw_timer = self.redraw.timer
        self._build()
        self.refresh_runs()

    # -- layout --------------------------------------------------------------------------
    def _build(self) -> None:
        root = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
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
        root.addWidget(self.with_learn(split, self.learn_sheet()))

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
        self.runner = JobRunner(self.ctx, self.controls, failure_prefix="The run failed", parent=self)
        c = self.controls
        self.form_error, self.progress, self.status = c.form_error, c.progress, c.status
        self.start_button, self.pause_button, self.stop_button = c.start_button, c.pause_button, c.stop_button
        self.dataset.currentIndexChanged.connect(self._on_dataset_changed)
        self.model.currentIndexChanged.connect(self._on_model_changed)
        self.optimizer.currentIndexChanged.connect(self.refresh_learn_sheet)
        self.schedule.currentIndexChanged.connect(self.refresh_learn_sheet)
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

        self.graphics = MeteredGraphics()
        layout.addWidget(self.graphics)
        g = self.graphics
        self.plots = {
            "loss": live_plot(g, 0, 0, "Training loss"),
            "val": live_plot(g, 0, 1, "Validation loss"),
            "acc": live_plot(g, 0, 2, "Accuracy (val ●, train - -)"),
            "lr": live_plot(g, 1, 0, "Learning rate"),
            "grad": live_plot(g, 1, 1, "Gradient norm"),
        }
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
        if cfg.dataset == IMAGE_FOLDER and cfg.folder and not os.path.isdir(cfg.folder):
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

    # -- settings (saved and restored by the kit) -------------------------------------------
    def settings_state(self) -> TrainingSettings:
        cfg, _ = self.config()
        if cfg is not None:
            self._saved_config = replace(cfg, device="cpu", name="")  # the device follows the Device menu
        return TrainingSettings(self._saved_config, self.smoothing.value(), self.xaxis.currentData(),
                                self.logscale.isChecked())

    def apply_settings(self, state: TrainingSettings) -> None:
        self._saved_config = state.config
        self.set_config(state.config)
        self.smoothing.setValue(state.smoothing)
        self.xaxis.setCurrentIndex(max(0, self.xaxis.findData(state.xaxis)))
        self.logscale.setChecked(state.log)

    # -- the Learn panel ------------------------------------------------------------------------
    def learn_sheet(self):
        return training_sheet(self.optimizer.currentData() or "adam", self.schedule.currentData() or "constant")

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
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
        if self.learn is not None:
            self.learn.set_sheet(self.learn_sheet())
        self.runner.start(train, cfg, self.store, name=f"Train {MODELS[cfg.model]}", device=cfg.device,
                          delivery_ms=self.DELIVERY_MS, on_results=self._on_results, on_ended=self._on_ended)
        self.status.setText(f"Starting {MODELS[cfg.model]} on {DATASETS[cfg.dataset]}…")
        self._started_at = time.monotonic()

    def toggle_pause(self) -> None:
        self.runner.toggle_pause()

    def stop(self) -> None:
        self.runner.stop()

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
                self._pending_status = ""  # (an epoch line must not cover the message)
                self.ctx.show_message(item.message, 15000)
        self._flush(steps, epochs)
        self._dirty = True
        self.redraw.poke()

    def _flush(self, steps: list[dict], epochs: list[dict]) -> None:
        if self.current is None or not (steps or epochs):
            return
        if steps:
            self.current.add_steps(steps)
            last = steps[-1]
            self._learn_values.update(loss=last["loss"], lr=last["lr"], step=last["step"],
                                      grad_norm=last["grad_norm"], total_steps=self.total_steps)
        if epochs:
            self.current.add_epochs(epochs)
            last = epochs[-1]
            self._learn_values.update(val_loss=last["val_loss"], train_loss=last["train_loss"], epoch=last["epoch"])
            self._pending_status = (f"Epoch {last['epoch']}: val acc {last['val_acc']:.1%}, "
                                    f"val loss {last['val_loss']:.4f}")

    def _tick(self) -> bool:
        """Draw a little of what arrived: one plot, or the epoch's pictures. True while more is waiting."""
        if self._pending_pictures is not None and not self._pictures_drawn_last:
            # The epoch's pictures get a tick of their own (every other tick at most), so no
            # tick paints much and short epochs do not starve the plots.
            self._on_pictures(self._pending_pictures)
            self._pending_pictures = None
            self._pictures_drawn_last = True
            return True
        self._pictures_drawn_last = False
        if not (self._dirty and self.current is not None):
            return self._pending_pictures is not None
        # One plot per tick, in turn: a paint of one plot is short, so the event loop never
        # waits long, whereas a paint of all five at once can take 50 ms on a slow machine.
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
        if plot == "loss":
            self.update_learn(self._learn_values)
        return True

    def _refresh(self) -> None:
        """Draw what is waiting now (one tick of the metered redraw)."""
        self.redraw.run_once()

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
        if self.learn is not None:
            self.learn.clear_values()
        cfg = item.config
        self._learn_values = {"lr0": cfg.get("lr"), "weight_decay": cfg.get("weight_decay"),
                              "momentum": cfg.get("momentum"), "batch_size": cfg.get("batch_size"),
                              "total_steps": item.total_steps}
        self.update_learn(self._learn_values)
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
        curves = RunCurves(run_id, name, color, self.plots, CURVES, STEP_KEYS, EPOCH_KEYS)
        curves.status = runstore.RUNNING
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

    def _on_ended(self, state: JobState) -> None:
        if state != JobState.FINISHED:
            self._pending_status = ""  # the failure's message (or "Stopped") stays on screen
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
        self.update_learn(self._learn_values)
        if state == JobState.FINISHED and self.job is not None and self.job.value is not None:
            result = self.job.value
            if result.status == runstore.FINISHED:
                best = f"{result.best_val_acc:.1%}" if result.best_val_acc is not None else "n/a"
                self.status.setText(f"Finished: best validation accuracy {best} in {result.seconds:.1f} s")
                self.progress.setValue(1000)
        elif state == JobState.CANCELLED:
            self.status.setText("Stopped. What the run learned so far is kept in the runs table.")
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
        if info.reason:  # why a run is listed as unreadable, or which of its values were not usable
            cells[-1].setToolTip(info.reason)
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
            try:
                self.store.rename(run_id, item.text())
            except OSError as exc:  # a read-only runs folder, say
                self.controls.set_status(f"Could not rename the run: {friendly_message(exc)}", error=True)
                return
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

        def loaded(state: JobState) -> None:
            if self.curves.get(run_id) is not curves:
                return  # removed or replaced meanwhile
            if state == JobState.FINISHED:
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
        job.ended.connect(lambda state: state == JobState.FINISHED and self.ctx.show_message(
            f"Exported {len(ids)} run(s) to {path}"))
        job.failed.connect(lambda message: self.controls.set_status(f"Could not export: {message}", error=True))
        return job
