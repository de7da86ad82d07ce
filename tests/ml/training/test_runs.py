"""The run store reads whatever is on disk without raising: the app lists these folders as it starts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from playground.ml.training import runs as runstore
from playground.ml.training.runs import RUNNING, UNREADABLE, RunStore, process_start_time

GOOD_CONFIG = {"dataset": "digits", "model": "mlp"}


def make_run(store: RunStore, run_id: str, config, status, metrics: str = "") -> None:
    """A run folder written by hand: ``config`` / ``status`` are JSON values, or raw text when str."""
    path = store.root / run_id
    path.mkdir()
    for filename, value in (("config.json", config), ("status.json", status)):
        if value is not None:
            (path / filename).write_text(value if isinstance(value, str) else json.dumps(value))
    (path / "metrics.jsonl").write_text(metrics)


def assert_sane(info: runstore.RunInfo) -> None:
    assert isinstance(info.name, str) and info.name
    assert isinstance(info.dataset, str) and isinstance(info.model, str)
    assert info.status in runstore.STATUSES
    assert info.best_val_acc is None or (isinstance(info.best_val_acc, float) and math.isfinite(info.best_val_acc))
    assert isinstance(info.created, float) and math.isfinite(info.created)
    assert isinstance(info.epochs_done, int) and info.epochs_done >= 0
    assert isinstance(info.reason, str)


BAD_STATUS_FIELDS = [
    {"best_val_acc": "high"},
    {"best_val_acc": [0.5]},
    {"created": "yesterday"},
    {"created": 1e999},
    {"epochs_done": None},
    {"epochs_done": "3"},
    {"epochs_done": -2},
    {"epochs_done": 1.5},
    {"name": 5},
    {"name": ["a"]},
    {"name": ""},
    {"pid": "x"},
    {"pid": -1},
    {"pid": True},
    {"pid": 10**40},
    {"host": 3},
    {"pid_start": "soon"},
]


@pytest.mark.parametrize("bad", BAD_STATUS_FIELDS, ids=lambda b: json.dumps(b))
def test_a_status_field_of_the_wrong_type_falls_back_to_its_default(tmp_path, bad):
    store = RunStore(tmp_path)
    status = {"name": "ok", "status": "finished", "best_val_acc": 0.9, "epochs_done": 3, "created": 1000.0, **bad}
    make_run(store, "r1", GOOD_CONFIG, status)
    [info] = store.list_runs()
    assert_sane(info)
    assert info.dataset == "digits" and info.model == "mlp"
    key = next(iter(bad))
    if key in ("best_val_acc", "created", "epochs_done", "name") and bad[key] not in (None, ""):
        assert key in info.reason  # the problem is said, not hidden
    if key == "best_val_acc":
        assert info.best_val_acc is None
    if key == "epochs_done":
        assert info.epochs_done == 0
    if key == "name":
        assert info.name == "r1"
    store.rename("r1", "new name")
    assert store.info("r1").name == "new name"
    store.metric_columns("r1")


@pytest.mark.parametrize("bad", [{"status": "running", "pid": "x"}, {"status": "running", "pid": -1},
                                 {"status": "running"}, {"status": "running", "pid": 0}])
def test_a_running_status_without_a_usable_pid_is_interrupted(tmp_path, bad):
    # pid -1 and 0 would ask os.kill about whole process groups, which are always "alive"
    store = RunStore(tmp_path)
    make_run(store, "r1", GOOD_CONFIG, {"name": "x", **bad})
    assert store.info("r1").status == runstore.INTERRUPTED


@pytest.mark.parametrize("status", [[1, 2], 5, "text", None, True, "{not json", "[" * 100000,
                                    {"status": 7}, {"status": "bogus"}, {"status": ["running"]}],
                         ids=repr)
def test_an_unusable_status_file_makes_the_run_unreadable(tmp_path, status):
    store = RunStore(tmp_path)
    make_run(store, "r1", GOOD_CONFIG, "null" if status is None else status if isinstance(status, str) and
             status.startswith(("{", "[")) else json.dumps(status))
    [info] = store.list_runs()
    assert_sane(info)
    assert info.status == UNREADABLE and info.reason
    store.rename("r1", "renamed")
    again = store.info("r1")
    assert again.name == "renamed" and again.status == UNREADABLE and again.reason


@pytest.mark.parametrize("config", ["[1, 2]", "3", '"digits"', "{oops", "[" * 100000, "null"])
def test_an_unusable_config_makes_the_run_unreadable(tmp_path, config):
    store = RunStore(tmp_path)
    make_run(store, "r1", config, {"name": "n", "status": "finished"})
    [info] = store.list_runs()
    assert_sane(info)
    assert info.status == UNREADABLE and "config.json" in info.reason
    assert info.dataset == "?" and store.config("r1") == {}


def test_a_config_with_values_of_the_wrong_type(tmp_path):
    store = RunStore(tmp_path)
    make_run(store, "r1", {"dataset": 5, "model": ["mlp"]}, {"name": "n", "status": "finished"})
    info = store.info("r1")
    assert_sane(info)
    assert info.dataset == "?" and info.model == "?"


def test_one_bad_run_does_not_hide_the_others(tmp_path):
    store = RunStore(tmp_path)
    make_run(store, "a", [1], [2])
    make_run(store, "b", GOOD_CONFIG, {"name": "good", "status": "finished", "best_val_acc": 0.5})
    (tmp_path / "c").mkdir()  # a folder without config.json is not a run
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").mkdir()  # a folder where the file should be
    runs = {r.id: r for r in store.list_runs()}
    assert set(runs) == {"a", "b", "d"}
    assert runs["a"].status == UNREADABLE and runs["d"].status == UNREADABLE
    assert runs["b"].status == "finished" and runs["b"].best_val_acc == 0.5


def test_metric_values_that_are_not_numbers_become_nan(tmp_path):
    store = RunStore(tmp_path)
    lines = ['{"kind": "step", "step": 1, "loss": 0.5}', '{"kind": "step", "step": 2, "loss": "abc"}',
             '{"kind": "step", "step": 3, "loss": [1, 2]}', '{"kind": "step", "step": 4, "loss": null}',
             '{"kind": "step", "step": 5, "loss": {"a": 1}}', '{"kind": "step", "step": 6, "loss": true}',
             '{"kind": "step", "step": 7, "loss": NaN}', '{"kind": "step", "step": 8}',
             '[1, 2]', '"text"', '{"kind": ["epoch"]}', '{"kind": "epoch", "epoch": 1, "val_acc": "0.9"}']
    make_run(store, "r1", GOOD_CONFIG, {"name": "n", "status": "finished"}, "\n".join(lines) + "\n")
    steps, epochs = store.metric_columns("r1")
    assert steps["step"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert steps["loss"][0] == 0.5 and np.isnan(steps["loss"][1:]).all()
    assert epochs["epoch"].tolist() == [1] and np.isnan(epochs["val_acc"]).all()
    out = store.export_csv(["r1"], tmp_path / "out.csv")
    assert out.read_text().count("\n") == 1 + 10  # header + the 10 dict lines


def test_a_run_remembers_its_writers_start_time(tmp_path):
    store = RunStore(tmp_path)
    writer = store.create(GOOD_CONFIG)
    status = json.loads((writer.path / "status.json").read_text())
    assert status["pid"] == os.getpid()
    if sys.platform.startswith("linux"):
        assert status["pid_start"] == process_start_time(os.getpid()) and isinstance(status["pid_start"], int)
    assert store.info(writer.id).status == RUNNING
    writer.close("finished")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process start times come from /proc")
def test_a_reused_pid_is_not_running_forever(tmp_path):
    """A live process with the recorded pid but another start time did not write the run."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_time(sleeper.pid)
        assert isinstance(started, int) and started > 0
        store = RunStore(tmp_path)
        base = {"name": "n", "status": RUNNING, "pid": sleeper.pid, "host": None}
        make_run(store, "reused", GOOD_CONFIG, {**base, "pid_start": started + 12345})
        make_run(store, "same", GOOD_CONFIG, {**base, "pid_start": started})
        make_run(store, "old", GOOD_CONFIG, base)  # written before start times: the pid alone decides
        assert store.info("reused").status == runstore.INTERRUPTED
        assert store.info("same").status == RUNNING
        assert store.info("old").status == RUNNING
    finally:
        sleeper.kill()
        sleeper.wait()
    deadline = time.time() + 5
    while store.info("same").status == RUNNING and time.time() < deadline:
        time.sleep(0.05)
    assert store.info("same").status == runstore.INTERRUPTED  # and once the process is gone, so is the run


def test_process_start_time_of_nothing():
    assert process_start_time(-5) is None
    assert process_start_time(2**31 - 1) is None  # above any pid the kernel hands out by default


def test_renaming_keeps_the_other_fields_as_written(tmp_path):
    store = RunStore(tmp_path)
    make_run(store, "r1", GOOD_CONFIG, {"name": "n", "status": RUNNING, "pid": -7, "extra": [1]})
    assert store.info("r1").status == runstore.INTERRUPTED
    store.rename("r1", "  x  ")
    raw = json.loads((tmp_path / "r1" / "status.json").read_text())
    assert raw == {"name": "x", "status": RUNNING, "pid": -7, "extra": [1]}  # shown as interrupted, not rewritten
    store.rename("r1", "   ")
    assert store.info("r1").name == "r1"


def test_a_writer_survives_a_status_file_replaced_by_garbage(tmp_path):
    store = RunStore(tmp_path)
    writer = store.create(GOOD_CONFIG, "mine")
    (writer.path / "status.json").write_text("[1, 2, 3]")
    writer.update(epochs_done=2)  # must not raise in the middle of training
    writer.close("finished")
    info = store.info(writer.id)
    assert info.status == "finished" and info.name == "mine" and info.epochs_done == 2
