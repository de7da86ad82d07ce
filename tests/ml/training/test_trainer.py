"""The training loop: it learns, it stops, it notices divergence, it writes runs that survive crashes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from playground.ml.training import runs as runstore
from playground.ml.training.data import load_digits
from playground.ml.training.trainer import (
    Diverged,
    EpochPictures,
    EpochPoint,
    RunStarted,
    StepPoint,
    TrainConfig,
    lr_factor,
    run_to_end,
    train,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def digits():
    return load_digits(val_fraction=0.2, seed=0)


def test_mlp_reaches_90_percent_on_digits(digits, tmp_path):
    store = runstore.RunStore(tmp_path)
    items = []
    cfg = TrainConfig(dataset="digits", model="mlp", optimizer="adam", lr=1e-3, epochs=5, batch_size=64)
    result = run_to_end(cfg, store, data=digits, on_item=items.append)
    steps = [i for i in items if isinstance(i, StepPoint)]
    epochs = [i for i in items if isinstance(i, EpochPoint)]
    assert isinstance(items[0], RunStarted)
    assert len(epochs) == 5 and len(steps) == 5 * items[0].steps_per_epoch
    # The loss falls: the last ten steps average well below the first ten.
    first = sum(s.loss for s in steps[:10]) / 10
    last = sum(s.loss for s in steps[-10:]) / 10
    assert last < 0.5 * first
    assert result.status == "finished"
    assert result.best_val_acc >= 0.90
    pics = [i for i in items if isinstance(i, EpochPictures)]
    assert len(pics) == 5 and pics[-1].confusion.sum() == len(digits.val_x)
    # The run is on disk: config, every point, weights, status.
    info = store.info(result.run_id)
    assert info.status == "finished" and info.best_val_acc == pytest.approx(result.best_val_acc)
    metrics = store.metrics(result.run_id)
    assert sum(r["kind"] == "step" for r in metrics) == len(steps)
    from playground.ml.checkpoints import load_weights

    weights, sidecar = load_weights(store.weights_path(result.run_id))
    assert sidecar["run"] == result.run_id and sidecar["seed"] == cfg.seed and "--model" in sidecar["command"]
    assert weights and all(torch.isfinite(w).all() for w in weights.values())


def test_lenet_learns_digits(digits):
    # d2l's LeNet (sigmoid, average pooling) is slow to start; the panel's default lr is this one.
    cfg = TrainConfig(dataset="digits", model="lenet", optimizer="adam", lr=1e-2, epochs=8, batch_size=32)
    result = run_to_end(cfg, data=digits)
    assert result.best_val_acc > 0.8


def test_nan_loss_stops_the_run_as_diverged(digits, tmp_path):
    store = runstore.RunStore(tmp_path)
    items = []
    cfg = TrainConfig(dataset="digits", model="softmax", optimizer="sgd", lr=10.0, epochs=50, batch_size=16)
    bad = digits.train_x.clone()
    bad[5:, 0, 0, 0] = 1e30  # absurd inputs make the loss blow up at once
    data = type(digits)(**{**digits.__dict__, "train_x": bad})
    result = run_to_end(cfg, store, data=data, on_item=items.append)
    assert result.status == "diverged"
    assert any(isinstance(i, Diverged) and "diverged" in i.message for i in items)
    assert store.info(result.run_id).status == "diverged"


def test_closing_the_generator_stops_and_keeps_the_weights(digits, tmp_path):
    store = runstore.RunStore(tmp_path)
    gen = train(TrainConfig(epochs=100), store, data=digits)
    run_id = None
    for item in gen:
        if isinstance(item, RunStarted):
            run_id = item.run_id
        if isinstance(item, StepPoint) and item.step == 7:
            break
    gen.close()
    info = store.info(run_id)
    assert info.status == "stopped"
    assert store.weights_path(run_id) is not None
    assert len([r for r in store.metrics(run_id) if r["kind"] == "step"]) == 7


def test_config_validation():
    assert TrainConfig().validate() == {}
    bad = TrainConfig(lr=-1, batch_size=0, epochs=0, dropout=1.5, model="alexnet", dataset="folder")
    problems = bad.validate()
    assert {"lr", "batch_size", "epochs", "dropout", "model", "folder"} <= set(problems)
    with pytest.raises(ValueError):
        next(train(bad))


def test_a_model_that_does_not_fit_the_data_is_refused(digits):
    with pytest.raises(ValueError, match="does not fit"):
        run_to_end(TrainConfig(model="gru"), data=digits)


def test_schedules():
    assert lr_factor("constant", 50, 100) == 1.0
    assert lr_factor("step", 80, 100) == pytest.approx(0.01)
    assert lr_factor("cosine", 0, 100) == pytest.approx(1.0)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor("warmup_cosine", 0, 100) == 0.0


def test_run_survives_a_crash_mid_run(tmp_path):
    """Kill a real training process mid-run: what it wrote stays readable, the run is 'interrupted'."""
    env = {**os.environ, "PLAYGROUND_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "playground", "train", "--dataset", "digits",
                             "--model", "mlp", "--epochs", "500", "--device", "cpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    store = runstore.RunStore(tmp_path / "runs")
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            runs = store.list_runs()
            if runs and sum(r["kind"] == "epoch" for r in store.metrics(runs[0].id)) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the training process wrote no epochs")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # A torn last line, as a crash in the middle of a write would leave.
    run = store.list_runs()[0]
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "step": 99')
    info = store.info(run.id)
    assert info.status == "interrupted"
    assert info.best_val_acc is not None and info.best_val_acc > 0.5
    records = store.metrics(run.id)
    assert sum(r["kind"] == "epoch" for r in records) >= 2
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1))
    step_cols, epoch_cols = store.metric_columns(run.id)
    assert step_cols["step"].tolist() == steps
    assert len(epoch_cols["val_acc"]) == sum(r["kind"] == "epoch" for r in records)


def test_metrics_survive_a_torn_line_anywhere(tmp_path):
    store = runstore.RunStore(tmp_path)
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    lines = [f'{{"kind": "step", "step": {k}, "loss": {1 / k}}}' for k in range(1, 6)]
    lines.insert(2, '{"kind": "step", "st')  # torn in the middle (the fast path must fall back)
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")
    assert [r["step"] for r in store.metrics("r1")] == [1, 2, 3, 4, 5]
    steps, epochs = store.metric_columns("r1")
    np.testing.assert_allclose(steps["loss"], [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert epochs == {}


def test_store_rename_delete_export(digits, tmp_path):
    store = runstore.RunStore(tmp_path)
    a = run_to_end(TrainConfig(epochs=1, name="first"), store, data=digits)
    b = run_to_end(TrainConfig(epochs=2, model="softmax"), store, data=digits)
    assert [r.id for r in store.list_runs()] == sorted([a.run_id, b.run_id])
    store.rename(a.run_id, "renamed")
    assert store.info(a.run_id).name == "renamed"
    out = store.export_csv([a.run_id, b.run_id], tmp_path / "out.csv")
    import csv

    rows = list(csv.DictReader(out.open()))
    assert sum(r["kind"] == "epoch" for r in rows) == 3
    assert {r["name"] for r in rows if r["run"] == a.run_id} == {"renamed"}
    store.delete(a.run_id)
    assert [r.id for r in store.list_runs()] == [b.run_id]
    with pytest.raises(ValueError):
        store.delete("../../etc")
    json.loads((store.root / b.run_id / "config.json").read_text())


def test_stop_right_after_start_closes_the_run(digits, tmp_path):
    store = runstore.RunStore(tmp_path)
    gen = train(TrainConfig(epochs=5), store, data=digits)
    started = next(gen)
    assert isinstance(started, RunStarted)
    gen.close()  # a Stop before the first step
    assert store.info(started.run_id).status == "stopped"
    assert store.weights_path(started.run_id) is not None


def test_renaming_a_run_while_it_trains_sticks(digits, tmp_path):
    store = runstore.RunStore(tmp_path)
    gen = train(TrainConfig(epochs=3, name="orig"), store, data=digits)
    run_id = next(gen).run_id
    store.rename(run_id, "renamed while training")
    for _ in gen:
        pass
    assert store.info(run_id).name == "renamed while training"


# -- a headless run stopped by signals still writes its final files ---------------------------
def start_headless_run(tmp_path) -> tuple[subprocess.Popen, runstore.RunStore]:
    """A `python -m playground train` process, returned once it has printed its first epoch."""
    env = {**os.environ, "PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_TORCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "playground", "train", "--dataset", "digits",
                             "--model", "mlp", "--epochs", "200", "--device", "cpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in proc.stdout:  # the run line, then one line per epoch
        if line.startswith("epoch"):
            break
        if time.time() > deadline:
            break
    else:
        proc.kill()
        pytest.fail("the training process ended before its first epoch: " + proc.stderr.read())
    return proc, runstore.RunStore(tmp_path / "runs")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, err


def assert_stopped_and_saved(store: runstore.RunStore) -> None:
    [run] = store.list_runs()
    status = json.loads((run.path / "status.json").read_text())
    assert status["status"] == "stopped" and "ended" in status
    assert store.info(run.id).status == "stopped"
    from playground.ml.checkpoints import load_weights

    weights, _ = load_weights(store.weights_path(run.id))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())


def test_sigterm_stops_a_headless_run_and_saves_it(tmp_path):
    proc, store = start_headless_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert_stopped_and_saved(store)


def test_ctrl_c_pressed_again_and_again_still_saves_the_run(tmp_path):
    proc, store = start_headless_run(tmp_path)
    for _ in range(40):  # a burst: some land while the weights and status are being written
        proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
    rc, err = finish(proc)
    assert rc == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    assert_stopped_and_saved(store)


def test_signals_held_defers_sigint_in_the_main_thread():
    from playground.ml.training.trainer import signals_held

    with pytest.raises(KeyboardInterrupt):
        with signals_held() as held:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler would have run by now: it only recorded the signal
            assert held == [signal.SIGINT]
    with signals_held(redeliver=False) as held:  # already stopping: a held Ctrl-C is dropped
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert held == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_outside_the_generator_still_closes_the_run(digits, tmp_path):
    """run_to_end closes the run even when the interruption lands in its caller's callback."""
    store = runstore.RunStore(tmp_path)

    def on_item(item):
        if isinstance(item, StepPoint) and item.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_end(TrainConfig(epochs=50), store, data=digits, on_item=on_item)
    [run] = store.list_runs()
    assert run.status == "stopped" and store.weights_path(run.id) is not None
