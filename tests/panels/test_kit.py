"""The panel kit: the registry and its error tabs, the job runner, settings restored by the kit."""

import json
import shutil
import threading
import time
from dataclasses import dataclass

import pytest
from PySide6.QtWidgets import QFormLayout, QWidget

from playground import panels
from playground.app import AppContext, MainWindow
from playground.errors import ErrorKind
from playground.jobs import JobState
from playground.panels.base import ErrorPanel, JobRunner, Panel
from playground.progress import Progress
from playground.settings import Settings
from playground.widgets.forms import JobControls


# -- the registry --------------------------------------------------------------------------
class BrokenPanel(Panel):
    title = "&Broken"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        raise RuntimeError("the model file is missing")


def test_a_panel_that_fails_to_import_or_build_shows_why(qtbot, tmp_path, monkeypatch, caplog):
    specs = panels.PANELS + [panels.PanelSpec("playground.panels.no_such_panel", "Nope", "&Missing"),
                             panels.PanelSpec(__name__, "BrokenPanel", "&Broken"),
                             panels.PanelSpec("playground.panels.training", "NoSuchClass", "&Typo")]
    monkeypatch.setattr("playground.app.PANELS", specs)
    win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
    qtbot.addWidget(win)
    titles = [win.tabs.tabText(i).replace("&", "") for i in range(win.tabs.count())]
    base = [spec.title.replace("&", "") for spec in panels.PANELS]
    assert titles == base + ["Missing", "Broken", "Typo"]
    errors = [win.tabs.widget(i) for i in range(len(base), len(base) + 3)]
    assert all(isinstance(e, ErrorPanel) for e in errors)
    assert "no_such_panel" in errors[0].message
    assert "the model file is missing" in errors[1].message
    assert "NoSuchClass" in errors[2].message
    assert "Traceback" not in errors[1].label.text()
    assert "could not be built" in caplog.text  # the traceback went to the log
    win.close()


# -- the job runner ------------------------------------------------------------------------
class Harness(QWidget):
    def __init__(self, ctx) -> None:
        super().__init__()
        form = QFormLayout(self)
        self.controls = JobControls(self, form, start_text="Go", start_tip="go", stop_tip="stop",
                                    start=lambda: None, stop=lambda: self.runner.stop(),
                                    pause=lambda: self.runner.toggle_pause())
        self.runner = JobRunner(ctx, self.controls, failure_prefix="It failed", parent=self)


@pytest.fixture
def harness(qtbot, tmp_path):
    ctx = AppContext(Settings(tmp_path / "s.json"))
    h = Harness(ctx)
    qtbot.addWidget(h)
    yield h
    ctx.pool.shutdown()


def ticker(n=10_000, delay=0.01):
    for k in range(n):
        yield Progress(k / n, f"step {k}")
        yield k
        time.sleep(delay)
    return "all done"


def test_runner_binds_buttons_progress_and_the_end(qtbot, harness):
    c, r = harness.controls, harness.runner
    assert c.start_button.isEnabled() and not c.stop_button.isEnabled() and not c.pause_button.isEnabled()
    got, ended = [], []
    job = r.start(ticker, 30, 0.005, name="tick", on_results=got.extend, on_ended=ended.append)
    assert job is not None and r.running
    assert r.start(ticker, name="again") is None  # one job at a time
    assert not c.start_button.isEnabled() and c.stop_button.isEnabled()
    qtbot.waitUntil(lambda: bool(ended), timeout=10000)
    assert ended == [JobState.FINISHED] and job.value == "all done"
    assert got == list(range(30))
    assert c.status.text().startswith("step")
    assert c.start_button.isEnabled() and not c.stop_button.isEnabled()


def test_runner_pause_resume_and_a_quick_stop(qtbot, harness):
    c, r = harness.controls, harness.runner
    ended = []
    r.start(ticker, name="tick", on_ended=ended.append)
    qtbot.waitUntil(lambda: r.state == JobState.RUNNING, timeout=5000)
    r.toggle_pause()
    assert r.state == JobState.PAUSED and c.pause_button.text() == "Resume" and c.status.text() == "Paused"
    r.toggle_pause()
    assert r.state == JobState.RUNNING and c.pause_button.text() == "Pause"
    t0 = time.monotonic()
    r.stop()
    qtbot.waitUntil(lambda: bool(ended), timeout=5000)
    assert time.monotonic() - t0 < 1.0
    assert ended == [JobState.CANCELLED] and r.job.error_kind is ErrorKind.CANCELLED
    assert c.status.text() == "Stopped."


def test_runner_shows_a_failure_in_red_with_its_kind(qtbot, harness):
    def boom():
        yield 1
        raise MemoryError()

    ended = []
    harness.runner.start(boom, name="boom", on_ended=ended.append)
    qtbot.waitUntil(lambda: bool(ended), timeout=5000)
    status = harness.controls.status
    assert ended == [JobState.FAILED] and harness.runner.job.error_kind is ErrorKind.OUT_OF_MEMORY
    assert status.text().startswith("It failed: Out of memory") and "c62828" in status.styleSheet()


def test_runner_follows_the_device_menu_for_the_next_job(qtbot, harness):
    r = harness.runner
    first = r.start(lambda: threading.current_thread().name, name="one")
    qtbot.waitUntil(lambda: first.is_done, timeout=5000)
    assert first.device == harness.runner.ctx.device
    seen = []
    r.deviceChanged.connect(seen.append)
    r.ctx.deviceChanged.emit("meta")  # as the Device menu does (any device name will do here)
    assert seen == ["meta"] and r.device == "meta"
    second = r.start(lambda: 1, name="two")
    assert second.device == "meta"
    qtbot.waitUntil(lambda: second.is_done, timeout=5000)


