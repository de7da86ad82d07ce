"""The shared model picker: loads as jobs, shows what it loaded, keeps the old model on failure, remembers files."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from playground.errors import BadFileError
from playground.progress import Progress
from playground.widgets.model_picker import MAX_RECENT, LoadedModel, ModelPicker, describe, format_parameters


class FakeSettings:
    """The two methods the picker uses, backed by a dict (values can be made wrong-typed on purpose)."""

    def __init__(self, values: dict | None = None) -> None:
        self.values = dict(values or {})

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value


class Loaders:
    """Loaders that record the thread they ran on: a built-in default and a safetensors reader."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def default(self) -> LoadedModel:
        self.threads.append(threading.current_thread())
        net = torch.nn.Linear(2, 2)
        return LoadedModel(net, "Tiny default", "", "built-in", 26_000_000, {"Resolution": "8x8"})

    def path(self, path: str) -> LoadedModel:
        self.threads.append(threading.current_thread())
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as exc:
            raise BadFileError(f"{os.path.basename(path)} is not a safetensors file ({exc}).") from exc
        net = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        net.load_state_dict(state)
        count = sum(p.numel() for p in net.parameters())
        return LoadedModel(net, os.path.basename(path), path, "safetensors", count,
                           {"Inputs": str(net.in_features)})


def tiny_model_file(folder, name: str = "tiny.safetensors", inputs: int = 4, outputs: int = 3) -> str:
    net = torch.nn.Linear(inputs, outputs)
    path = str(folder / name)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def make_picker(qtbot, pool, settings=None, loaders=None, **kwargs) -> ModelPicker:
    loaders = loaders or Loaders()
    kwargs.setdefault("load_default", loaders.default)
    kwargs.setdefault("load_path", loaders.path)
    picker = ModelPicker(pool, settings if settings is not None else FakeSettings(), "tab",
                         default_name="Tiny default", file_filter="Safetensors (*.safetensors)", **kwargs)
    qtbot.addWidget(picker)
    return picker


def wait_loaded(qtbot, picker: ModelPicker) -> None:
    qtbot.waitUntil(lambda: not picker.loading, timeout=5000)


def test_format_parameters_picks_a_readable_unit():
    assert format_parameters(1) == "1 parameter"
    assert format_parameters(950) == "950 parameters"
    assert format_parameters(12_345) == "12.3K parameters"
    assert format_parameters(26_000_000) == "26.0M parameters"
    assert format_parameters(999_960) == "1.0M parameters"  # not "1000.0K"
    assert format_parameters(7_240_000_000) == "7.2B parameters"


def test_default_loads_as_a_job_and_the_info_label_describes_it(qtbot, pool):
    loaders = Loaders()
    picker = make_picker(qtbot, pool, loaders=loaders)
    busy = []
    picker.busyChanged.connect(busy.append)
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker.load_default()
        assert picker.loading  # submitted, not run here
    assert loaders.threads and loaders.threads[0] is not threading.main_thread()
    loaded = changed.args[0]
    assert picker.current is loaded and loaded.source == "" and isinstance(loaded.model, torch.nn.Linear)
    assert busy == [True, False] and not picker.loading
    text = picker.info_label.text()
    for part in ("Tiny default", "built-in", "26.0M parameters", "Resolution: 8x8"):
        assert part in text
    assert picker.combo.currentText() == "Tiny default"
    assert picker.combo.currentIndex() == 0


def test_loads_run_on_the_device_the_tab_names(qtbot, pool):
    devices = []
    pool.jobAdded.connect(lambda job: devices.append(job.device))
    picker = make_picker(qtbot, pool, device=lambda: "cuda:7")
    picker.load_default()
    wait_loaded(qtbot, picker)
    assert devices == ["cuda:7"]


def test_opening_a_good_file_changes_the_model_and_is_remembered(qtbot, pool, tmp_path):
    settings = FakeSettings()
    picker = make_picker(qtbot, pool, settings)
    picker.load_default()
    wait_loaded(qtbot, picker)
    path = tiny_model_file(tmp_path, inputs=5, outputs=2)
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker.open_path(path)
    loaded = changed.args[0]
    assert picker.current is loaded
    assert loaded.format == "safetensors" and loaded.parameters == 5 * 2 + 2
    assert loaded.model.weight.shape == (2, 5)
    assert "12 parameters" in picker.info_label.text() and "Inputs: 5" in picker.info_label.text()
    assert picker.recent == [path]
    assert settings.values["tab/recent"] == [path] and settings.values["tab/last"] == path
    # The combo box lists it by name (full path in the tooltip) and shows it as the choice.
    assert picker.combo.currentText() == "tiny.safetensors"
    assert picker.combo.itemData(picker.combo.currentIndex(), 3) == path  # ToolTipRole
    # A second picker reading the same settings sees the file, and restore() reopens it.
    again = make_picker(qtbot, pool, settings)
    assert again.recent == [path]
    with qtbot.waitSignal(again.modelChanged, timeout=5000) as reopened:
        again.restore()
    assert reopened.args[0].source == path


