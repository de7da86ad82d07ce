"""The main window: one tab per panel, the device menu, and a status bar of running jobs."""

from __future__ import annotations

import logging
import os
import sys

from PySide6.QtCore import QByteArray, QObject, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QToolButton,
    QWidget,
)

from . import APP_NAME, ORG_NAME, __version__
from .devices import available_devices, configure_torch_threads, device_label, memory_summary, resolve_device
from .jobs import GuiThreadCollector, Job, JobPool, JobState
from .panels import PANELS, build_panel
from .settings import Settings
from .widgets.forms import CalmProgressBar
from .widgets.plots import configure_pyqtgraph

log = logging.getLogger(__name__)


class AppContext(QObject):
    """What every panel shares: the job pool, the settings, and the chosen device."""

    deviceChanged = Signal(str)
    message = Signal(str, int)  # text, milliseconds (0 = until replaced)

    def __init__(self, settings: Settings, pool: JobPool | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool or JobPool(parent=self)
        self._device = resolve_device(settings.get_typed("device", str, None))

    @property
    def device(self) -> str:
        return self._device

    def set_device(self, key: str) -> None:
        key = resolve_device(key)
        if key != self._device:
            self._device = key
            self.settings.set("device", key)
            self.deviceChanged.emit(key)

    def show_message(self, text: str, ms: int = 8000) -> None:
        self.message.emit(text, ms)


class JobWidget(QWidget):
    """One running job in the status bar: its name, a progress bar and a cancel button."""

    def __init__(self, job: Job, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job = job
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.setSpacing(4)
        self.label = QLabel(job.name)
        self.bar = CalmProgressBar()
        self.bar.setFixedWidth(110)
        self.bar.setMaximumHeight(14)
        self.bar.setRange(0, 0)
        self.bar.setTextVisible(False)
        self.cancel = QToolButton()
        self.cancel.setText("✕")
        self.cancel.setToolTip(f"Cancel {job.name}")
        self.cancel.setAutoRaise(True)
        self.cancel.clicked.connect(job.cancel)
        for w in (self.label, self.bar, self.cancel):
            layout.addWidget(w)
        job.progress.connect(self._on_progress)
        job.stateChanged.connect(self._on_state)

    def _on_progress(self, fraction: float, text: str) -> None:
        if fraction >= 0:
            if self.bar.maximum() != 1000:
                self.bar.setRange(0, 1000)
            self.bar.setValue(int(fraction * 1000))
        # An unknown fraction (< 0) leaves the bar as it is: busy, or the last known fraction.
        if text:
            self.setToolTip(text)

    def _on_state(self, state: JobState) -> None:
        self.label.setText(f"{self.job.name} (paused)" if state == JobState.PAUSED else self.job.name)


class MainWindow(QMainWindow):
    def __init__(self, context: AppContext | None = None) -> None:
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.ctx = context or AppContext(Settings())
        configure_pyqtgraph()
        self.pool = self.ctx.pool
        self.settings = self.ctx.settings
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.setCentralWidget(self.tabs)
        self.panels: list[QWidget] = []
        # Messages panels give while they are built (saved settings that were not usable)
        # come before the status bar exists: keep them and show them once it does.
        early: list[tuple[str, int]] = []
        keep = lambda text, ms: early.append((text, ms))
        self.ctx.message.connect(keep)
        self._add_panels()
        # Before the first paint: one full collection, and what survives (the libraries, the
        # window) is never scanned again; done later it would be a visible pause.
        GuiThreadCollector.settle()
        self._build_menus()
        self._build_status_bar()
        self.ctx.message.disconnect(keep)
        self._restore()
        texts = list(self.settings.problems) + [text for text, _ in early]
        if texts:  # one line (a status bar shows one message at a time)
            QTimer.singleShot(0, lambda: self.statusBar().showMessage("  ·  ".join(texts), 20000))
        self._closed = False
        self.threads_stopped = True

    # -- panels --------------------------------------------------------------------------
    def _add_panels(self) -> None:
        for spec in PANELS:
            self.add_panel(build_panel(spec, self.ctx), spec.title)

    def add_panel(self, panel: QWidget, title: str) -> None:
        self.panels.append(panel)
        self.tabs.addTab(panel, title)

    def panel(self, cls: type) -> QWidget | None:
        return next((p for p in self.panels if isinstance(p, cls)), None)

    # -- menus ---------------------------------------------------------------------------
    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        view = bar.addMenu("&View")
        self.fullscreen_action = QAction("&Full Screen", self, checkable=True,
                                         shortcut=QKeySequence.StandardKey.FullScreen)
        if self.fullscreen_action.shortcut().isEmpty():
            self.fullscreen_action.setShortcut(QKeySequence("F11"))
        self.fullscreen_action.toggled.connect(self._set_fullscreen)
        view.addAction(self.fullscreen_action)
        next_tab = QAction("&Next Tab", self)
        next_tab.setShortcuts([QKeySequence("Ctrl+PgDown"), QKeySequence(QKeySequence.StandardKey.NextChild)])
        next_tab.triggered.connect(lambda: self._step_tab(+1))
        prev_tab = QAction("&Previous Tab", self)
        prev_tab.setShortcuts([QKeySequence("Ctrl+PgUp"), QKeySequence(QKeySequence.StandardKey.PreviousChild)])
        prev_tab.triggered.connect(lambda: self._step_tab(-1))
        view.addActions([next_tab, prev_tab])
        for i in range(min(9, self.tabs.count())):
            act = QAction(f"Go to {self.tabs.tabText(i).replace('&', '')}", self,
                          shortcut=QKeySequence(f"Alt+{i + 1}"))
            act.triggered.connect(lambda _=False, k=i: self.tabs.setCurrentIndex(k))
            view.addAction(act)

        device_menu = bar.addMenu("&Device")
        self.device_group = QActionGroup(self)
        self.device_actions: dict[str, QAction] = {}
        for dev in available_devices():
            act = QAction(dev.label, self, checkable=True)
            act.setData(dev.key)
            act.setChecked(dev.key == self.ctx.device)
            act.triggered.connect(lambda _=False, k=dev.key: self.ctx.set_device(k))
            self.device_group.addAction(act)
            device_menu.addAction(act)
            self.device_actions[dev.key] = act
        device_menu.addSeparator()
        note = QAction("New jobs use the chosen device; running jobs keep theirs", self)
        note.setEnabled(False)
        device_menu.addAction(note)
        self.ctx.deviceChanged.connect(self._on_device_changed)

        help_menu = bar.addMenu("&Help")
        about = QAction("&About", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _set_fullscreen(self, on: bool) -> None:
        self.showFullScreen() if on else self.showNormal()

    def _step_tab(self, delta: int) -> None:
        n = self.tabs.count()
        if n:
            self.tabs.setCurrentIndex((self.tabs.currentIndex() + delta) % n)

    def _about(self) -> None:
        QMessageBox.about(self, APP_NAME, f"<b>{APP_NAME}</b> {__version__}<p>See and touch classic "
                          "deep-learning systems, live, on your own machine.</p>")

    # -- status bar ------------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.jobs_box = QWidget()
        self.jobs_layout = QHBoxLayout(self.jobs_box)
        self.jobs_layout.setContentsMargins(0, 0, 0, 0)
        self.job_widgets: dict[int, JobWidget] = {}
        self.device_label = QLabel()
        self.memory_label = QLabel()
        # As tall as a job's row from the start: a status bar that grows when a job appears
        # would shrink the tabs above it and repaint every plot.
        sb.setMinimumHeight(max(QToolButton().sizeHint().height(), QLabel("Job").sizeHint().height()) + 6)
        sb.addPermanentWidget(self.jobs_box)
        sb.addPermanentWidget(self.memory_label)
        sb.addPermanentWidget(self.device_label)
        self._on_device_changed(self.ctx.device)
        self.pool.jobAdded.connect(self._on_job_added)
        self.pool.jobEnded.connect(self._on_job_ended)
        self.ctx.message.connect(lambda text, ms: sb.showMessage(text, ms))
        self.memory_timer = QTimer(self, interval=1000)
        self.memory_timer.timeout.connect(self._update_memory)
        self.memory_timer.start()
        self._update_memory()

    def _on_device_changed(self, key: str) -> None:
        self.device_label.setText(f"Device: {device_label(key)}")
        if key in self.device_actions:
            self.device_actions[key].setChecked(True)

    def _update_memory(self) -> None:
        self.memory_label.setText(memory_summary(self.ctx.device))

    def _on_job_added(self, job: Job) -> None:
        widget = JobWidget(job)
        self.job_widgets[job.id] = widget
        self.jobs_layout.addWidget(widget)

    def _on_job_ended(self, job: Job) -> None:
        widget = self.job_widgets.pop(job.id, None)
        if widget is not None:
            widget.deleteLater()
        if job.state == JobState.FAILED:
            self.statusBar().showMessage(f"{job.name} failed: {job.error}", 15000)
        elif job.state == JobState.CANCELLED:
            self.statusBar().showMessage(f"{job.name} stopped", 5000)

    # -- settings and shutdown ---------------------------------------------------------------
    def _restore(self) -> None:
        geometry = self.settings.get_bytes("window/geometry")
        if geometry is None or not self.restoreGeometry(QByteArray(geometry)):
            self.resize(1280, 820)
        tab = self.settings.get_typed("window/tab", int, 0)
        self.tabs.setCurrentIndex(tab if 0 <= tab < self.tabs.count() else 0)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        if not self._closed:
            self._closed = True
            self.settings.set_bytes("window/geometry", bytes(self.saveGeometry().data()))
            self.settings.set("window/tab", self.tabs.currentIndex())
            for panel in self.panels:
                for hook in ("save_settings", "shutdown"):
                    method = getattr(panel, hook, None)
                    if method is None:
                        continue
                    try:
                        method()
                    except Exception:  # noqa: BLE001 - one panel must not keep the others from saving
                        log.exception("%s.%s failed while closing", type(panel).__name__, hook)
            self.settings.sync()  # first: nothing the user set is lost even if a thread hangs
            self.threads_stopped = self.pool.shutdown()
        super().closeEvent(event)


def run_app(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("PLAYGROUND_LOG", "WARNING"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    configure_torch_threads()
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    window = MainWindow()
    window.show()
    code = app.exec()
    if not window.threads_stopped:
        # A job ignored its cancel for 10 s. Qt aborts when a running QThread is destroyed,
        # so leave at once (settings and run files are already written).
        log.error("A worker thread did not stop; exiting without waiting for it")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
