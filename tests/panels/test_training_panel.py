"""The main window and the Training tab, driven with clicks (pytest-qt, offscreen)."""

import time

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidgetSelectionRange

from playground.app import AppContext, MainWindow
from playground.jobs import JobState
from playground.devices import available_devices, device_label
from playground.settings import Settings
from playground.panels.training import TrainingPanel, ema


def panel_of(win) -> TrainingPanel:
    return win.panel(TrainingPanel)


def choose(combo, key):
    combo.setCurrentIndex(combo.findData(key))


def test_window_has_tabs_menus_and_status_bar(window):
    assert window.tabs.tabText(0).replace("&", "") == "Training"
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert {"File", "View", "Device", "Help"} <= set(menus)
    # The device this machine has (CUDA, MPS or the CPU), not an assumption about it.
    assert window.device_label.text() == f"Device: {device_label(window.ctx.device)}"
    assert window.ctx.device in [d.key for d in available_devices()]
    assert "RAM" in window.memory_label.text()


def test_start_watch_plots_grow_then_stop(qtbot, window):
    panel = panel_of(window)
    choose(panel.dataset, "digits")
    choose(panel.model, "mlp")
    panel.epochs.setValue(200)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.running and not panel.start_button.isEnabled()
    # The status bar lists the job with a cancel button.
    qtbot.waitUntil(lambda: len(window.job_widgets) == 1, timeout=5000)
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.steps["loss"].n > 5, timeout=60000)

    def drawn() -> int:
        xs = panel.current.items["loss"].getData()[0]
        return 0 if xs is None else len(xs)

    qtbot.waitUntil(lambda: drawn() > 0, timeout=60000)
    first = drawn()
    qtbot.waitUntil(lambda: drawn() > first + 20, timeout=60000)
    qtbot.waitUntil(lambda: panel.current.epochs["val_acc"].n >= 1, timeout=60000)
    qtbot.waitUntil(lambda: panel.samples.samples is not None and panel.confusion.matrix is not None,
                    timeout=30000)
    # Pause: no new points arrive while paused.
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    assert panel.pause_button.text() == "Resume"
    qtbot.wait(300)
    frozen = panel.current.steps["loss"].n
    qtbot.wait(400)
    assert panel.current.steps["loss"].n <= frozen + 1
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.current.steps["loss"].n > frozen + 3, timeout=30000)
    t0 = time.monotonic()
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=10000)
    assert time.monotonic() - t0 < 5
    assert panel.start_button.isEnabled()
    assert window.job_widgets == {}
    # The run is in the table, stopped, with its points on disk.
    run_id = panel.current.run_id
    statuses = {panel._row_id(r): panel.table.item(r, 5).text() for r in range(panel.table.rowCount())}
    assert statuses[run_id] == "stopped"
    assert len(panel.store.metrics(run_id)) >= panel.current.steps["loss"].n


def test_when_a_run_ends_the_plots_fit_it(qtbot, window):
    panel = panel_of(window)
    choose(panel.dataset, "digits")
    choose(panel.model, "mlp")
    panel.epochs.setValue(3)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.status.text().startswith("Finished"), timeout=60000)  # the panel saw the end
    window.grab()
    last = panel.current.steps["step"].values[-1]
    for name in ("loss", "grad", "lr"):
        x0, x1 = panel.plots[name].getViewBox().viewRange()[0]
        assert last <= x1 < last * 1.1, name  # the whole run, without the room kept while it was live
    y0, y1 = panel.plots["lr"].getViewBox().viewRange()[1]
    assert y0 == 0 and y1 == pytest.approx(1.1 * panel.current.steps["lr"].values.max())


def test_invalid_values_are_refused_in_the_form(qtbot, window):
    panel = panel_of(window)
    panel.lr.setText("fast please")
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert "not a number" in panel.form_error.text()
    assert panel.job is None
    panel.lr.setText("0")
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert "learning rate" in panel.form_error.text().lower()
    assert panel.job is None


def test_models_follow_the_data_set(window):
    panel = panel_of(window)
    choose(panel.dataset, "mnist1d")
    names = [panel.model.itemData(i) for i in range(panel.model.count())]
    assert names == ["softmax", "mlp", "cnn1d", "gru"]
    choose(panel.dataset, "digits")
    assert "lenet" in [panel.model.itemData(i) for i in range(panel.model.count())]


def test_a_failed_download_shows_a_message_not_a_crash(qtbot, window):
    panel = panel_of(window)
    choose(panel.dataset, "fashion_mnist")
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=30000)
    assert "offline" in panel.status.text()
    assert "Traceback" not in panel.status.text()


def test_runs_table_reopen_compare_and_delete(qtbot, window):
    from playground.ml.training.data import load_digits
    from playground.ml.training.trainer import TrainConfig, run_to_end

    panel = panel_of(window)
    data = load_digits()
    ids = [run_to_end(TrainConfig(epochs=1, name=f"run {k}", seed=k), panel.store, data=data).run_id
           for k in range(2)]
    panel.refresh_runs()
    panel.table.clearSelection()
    for r in range(panel.table.rowCount()):
        if panel._row_id(r) in ids:
            panel.table.setRangeSelected(QTableWidgetSelectionRange(r, 0, r, 5), True)
    assert sorted(panel.selected_ids()) == sorted(ids)
    panel.open_selected()
    assert set(ids) <= set(panel.curves)
    qtbot.waitUntil(lambda: all(panel.curves[i].steps["loss"].n > 0 for i in ids), timeout=10000)
    stored = panel.store.metric_columns(ids[0])[0]
    np.testing.assert_allclose(panel.curves[ids[0]].steps["loss"].values, stored["loss"])
    assert panel.curves[ids[0]].epochs["val_acc"].n == 1
    out = str(window.ctx.settings.file_name()) + ".csv"
    job = panel.export_selected(out)
    qtbot.waitUntil(lambda: job.is_done, timeout=10000)
    assert job.state == JobState.FINISHED
    import csv

    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert {r["run"] for r in rows} == set(ids)
    assert sum(r["kind"] == "epoch" for r in rows) == 2
    panel.delete_selected(confirm=False)
    remaining = {r.id for r in panel.store.list_runs()}
    assert not (set(ids) & remaining)


