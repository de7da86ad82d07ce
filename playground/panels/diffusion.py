"""The Diffusion tab: sample a diffusion model step by step and scrub through the denoising.

The method is :mod:`playground.ml.diffusion` (samplers, the recording loop, the models);
:mod:`playground.ml.diffusion.scrub` turns what it records into images off the GUI thread.
This module only holds those images, draws them and runs the ML core's functions as jobs:
moving the slider shows cached images, nothing is recomputed.

* Sample: :func:`~playground.ml.diffusion.scrub.sample_frames` as the panel's job; the slider
  over the recorded steps fills as they come; x_t, the predicted x0 and the predicted noise
  for every sample of the batch, side by side, and a marker on the alpha_bar / log-SNR plot.
* Compare: a second sampler from the same seed (the same initial noise), shown below the first.
* Play / Pause animates the trajectory; Export writes an animated GIF and a film-strip PNG.
* Forward process: a real image (a digit of the data set, or a file) dissolving into noise as t
  grows, one fixed noise, every t computed once in a job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSlider, QSpinBox, QVBoxLayout,
                               QWidget)

from ..errors import friendly_message
from ..jobs import JobState
from ..learn.diffusion import diffusion_sheet
from ..ml.diffusion import scrub
from ..ml.diffusion.samplers import SAMPLERS
from ..ml.diffusion.sampling import DEFAULT_MAX_RECORD_BYTES
from ..widgets.forms import JobControls, button, compact_form
from ..widgets.image_view import ImageView
from ..widgets.model_picker import ModelPicker
from ..widgets.plots import TwinAxisPlot
from .base import JobRunner, Panel

log = logging.getLogger(__name__)

FILE_FILTER = "Diffusion UNet (*.safetensors *.json config.json);;All files (*)"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp);;All files (*)"
BUILTINS = {"digits": "Digits, 16x16, 10 classes (embedded)", "faces": "Faces, 32x32 RGB (embedded)"}
KINDS = (("x_t", "x_t (the sampler's input)"), ("x0", "predicted x0"), ("eps", "predicted noise"))
PLAY_MS = 80
#: The bound on the memory a run's records take (both samplers together); tests lower it.
MAX_RECORD_BYTES = DEFAULT_MAX_RECORD_BYTES


@dataclass
class DiffusionSettings:
    """What the Diffusion tab remembers."""

    builtin: str = "digits"
    sampler: str = "ddim"
    compare: bool = False
    compare_sampler: str = "ddpm"
    steps: int = 50
    seed: int = 0
    batch: int = 4
    label: int = 0
    guidance: float = 1.5     # DDIM overshoots at 3 on the small digits model (README)
    eta: float = 0.0
    forward_mode: bool = False
    digit: int = 0

    def validate(self) -> dict[str, str]:
        bad = {}
        if self.builtin not in BUILTINS:
            bad["builtin"] = "digits or faces"
        if self.sampler not in SAMPLERS:
            bad["sampler"] = "a known sampler"
        if self.compare_sampler not in SAMPLERS:
            bad["compare_sampler"] = "a known sampler"
        if not 1 <= self.steps <= 1000:
            bad["steps"] = "from 1 to 1000"
        if not 1 <= self.batch <= 64:
            bad["batch"] = "from 1 to 64"
        if not 0 <= self.seed <= 2**31 - 1:
            bad["seed"] = "from 0"
        if not 0 <= self.label <= 999:
            bad["label"] = "from 0 to 999"
        if not 0.0 <= self.guidance <= 30.0:
            bad["guidance"] = "from 0 to 30"
        if not 0.0 <= self.eta <= 1.0:
            bad["eta"] = "from 0 to 1"
        if not 0 <= self.digit <= 1796:
            bad["digit"] = "from 0 to 1796"
        return bad


def _combo(items: dict[str, str]) -> QComboBox:
    box = QComboBox()
    for key, label in items.items():
        box.addItem(label, key)
    return box


def _select(box: QComboBox, key: str) -> None:
    index = box.findData(key)
    if index >= 0:
        box.setCurrentIndex(index)


class DiffusionPanel(Panel):
    title = "D&iffusion"
    settings_key = "diffusion"
    Settings = DiffusionSettings

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.model = None  # the picked DiffusionModel
        self.lanes: list[list[scrub.Frame]] = [[], []]  # the recorded frames, per sampler
        self.lane_samplers: list[str] = []
        self.plan_message = ""
        self.forward: scrub.ForwardFrames | None = None
        self._forward_job = None
        self._forward_source: tuple = ()
        self._hub_job = None
        self._build()

    # -- layout ------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.lay_out(self._build_form(), self._build_view())
        self.runner.disable_while_running(self.picker, self.builtin, self.forward_box)
        self.picker.modelChanged.connect(self._on_model)
        self._play_timer = QTimer(self, interval=PLAY_MS)
        self._play_timer.timeout.connect(self._play_tick)
        for keys, slot in (("Left", lambda: self.step_by(-1)), ("Right", lambda: self.step_by(1)),
                           ("Space", self.toggle_play)):
            QShortcut(QKeySequence(keys), self, slot).setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)

    def _build_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        d = DiffusionSettings()
        self.builtin = _combo(BUILTINS)
        self.builtin.setToolTip("Which embedded model the picker's default entry loads")
        self.builtin.activated.connect(lambda _i: self.picker.load_default())
        form.addRow("Embedded", self.builtin)
        self.picker = ModelPicker(self.ctx.pool, self.ctx.settings, "diffusion/model",
                                  load_default=self._load_builtin,
                                  load_path=lambda path: scrub.load_for_picker(path),
                                  default_name="Embedded diffusion model", file_filter=FILE_FILTER,
                                  allow_folders=True, device=lambda: self.ctx.device)
        form.addRow(self.picker)
        hub = QHBoxLayout()
        self.hub_id = QLineEdit()
        self.hub_id.setPlaceholderText("hub id, e.g. google/ddpm-cifar10-32")
        self.hub_id.setToolTip("Download a diffusers UNet2DModel from the Hugging Face hub (needs the network)")
        self.hub_id.returnPressed.connect(lambda: self.fetch_hub())
        self.fetch_button = button("Fetch", lambda: self.fetch_hub(), "Download the model and open it")
        hub.addWidget(self.hub_id, 1)
        hub.addWidget(self.fetch_button)
        form.addRow(hub)

        group = QGroupBox("Sampling")
        sf = QFormLayout(group)
        self.sampler = _combo(SAMPLERS)
        self.sampler.currentIndexChanged.connect(lambda _i: self._on_sampler())
        sf.addRow("Sampler", self.sampler)
        self.eta = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.1, decimals=2, value=d.eta)
        self.eta.setToolTip("DDIM's eta: 0 is deterministic, 1 adds as much noise as DDPM")
        self.eta_label = QLabel("Eta")
        sf.addRow(self.eta_label, self.eta)
        self.steps = QSpinBox(minimum=1, maximum=1000, value=d.steps)
        sf.addRow("Steps", self.steps)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=d.seed)
        self.seed.setToolTip("The same seed gives the same initial noise")
        sf.addRow("Seed", self.seed)
        self.batch = QSpinBox(minimum=1, maximum=64, value=d.batch)
        self.batch.setToolTip("How many samples (a grid)")
        sf.addRow("Batch", self.batch)
        self.label = QSpinBox(minimum=0, maximum=9, value=d.label)
        self.label_label = QLabel("Class")
        sf.addRow(self.label_label, self.label)
        self.guidance = QDoubleSpinBox(minimum=0.0, maximum=30.0, singleStep=0.5, decimals=2, value=d.guidance)
        self.guidance.setToolTip("Classifier-free guidance: 0 unconditional, 1 the plain conditional model, "
                                 "more pushes towards the class")
        self.guidance_label = QLabel("Guidance")
        sf.addRow(self.guidance_label, self.guidance)
        self.compare = QCheckBox("Compare with")
        self.compare.setToolTip("Sample a second time with another sampler from the same initial noise")
        self.compare_sampler = _combo(SAMPLERS)
        _select(self.compare_sampler, d.compare_sampler)
        sf.addRow(self.compare, self.compare_sampler)
        form.addRow(group)

        self.controls = JobControls(self, form, start_text="Sample", start_tip="Sample from the model, step by step",
                                    stop_tip="Stop sampling", start=self.start, stop=self.stop)
        self.runner = JobRunner(self.ctx, self.controls, failure_prefix="Sampling failed", parent=self)
        self.plan_label = QLabel("")
        self.plan_label.setWordWrap(True)
        self.plan_label.setStyleSheet("color: #8a6d00")
        form.addRow(self.plan_label)

        self.forward_box = QGroupBox("Forward process")
        ff = QFormLayout(self.forward_box)
        self.forward_mode = QCheckBox("Show a real image dissolving")
        self.forward_mode.toggled.connect(self._on_forward_mode)
        ff.addRow(self.forward_mode)
        self.digit = QSpinBox(minimum=0, maximum=1796, value=d.digit)
        self.digit.setToolTip("A digit of scikit-learn's handwritten digits")
        self.digit.valueChanged.connect(lambda _v: self._request_forward(("digit", self.digit.value())))
        ff.addRow("Digit", self.digit)
        ff.addRow(button("Open image…", lambda: self.open_image(), "Use an image file as x0"))
        form.addRow(self.forward_box)

        exports = QHBoxLayout()
        self.gif_button = button("Export GIF…", lambda: self.export_gif(), "The trajectory as an animated GIF")
        self.strip_button = button("Export film strip…", lambda: self.export_strip(),
                                   "Evenly spaced steps of the trajectory in one PNG")
        exports.addWidget(self.gif_button)
        exports.addWidget(self.strip_button)
        form.addRow(exports)
        self._on_sampler()
        self._update_conditional()
        return compact_form(box, min_width=320)

    def _build_view(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.play_button = QPushButton("Play")
        self.play_button.setToolTip("Animate the trajectory (Space); Left / Right step through it")
        self.play_button.clicked.connect(self.toggle_play)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(lambda _v: self.redraw())
        self.step_label = QLabel("No samples yet.")
        row.addWidget(self.play_button)
        row.addWidget(self.slider, 1)
        row.addWidget(self.step_label)
        layout.addLayout(row)
        views = QHBoxLayout()
        self.views: dict[str, ImageView] = {}
        self.view_titles: dict[str, QLabel] = {}
        for kind, title in KINDS:
            col = QVBoxLayout()
            label = QLabel(f"<b>{title}</b>")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            view = ImageView()
            col.addWidget(label)
            col.addWidget(view, 1)
            views.addLayout(col, 1)
            self.views[kind] = view
            self.view_titles[kind] = label
        layout.addLayout(views, 3)
        self.plot = TwinAxisPlot("Noise schedule", "t", ("alpha_bar", "alpha_bar_t"), ("log SNR", "log SNR_t"))
        self.marker = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen((200, 40, 40), width=2))
        self.plot.addItem(self.marker)
        self.marker_dot = pg.ScatterPlotItem([0], [1], size=9, brush=pg.mkBrush(200, 40, 40))
        self.plot.addItem(self.marker_dot)
        self.plot.setMaximumHeight(220)
        layout.addWidget(self.plot, 1)
        return box

    def _load_builtin(self):
        if self.builtin.currentData() == "faces":
            return scrub.load_default_faces()
        return scrub.load_default()

    def fetch_hub(self, repo_id: str | None = None) -> None:
        """Download a model by hub id in a job (progress in the status line), then open its folder."""
        repo_id = (self.hub_id.text() if repo_id is None else repo_id).strip()
        if not repo_id:
            self.controls.set_status("Type a hub id first, e.g. google/ddpm-cifar10-32.", error=True)
            return
        if self._hub_job is not None and not self._hub_job.is_done:
            self._hub_job.cancel()
        job = self.ctx.pool.submit(scrub.fetch_hub, repo_id, name=f"Fetching {repo_id}", interactive=True)
        self._hub_job = job
        self.fetch_button.setEnabled(False)

        def progress(fraction, text) -> None:
            self.controls.set_status(text)
            if fraction >= 0:  # (negative: unknown)
                self.controls.progress.setValue(int(round(min(fraction, 1.0) * 1000)))

        def done(folder) -> None:
            self.fetch_button.setEnabled(True)
            self.controls.set_status(f"Downloaded {repo_id}.")
            self.picker.open_path(folder)

        def failed(message) -> None:
            self.fetch_button.setEnabled(True)
            self.controls.set_status(str(message), error=True)

        job.progress.connect(progress)
        job.finished.connect(done)
        job.failed.connect(failed)
        job.cancelled.connect(lambda: self.fetch_button.setEnabled(True))

    # -- the model ---------------------------------------------------------------------------------
    def _on_model(self, loaded) -> None:
        self.model = loaded.model
        t, ab, log_snr = scrub.schedule_curves(self.model.scheduler_config)
        self.plot.set_data(t, ab, log_snr)
        self._update_conditional()
        self.forward = None
        if self.forward_mode.isChecked():
            self._request_forward(self._forward_source or ("digit", self.digit.value()))

    def _update_conditional(self) -> None:
        n = self.model.num_classes if self.model is not None else 0
        for w in (self.label, self.label_label, self.guidance, self.guidance_label):
            w.setVisible(n > 0)
        if n > 0:
            self.label.setMaximum(n - 1)

    def _on_sampler(self) -> None:
        ddim = self.sampler.currentData() == "ddim"
        self.eta.setVisible(ddim)
        self.eta_label.setVisible(ddim)
        self.refresh_learn_sheet()

    def learn_sheet(self):
        return diffusion_sheet(self.sampler.currentData() if hasattr(self, "sampler") else "ddpm")

    # -- sampling ----------------------------------------------------------------------------------
    def samplers(self) -> list[str]:
        names = [self.sampler.currentData()]
        if self.compare.isChecked():
            names.append(self.compare_sampler.currentData())
        return names

    def start(self) -> None:
        if self.running:
            return
        if self.model is None:
            self.controls.form_error.setText("No model is loaded yet: wait for it, or open a diffusers UNet folder.")
            return
        self.controls.form_error.setText("")
        if self.forward_mode.isChecked():
            self.forward_mode.setChecked(False)
        self.save_settings()
        self.stop_playing()
        self.refresh_learn_sheet()
        self.lanes = [[], []]
        self.lane_samplers = self.samplers()
        self.plan_message = ""
        self.plan_label.setText("")
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        for view in self.views.values():
            view.clear()
        label = self.label.value() if self.model.conditional else None
        self.runner.start(scrub.sample_frames, self.model, self.lane_samplers, steps=self.steps.value(),
                          batch=self.batch.value(), seed=self.seed.value(), class_label=label,
                          guidance_scale=self.guidance.value(), eta=self.eta.value(), device=self.runner.device,
                          max_record_bytes=MAX_RECORD_BYTES,
                          name="Diffusion sampling", interactive=True, on_results=self._on_results,
                          on_ended=self._on_ended)

    def stop(self) -> None:
        self.runner.stop()

    def _on_results(self, items: list) -> None:
        grew = False
        for item in items:
            if isinstance(item, scrub.LaneStart):
                if item.plan.message:
                    self.plan_message = item.plan.message
                    self.plan_label.setText(item.plan.message)
            elif isinstance(item, scrub.Frame):
                self.lanes[item.lane].append(item)
                grew = True
        if grew:
            n = max(len(self.lanes[0]), len(self.lanes[1]))
            at_end = self.slider.value() >= self.slider.maximum()
            self.slider.setEnabled(True)
            self.slider.setMaximum(max(0, n - 1))
            if at_end and not self._play_timer.isActive():
                self.slider.setValue(n - 1)  # follow the sampling while the slider is at its end
            self.redraw()

    def _on_ended(self, state: JobState) -> None:
        if state == JobState.FINISHED:
            n = len(self.lanes[0])
            self.controls.set_status(f"Sampled {self.batch.value()} image(s) in {n} recorded steps"
                                     + (" with each sampler." if len(self.lane_samplers) > 1 else "."))
            self.runner.set_progress(1.0)

    # -- drawing (cached images only) ---------------------------------------------------------------
    def frames_at(self, k: int) -> list[scrub.Frame]:
        out = []
        for lane in self.lanes:
            if lane:
                out.append(lane[min(k, len(lane) - 1)])
        return out

    def redraw(self) -> None:
        if self.forward_mode.isChecked():
            self._draw_forward()
            return
        k = self.slider.value()
        frames = self.frames_at(k)
        if not frames:
            return
        if len(frames) == 1:
            columns = scrub.grid_columns(len(frames[0].x_t))
            for kind, view in self.views.items():
                view.set_images(list(frames[0].images(kind)), columns=columns)
        else:  # compare: one grid per sampler, captioned, one above the other
            captions = [SAMPLERS.get(self.lane_samplers[f.lane], "") for f in frames]
            for kind, view in self.views.items():
                view.set_images([f.grid(kind) for f in frames], captions, columns=1)
        f = frames[0]
        self.marker.setValue(f.t)
        self.marker_dot.setData([f.t], [f.alpha_bar])
        self.step_label.setText(f"step {f.index + 1} / {f.steps}, t = {f.t:.0f}, alpha_bar = {f.alpha_bar:.4f}")
        lane = self.lanes[0]
        j = min(k, len(lane) - 1)
        cleaner = lane[j + 1].alpha_bar if j + 1 < len(lane) else None
        self.update_learn(scrub.learn_values(f.alpha_bar, cleaner, f.t, f.index))

    def step_by(self, delta: int) -> None:
        slider = self.slider
        slider.setValue(min(max(slider.value() + delta, slider.minimum()), slider.maximum()))

    # -- playing -----------------------------------------------------------------------------------
    def toggle_play(self) -> None:
        if self._play_timer.isActive():
            self.stop_playing()
        elif self.slider.maximum() > 0:
            if self.slider.value() >= self.slider.maximum():
                self.slider.setValue(0)
            self._play_timer.start()
            self.play_button.setText("Pause")

    def stop_playing(self) -> None:
        self._play_timer.stop()
        self.play_button.setText("Play")

    def _play_tick(self) -> None:
        if self.slider.value() >= self.slider.maximum():
            self.stop_playing()
            return
        self.slider.setValue(self.slider.value() + 1)

    # -- the forward process -----------------------------------------------------------------------
    def _on_forward_mode(self, on: bool) -> None:
        self.stop_playing()
        titles = dict(KINDS) if not on else {"x_t": "x0 (the real image)", "x0": "x_t", "eps": "the noise eps"}
        for kind, label in self.view_titles.items():
            label.setText(f"<b>{titles[kind]}</b>")
        self.slider.blockSignals(True)
        if on:
            self._sample_position = self.slider.value()
            T = self.forward.ts.size if self.forward is not None else 1
            self.slider.setRange(0, max(0, T - 1))
            self.slider.setEnabled(self.forward is not None)
            if self.forward is None:
                self._request_forward(self._forward_source or ("digit", self.digit.value()))
        else:
            n = max(len(self.lanes[0]), len(self.lanes[1]))
            self.slider.setRange(0, max(0, n - 1))
            self.slider.setValue(getattr(self, "_sample_position", 0))
            self.slider.setEnabled(n > 0)
            for view in self.views.values():
                view.clear()
        self.slider.blockSignals(False)
        self.redraw()

    def open_image(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open an image", "", IMAGE_FILTER)
        if path:
            if not self.forward_mode.isChecked():
                self.forward_mode.setChecked(True)
            self._request_forward(("file", path))

    def _request_forward(self, source: tuple) -> None:
        self._forward_source = source
        if not self.forward_mode.isChecked() or self.model is None:
            return
        if self._forward_job is not None and not self._forward_job.is_done:
            self._forward_job.cancel()
        size, channels = self.model.resolution, self.model.channels
        job = self.ctx.pool.submit(_forward_job, source, size, channels, self.model.scheduler_config,
                                   self.seed.value(), name="Forward process", interactive=True)
        self._forward_job = job
        job.finished.connect(lambda value, j=job: self._on_forward(j, value))
        job.failed.connect(lambda message, *_: self.controls.set_status(str(message), error=True))

    def _on_forward(self, job, value) -> None:
        if job is not self._forward_job or not self.forward_mode.isChecked():
            return
        self.forward = value
        self.slider.blockSignals(True)
        self.slider.setRange(0, value.ts.size - 1)
        self.slider.setEnabled(True)
        self.slider.blockSignals(False)
        self.controls.set_status("Forward process: slide t to add noise in one jump.")
        self.redraw()

    def _draw_forward(self) -> None:
        fw = self.forward
        if fw is None:
            return
        k = min(self.slider.value(), fw.ts.size - 1)
        self.views["x_t"].set_image(fw.x0_image)
        self.views["x0"].set_image(fw.images[k])
        self.views["eps"].set_image(fw.noise_image)
        t, ab = float(fw.ts[k]), float(fw.alpha_bar[k])
        self.marker.setValue(t)
        self.marker_dot.setData([t], [ab])
        self.step_label.setText(f"t = {t:.0f}, alpha_bar = {ab:.4f}")
        prev = float(fw.alpha_bar[k - 1]) if k > 0 else None
        self.update_learn(scrub.learn_values(ab, prev, t, k))

    # -- exports -----------------------------------------------------------------------------------
    def trajectory_pictures(self) -> list[np.ndarray]:
        """The pictures the exports write: the sampled trajectory, or in forward mode the image dissolving."""
        if self.forward_mode.isChecked() and self.forward is not None:
            return scrub.forward_pictures(self.forward)
        n = max(len(self.lanes[0]), len(self.lanes[1]))
        columns = scrub.grid_columns(len(self.lanes[0][0].x_t)) if self.lanes[0] else 1
        return [scrub.composite(self.frames_at(k), columns) for k in range(n)]

    def _export(self, what: str, suffix: str, write) -> str | None:
        if not self.lanes[0] and not (self.forward_mode.isChecked() and self.forward is not None):
            self.controls.set_status("There is no trajectory to export yet: sample first.", error=True)
            return None
        path, _ = QFileDialog.getSaveFileName(self, f"Export the {what}", f"trajectory{suffix}",
                                              f"{what} (*{suffix})")
        if not path:
            return None
        if not Path(path).suffix:
            path += suffix
        try:
            write(self.trajectory_pictures(), path)
        except Exception as exc:  # noqa: BLE001 - a bad name, a full disk: one line
            self.controls.set_status(friendly_message(exc), error=True)
            return None
        self.controls.set_status(f"Saved {Path(path).name}.")
        self.ctx.show_message(f"Saved {path}")
        return path

    def export_gif(self) -> str | None:
        return self._export("animated GIF", ".gif", lambda pics, p: scrub.save_gif(pics, p, PLAY_MS))

    def export_strip(self) -> str | None:
        return self._export("film strip", ".png", scrub.save_film_strip)

    # -- settings ----------------------------------------------------------------------------------
    def settings_state(self) -> DiffusionSettings:
        return DiffusionSettings(
            builtin=self.builtin.currentData(), sampler=self.sampler.currentData(), compare=self.compare.isChecked(),
            compare_sampler=self.compare_sampler.currentData(), steps=self.steps.value(), seed=self.seed.value(),
            batch=self.batch.value(), label=self.label.value(), guidance=self.guidance.value(),
            eta=self.eta.value(), forward_mode=self.forward_mode.isChecked(), digit=self.digit.value())

    def apply_settings(self, state: DiffusionSettings) -> None:
        _select(self.builtin, state.builtin)
        _select(self.sampler, state.sampler)
        _select(self.compare_sampler, state.compare_sampler)
        self.compare.setChecked(state.compare)
        self.steps.setValue(state.steps)
        self.seed.setValue(state.seed)
        self.batch.setValue(state.batch)
        self.label.setMaximum(max(self.label.maximum(), state.label))
        self.label.setValue(state.label)
        self.guidance.setValue(state.guidance)
        self.eta.setValue(state.eta)
        self.digit.blockSignals(True)
        self.digit.setValue(state.digit)
        self.digit.blockSignals(False)
        self.forward_mode.setChecked(state.forward_mode)
        self._on_sampler()

    # -- the end -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self._play_timer.stop()
        self.runner.stop()
        for job in (self._forward_job, self._hub_job):
            if job is not None and not job.is_done:
                job.cancel()


def _forward_job(source: tuple, size: tuple[int, int], channels: int, scheduler_config, seed: int):
    """The forward process of a digit of the data set or an image file, at every t (ML core only)."""
    kind, value = source
    if kind == "file":
        x0 = scrub.file_image(value, size, channels)
    else:
        x0 = scrub.digit_image(int(value), size, channels)
    return (yield from scrub.forward_frames(x0, scheduler_config, seed))

