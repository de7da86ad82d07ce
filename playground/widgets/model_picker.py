"""The model picker every model tab shares: its built-in model, "Open…", and recent files.

A tab hands the picker two loaders (one for its embedded default model, one for a path the
user chose) and gets :class:`LoadedModel` values back through ``modelChanged``. The picker
owns everything around them, so that the tabs behave alike:

* loading always runs as a job on the app's pool, never on the GUI thread, with a small
  progress bar and a Cancel button while it runs;
* a failed load shows one red line in place and emits ``loadFailed``; the model that was
  loaded before stays :attr:`ModelPicker.current` and the combo box returns to it;
* a new load while one runs cancels the old one, and whatever the old one returns late is
  ignored, so the last thing the user asked for wins;
* recent files and the last choice are remembered in the settings, and checked when read
  back, because a settings file can be edited by hand.

Loaders may be plain functions or generators yielding :class:`~playground.progress.Progress`
(the pool runs both). A loader that fails should raise :class:`~playground.errors.BadFileError`
or :class:`~playground.errors.UserError` with a message written for a person.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any, Protocol

from PySide6.QtCore import QDir, Qt, Signal, Slot
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..jobs import Job, JobPool
from ..ml.checkpoints import LoadedModel  # Qt-free, so that ML loaders can build it
from .forms import ERROR_COLOR, CalmProgressBar

log = logging.getLogger(__name__)

#: How many recent files the picker remembers.
MAX_RECENT = 8

# What a combo box entry stands for (kept in the item's user data).
_DEFAULT, _PATH, _OPEN_FILE, _OPEN_FOLDER = "default", "path", "open-file", "open-folder"
_KIND_ROLE = Qt.ItemDataRole.UserRole
_PATH_ROLE = Qt.ItemDataRole.UserRole + 1


class SettingsStore(Protocol):
    """What the picker needs from the settings: JSON values by key (which may be of the wrong type)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


def format_parameters(count: int) -> str:
    """A parameter count as people write it: "950 parameters", "12.3K parameters", "26.0M parameters"."""
    if count < 1000:
        return f"{count} parameter" + ("" if count == 1 else "s")
    # Take the first unit whose rounded figure stays below 1000, so 999,960 reads "1.0M", not "1000.0K".
    for scale, suffix in ((1e3, "K"), (1e6, "M"), (1e9, "B")):
        if round(count / scale, 1) < 1000:
            return f"{count / scale:.1f}{suffix} parameters"
    return f"{count / 1e12:.1f}T parameters"


def describe(loaded: LoadedModel) -> str:
    """The one line the info label shows: name, format, parameters and details, dot separated."""
    parts = [loaded.name]
    if loaded.format:
        parts.append(loaded.format)
    if loaded.parameters is not None:
        parts.append(format_parameters(loaded.parameters))
    parts.extend(f"{key}: {value}" for key, value in loaded.details.items())
    return " · ".join(parts)


def _normalize(path: str) -> str:
    """One spelling per file, so that "a/../m.pt" and "m.pt" count as one recent entry."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def _display_name(path: str) -> str:
    return os.path.basename(path.rstrip(os.sep)) or path


class _ElidedLabel(QLabel):
    """A one-line label that shortens its text with "…" to fit, instead of widening the form.

    The whole text stays in the tooltip; :attr:`full_text` is what was set.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.full_text = ""
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def set_full_text(self, text: str) -> None:
        self.full_text = text
        self.setToolTip(text if text else "")
        self._elide()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        first_line = self.full_text.splitlines()[0] if self.full_text else ""
        width = max(self.width(), 40)
        self.setText(self.fontMetrics().elidedText(first_line, Qt.TextElideMode.ElideRight, width))


class _Combo(QComboBox):
    """A combo box that asks to be refreshed just before its list opens (recent files may have gone)."""

    def __init__(self, before_popup: Callable[[], None]) -> None:
        super().__init__()
        self._before_popup = before_popup

    def showPopup(self) -> None:  # noqa: N802 - Qt API
        self._before_popup()
        super().showPopup()


