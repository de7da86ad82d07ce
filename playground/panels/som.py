"""The SOM tab: train a Kohonen map on a data set and explore it, live.

The map and its measures live in :mod:`playground.ml.som`, the data sets in
:mod:`playground.ml.som_data`; training runs as a job on the pool. This module builds
the form, draws snapshots as they come, replays them with a slider, and answers the mouse.
"""

from __future__ import annotations

import os
from pathlib import Path

from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QListWidget, QListWidgetItem, QSlider,
                               QSpinBox, QSplitter, QStackedWidget, QVBoxLayout, QWidget)

from ..errors import friendly_message
from ..jobs import JobState
from ..learn.som import som_sheet
from ..ml import som as somlib
from ..ml import som_data
from ..progress import Progress
from ..widgets.forms import JobControls, button, compact_form
from ..widgets.plots import TwinAxisPlot
from ..widgets.som_view import MapView, PlanesView
from .base import JobRunner, Panel

CSV_KEY = "csv"
VIEWS = {"umatrix": "U-matrix", "planes": "Component planes", "hits": "Hit map",
         "labels": "Label map", "prototypes": "Prototypes"}
SAMPLE_LIST_MAX = 2000


@dataclass
class SOMSettings:
    """What the SOM tab remembers between launches (the kit saves it as JSON)."""

    config: somlib.SOMConfig = field(default_factory=somlib.SOMConfig)
    source: str = next(iter(som_data.BUILTIN))
    csv: str = ""
    standardize: bool = True
    view: str = "umatrix"


def train_job(source: str, csv_path: str, label_column: int | None, standardize: bool,
              config: somlib.SOMConfig, device: str):
    """The job: load the data (yielding it), then train the map (yielding snapshots)."""
    yield Progress(None, "Loading data")
    if source == CSV_KEY:
        label = None if label_column is None or label_column < 0 else label_column
        data = yield from som_data.read_csv(csv_path, label_column=label, standardize=standardize)
    else:
        data = som_data.load(source)
    # Refuse a map whose history would not fit in memory, before it is trained.
    som_data.check_snapshot_budget(config.rows, config.cols, data.n_features, config.snapshots,
                                   samples=data.n_samples if data.n_samples <= somlib.METRIC_SAMPLE else 0)
    yield data
    return (yield from somlib.train(data.x, config, device=device))