def test_a_bad_file_shows_an_error_in_place_and_keeps_the_previous_model(qtbot, pool, tmp_path):
    settings = FakeSettings()
    picker = make_picker(qtbot, pool, settings)
    good = tiny_model_file(tmp_path)
    picker.open_path(good)
    wait_loaded(qtbot, picker)
    previous = picker.current
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a model")
    changed = []
    picker.modelChanged.connect(changed.append)
    with qtbot.waitSignal(picker.loadFailed, timeout=5000) as failed:
        picker.open_path(str(bad))
    assert "broken.safetensors" in failed.args[0]
    assert picker.current is previous and changed == []
    assert picker.error_label.isVisibleTo(picker) and "broken.safetensors" in picker.error_message
    assert "\n" not in picker.error_label.text()
    assert picker.combo.currentText() == "tiny.safetensors"  # back on the model still loaded
    assert picker.recent == [good] and settings.values["tab/last"] == good  # the bad file is not remembered
    # The next good load clears the message.
    picker.load_default()
    wait_loaded(qtbot, picker)
    assert not picker.error_label.isVisibleTo(picker) and picker.current.name == "Tiny default"


def test_a_missing_path_or_an_unwanted_folder_fails_without_a_job(qtbot, pool, tmp_path):
    picker = make_picker(qtbot, pool)
    added = []
    pool.jobAdded.connect(added.append)
    with qtbot.waitSignal(picker.loadFailed, timeout=1000) as failed:
        picker.open_path(str(tmp_path / "gone.safetensors"))
    assert "gone.safetensors" in failed.args[0] and "not found" in failed.args[0]
    with qtbot.waitSignal(picker.loadFailed, timeout=1000) as failed:
        picker.open_path(str(tmp_path))
    assert "folder" in failed.args[0]
    assert added == [] and picker.current is None


def test_folders_are_offered_only_when_allowed(qtbot, pool, tmp_path):
    opened = []
    picker = make_picker(qtbot, pool, load_path=lambda p: LoadedModel(opened.append(p), "folder model", p),
                         allow_folders=True)
    items = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert items[0] == "Tiny default" and items[-2:] == ["Open file…", "Open folder…"]
    with qtbot.waitSignal(picker.modelChanged, timeout=5000):
        picker.open_path(str(tmp_path))
    assert opened == [str(tmp_path)] and picker.recent == [str(tmp_path)]
    plain = make_picker(qtbot, pool)
    assert "Open folder…" not in [plain.combo.itemText(i) for i in range(plain.combo.count())]


def test_the_combo_box_opens_recent_files_and_the_file_dialog(qtbot, pool, tmp_path, monkeypatch):
    first, second = tiny_model_file(tmp_path, "a.safetensors"), tiny_model_file(tmp_path, "b.safetensors")
    picker = make_picker(qtbot, pool, FakeSettings({"tab/recent": [second, first]}))
    items = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert items[:3] == ["Tiny default", "b.safetensors", "a.safetensors"] and items[-1] == "Open file…"
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker.combo.activated.emit(items.index("a.safetensors"))
    assert changed.args[0].source == first and picker.recent == [first, second]

    third = tiny_model_file(tmp_path, "c.safetensors")
    asked = []

    def fake_dialog(parent, caption, folder, file_filter):
        asked.append((folder, file_filter))
        return third, file_filter

    monkeypatch.setattr("playground.widgets.model_picker.QFileDialog.getOpenFileName", fake_dialog)
    open_index = [picker.combo.itemText(i) for i in range(picker.combo.count())].index("Open file…")
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker.combo.activated.emit(open_index)
    assert asked == [(str(tmp_path), "Safetensors (*.safetensors)")]  # starts where the newest recent file is
    assert changed.args[0].source == third and picker.combo.currentText() == "c.safetensors"

    # A dialog closed without a choice loads nothing and leaves the combo on the loaded model.
    monkeypatch.setattr("playground.widgets.model_picker.QFileDialog.getOpenFileName",
                        lambda *args: ("", ""))
    open_index = [picker.combo.itemText(i) for i in range(picker.combo.count())].index("Open file…")
    picker.combo.activated.emit(open_index)
    assert not picker.loading and picker.combo.currentText() == "c.safetensors"