class ModelPicker(QWidget):
    """Choose, load and show a tab's model: its embedded default, a file or folder, or a recent file.

    Signals: ``modelChanged(LoadedModel)`` after a load succeeded, ``loadFailed(str)`` with a
    readable message, ``busyChanged(bool)`` when loading starts or ends.
    """

    modelChanged = Signal(object)
    loadFailed = Signal(str)
    busyChanged = Signal(bool)

    def __init__(self, pool: JobPool, settings: SettingsStore, key: str, *,
                 load_default: Callable[[], LoadedModel | Generator] | None,
                 load_path: Callable[[str], LoadedModel | Generator],
                 default_name: str, file_filter: str = "All files (*)", allow_folders: bool = False,
                 device: Callable[[], str] = lambda: "cpu", builtin: dict[str, str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # other shipped models (label -> path), listed after the default, never in the recent list
        self.builtin = {label: _normalize(path) for label, path in (builtin or {}).items() if os.path.exists(path)}
        self._pool = pool
        self._settings = settings
        self._key = key
        self._load_default_fn = load_default
        self._load_path_fn = load_path
        self.default_name = default_name
        self.file_filter = file_filter
        self.allow_folders = allow_folders
        self._device = device

        self._current: LoadedModel | None = None
        self._current_choice: str | None = None  # "" for the default, else the normalized path opened
        self._job: Job | None = None
        self._pending_choice: str | None = None
        self._pending_label = ""
        self._fallback_to_default = False  # set by restore(): a failed path then loads the default

        self.combo = _Combo(self.refresh)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(12)
        self.combo.setPlaceholderText("No model loaded")
        self.combo.setToolTip("The model this tab uses")
        self.combo.activated.connect(self._on_activated)

        self.progress_bar = CalmProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(12)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop loading; the model loaded before stays")
        self.cancel_button.clicked.connect(self.cancel)
        self.status_label = _ElidedLabel()

        self.info_label = QLabel("No model loaded.")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = _ElidedLabel()
        self.error_label.setStyleSheet(f"color: {ERROR_COLOR}")

        progress_row = QHBoxLayout()
        progress_row.setContentsMargins(0, 0, 0, 0)
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.cancel_button)
        self._progress_box = QWidget()
        self._progress_box.setLayout(progress_row)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.combo)
        layout.addWidget(self._progress_box)
        layout.addWidget(self.status_label)
        layout.addWidget(self.info_label)
        layout.addWidget(self.error_label)
        self._show_busy(False)
        self.error_label.hide()
        self._sync_combo()  # the placeholder until something is loaded

    # -- what the tab reads ------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        """The model loaded last (a failed or cancelled load leaves it as it was)."""
        return self._current

    @property
    def loading(self) -> bool:
        return self._job is not None

    @property
    def error_message(self) -> str:
        """The message of the last failure shown in place ("" when none is shown)."""
        return self.error_label.full_text

    @property
    def recent(self) -> list[str]:
        """Recent files and folders, newest first, at most :data:`MAX_RECENT`, only those that still exist."""
        return [path for path in self._stored_recent() if os.path.exists(path)]

    def _stored_recent(self) -> list[str]:
        """The recent list as stored, keeping only well-formed entries (the file may have been edited)."""
        value = self._settings.get(f"{self._key}/recent", [])
        if not isinstance(value, list):
            return []
        seen: list[str] = []
        for entry in value:
            if isinstance(entry, str) and entry.strip():
                path = _normalize(entry)
                if path not in seen:
                    seen.append(path)
        return seen[:MAX_RECENT]

    def _remember(self, path: str) -> None:
        """Put ``path`` first in the recent list (once), dropping files that are gone, and store it."""
        rest = [p for p in self._stored_recent() if p != path and os.path.exists(p)]
        self._settings.set(f"{self._key}/recent", [path, *rest][:MAX_RECENT])

    # -- entry points ------------------------------------------------------------------------
    def load_default(self) -> None:
        """Load the tab's embedded default model (nothing happens when the tab has none)."""
        if self._load_default_fn is None:
            return
        self._fallback_to_default = False
        self._start(self._load_default_fn, (), choice="", label=self.default_name)

    def open_path(self, path: str) -> None:
        """Load the model at ``path`` (a file, or a folder when folders are allowed).

        The one entry point for a path: the combo box, the dialogs and tests all come here.
        """
        self._fallback_to_default = False
        self._open_path(path)

    def _open_path(self, path: str) -> None:
        path = _normalize(path)
        name = _display_name(path)
        if not os.path.exists(path):
            self._fail(f"{name} was not found (it may have been moved or deleted).", choice=path)
            return
        if os.path.isdir(path) and not self.allow_folders:
            self._fail(f"{name} is a folder; choose a model file.", choice=path)
            return
        self._start(self._load_path_fn, (path,), choice=path, label=name)

    def open_dialog(self) -> None:
        """Ask for a model file and open it."""
        path, _selected = QFileDialog.getOpenFileName(self, "Open model", self._dialog_dir(), self.file_filter)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        """Ask for a model folder and open it (only offered when the tab accepts folders)."""
        path = QFileDialog.getExistingDirectory(self, "Open model folder", self._dialog_dir())
        if path:
            self.open_path(path)

    def restore(self) -> None:
        """Reopen the last choice from the settings; if that fails or is gone, load the default."""
        last = self._settings.get(f"{self._key}/last", "")
        if isinstance(last, str) and last.strip() and os.path.exists(_normalize(last)):
            self._fallback_to_default = self._load_default_fn is not None
            self._open_path(last)
        else:
            self.load_default()

    def cancel(self) -> None:
        """Stop the load in progress; the model loaded before stays."""
        job = self._job
        if job is None:
            return
        job.cancel()
        self._forget_job()
        self._set_status("")
        self._sync_combo()

    def refresh(self) -> None:
        """List the recent files again (some may have been deleted) and show the loaded model's entry."""
        self._sync_combo()

    def _dialog_dir(self) -> str:
        recent = self.recent
        if recent:
            return os.path.dirname(recent[0])
        return QDir.homePath()

    # -- running a load ----------------------------------------------------------------------
    def _start(self, fn: Callable[..., Any], args: tuple, *, choice: str, label: str) -> None:
        """Submit a load, superseding the one in progress (whose late result is then ignored)."""
        was_loading = self._job is not None
        if self._job is not None:
            self._job.cancel()
        self._pending_choice = choice
        self.error_label.set_full_text("")
        self.error_label.hide()
        job = self._pool.submit(fn, *args, name=f"Loading {label}", device=self._device(), interactive=True)
        self._job = job
        job.progress.connect(self._on_progress)
        job.finished.connect(self._on_finished)
        job.failed.connect(self._on_failed)
        job.cancelled.connect(self._on_cancelled)
        self._pending_label = label
        self.progress_bar.setRange(0, 0)  # "busy" until the loader reports a fraction
        self._set_status(f"Loading {label}…")
        self._show_busy(True)
        self._sync_combo()
        if not was_loading:
            self.busyChanged.emit(True)

    def _is_current_job(self) -> bool:
        """True in a job slot when the job that sent the signal is the load in progress."""
        sender = self.sender()
        return sender is not None and sender is self._job

    @Slot(float, str)
    def _on_progress(self, fraction: float, text: str) -> None:
        if not self._is_current_job():
            return
        if fraction < 0:
            self.progress_bar.setRange(0, 0)
        else:
            if self.progress_bar.maximum() == 0:
                self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(round(min(max(fraction, 0.0), 1.0) * 1000)))
        label = f"Loading {self._pending_label}…"
        self._set_status(f"{label} {text}" if text else label)

    @Slot(object)
    def _on_finished(self, value: Any) -> None:
        if not self._is_current_job():
            return
        choice = self._pending_choice or ""
        self._forget_job()
        if not isinstance(value, LoadedModel):
            log.error("Model loader returned %r instead of a LoadedModel", type(value).__name__)
            self._fail(f"Loading {self._pending_label} gave no model (the loader returned "
                       f"{type(value).__name__}).", choice=choice)
            return
        if choice and not value.source:
            value = replace(value, source=choice)
        self._current = value
        self._current_choice = choice
        self._fallback_to_default = False
        if choice and choice not in self.builtin.values():
            self._remember(choice)
        self._settings.set(f"{self._key}/last", choice)
        self._set_status("")
        self._show_info()
        self._sync_combo()
        self.modelChanged.emit(value)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if not self._is_current_job():
            return
        choice = self._pending_choice or ""
        self._forget_job()
        self._fail(message, choice=choice)

    @Slot()
    def _on_cancelled(self) -> None:
        if not self._is_current_job():
            return
        self._forget_job()
        self._set_status("")
        self._sync_combo()

    def _forget_job(self) -> None:
        """The load in progress is over (or abandoned): hide its controls and say the picker is idle."""
        if self._job is None:
            return
        self._job = None
        self._show_busy(False)
        self.busyChanged.emit(False)

    def _fail(self, message: str, *, choice: str) -> None:
        """Show a failure in place, keep the previous model, and fall back to the default if restoring."""
        name = self.default_name if choice == "" else _display_name(choice)
        if name not in message:
            message = f"Could not load {name}: {message}"
        self._set_status("")
        self.error_label.set_full_text(message)
        self.error_label.show()
        self._sync_combo()
        self.loadFailed.emit(message)
        if self._fallback_to_default and choice != "":
            self._fallback_to_default = False
            note = f"{message} The default model is loaded instead."
            self._start(self._load_default_fn, (), choice="", label=self.default_name)
            # Keep the reason visible while (and after) the default loads.
            self.error_label.set_full_text(note)
            self.error_label.show()

    # -- showing -----------------------------------------------------------------------------
    def _show_busy(self, busy: bool) -> None:
        self._progress_box.setVisible(busy)
        self.status_label.setVisible(busy)
        if not busy:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(0)

    def _set_status(self, text: str) -> None:
        self.status_label.set_full_text(text)

    def _show_info(self) -> None:
        loaded = self._current
        if loaded is None:
            self.info_label.setText("No model loaded.")
            self.info_label.setToolTip("")
            return
        self.info_label.setText(describe(loaded))
        self.info_label.setToolTip(loaded.source or "Built into the app")

    def _entries(self) -> list[str]:
        """The paths the combo box lists: recent files, plus the loaded one even if it is gone."""
        shipped = set(self.builtin.values())
        paths = [p for p in self.recent if p not in shipped]
        if self._current_choice and self._current_choice not in paths and self._current_choice not in shipped:
            paths.insert(0, self._current_choice)
        return paths

    def _rebuild_combo(self) -> None:
        """List the default, then recent files (file name shown, full path in the tooltip), then Open…."""
        combo = self.combo
        combo.blockSignals(True)
        try:
            combo.clear()
            if self._load_default_fn is not None:
                combo.addItem(self.default_name)
                index = combo.count() - 1
                combo.setItemData(index, _DEFAULT, _KIND_ROLE)
                combo.setItemData(index, "", _PATH_ROLE)
                combo.setItemData(index, "The model built into this tab", Qt.ItemDataRole.ToolTipRole)
            for label, path in self.builtin.items():
                combo.addItem(label)
                index = combo.count() - 1
                combo.setItemData(index, _PATH, _KIND_ROLE)
                combo.setItemData(index, path, _PATH_ROLE)
                combo.setItemData(index, f"Shipped with the app: {path}", Qt.ItemDataRole.ToolTipRole)
            paths = self._entries()
            names = [_display_name(p) for p in paths]
            for path, name in zip(paths, names):
                if names.count(name) > 1:  # two "model.pt": say which folder each is in
                    name = f"{name} ({_display_name(os.path.dirname(path))})"
                combo.addItem(name)
                index = combo.count() - 1
                combo.setItemData(index, _PATH, _KIND_ROLE)
                combo.setItemData(index, path, _PATH_ROLE)
                combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
            if combo.count():
                combo.insertSeparator(combo.count())
            for kind, text, tip in ((_OPEN_FILE, "Open file…", "Choose a model file"),
                                    (_OPEN_FOLDER, "Open folder…", "Choose a model folder")):
                if kind == _OPEN_FOLDER and not self.allow_folders:
                    continue
                combo.addItem(text)
                index = combo.count() - 1
                combo.setItemData(index, kind, _KIND_ROLE)
                combo.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        finally:
            combo.blockSignals(False)

    def _sync_combo(self) -> None:
        """Rebuild the list and show the loaded model's entry (none when nothing is loaded)."""
        self._rebuild_combo()
        self.combo.setCurrentIndex(self._combo_index(self._current_choice))

    def _combo_index(self, choice: str | None) -> int:
        if choice is None:
            return -1
        for index in range(self.combo.count()):
            kind = self.combo.itemData(index, _KIND_ROLE)
            if kind in (_DEFAULT, _PATH) and self.combo.itemData(index, _PATH_ROLE) == choice:
                return index
        return -1

    @Slot(int)
    def _on_activated(self, index: int) -> None:
        kind = self.combo.itemData(index, _KIND_ROLE)
        path = self.combo.itemData(index, _PATH_ROLE)
        # Show the loaded model again at once: a dialog may be cancelled, a load may fail.
        self.combo.setCurrentIndex(self._combo_index(self._current_choice))
        if kind == _DEFAULT:
            if self._current_choice == "":
                self.cancel()  # the default is loaded already: only drop a load in progress
            else:
                self.load_default()
        elif kind == _PATH:
            self.open_path(path)  # even the loaded file: it may have changed on disk
        elif kind == _OPEN_FILE:
            self.open_dialog()
        elif kind == _OPEN_FOLDER:
            self.open_folder_dialog()