class SOMPanel(Panel):
    title = "&SOM"
    settings_key = "som"
    Settings = SOMSettings

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.data: som_data.SOMData | None = None
        # What is known of the map's data: the data itself, or for an opened map the
        # description saved with it (names, image shape, standardisation; no samples).
        self.about: som_data.SOMData | None = None
        self.config: somlib.SOMConfig | None = None
        self.snapshots: list[somlib.SOMSnapshot] = []
        self.viewer: somlib.SOM | None = None  # the map being shown (weights of one snapshot)
        self._bmus: np.ndarray | None = None
        self.sample_job = None
        self.loaded_samples = 0  # how many samples the last "Load a sample…" added
        self._build()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        root = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_form())
        split.addWidget(self._build_views())
        split.addWidget(self._build_side())
        split.setSizes([350, 680, 370])
        split.setStretchFactor(1, 1)
        root.addWidget(self.with_learn(split, self.learn_sheet()))
        self.runner.disable_while_running(self.open_button)  # a live run would draw over the opened map

    def _build_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        d = somlib.SOMConfig()
        self.source = QComboBox()
        for key, label in som_data.BUILTIN.items():
            self.source.addItem(label, key)
        self.source.addItem("CSV file…", CSV_KEY)
        self.csv_path = QLineEdit()
        self.csv_path.setPlaceholderText("a .csv file with numeric columns")
        browse = button("Browse…", self._browse_csv)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.csv_path)
        row.addWidget(browse)
        self.csv_row = QWidget()
        self.csv_row.setLayout(row)
        self.label_column = QComboBox()
        self.standardize = QCheckBox("Standardise features (z-score)")
        self.standardize.setChecked(True)
        self.rows = QSpinBox(minimum=2, maximum=100, value=d.rows)
        self.cols = QSpinBox(minimum=2, maximum=100, value=d.cols)
        self.topology = QComboBox()
        self.topology.addItem("Hexagonal", "hexagonal")
        self.topology.addItem("Rectangular", "rectangular")
        self.toroidal = QCheckBox("Toroidal (edges wrap)")
        self.neighborhood = QComboBox()
        for key, label in (("gaussian", "Gaussian"), ("bubble", "Bubble"), ("mexican_hat", "Mexican hat"),
                           ("triangle", "Triangle"), ("halving", "Halving 1/2^(|Δi|+|Δj|)")):
            self.neighborhood.addItem(label, key)
        self.mode = QComboBox()
        self.mode.addItem("Batch (fast)", "batch")
        self.mode.addItem("Online (classic rule)", "online")
        self.order = QComboBox()
        self.order.addItem("Random samples", "random")
        self.order.addItem("Sweep in order", "sweep")
        self.epochs = QSpinBox(minimum=1, maximum=10000, value=d.epochs)
        self.sigma0 = QDoubleSpinBox(minimum=0.0, maximum=200.0, singleStep=0.5, value=0.0, decimals=2)
        self.sigma0.setSpecialValueText("auto (half the map)")
        self.sigma_end = QDoubleSpinBox(minimum=0.01, maximum=100.0, singleStep=0.1, value=d.sigma_end)
        self.lr0 = QDoubleSpinBox(minimum=0.001, maximum=1.0, singleStep=0.05, value=d.lr0, decimals=3)
        self.lr_end = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01, value=d.lr_end, decimals=3)
        self.lr_schedule, self.sigma_schedule = QComboBox(), QComboBox()
        for combo in (self.lr_schedule, self.sigma_schedule):
            for key, label in (("linear", "Linear"), ("exponential", "Exponential"), ("inverse_time", "Inverse time")):
                combo.addItem(label, key)
        self.init = QComboBox()
        for key, label in (("pca", "PCA plane (fast convergence)"), ("samples", "Random samples"),
                           ("random", "Random")):
            self.init.addItem(label, key)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=d.seed)
        for label, w in (("Data", self.source), ("", self.csv_row), ("Label column", self.label_column),
                         ("", self.standardize), ("Rows", self.rows), ("Columns", self.cols),
                         ("Topology", self.topology), ("", self.toroidal), ("Neighbourhood", self.neighborhood),
                         ("Training", self.mode), ("Sampling", self.order), ("Epochs", self.epochs),
                         ("Radius start", self.sigma0), ("Radius end", self.sigma_end),
                         ("Radius schedule", self.sigma_schedule), ("Learning rate start", self.lr0),
                         ("Learning rate end", self.lr_end), ("LR schedule", self.lr_schedule),
                         ("Initialisation", self.init), ("Seed", self.seed)):
            form.addRow(label, w)
        self.controls = JobControls(self, form, start_text="Train", start_tip="Train a map",
                                    stop_tip="Stop training; the map so far is kept", start=self.start, stop=self.stop)
        self.runner = JobRunner(self.ctx, self.controls, parent=self)
        c = self.controls
        self.form_error, self.progress, self.status = c.form_error, c.progress, c.status
        self.start_button, self.stop_button = c.start_button, c.stop_button
        self.source.currentIndexChanged.connect(self._on_source_changed)
        self.csv_path.editingFinished.connect(self._fill_label_columns)
        self.mode.currentIndexChanged.connect(self._on_mode_changed)
        self.neighborhood.activated.connect(self._on_neighborhood_chosen)
        self.neighborhood.currentIndexChanged.connect(self.refresh_learn_sheet)
        self.mode.currentIndexChanged.connect(self.refresh_learn_sheet)
        self._on_source_changed()
        self._on_mode_changed()
        return compact_form(box)

    def _build_views(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        top = QHBoxLayout()
        top.addWidget(QLabel("View"))
        self.view_choice = QComboBox()
        for key, label in VIEWS.items():
            self.view_choice.addItem(label, key)
        top.addWidget(self.view_choice)
        top.addStretch(1)
        self.save_button = button("Save map…", lambda: self.save_map(), "Save the map shown (.safetensors + .json)")
        self.open_button = button("Open map…", lambda: self.open_map(), "Open a map saved here before")
        self.export_button = button("Export PNG…", lambda: self.export_png(), "Save the view as a picture")
        for b in (self.save_button, self.open_button, self.export_button):
            top.addWidget(b)
        layout.addLayout(top)
        self.stack = QStackedWidget()
        self.map_view = MapView()
        self.planes_view = PlanesView()
        self.stack.addWidget(self.map_view)
        self.stack.addWidget(self.planes_view)
        layout.addWidget(self.stack, 1)
        self.hover_info = QLabel("Hover a node to see its weights, hits and labels.")
        self.hover_info.setWordWrap(True)
        self.hover_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.hover_info)
        hist = QHBoxLayout()
        hist.addWidget(QLabel("History"))
        self.history = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=0)
        self.history.setToolTip("Replay the map as it learned")
        self.history_label = QLabel("")
        hist.addWidget(self.history, 1)
        hist.addWidget(self.history_label)
        layout.addLayout(hist)
        self.view_choice.currentIndexChanged.connect(self.redraw)
        self.history.valueChanged.connect(self._on_history)
        self.map_view.hovered.connect(self._on_hover)
        self.planes_view.hovered.connect(self._on_hover)
        return box

    def _build_side(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        self.error_plot = TwinAxisPlot("Map error while training", "fraction of training",
                                       ("QE", "quantization error (QE)"), ("TE", "topographic error (TE, right)"))
        self.qe_curve, self.te_curve = self.error_plot.left_curve, self.error_plot.right_curve
        layout.addWidget(self.error_plot, 1)
        layout.addWidget(QLabel("Samples: click one to light up its best matching unit"))
        self.sample_list = QListWidget()
        self.sample_list.currentRowChanged.connect(self._on_sample)
        layout.addWidget(self.sample_list, 1)
        self.load_sample_button = button("Load a sample…", lambda: self.load_sample(),
                                         "A text/CSV file with one sample per line (in the data's own units), "
                                         "or for the digits a picture of a digit")
        layout.addWidget(self.load_sample_button)
        return box

    # -- form ------------------------------------------------------------------------------
    def _on_source_changed(self) -> None:
        is_csv = self.source.currentData() == CSV_KEY
        self.csv_row.setVisible(is_csv)
        self.label_column.setEnabled(is_csv)
        self.standardize.setEnabled(is_csv)
        if is_csv:
            self._fill_label_columns()

    def _on_mode_changed(self) -> None:
        online = self.mode.currentData() == "online"
        for w in (self.order, self.lr0, self.lr_end, self.lr_schedule):
            w.setEnabled(online)

    MEXICAN_HAT_LR = 0.02

    def _on_neighborhood_chosen(self) -> None:
        """The Mexican hat pushes its outer ring away: at the usual 0.5 the weights fly
        apart, so choosing it (by hand) lowers a larger starting learning rate."""
        if self.neighborhood.currentData() == "mexican_hat" and self.lr0.value() > self.MEXICAN_HAT_LR:
            self.lr0.setValue(self.MEXICAN_HAT_LR)
            self.controls.set_status(f"Learning rate start set to {self.MEXICAN_HAT_LR}: the Mexican hat "
                                     "diverges at larger rates.")

    def _browse_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a CSV file", self.csv_path.text(),
                                              "CSV files (*.csv *.tsv *.txt);;All files (*)")
        if path:
            self.csv_path.setText(path)
            self._fill_label_columns()

    def _fill_label_columns(self) -> None:
        current = self.label_column.currentData()
        self.label_column.clear()
        self.label_column.addItem("(none)", -1)
        for k, name in enumerate(som_data.csv_columns(self.csv_path.text().strip())):
            self.label_column.addItem(name, k)  # by number: names need not be unique
        idx = self.label_column.findData(current)
        self.label_column.setCurrentIndex(max(0, idx))

    def make_config(self) -> tuple[somlib.SOMConfig | None, list[str]]:
        cfg = self._form_config()
        problems = cfg.validate()
        if self.source.currentData() == CSV_KEY and not os.path.isfile(self.csv_path.text().strip()):
            problems.append("Choose a CSV file.")
        return (None if problems else cfg), problems

    # -- settings (saved and restored by the kit) -------------------------------------------
    def _form_config(self) -> somlib.SOMConfig:
        return somlib.SOMConfig(
            rows=self.rows.value(), cols=self.cols.value(), topology=self.topology.currentData(),
            toroidal=self.toroidal.isChecked(), neighborhood=self.neighborhood.currentData(),
            sigma0=self.sigma0.value() or None, sigma_end=self.sigma_end.value(), lr0=self.lr0.value(),
            lr_end=self.lr_end.value(), lr_schedule=self.lr_schedule.currentData(),
            sigma_schedule=self.sigma_schedule.currentData(), init=self.init.currentData(),
            mode=self.mode.currentData(), order=self.order.currentData(), epochs=self.epochs.value(),
            seed=self.seed.value())

    def settings_state(self) -> SOMSettings:
        return SOMSettings(self._form_config(), self.source.currentData(), self.csv_path.text(),
                           self.standardize.isChecked(), self.view_choice.currentData())

    def apply_settings(self, state: SOMSettings) -> None:
        cfg = state.config
        for name in ("rows", "cols", "epochs", "seed", "sigma_end", "lr0", "lr_end"):
            getattr(self, name).setValue(getattr(cfg, name))
        self.sigma0.setValue(cfg.sigma0 or 0.0)
        for name, value in (("topology", cfg.topology), ("neighborhood", cfg.neighborhood), ("mode", cfg.mode),
                            ("order", cfg.order), ("lr_schedule", cfg.lr_schedule),
                            ("sigma_schedule", cfg.sigma_schedule), ("init", cfg.init), ("source", state.source),
                            ("view_choice", state.view)):
            combo = getattr(self, name)
            combo.setCurrentIndex(max(0, combo.findData(value)))
        self.toroidal.setChecked(cfg.toroidal)
        self.csv_path.setText(state.csv)
        self.standardize.setChecked(state.standardize)

    # -- the Learn panel ------------------------------------------------------------------------
    def learn_sheet(self):
        return som_sheet(self.neighborhood.currentData() or "gaussian", self.mode.currentData() or "batch")

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            return
        cfg, problems = self.make_config()
        if cfg is None:
            self.form_error.setText("\n".join(problems))
            return
        self.form_error.setText("")
        self.save_settings()
        self.config = cfg
        self.snapshots = []
        self.data = self.about = None
        self.viewer = None
        self._bmus = None
        self.history.setMaximum(0)
        self.error_plot.set_data([], [], [])
        self.map_view.set_grid(cfg.rows, cfg.cols, cfg.topology == "hexagonal")
        if self.learn is not None:
            self.learn.set_sheet(self.learn_sheet())
        device = self.runner.device
        self.runner.start(train_job, self.source.currentData(), self.csv_path.text().strip(),
                          self.label_column.currentData(), self.standardize.isChecked(), cfg, device,
                          name=f"Train SOM {cfg.rows}x{cfg.cols}", device=device, on_results=self._on_results,
                          on_ended=self._on_ended)
        self.status.setText("Loading data…")

    def stop(self) -> None:
        self.runner.stop()

    def _on_results(self, items: list) -> None:
        newest = None
        for item in items:
            if isinstance(item, som_data.SOMData):
                self._on_data(item)
            elif isinstance(item, somlib.SOMSnapshot):
                self.snapshots.append(item)
                newest = item
        if newest is not None:
            xs = [s.fraction for s in self.snapshots]
            self.error_plot.set_data(xs, [s.qe for s in self.snapshots], [s.te for s in self.snapshots])
            self.history.blockSignals(True)
            self.history.setMaximum(len(self.snapshots) - 1)
            self.history.setValue(len(self.snapshots) - 1)
            self.history.blockSignals(False)
            self._show_snapshot(newest)

    def _on_data(self, data: som_data.SOMData) -> None:
        self.data = self.about = data
        self.sample_list.clear()
        n = min(len(data.x), SAMPLE_LIST_MAX)
        names = data.label_names or []
        for i in range(n):
            label = ""
            if data.labels is not None:
                k = int(data.labels[i])
                label = names[k] if 0 <= k < len(names) else str(k)
            self._add_sample_item(f"#{i}  {label}", i)
        self.status.setText(f"{data.name}: {len(data.x):,} samples x {data.x.shape[1]} features")

    def _add_sample_item(self, text: str, what, first: bool = False) -> None:
        """``what``: the index of a data sample, or a loaded sample's vector."""
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, what)
        if first:
            self.sample_list.insertItem(0, item)
        else:
            self.sample_list.addItem(item)

    def _on_ended(self, state: JobState) -> None:
        if state == JobState.FINISHED and self.snapshots:
            s = self.snapshots[-1]
            self.status.setText(f"Done: QE {s.qe:.4f}, TE {s.te:.3f} after {s.epoch} epochs. "
                                "Drag the history slider to replay.")
            self.progress.setValue(1000)
        elif state == JobState.CANCELLED:
            self.status.setText("Stopped; the map so far is shown.")

    # -- drawing -------------------------------------------------------------------------------
    def _on_history(self, index: int) -> None:
        if 0 <= index < len(self.snapshots):
            self._show_snapshot(self.snapshots[index])

    def _show_snapshot(self, snap: somlib.SOMSnapshot) -> None:
        cfg = self.config
        if self.viewer is None:
            self.viewer = somlib.SOM(cfg, snap.weights.shape[-1])
        self.viewer.set_weights(snap.weights.reshape(-1, snap.weights.shape[-1]))
        self._bmus = snap.bmus  # found by the training job while measuring QE/TE, or None
        if self.sample_list.currentRow() >= 0:
            self._on_sample(self.sample_list.currentRow(), switch_view=False)
        self.history_label.setText(f"{self.snapshots.index(snap) + 1}/{len(self.snapshots)} · epoch "
                                   f"{snap.epoch} · QE {snap.qe:.3f} · TE {snap.te:.3f}")
        self.update_learn({"lr": snap.lr, "sigma": snap.sigma, "qe": snap.qe, "te": snap.te, "epoch": snap.epoch,
                           "step": snap.step, "fraction": snap.fraction})
        self.redraw()

    def bmus(self) -> np.ndarray | None:
        """Best matching unit of every sample under the map shown (cached per snapshot)."""
        if self._bmus is None and self.viewer is not None and self.data is not None:
            self._bmus = np.asarray(self.viewer.bmu(self.data.x)).reshape(-1)
        return self._bmus

    def redraw(self) -> None:
        view = self.view_choice.currentData()
        som, data, cfg = self.viewer, self.data, self.config
        if som is None or cfg is None:
            return
        hexagonal = cfg.topology == "hexagonal"
        self.map_view.set_grid(cfg.rows, cfg.cols, hexagonal)
        if view == "planes":
            names = self.about.feature_names if self.about is not None else []
            self.planes_view.show_planes(som.component_planes(), names, hexagonal)
            self.stack.setCurrentWidget(self.planes_view)
            return
        self.stack.setCurrentWidget(self.map_view)
        if view == "umatrix":
            self.map_view.show_values(som.u_matrix(), "U-matrix: mean distance to neighbours (light = border)")
        elif view == "hits" and data is None:
            self.map_view.show_values(som.u_matrix(), "No data with this map (opened from a file): U-matrix shown")
        elif view == "hits":
            self.map_view.show_values(som.hits(bmus=self.bmus()), "Hits: samples per node", texts=True)
        elif view == "labels" and data is not None and data.labels is not None:
            names = data.label_names or [str(k) for k in range(int(data.labels.max()) + 1)]
            self.map_view.show_categories(som.label_map(None, data.labels, bmus=self.bmus()), names,
                                          "Label map: majority label per node")
        elif view == "labels":
            self.map_view.show_values(som.u_matrix(), "No labels in this data set: U-matrix shown")
        elif view == "prototypes":
            self._draw_prototypes(som, data)

    def _draw_prototypes(self, som: somlib.SOM, data) -> None:
        w = som.weights_grid()
        name, shape = (self.about.name, self.about.image_shape) if self.about is not None else ("", None)
        if shape is not None and int(np.prod(shape)) == w.shape[-1]:
            self.map_view.show_images(w.reshape(w.shape[0], w.shape[1], *shape),
                                      "Prototypes: each node's weights as an image")
        elif name.lower().startswith("rgb") and w.shape[-1] == 3:
            self.map_view.show_rgb(w, "Prototypes: each node's colour")
        else:
            self.map_view.show_curves(w, "Prototypes: each node's weights as a curve")

    # -- mouse ---------------------------------------------------------------------------------
    def _on_hover(self, node: int) -> None:
        if self.viewer is None or not 0 <= node < self.viewer.n_nodes:
            return
        cfg = self.config
        r, c = divmod(node, cfg.cols)
        w = self.viewer.weights_grid()[r, c]
        text = f"Node ({r}, {c})"
        bmus = self.bmus()
        if bmus is not None:
            members = np.flatnonzero(bmus == node)
            text += f" · {len(members)} hits"
            if self.data.labels is not None and len(members):
                names = self.data.label_names or []
                labels, counts = np.unique(self.data.labels[members], return_counts=True)
                order = np.argsort(-counts)[:4]
                text += " · labels " + ", ".join(
                    f"{names[int(labels[k])] if int(labels[k]) < len(names) else labels[k]}×{counts[k]}" for k in order)
        names = self.about.feature_names if self.about is not None else []
        shown = ", ".join(f"{(names[i] if i < len(names) else f'x{i}')}={w[i]:.3g}" for i in range(min(8, len(w))))
        text += f"\nweights: {shown}" + (" …" if len(w) > 8 else "")
        self.hover_info.setText(text)

    def _on_sample(self, row: int, switch_view: bool = True) -> None:
        item = self.sample_list.item(row) if row >= 0 else None
        what = None if item is None else item.data(Qt.ItemDataRole.UserRole)
        if what is None or self.viewer is None:
            self.map_view.set_highlight(None)
            return
        if isinstance(what, int):
            bmus = self.bmus()
            if bmus is None or what >= len(bmus):
                self.map_view.set_highlight(None)
                return
            node, vector, name = int(bmus[what]), self.data.x[what], f"Sample #{what}"
        else:
            vector = np.asarray(what, np.float32)
            node, name = int(np.asarray(self.viewer.bmu(vector[None, :])).reshape(-1)[0]), item.text()
        self.map_view.set_highlight(node)
        if switch_view and self.stack.currentWidget() is not self.map_view:
            self.view_choice.setCurrentIndex(self.view_choice.findData("umatrix"))
        r, c = divmod(node, self.config.cols)
        distance = float(np.linalg.norm(self.viewer.weights_grid().reshape(-1, self.viewer.dim)[node] - vector))
        self.hover_info.setText(f"{name}: best matching unit ({r}, {c}), distance {distance:.3g}")

    def load_sample(self, path: str | None = None):
        """Read the samples of a file in a job (a huge picture or CSV must not freeze the window);
        they go to the top of the list and the first one's unit lights up. Returns the job, or None."""
        if self.viewer is None:
            self.controls.set_status("Train or open a map first.", error=True)
            return None
        if path is None:
            kinds = "Samples (*.csv *.txt *.tsv *.png *.jpg *.jpeg *.bmp);;All files (*)"
            path, _ = QFileDialog.getOpenFileName(self, "Load a sample", "", kinds)
        if not path:
            return None
        if self.sample_job is not None and not self.sample_job.is_done:
            self.sample_job.cancel()
        self.loaded_samples = 0
        job = self.ctx.pool.submit(som_data.read_samples, path, self.viewer.dim, self.about,
                                   name=f"Read {Path(path).name}", interactive=True)
        self.sample_job = job
        dim = self.viewer.dim

        def done(result) -> None:
            if job is not self.sample_job or self.viewer is None or self.viewer.dim != dim:
                return  # superseded, or the map changed meanwhile
            x, names = result
            for vector, name in reversed(list(zip(x, names))):
                self._add_sample_item(f"★ {name}", vector.tolist(), first=True)
            self.sample_list.setCurrentRow(0)
            self.loaded_samples = len(names)
            self.controls.set_status(f"Loaded {len(names)} sample{'s' if len(names) > 1 else ''} "
                                     f"from {Path(path).name}.")

        job.finished.connect(done)
        job.failed.connect(lambda message: job is self.sample_job and self.controls.set_status(
            f"Could not load a sample: {message}", error=True))
        return job

    def save_map(self, path: str | None = None) -> str | None:
        """Save the map being shown (the history slider picks which moment)."""
        if self.viewer is None:
            self.controls.set_status("Train or open a map first.", error=True)
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the map", "som.safetensors",
                                                  "SOM maps (*.safetensors)")
        if not path:
            return None
        if self.about is not None:  # so that the map can be shown, and take samples, without its data
            self.viewer.meta = som_data.describe(self.about)
        try:
            self.viewer.save(path)
        except Exception as exc:  # noqa: BLE001 - OSError, or safetensors' own error for a bad path
            self.controls.set_status(f"Could not save the map: {friendly_message(exc)}", error=True)
            return None
        self.ctx.show_message(f"Saved the map to {path}")
        return path

    def open_map(self, path: str | None = None) -> bool:
        """Show a map saved before (its own data is not stored with it: hits and labels need training data)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open a map", "", "SOM maps (*.safetensors)")
        if not path:
            return False
        try:
            som = somlib.SOM.load(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a message
            self.controls.set_status(f"Could not open {Path(path).name}: {friendly_message(exc)}", error=True)
            return False
        self.config, self.viewer, self.snapshots, self.data, self._bmus = som.config, som, [], None, None
        self.about = som_data.from_description(som.meta, som.dim) if som.meta else None
        self.sample_list.clear()
        self.history.setMaximum(0)
        self.history_label.setText(f"opened {Path(path).name}")
        self.controls.set_status(f"Opened a {som.config.rows}x{som.config.cols} map with {som.dim} features.")
        self.redraw()
        return True

    def export_png(self, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the view as PNG", "som.png", "PNG images (*.png)")
        if not path:
            return None
        widget = self.stack.currentWidget()
        if not widget.grab().save(path, "PNG"):
            self.status.setText(f"Could not write {path}")
            return None
        self.ctx.show_message(f"Saved {path}")
        return path