def test_runs_deleted_outside_the_app_are_messages(qtbot, window):
    import shutil

    from playground.ml.training.data import load_digits
    from playground.ml.training.trainer import TrainConfig, run_to_end

    panel = panel_of(window)
    run_id = run_to_end(TrainConfig(epochs=1, name="doomed"), panel.store, data=load_digits()).run_id
    panel.refresh_runs()
    row = next(r for r in range(panel.table.rowCount()) if panel._row_id(r) == run_id)
    shutil.rmtree(panel.store.root / run_id)
    panel.table.item(row, 0).setCheckState(Qt.CheckState.Checked)  # show it
    assert "no longer on disk" in panel.controls.status.text()
    assert run_id not in panel.curves
    panel.controls.set_status("")
    panel.table.item(row, 1).setText("renamed")
    assert "no longer on disk" in panel.controls.status.text()
    panel.table.clearSelection()
    panel.table.setRangeSelected(QTableWidgetSelectionRange(row, 0, row, 5), True)
    panel.delete_selected(confirm=False)
    qtbot.waitUntil(lambda: all(panel._row_id(r) != run_id for r in range(panel.table.rowCount())), timeout=5000)


def test_a_run_that_cannot_be_read_leaves_no_empty_curves(qtbot, window, monkeypatch):
    from playground.ml.training.data import load_digits
    from playground.ml.training.trainer import TrainConfig, run_to_end

    panel = panel_of(window)
    run_id = run_to_end(TrainConfig(epochs=1, name="unreadable"), panel.store, data=load_digits()).run_id
    panel.refresh_runs()

    def broken(_run_id):
        raise OSError("disk on fire")

    monkeypatch.setattr(panel.store, "metric_columns", broken)
    job = panel.show_run(run_id)
    qtbot.waitUntil(lambda: job.is_done, timeout=10000)
    qtbot.waitUntil(lambda: run_id not in panel.curves, timeout=5000)
    assert "Could not open the run" in panel.controls.status.text()
    monkeypatch.undo()
    job = panel.show_run(run_id)  # repaired: a second try reads it
    qtbot.waitUntil(lambda: run_id in panel.curves and panel.curves[run_id].steps["loss"].n > 0, timeout=10000)


def test_settings_are_remembered(qtbot, tmp_path):
    settings = Settings(tmp_path / "s.json")
    win = MainWindow(AppContext(settings))
    qtbot.addWidget(win)
    panel = panel_of(win)
    choose(panel.dataset, "mnist1d")
    choose(panel.model, "cnn1d")
    panel.batch_size.setValue(100)
    win.close()
    win2 = MainWindow(AppContext(Settings(tmp_path / "s.json")))
    qtbot.addWidget(win2)
    p2 = panel_of(win2)
    assert p2.dataset.currentData() == "mnist1d"
    assert p2.model.currentData() == "cnn1d"
    assert p2.batch_size.value() == 100
    win2.close()


def test_closing_the_window_while_training_stops_everything(qtbot, tmp_path):
    settings = Settings(tmp_path / "c.json")
    win = MainWindow(AppContext(settings))
    qtbot.addWidget(win)
    win.show()
    panel = panel_of(win)
    panel.epochs.setValue(500)
    panel.start()
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.steps["loss"].n > 3, timeout=60000)
    t0 = time.monotonic()
    win.close()
    assert time.monotonic() - t0 < 5
    assert all(not t.isRunning() for t in win.pool._threads)
    assert panel.job.state == JobState.CANCELLED


def test_ema_matches_tensorboard_smoothing():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    w = 0.6
    last, expected = 0.0, []
    for k, v in enumerate(values, 1):  # TensorBoard's debiased loop, written out
        last = last * w + (1 - w) * v
        expected.append(last / (1 - w ** k))
    assert np.allclose(ema(values, w), expected)
    assert np.array_equal(ema(values, 0.0), values)


def test_shortcuts_belong_to_the_visible_tab(qtbot, window):
    from playground.panels.som import SOMPanel

    panel = panel_of(window)
    window.activateWindow()
    panel.lr.setFocus()
    qtbot.keyClick(panel.lr, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert panel.running
    assert not window.panel(SOMPanel).running
    qtbot.keyClick(panel.lr, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not panel.running, timeout=10000)
    assert panel.job.state in (JobState.CANCELLED, JobState.FINISHED)


def test_first_launch_shows_the_default_config(window):
    from playground.ml.training.trainer import TrainConfig

    cfg, problems = panel_of(window).config()
    assert problems == {}
    default = TrainConfig()
    assert (cfg.dataset, cfg.model, cfg.optimizer, cfg.lr, cfg.epochs) == \
        (default.dataset, default.model, default.optimizer, default.lr, default.epochs)
