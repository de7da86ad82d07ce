"""The Drag tab: DragGAN (or FreeDrag) on a StyleGAN2. Click a handle, click its target, Start.

The method is :mod:`playground.ml.draggan`, the generator :mod:`playground.ml.stylegan2`;
this module holds the points, the mask and the undo history, sends what the user changes
to the running drag (the kit's job input), and draws what each step yields.

Mouse on the image: a left click adds a handle (red), the next one its target (blue);
drag a point to move it (also while a drag runs: it is taken at the next step); a right
click on a point removes its pair. In mask mode the left button paints the flexible area
and the right one erases.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QSlider, QSpinBox, QVBoxLayout, QWidget)

from ..jobs import JobState
from ..learn.drag import drag_sheet
from ..ml import draggan
from ..ml.stylegan2 import pickles
from ..ml.stylegan2 import project as projection
from ..widgets.forms import JobControls, button, compact_form
from ..widgets.image_view import ImageView, Point
from ..widgets.model_picker import ModelPicker
from .base import JobRunner, Panel

log = logging.getLogger(__name__)

HANDLE, TARGET = (220, 40, 40), (40, 90, 230)
PICK_RADIUS_PX = 9  # screen pixels: a press this close to a point grabs it
FRAME_INTERVAL_S = 0.1  # a new picture ten times a second while dragging; the steps between draw none
METHODS = {"draggan": "DragGAN (point tracking)", "freedrag": "FreeDrag (adaptive template)"}


@dataclass
class DragSettings:
    """What the Drag tab remembers (the kit saves it as JSON)."""

    seed: int = 0
    psi: float = 0.7
    space: str = "w+"
    lr: float = draggan.FACE_LR
    method: str = "draggan"
    r1: float = 3.0
    r2: float = 12.0
    lambda_mask: float = 20.0
    feature_block: int = 0  # 0: the default (b128, or the top block of a smaller model)
    max_steps: int = 300
    brush: int = 8
    show_mask: bool = True

    def validate(self) -> dict[str, str]:
        bad = {}
        if not 0 <= self.seed <= 2**31 - 1:
            bad["seed"] = "from 0 to 2147483647"
        if not 0 <= self.psi <= 2:
            bad["psi"] = "from 0 to 2"
        if self.space not in ("w", "w+"):
            bad["space"] = "w or w+"
        if self.method not in METHODS:
            bad["method"] = ", ".join(METHODS)
        if not 0 < self.lr <= 1:
            bad["lr"] = "above 0, at most 1"
        for name in ("r1", "r2"):
            if not 0.5 <= getattr(self, name) <= 1000:
                bad[name] = "from 0.5 to 1000"
        if not 0 <= self.lambda_mask <= 1000:
            bad["lambda_mask"] = "from 0 to 1000"
        if not 1 <= self.max_steps <= 100000:
            bad["max_steps"] = "from 1 to 100000"
        if not 1 <= self.brush <= 200:
            bad["brush"] = "from 1 to 200"
        return bad


@dataclass
class Edit:
    """One state of the picture: what undo and redo move between."""

    ws: object  # the latent (a CPU tensor [1, num_ws, w_dim]), kept as the ML core gave it
    image: np.ndarray
    handles: list[tuple[float, float]] = field(default_factory=list)
    targets: list[tuple[float, float]] = field(default_factory=list)


def render_job(G, seed: int, psi: float, device: str):
    """The job behind a new seed: its latent and picture."""
    ws = draggan.initial_ws(G, seed, psi, device)
    return ws.cpu(), draggan.render(G, ws)


def drag_job(G, ws, handles, targets, mask, config, device: str):
    """The job behind Start: one drag, step by step (commands from the GUI arrive at each yield)."""
    session = draggan.DragSession(G, config, ws0=ws, device=device)
    return (yield from session.run(handles, targets, mask))


def _projection_job(path: str, G, steps: int, device: str):
    """The job behind "Open your picture…": read it, project it, give (ws, picture of ws)."""
    picture = projection.load_picture(path)
    ws = yield from projection.project(G, picture, steps=steps, device=device)
    return ws, draggan.render(G, ws.to(device))


class DragPanel(Panel):
    title = "&Drag"
    settings_key = "drag"
    Settings = DragSettings

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.G = None
        self.current: Edit | None = None
        self.undo_stack: list[Edit] = []
        self.redo_stack: list[Edit] = []
        self.handles: list[tuple[float, float]] = []
        self.targets: list[tuple[float, float]] = []
        self.pending: tuple[float, float] | None = None  # a handle waiting for its target
        self._grab: tuple[int, str] | None = None  # (pair, "handle" | "target") being dragged
        self._before: Edit | None = None  # the state a running drag started from
        self.render_job = None
        self._build()

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.lay_out(self._build_form(), self._build_view())
        self.runner.disable_while_running(self.picker, self.seed, self.psi, self.space, self.method,
                                          self.undo_button, self.redo_button, self.load_latent_button,
                                          self.project_button)
        self.picker.modelChanged.connect(self._on_model)

    def _build_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        d = DragSettings()
        self.picker = ModelPicker(self.ctx.pool, self.ctx.settings, "drag/model", load_default=pickles.load_default,
                                  load_path=pickles.load_for_picker, default_name="Procedural faces (embedded)",
                                  file_filter="StyleGAN2 (*.pkl *.safetensors);;All files (*)",
                                  device=lambda: self.ctx.device)
        form.addRow(self.picker)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=d.seed)
        self.psi = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.05, value=d.psi, decimals=2)
        self.space = QComboBox()
        self.space.addItem("W+ (first 6 layers)", "w+")
        self.space.addItem("W (one w)", "w")
        self.lr = QDoubleSpinBox(minimum=0.0001, maximum=1.0, singleStep=0.0005, value=d.lr, decimals=4)
        self.method = QComboBox()
        for key, label in METHODS.items():
            self.method.addItem(label, key)
        self.max_steps = QSpinBox(minimum=1, maximum=100000, value=d.max_steps)
        for label, w in (("Seed", self.seed), ("Truncation ψ", self.psi), ("Latent space", self.space),
                         ("Step size", self.lr), ("Method", self.method), ("Step limit", self.max_steps)):
            form.addRow(label, w)
        advanced = QGroupBox("Advanced")
        advanced.setCheckable(True)
        advanced.setChecked(False)
        adv = QFormLayout(advanced)
        self.r1 = QDoubleSpinBox(minimum=0.5, maximum=1000.0, value=d.r1, decimals=1)
        self.r2 = QDoubleSpinBox(minimum=0.5, maximum=1000.0, value=d.r2, decimals=1)
        self.lambda_mask = QDoubleSpinBox(minimum=0.0, maximum=1000.0, value=d.lambda_mask, decimals=1)
        self.feature_block = QComboBox()
        self.feature_block.addItem("default (128, or the top block)", 0)
        for label, w, tip in (("r₁ (at 512 px)", self.r1, "radius of the pulled disk"),
                              ("r₂ (at 512 px)", self.r2, "half-size of the tracking window"),
                              ("λ (mask)", self.lambda_mask, "weight of the fixed-region term"),
                              ("Feature block", self.feature_block, "whose features drive the drag")):
            w.setToolTip(tip)
            adv.addRow(label, w)
        form.addRow(advanced)
        mask = QGroupBox("Mask: paint the area that may change")
        mk = QFormLayout(mask)
        self.mask_edit = QCheckBox("Paint the mask (right button erases)")
        self.brush = QSlider(Qt.Orientation.Horizontal, minimum=1, maximum=60, value=d.brush)
        self.show_mask = QCheckBox("Show the mask")
        self.show_mask.setChecked(d.show_mask)
        mk.addRow(self.mask_edit)
        mk.addRow("Brush", self.brush)
        mk.addRow(self.show_mask)
        mk.addRow(button("Reset the mask", lambda: self.view.clear_mask()))
        form.addRow(mask)
        row = QHBoxLayout()
        self.undo_button = button("Undo", self.undo, "Undo the last drag (Ctrl+Z)")
        self.redo_button = button("Redo", self.redo, "Redo it (Ctrl+Shift+Z)")
        row.addWidget(self.undo_button)
        row.addWidget(self.redo_button)
        row.addWidget(button("Reset points", self.reset_points, "Remove every handle and target"))
        form.addRow(row)
        row = QHBoxLayout()
        row.addWidget(button("Save image…", lambda: self.save_image(), "The picture as PNG"))
        row.addWidget(button("Save latent…", lambda: self.save_latent(), "The latent ws (.safetensors + .json)"))
        self.load_latent_button = button("Load latent…", lambda: self.load_latent(),
                                         "A latent saved here, or DragGAN's .npy")
        row.addWidget(self.load_latent_button)
        form.addRow(row)
        self.project_button = button("Open your picture…", lambda: self.open_picture(),
                                     "Project a picture into the model's W+ (by optimisation), then drag it")
        self.project_steps = QSpinBox(minimum=10, maximum=5000, value=300)
        self.project_steps.setToolTip("Projection steps")
        row = QHBoxLayout()
        row.addWidget(self.project_button, 1)
        row.addWidget(self.project_steps)
        form.addRow(row)
        self.controls = JobControls(self, form, start_text="Start", start_tip="Drag the handles to their targets",
                                    stop_tip="Stop dragging; the picture so far stays", start=self.start,
                                    stop=self.stop)
        self.runner = JobRunner(self.ctx, self.controls, failure_prefix="The drag failed", parent=self)
        self.seed.valueChanged.connect(lambda: self.new_image())
        self.psi.valueChanged.connect(lambda: self.new_image())
        self.method.currentIndexChanged.connect(self.refresh_learn_sheet)
        self.method.activated.connect(self._on_method_chosen)
        self.mask_edit.toggled.connect(lambda on: self.view.set_mask_editing(on))
        self.brush.valueChanged.connect(lambda v: setattr(self.view, "brush_radius", float(v)))
        self.show_mask.toggled.connect(lambda on: setattr(self.view, "mask_visible", on))
        for keys, slot in (("Ctrl+Z", self.undo), ("Ctrl+Shift+Z", self.redo)):
            QShortcut(QKeySequence(keys), self, slot).setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        return compact_form(box, min_width=320)

    def _build_view(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        self.view = ImageView()
        self.view.brush_radius = float(self.brush.value())
        self.view.pressed.connect(self._on_press)
        self.view.moved.connect(self._on_move)
        self.view.released.connect(self._on_release)
        layout.addWidget(self.view, 1)
        self.info = QLabel("Click the picture to add a handle (red), then its target (blue). Start drags them.")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.info)
        return box

    # -- settings ----------------------------------------------------------------------------------
    def settings_state(self) -> DragSettings:
        return DragSettings(self.seed.value(), self.psi.value(), self.space.currentData(), self.lr.value(),
                            self.method.currentData(), self.r1.value(), self.r2.value(), self.lambda_mask.value(),
                            int(self.feature_block.currentData() or 0), self.max_steps.value(), self.brush.value(),
                            self.show_mask.isChecked())

    def apply_settings(self, s: DragSettings) -> None:
        for name in ("seed", "psi", "lr", "r1", "r2", "lambda_mask", "max_steps", "brush"):
            widget = getattr(self, name)
            widget.blockSignals(True)
            widget.setValue(getattr(s, name))
            widget.blockSignals(False)
        self.view.brush_radius = float(s.brush)
        for combo, value in ((self.space, s.space), (self.method, s.method)):
            combo.setCurrentIndex(max(0, combo.findData(value)))
        self._wanted_block = s.feature_block
        self.show_mask.setChecked(s.show_mask)

    def _on_method_chosen(self) -> None:
        """Each method comes with its published mask weight and step size."""
        if self.method.currentData() == "freedrag":
            self.lambda_mask.setValue(draggan.FREEDRAG_LAMBDA_MASK)
            self.lr.setValue(draggan.FREEDRAG_LR)
        else:
            self.lambda_mask.setValue(draggan.DRAGGAN_LAMBDA_MASK)
            self.lr.setValue(draggan.FACE_LR)

    def learn_sheet(self):
        return drag_sheet(self.method.currentData() or "draggan")

    # -- the model and its picture ---------------------------------------------------------------
    def _on_model(self, loaded) -> None:
        self.G = loaded.model
        self.feature_block.blockSignals(True)
        self.feature_block.clear()
        self.feature_block.addItem("default (128, or the top block)", 0)
        for res in getattr(self.G.synthesis, "block_resolutions", []):
            self.feature_block.addItem(f"b{res} ({res}x{res})", int(res))
        wanted = getattr(self, "_wanted_block", 0)
        self.feature_block.setCurrentIndex(max(0, self.feature_block.findData(wanted)))
        self.feature_block.blockSignals(False)
        self.undo_stack.clear()
        self.redo_stack.clear()
        self.reset_points()
        self.new_image()

    def new_image(self) -> None:
        """The picture of the seed and ψ in the form (in a job: a big model takes a moment)."""
        if self.G is None or self.running:
            return
        if self.render_job is not None and not self.render_job.is_done:
            self.render_job.cancel()
        try:
            job = self.ctx.pool.submit(render_job, self.G, self.seed.value(), self.psi.value(), self.runner.device,
                                       name="Render a face", interactive=True, device=self.runner.device)
        except RuntimeError:  # the window is closing: the pool takes no more work
            return None
        self.render_job = job

        def done(result) -> None:
            if job is not self.render_job:
                return
            ws, image = result
            self.current = Edit(ws, image)
            self.view.set_image(image)
            self._show_points()

        job.finished.connect(done)
        job.failed.connect(lambda message: job is self.render_job and self.controls.set_status(
            f"Could not render: {message}", error=True))
        return job

    # -- points --------------------------------------------------------------------------------------
    def _show_points(self) -> None:
        pts, arrows = [], []
        for k, (h, t) in enumerate(zip(self.handles, self.targets)):
            pts += [Point(h[0], h[1], HANDLE, str(k + 1), "handle"), Point(t[0], t[1], TARGET, "", "target")]
            arrows.append((h[0], h[1], t[0], t[1], (255, 255, 255)))
        if self.pending is not None:
            pts.append(Point(self.pending[0], self.pending[1], HANDLE, str(len(self.handles) + 1), "handle"))
        self.view.set_points(pts)
        self.view.set_arrows(arrows)

    def _nearest(self, x: float, y: float) -> tuple[int, str] | None:
        """The point under the mouse (within PICK_RADIUS_PX on screen), if any."""
        reach = PICK_RADIUS_PX / max(self.view.zoom, 1e-6)
        best, best_d = None, reach
        for k, (h, t) in enumerate(zip(self.handles, self.targets)):
            for kind, p in (("handle", h), ("target", t)):
                d = math.hypot(p[0] - x, p[1] - y)
                if d <= best_d:
                    best, best_d = (k, kind), d
        return best

    def _on_press(self, x: float, y: float, buttons: int) -> None:
        if self.current is None or self.view.mask_editing:
            return
        hit = self._nearest(x, y)
        if buttons == Qt.MouseButton.RightButton.value:
            if hit is not None:
                self.remove_pair(hit[0])
            return
        if buttons != Qt.MouseButton.LeftButton.value or not self.view.contains(x, y):
            return
        if hit is not None:
            self._grab = hit
            return
        self.add_point(x, y)

    def _on_move(self, x: float, y: float) -> None:
        if self._grab is None:
            return
        k, kind = self._grab
        h, w = self.current.image.shape[:2]
        p = (min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0))
        (self.handles if kind == "handle" else self.targets)[k] = p
        self._show_points()

    def _on_release(self, x: float, y: float) -> None:
        if self._grab is not None:
            k, kind = self._grab
            self._grab = None
            p = (self.handles if kind == "handle" else self.targets)[k]
            self.runner.send(draggan.MovePoint(k, kind, p[0], p[1]))

    def add_point(self, x: float, y: float) -> None:
        """A handle, or the target of the handle waiting for one."""
        if self.pending is None:
            self.pending = (x, y)
        else:
            self.handles.append(self.pending)
            self.targets.append((x, y))
            self.runner.send(draggan.AddPair(self.pending[0], self.pending[1], x, y))
            self.pending = None
        self._show_points()
        self._show_distances()

    def remove_pair(self, k: int) -> None:
        if 0 <= k < len(self.handles):
            del self.handles[k], self.targets[k]
            self.runner.send(draggan.RemovePair(k))
            self._show_points()
            self._show_distances()

    def reset_points(self) -> None:
        self.handles, self.targets, self.pending = [], [], None
        self._show_points()
        self._show_distances()

    def _show_distances(self, step: int | None = None) -> None:
        dists = [math.hypot(t[0] - h[0], t[1] - h[1]) for h, t in zip(self.handles, self.targets)]
        parts = [f"{k + 1}: {d:.1f} px" for k, d in enumerate(dists)]
        head = f"Step {step} · " if step is not None else ""
        self.info.setText(head + ("distance to target " + ", ".join(parts) if parts else
                                  "Click the picture to add a handle (red), then its target (blue)."))

    # -- running -------------------------------------------------------------------------------------
    def make_config(self) -> draggan.DragConfig:
        return draggan.DragConfig(space=self.space.currentData(), lr=self.lr.value(), r1=self.r1.value(),
                                  r2=self.r2.value(), lambda_mask=self.lambda_mask.value(),
                                  feature_block=int(self.feature_block.currentData() or 0) or None,
                                  max_steps=self.max_steps.value(), method=self.method.currentData(),
                                  frame_interval=FRAME_INTERVAL_S, l_expected=self._freedrag_l())

    def _freedrag_l(self) -> float | None:
        """FreeDrag's l: the official 0.3 for an official pickle, else measured on the picture
        (a model trained here has much smaller features)."""
        loaded = self.picker.current
        return 0.3 if loaded is not None and loaded.format == pickles.FORMAT_PICKLE else None

    def start(self) -> None:
        if self.running or self.current is None:
            return
        if not self.handles:
            self.controls.form_error.setText("Add a handle and its target first: click the picture twice.")
            return
        self.controls.form_error.setText("")
        self.save_settings()
        mask = self.view.mask()
        flexible = mask if mask.any() else None
        self._before = Edit(self.current.ws, self.current.image, list(self.handles), list(self.targets))
        if self.learn is not None:
            self.learn.set_sheet(self.learn_sheet())
        self.runner.start(drag_job, self.G, self.current.ws, list(self.handles), list(self.targets), flexible,
                          self.make_config(), self.runner.device, name="Drag", interactive=True,
                          on_results=self._on_results, on_ended=self._on_ended)

    def stop(self) -> None:
        self.runner.send(draggan.Stop())
        self.runner.stop()

    def _on_results(self, items: list) -> None:
        steps = [i for i in items if isinstance(i, draggan.DragStep)]
        if not steps:
            return
        last = steps[-1]
        image = next((s.image for s in reversed(steps) if s.image is not None), None)
        if image is not None:
            self.view.set_image(image)
            self.current.image = image
        if self._grab is None:  # the user is not holding a point: show where tracking put the handles
            self.handles = [tuple(p) for p in last.handles][:len(self.targets)]
            self._show_points()
        self._show_distances(last.step)
        self.runner.set_progress(last.step / max(1, self.max_steps.value()))
        values = {"step": last.step, "motion": last.motion_loss, "mask_loss": last.mask_loss * self.lambda_mask.value(),
                  "loss": last.loss, "lambda": self.lambda_mask.value(), "lr": self.lr.value(),
                  "r1": last.r1, "r2": last.r2, "stop": last.stop_distance, "pairs": len(last.handles)}
        if last.handles and last.distances:
            values.update(hx=last.handles[0][0], hy=last.handles[0][1], dist=last.distances[0],
                          max_dist=max(last.distances))
        self.update_learn(values)

    def _on_ended(self, state: JobState) -> None:
        result = self.job.value if state == JobState.FINISHED else None
        if result is not None:
            self.current = Edit(result.ws, result.image, [tuple(p) for p in result.handles], list(self.targets))
            self.view.set_image(result.image)
            self.handles = list(self.current.handles)
            self._show_points()
            self.undo_stack.append(self._before)
            self.redo_stack.clear()
            words = {"reached": "every handle reached its target", "max_steps": "the step limit was reached",
                     "stopped": "stopped"}
            self.controls.set_status(f"Done after {result.steps} steps: {words.get(result.reason, result.reason)}.")
            self.runner.set_progress(1.0)
        elif state == JobState.CANCELLED and self._before is not None:
            self.controls.set_status("Stopped.")
        self._before = None

    # -- undo / redo -----------------------------------------------------------------------------------
    def _restore(self, edit: Edit) -> None:
        self.current = Edit(edit.ws, edit.image, list(edit.handles), list(edit.targets))
        self.handles, self.targets, self.pending = list(edit.handles), list(edit.targets), None
        self.view.set_image(edit.image)
        self._show_points()
        self._show_distances()

    def undo(self) -> None:
        if self.running or not self.undo_stack:
            return
        self.redo_stack.append(Edit(self.current.ws, self.current.image, list(self.handles), list(self.targets)))
        self._restore(self.undo_stack.pop())

    def redo(self) -> None:
        if self.running or not self.redo_stack:
            return
        self.undo_stack.append(Edit(self.current.ws, self.current.image, list(self.handles), list(self.targets)))
        self._restore(self.redo_stack.pop())

    # -- files -----------------------------------------------------------------------------------------
    def save_image(self, path: str | None = None) -> str | None:
        if self.current is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the picture", "drag.png", "PNG images (*.png)")
        if not path:
            return None
        img = np.ascontiguousarray(self.current.image)
        qimage = QImage(img.data, img.shape[1], img.shape[0], img.strides[0], QImage.Format.Format_RGB888)
        if not qimage.save(path, "PNG"):
            self.controls.set_status(f"Could not write {path}", error=True)
            return None
        self.ctx.show_message(f"Saved {path}")
        return path

    def save_latent(self, path: str | None = None) -> str | None:
        if self.current is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the latent", "latent.safetensors",
                                                  "Latents (*.safetensors)")
        if not path:
            return None
        try:
            draggan.save_latent(path, self.current.ws, {"seed": self.seed.value(), "psi": self.psi.value(),
                                                         "model": self.picker.current.name if self.picker.current
                                                         else ""})
        except Exception as exc:  # noqa: BLE001 - a bad path, a full disk: a message
            self.controls.set_status(f"Could not save the latent: {exc}", error=True)
            return None
        self.ctx.show_message(f"Saved the latent to {path}")
        return path

    def open_picture(self, path: str | None = None):
        """Project a picture into W+ (a job: its reconstruction is shown as it improves); then it can be dragged."""
        if self.G is None or self.running:
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open a picture to drag", "",
                                                  "Pictures (*.png *.jpg *.jpeg *.bmp *.webp);;All files (*)")
        if not path:
            return None
        self._before = Edit(self.current.ws, self.current.image, list(self.handles), list(self.targets)) \
            if self.current is not None else None
        return self.runner.start(_projection_job, path, self.G, self.project_steps.value(), self.runner.device,
                                 name="Project a picture", interactive=True, on_results=self._on_projection,
                                 on_ended=self._on_projected)

    def _on_projection(self, items: list) -> None:
        steps = [i for i in items if isinstance(i, projection.ProjectionStep)]
        if not steps:
            return
        last = steps[-1]
        image = next((s.image for s in reversed(steps) if s.image is not None), None)
        if image is not None:
            self.view.set_image(image)
        feature = "" if math.isnan(last.feature_loss) else f", feature loss {last.feature_loss:.4f}"
        self.info.setText(f"Projecting: step {last.step}/{last.steps}, pixel loss {last.pixel_loss:.4f}{feature}")

    def _on_projected(self, state: JobState) -> None:
        if state == JobState.FINISHED and self.job.value is not None:
            ws, image = self.job.value
            if self._before is not None:
                self.undo_stack.append(self._before)
                self.redo_stack.clear()
            self.current = Edit(ws, image)
            self.view.set_image(image)
            self.reset_points()
            self.controls.set_status("Projected: this is the model's closest picture. Add points and drag it.")
        elif self.current is not None:
            self.view.set_image(self.current.image)
        self._before = None

    def load_latent(self, path: str | None = None):
        if self.G is None or self.running:
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load a latent", "", "Latents (*.safetensors *.npy)")
        if not path:
            return None
        job = self.ctx.pool.submit(draggan.load_latent_and_render, path, self.G, self.runner.device,
                                   name="Load a latent", interactive=True, device=self.runner.device)

        def done(result) -> None:
            ws, image = result
            if self.current is not None:
                self.undo_stack.append(Edit(self.current.ws, self.current.image, list(self.handles),
                                            list(self.targets)))
                self.redo_stack.clear()
            self.current = Edit(ws, image)
            self.view.set_image(image)
            self.reset_points()
            self.controls.set_status(f"Loaded the latent {Path(path).name}.")

        job.finished.connect(done)
        job.failed.connect(lambda message: self.controls.set_status(f"Could not load the latent: {message}",
                                                                    error=True))
        return job
