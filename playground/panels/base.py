"""The panel kit: what every tab stands on.

* :class:`Panel`, the base of every tab: its title, its settings dataclass saved and
  restored by the kit (as plain JSON, validated field by field), an optional Learn side
  panel, and a hook for the app's shutdown.
* :class:`JobRunner`, the life of a panel's long work: submit it to the pool on the
  chosen device, bind Start / Pause / Stop / the progress bar / the status line of
  :class:`~playground.widgets.forms.JobControls`, report failures in the status line and
  end every run in the same way. A panel gives it callbacks; it never touches
  ``Job`` signals or states itself.
* :class:`ErrorPanel`, the tab shown in place of a panel that failed to import or to
  build, so that a broken panel says why instead of disappearing.

The registry of panels (which tabs exist, in which order) is in ``panels/__init__.py``.
See ``docs/adding-a-tab.md`` for a walk through adding a tab.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from ..errors import ErrorKind
from ..jobs import Job, JobState
from ..settings import dump_dataclass, load_dataclass
from ..widgets.forms import ERROR_COLOR, JobControls

log = logging.getLogger(__name__)


class JobRunner(QObject):
    """Runs a panel's one long job at a time and keeps its controls in step with it.

    ``start`` submits ``fn(*args, **kwargs)`` on the device the user chose (the Device
    menu; a change applies to the next job, running jobs keep theirs). While it runs,
    Start is disabled and Pause / Stop enabled; progress goes to the bar and its text to
    the status line; a failure shows "<failure_prefix>: <message>" in red; at the end the
    panel's ``on_ended(state)`` runs after the buttons are updated, and ``job`` keeps the
    ended job (its ``value``, ``error``, ``error_kind``) until the next start.
    """

    #: The state of the panel's job changed (a JobState), and when it ended.
    stateChanged = Signal(object)
    deviceChanged = Signal(str)

    def __init__(self, ctx, controls: JobControls | None = None, *, failure_prefix: str = "",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.controls = controls
        self.failure_prefix = failure_prefix
        self.job: Job | None = None
        self._extra_buttons: list[tuple[QWidget, bool]] = []
        self.device = ctx.device
        ctx.deviceChanged.connect(self._on_device)
        self._on_ended_cb: Callable[[JobState], None] | None = None
        self._stopping = False
        self.update_buttons()

    # -- what the panel calls ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.is_done

    @property
    def state(self) -> JobState | None:
        return None if self.job is None else self.job.state

    def start(self, fn: Callable[..., Any], *args: Any, name: str, on_results: Callable[[list], None] | None = None,
              on_ended: Callable[[JobState], None] | None = None, on_failed: Callable[[str], None] | None = None,
              interactive: bool = False, delivery_ms: int | None = None, device: str | None = None,
              **kwargs: Any) -> Job | None:
        """Submit the job (unless one is running: then None). Callbacks run on the GUI thread."""
        if self.running:
            return None
        extra = {} if delivery_ms is None else {"delivery_ms": delivery_ms}
        job = self.ctx.pool.submit(fn, *args, name=name, device=device or self.device,
                                   interactive=interactive, **extra, **kwargs)
        self.job = job
        self._stopping = False
        self._on_ended_cb = on_ended
        if self.controls is not None:
            self.controls.progress.setValue(0)
            self.controls.set_status("")
        if on_results is not None:
            job.results.connect(on_results)
        job.progress.connect(self._on_progress)
        job.failed.connect(on_failed if on_failed is not None else self._show_failure)
        job.stateChanged.connect(self._on_state)
        job.ended.connect(lambda state, j=job: self._on_ended(j, state))
        self.update_buttons()
        return job

    def stop(self) -> None:
        if self.running:
            self._stopping = True
            self.job.cancel()
            self.set_status("Stopping…")
            if self.controls is not None and self.controls.pause_button is not None:
                self.controls.pause_button.setEnabled(False)

    def toggle_pause(self) -> None:
        if not self.running or self._stopping:
            return
        if self.job.state == JobState.PAUSED:
            self.job.resume()
            self.set_status("Resumed")
        else:
            self.job.pause()
            if self.job.state == JobState.PAUSED:
                self.set_status("Paused")
        self.update_buttons()

    def send(self, value: Any) -> bool:
        """Send a value to the running job (see :meth:`Job.send`)."""
        return self.running and self.job.send(value)

    def set_status(self, text: str, error: bool = False) -> None:
        if self.controls is not None:
            self.controls.set_status(text, error=error)

    def set_progress(self, fraction: float) -> None:
        if self.controls is not None:
            self.controls.progress.setValue(int(max(0.0, min(1.0, fraction)) * 1000))

    def disable_while_running(self, *widgets: QWidget) -> None:
        """Widgets (an Open button, say) enabled only while no job runs."""
        self._extra_buttons += [(w, False) for w in widgets]
        self.update_buttons()

    def enable_while_running(self, *widgets: QWidget) -> None:
        self._extra_buttons += [(w, True) for w in widgets]
        self.update_buttons()

    def update_buttons(self) -> None:
        running = self.running
        c = self.controls
        if c is not None:
            c.start_button.setEnabled(not running)
            c.stop_button.setEnabled(running)
            if c.pause_button is not None:
                c.pause_button.setEnabled(running)
                c.pause_button.setText("Resume" if running and self.job.state == JobState.PAUSED else "Pause")
        for widget, when_running in self._extra_buttons:
            widget.setEnabled(running == when_running)

    # -- job signals ----------------------------------------------------------------------
    def _on_device(self, key: str) -> None:
        self.device = key
        self.deviceChanged.emit(key)

    def _on_progress(self, fraction: float, text: str) -> None:
        if self.controls is None:
            return
        if fraction >= 0:
            self.controls.progress.setValue(int(fraction * 1000))
        if text and not self._stopping and (self.job is None or self.job.state != JobState.PAUSED):
            self.controls.status.setText(text)

    def _show_failure(self, message: str) -> None:
        text = f"{self.failure_prefix}: {message}" if self.failure_prefix else message
        if self.job is not None and self.job.error_kind is ErrorKind.OUT_OF_MEMORY:
            text += " Nothing you made was lost."
        self.set_status(text, error=True)

    def _on_state(self, state: JobState) -> None:
        self.update_buttons()
        self.stateChanged.emit(state)

    def _on_ended(self, job: Job, state: JobState) -> None:
        if job is not self.job:
            return
        self.update_buttons()
        if state == JobState.CANCELLED and self._stopping:
            self.set_status("Stopped.")
        self._stopping = False
        if self._on_ended_cb is not None:
            self._on_ended_cb(state)


class Panel(QWidget):
    """The base of every tab.

    A subclass sets ``title`` (with an ``&`` mnemonic) and ``settings_key``, and, to
    have its settings remembered, ``Settings`` (a dataclass) with
    :meth:`settings_state` (the form as a ``Settings``) and :meth:`apply_settings`.
    The kit calls :meth:`load_settings` once the panel is built and :meth:`save_settings`
    when the window closes (and panels call it on Start), and :meth:`shutdown` before the
    pool stops.
    """

    title: ClassVar[str] = ""
    settings_key: ClassVar[str] = ""
    Settings: ClassVar[type | None] = None

    def __init__(self, ctx, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.learn = None  # a LearnPanel once with_learn() is called
        self.runner: JobRunner | None = None  # the panel's JobRunner, for its main long work

    # -- the panel's main job -----------------------------------------------------------------
    @property
    def job(self) -> Job | None:
        return None if self.runner is None else self.runner.job

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    # -- settings -------------------------------------------------------------------------
    def settings_state(self) -> Any:
        """The panel's settings now, as an instance of ``Settings``."""
        raise NotImplementedError

    def apply_settings(self, state: Any) -> None:
        """Show ``state`` (a ``Settings``, already checked field by field) in the form."""
        raise NotImplementedError

    def save_settings(self) -> None:
        if self.Settings is None or not self.settings_key:
            return
        try:
            state = self.settings_state()
        except Exception:  # noqa: BLE001 - a half-filled form must not stop the window from closing
            log.exception("Could not read %s's settings", type(self).__name__)
            return
        if state is not None:
            self.ctx.settings.set(self.settings_key, dump_dataclass(state))

    def load_settings(self) -> None:
        """Restore what was saved; a value of the wrong type goes back to its default, with a message."""
        if self.Settings is None or not self.settings_key:
            return
        state, problems = load_dataclass(self.Settings, self.ctx.settings.get(self.settings_key))
        try:
            self.apply_settings(state)
        except Exception:  # noqa: BLE001 - never let a saved value stop the window from opening
            log.exception("Could not restore %s's settings", type(self).__name__)
            problems.append("the saved settings could not be shown")
            self.apply_settings(self.Settings())
        if problems:
            name = self.title.replace("&", "") or type(self).__name__
            self.ctx.show_message(f"{name}: some saved settings were not usable and are back to their defaults: "
                                  + "; ".join(problems[:4]), 15000)

    # -- the model, loaded when the tab is first shown -------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.ensure_model()

    def ensure_model(self) -> None:
        """Load the remembered (or embedded) model of the panel's ``picker`` once, when the tab
        is first shown: a window whose tab is never opened spends nothing on its model."""
        picker = getattr(self, "picker", None)
        if picker is not None and not getattr(self, "_model_asked", False):
            self._model_asked = True
            picker.restore()

    # -- the Learn side panel ---------------------------------------------------------------
    def with_learn(self, content: QWidget, sheet=None) -> QWidget:
        """``content`` with the collapsible Learn panel at its right (the panel's main layout)."""
        from ..widgets.learn import LearnPanel

        split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        split.addWidget(content)
        self.learn = LearnPanel()
        if sheet is not None:
            self.learn.set_sheet(sheet)
        split.addWidget(self.learn)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 0)
        collapsed = self.ctx.settings.get_typed(f"{self.settings_key}/learn_collapsed", bool, False)
        self.learn.set_collapsed(collapsed)
        self.learn.collapsedChanged.connect(
            lambda on: self.ctx.settings.set(f"{self.settings_key}/learn_collapsed", bool(on)))
        return split

    def lay_out(self, form: QWidget, view: QWidget) -> None:
        """The model tabs' layout: the form at the left, the view in the middle (it takes the
        room), the Learn panel at the right."""
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(form)
        split.addWidget(view)
        split.setSizes([330, 900])
        split.setStretchFactor(1, 1)
        QHBoxLayout(self).addWidget(self.with_learn(split, self.learn_sheet()))

    def learn_sheet(self):
        """The Learn panel's sheet for the form's current choices (a panel with one overrides this)."""
        return None

    def refresh_learn_sheet(self) -> None:
        """The form changed a choice that changes the formulas: show them (not while a run is live)."""
        if self.learn is not None and not self.running:
            self.learn.set_sheet(self.learn_sheet())

    def update_learn(self, values: dict) -> None:
        if self.learn is not None:  # (cheap: only labels change, and only while it is open)
            self.learn.update_values(values)

    # -- the end ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Called when the window closes, before the pool is stopped (save what must be saved)."""


class ErrorPanel(QWidget):
    """A tab that says why its panel could not be shown (the traceback goes to the log)."""

    def __init__(self, title: str, message: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.message = message
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        label = QLabel(f"<h3>The {title.replace('&', '')} tab could not be opened</h3><p>{_escape(message)}</p>"
                       "<p>The other tabs work as usual. The details are in the log "
                       "(run with <code>PLAYGROUND_LOG=DEBUG</code> to see more).</p>")
        label.setWordWrap(True)
        label.setMaximumWidth(700)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setStyleSheet(f"QLabel {{ color: {ERROR_COLOR}; }}")
        self.label = label
        row.addWidget(label)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(2)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
