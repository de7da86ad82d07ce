"""Small helpers for the panels' forms."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QWidget,
)

ERROR_COLOR = "#c62828"


def compact_form(form: QWidget, min_width: int = 300) -> QScrollArea:
    """Put a form in a vertical scroll area whose combo boxes may shrink below their longest item."""
    for combo in form.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    scroll = QScrollArea()
    scroll.setWidget(form)
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setMinimumWidth(min_width)
    return scroll


def button(text: str, slot=None, tip: str = "") -> QPushButton:
    """A push button with its tool tip and its click handler, in one line."""
    b = QPushButton(text)
    if tip:
        b.setToolTip(tip)
    if slot is not None:
        b.clicked.connect(slot)
    return b


class CalmProgressBar(QProgressBar):
    """A progress bar that repaints at most every INTERVAL_MS however fast values come.

    QProgressBar repaints synchronously inside ``setValue``; with a job reporting many
    times a second that is GUI-thread time (and GIL time) taken from the worker. Values
    in between are held and the newest is shown when the interval ends; the first and
    last values (minimum, maximum) are shown at once.
    """

    INTERVAL_MS = 300

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pending: int | None = None
        self._calm = QTimer(self, singleShot=True, interval=self.INTERVAL_MS)
        self._calm.timeout.connect(self._show_pending)

    def setValue(self, value: int) -> None:  # noqa: N802 - Qt API
        value = int(value)
        if value in (self.minimum(), self.maximum()):
            self._pending = None
            self._calm.stop()
            super().setValue(value)
        elif self._calm.isActive():
            self._pending = value
        else:
            super().setValue(value)
            self._calm.start()

    def value(self) -> int:
        return super().value() if self._pending is None else self._pending

    def _show_pending(self) -> None:
        if self._pending is not None:
            super().setValue(self._pending)
            self._pending = None
            self._calm.start()


class JobControls:
    """The foot of a panel's form: an error line, Start / (Pause) / Stop, a progress bar, a status line.

    Shortcuts (Ctrl+Return start, Ctrl+P pause, Ctrl+. stop) belong to the panel only, so
    that two tabs can use the same keys.
    """

    def __init__(self, panel: QWidget, form: QFormLayout, *, start_text: str, start_tip: str,
                 stop_tip: str, start, stop, pause=None) -> None:
        self.form_error = QLabel("")
        self.form_error.setWordWrap(True)
        self.form_error.setStyleSheet(f"color: {ERROR_COLOR}")
        form.addRow(self.form_error)
        row = QHBoxLayout()
        self.start_button = QPushButton(start_text)
        self.start_button.setToolTip(f"{start_tip} (Ctrl+Return)")
        self.start_button.clicked.connect(start)
        row.addWidget(self.start_button)
        self.pause_button = None
        if pause is not None:
            self.pause_button = QPushButton("Pause")
            self.pause_button.setToolTip("Pause or resume (Ctrl+P)")
            self.pause_button.clicked.connect(pause)
            row.addWidget(self.pause_button)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(f"{stop_tip} (Ctrl+.)")
        self.stop_button.clicked.connect(stop)
        row.addWidget(self.stop_button)
        form.addRow(row)
        self.progress = CalmProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status = QLabel("Ready")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        for keys, slot in (("Ctrl+Return", start), ("Ctrl+.", stop), ("Ctrl+P", pause)):
            if slot is not None:
                shortcut = QShortcut(QKeySequence(keys), panel, slot)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)

    def set_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(f"color: {ERROR_COLOR}" if error else "")
        self.status.setText(text)