def test_runner_sends_input_to_its_job(qtbot, harness):
    def echo():
        got = []
        while True:
            inputs = yield None
            got += inputs or []
            if "end" in got:
                return got
            time.sleep(0.005)

    r = harness.runner
    job = r.start(echo, name="echo")
    assert r.send(1) and r.send(2) and r.send("end")
    qtbot.waitUntil(lambda: job.is_done, timeout=5000)
    assert job.value == [1, 2, "end"]
    assert not r.send(3)  # nothing runs now


# -- settings restored by the kit ------------------------------------------------------------
@dataclass
class ToySettings:
    count: int = 3
    label: str = "x"


class ToyPanel(Panel):
    title = "&Toy"
    settings_key = "toy"
    Settings = ToySettings

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.state = ToySettings()

    def settings_state(self):
        return self.state

    def apply_settings(self, state):
        self.state = state


def test_the_kit_saves_and_restores_a_panels_dataclass(qtbot, tmp_path):
    ctx = AppContext(Settings(tmp_path / "s.json"))
    p = ToyPanel(ctx)
    p.state = ToySettings(7, "seven")
    p.save_settings()
    ctx.settings.sync()
    assert json.loads((tmp_path / "s.json").read_text())["toy"] == {"count": 7, "label": "seven"}
    ctx2 = AppContext(Settings(tmp_path / "s.json"))
    p2 = ToyPanel(ctx2)
    p2.load_settings()
    assert p2.state == ToySettings(7, "seven")
    ctx.pool.shutdown()
    ctx2.pool.shutdown()


def test_wrong_typed_saved_settings_open_the_window_with_defaults(qtbot, tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({
        "training": {"config": {"batch_size": "huge", "lr": [1], "dataset": 5, "epochs": 3}, "smoothing": "x",
                     "log": "yes"},
        "som": {"config": {"rows": "ten", "topology": 1}, "view": None, "standardize": 2},
        "som/learn_collapsed": "no", "device": 42, "window/tab": "second", "window/geometry": [1, 2]}))
    messages = []
    ctx = AppContext(Settings(tmp_path / "s.json"))
    ctx.message.connect(lambda text, ms: messages.append(text))
    win = MainWindow(ctx)
    qtbot.addWidget(win)
    from playground.panels.som import SOMPanel
    from playground.panels.training import TrainingPanel

    training, som = win.panel(TrainingPanel), win.panel(SOMPanel)
    assert isinstance(training, TrainingPanel) and isinstance(som, SOMPanel)
    assert training.batch_size.value() == 64 and training.epochs.value() == 3  # the good value is kept
    assert training.smoothing.value() == 60 and not training.logscale.isChecked()
    assert som.rows.value() == 10
    assert any("Training" in m and "batch_size" in m for m in messages)
    assert win.tabs.currentIndex() == 0
    # ...and the user sees it: the message reaches the status bar once the window runs.
    qtbot.waitUntil(lambda: "batch_size" in win.statusBar().currentMessage(), timeout=2000)
    win.close()


def test_one_out_of_range_value_costs_only_its_own_field(qtbot, tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({
        "training": {"config": {"seed": 2**40, "epochs": 3}, "smoothing": 2**70},
        "som": {"config": {"seed": 2**63, "rows": 7}, "csv": "/data/x.csv"}}))
    win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
    qtbot.addWidget(win)
    from playground.panels.som import SOMPanel
    from playground.panels.training import TrainingPanel

    training, som = win.panel(TrainingPanel), win.panel(SOMPanel)
    assert training.epochs.value() == 3 and training.seed.value() == 0 and training.smoothing.value() == 60
    assert som.csv_path.text() == "/data/x.csv"
    win.close()


def test_a_path_too_long_for_the_system_is_a_form_error_not_a_dead_button(qtbot, window):
    from playground.panels.training import TrainingPanel

    panel = window.panel(TrainingPanel)
    panel.dataset.setCurrentIndex(panel.dataset.findData("folder"))
    panel.folder.setText("/" + "x" * 300)
    panel.start()
    assert not panel.running and "is not a folder" in panel.form_error.text()
    panel.save_settings()  # and the rest of the settings are still saved
    panel.smoothing.setValue(33)
    panel.save_settings()
    assert window.ctx.settings.get("training")["smoothing"] == 33


def test_a_run_folder_of_the_wrong_shape_does_not_stop_the_app(qtbot, tmp_path):
    from playground.paths import runs_dir

    bad = runs_dir() / "20990101-000000-junk"
    bad.mkdir(parents=True)
    try:
        (bad / "config.json").write_text("[1, 2, 3]")
        (bad / "status.json").write_text(json.dumps({"status": 5, "best_val_acc": "high", "created": "yesterday",
                                                     "pid": "x", "epochs_done": None, "name": 5}))
        (bad / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "loss": "abc"}\n[1]\n')
        win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
        qtbot.addWidget(win)
        from playground.panels.training import TrainingPanel

        panel = win.panel(TrainingPanel)
        assert isinstance(panel, TrainingPanel)
        ids = [panel._row_id(r) for r in range(panel.table.rowCount())]
        assert bad.name in ids
        win.close()
    finally:
        shutil.rmtree(bad, ignore_errors=True)