def test_recent_files_are_deduplicated_newest_first_and_limited(qtbot, pool, tmp_path):
    settings = FakeSettings()
    picker = make_picker(qtbot, pool, settings, load_path=lambda p: LoadedModel(None, os.path.basename(p), p))
    paths = []
    for i in range(MAX_RECENT + 3):
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(b"x")
        paths.append(str(path))
        picker.open_path(str(path))
        wait_loaded(qtbot, picker)
    assert picker.recent == paths[::-1][:MAX_RECENT]
    # Reopening an older file (spelled differently) moves it to the front, once.
    picker.open_path(os.path.join(str(tmp_path), "sub", "..", "m5.bin"))
    wait_loaded(qtbot, picker)
    expected = [paths[5]] + [p for p in paths[::-1] if p != paths[5]][:MAX_RECENT - 1]
    assert picker.recent == expected and settings.values["tab/recent"] == expected
    # A file that disappeared is no longer listed (nor offered in the combo box).
    os.remove(expected[1])
    assert picker.recent == [expected[0]] + expected[2:]
    picker.refresh()  # as when the list is opened
    tips = [picker.combo.itemData(i, 3) for i in range(picker.combo.count())]
    assert expected[1] not in tips and expected[2] in tips


@pytest.mark.parametrize("stored", ["/some/file.safetensors", {"a": 1}, 42, None])
def test_a_recent_value_that_is_not_a_list_is_ignored(qtbot, pool, stored):
    picker = make_picker(qtbot, pool, FakeSettings({"tab/recent": stored}))
    assert picker.recent == []
    assert [picker.combo.itemText(i) for i in range(picker.combo.count())] == ["Tiny default", "", "Open file…"]


def test_wrong_typed_recent_entries_are_skipped(qtbot, pool, tmp_path):
    good = tiny_model_file(tmp_path)
    settings = FakeSettings({"tab/recent": [1, None, good, {"path": good}, ["x"], "", good, 3.5]})
    picker = make_picker(qtbot, pool, settings)
    assert picker.recent == [good]


@pytest.mark.parametrize("last", [17, ["x"], "", "/no/such/model.safetensors"])
def test_restore_falls_back_to_the_default_for_an_unusable_last_choice(qtbot, pool, last):
    picker = make_picker(qtbot, pool, FakeSettings({"tab/last": last}))
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker.restore()
    assert changed.args[0].name == "Tiny default"


def test_restore_falls_back_to_the_default_when_the_last_file_fails(qtbot, pool, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    settings = FakeSettings({"tab/last": str(bad), "tab/recent": [str(bad)]})
    picker = make_picker(qtbot, pool, settings)
    failures = []
    picker.loadFailed.connect(failures.append)
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker.restore()
    assert changed.args[0].name == "Tiny default" and len(failures) == 1
    assert "bad.safetensors" in picker.error_message and "default" in picker.error_message
    assert settings.values["tab/last"] == ""


class SlowLoader:
    """A generator loader that takes `steps` * 20 ms and notes whether it was closed early."""

    def __init__(self, steps: int = 250) -> None:
        self.steps = steps
        self.closed = threading.Event()
        self.finished = False

    def __call__(self, path: str):
        try:
            for i in range(self.steps):
                time.sleep(0.02)
                yield Progress((i + 1) / self.steps, f"layer {i + 1}")
        except GeneratorExit:
            self.closed.set()
            raise
        self.finished = True
        return LoadedModel("slow", "slow model", path)


def test_a_slow_loader_shows_progress_and_can_be_cancelled(qtbot, pool, tmp_path):
    slow = SlowLoader()
    picker = make_picker(qtbot, pool, load_path=slow)
    picker.load_default()
    wait_loaded(qtbot, picker)
    previous = picker.current
    path = tmp_path / "slow.bin"
    path.write_bytes(b"x")
    changed = []
    picker.modelChanged.connect(changed.append)
    picker.open_path(str(path))
    assert picker.loading and picker.cancel_button.isVisibleTo(picker) and picker.progress_bar.isVisibleTo(picker)
    qtbot.waitUntil(lambda: picker.progress_bar.value() > 0, timeout=5000)
    assert "layer" in picker.status_label.full_text and "slow.bin" in picker.status_label.full_text
    with qtbot.waitSignal(picker.busyChanged, timeout=1000) as busy:
        picker.cancel_button.click()
    assert busy.args == [False] and not picker.loading
    assert slow.closed.wait(2) and not slow.finished
    assert picker.current is previous and changed == [] and not picker.error_label.isVisibleTo(picker)
    assert not picker.progress_bar.isVisibleTo(picker) and not picker.cancel_button.isVisibleTo(picker)
    assert picker.combo.currentText() == "Tiny default"
    pool.wait_idle()
    assert picker.current is previous and changed == []


def test_a_second_load_supersedes_the_first(qtbot, pool, tmp_path):
    slow = SlowLoader()
    loaders = Loaders()
    picker = make_picker(qtbot, pool, load_path=lambda p: slow(p) if p.endswith(".bin") else loaders.path(p))
    busy = []
    picker.busyChanged.connect(busy.append)
    changed = []
    picker.modelChanged.connect(changed.append)
    slow_path = tmp_path / "slow.bin"
    slow_path.write_bytes(b"x")
    picker.open_path(str(slow_path))
    qtbot.waitUntil(lambda: picker.progress_bar.value() > 0, timeout=5000)
    good = tiny_model_file(tmp_path)
    picker.open_path(good)
    wait_loaded(qtbot, picker)
    assert slow.closed.wait(2) and not slow.finished
    assert [m.source for m in changed] == [good] and picker.current.source == good
    assert busy == [True, False]  # one busy spell, not one per load


def test_a_late_result_of_a_superseded_load_is_ignored(qtbot, pool, tmp_path):
    """A plain-function loader cannot be stopped; its result, when it comes, must not replace the newer model."""
    started, released = threading.Event(), threading.Event()

    def stubborn(path: str) -> LoadedModel:
        started.set()
        released.wait(5)
        return LoadedModel("late", "late model", path)

    # The stubborn load runs on its own device, so the default can load meanwhile.
    devices = iter(["stubborn-device", "cpu"])
    picker = make_picker(qtbot, pool, load_path=stubborn, device=lambda: next(devices))
    changed = []
    picker.modelChanged.connect(changed.append)
    path = tmp_path / "late.bin"
    path.write_bytes(b"x")
    picker.open_path(str(path))
    qtbot.waitUntil(started.is_set, timeout=5000)  # running, so cancelling cannot stop it
    picker.load_default()
    wait_loaded(qtbot, picker)
    assert [m.name for m in changed] == ["Tiny default"]
    released.set()
    assert pool.wait_idle(5)
    qtbot.wait(100)
    assert [m.name for m in changed] == ["Tiny default"] and picker.current.name == "Tiny default"
    assert picker.recent == []  # the superseded file was never loaded, so it is not remembered


def test_a_loader_returning_something_else_is_a_readable_failure(qtbot, pool, tmp_path):
    picker = make_picker(qtbot, pool, load_path=lambda p: {"not": "a model"})
    path = tmp_path / "odd.bin"
    path.write_bytes(b"x")
    with qtbot.waitSignal(picker.loadFailed, timeout=5000) as failed:
        picker.open_path(str(path))
    assert "odd.bin" in failed.args[0] and picker.current is None


def test_describe_lists_what_is_known():
    loaded = LoadedModel(None, "Speech separator", "/m.pt", "PyTorch checkpoint", 1_500,
                         {"Sample rate": "8000 Hz"})
    assert describe(loaded) == "Speech separator · PyTorch checkpoint · 1.5K parameters · Sample rate: 8000 Hz"
    assert describe(LoadedModel(None, "bare")) == "bare"


def test_a_picker_deleted_while_loading_does_not_break_the_job(qtbot, pool, tmp_path):
    slow = SlowLoader(steps=10)
    picker = ModelPicker(pool, FakeSettings(), "tab", load_default=None, load_path=slow, default_name="none")
    path = tmp_path / "slow.bin"
    path.write_bytes(b"x")
    ended = []
    pool.jobEnded.connect(lambda job: ended.append(job.state))
    picker.open_path(str(path))
    picker.deleteLater()
    qtbot.waitUntil(lambda: ended == ["finished"], timeout=5000)  # no slot of the deleted picker ran
    assert slow.finished


def test_shipped_models_are_listed_after_the_default_and_stay_out_of_the_recent_list(qtbot, pool, tmp_path):
    settings = FakeSettings()
    shipped = tiny_model_file(tmp_path, "causal.safetensors", inputs=3, outputs=3)
    picker = make_picker(qtbot, pool, settings, builtin={"Causal (embedded)": shipped,
                                                         "Gone (embedded)": str(tmp_path / "missing.safetensors")})
    picker.refresh()
    texts = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert texts[:2] == ["Tiny default", "Causal (embedded)"] and "Gone (embedded)" not in texts
    with qtbot.waitSignal(picker.modelChanged, timeout=5000) as changed:
        picker._on_activated(1)
    assert changed.args[0].model.weight.shape == (3, 3)
    assert picker.combo.currentText() == "Causal (embedded)"
    assert picker.recent == [] and settings.values["tab/last"] == os.path.abspath(shipped)
    texts = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert texts.count("Causal (embedded)") == 1 and "causal.safetensors" not in texts
