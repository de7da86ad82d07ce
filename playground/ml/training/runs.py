"""Every training run kept on disk, so that a crash loses nothing already plotted.

One folder per run under ``<data dir>/runs/<run id>/``:

* ``config.json``: the :class:`~playground.ml.training.trainer.TrainConfig` and data facts;
* ``metrics.jsonl``: one JSON object per line, appended and flushed as points come
  (``{"kind": "step", ...}`` or ``{"kind": "epoch", ...}``); a torn last line is ignored;
* ``status.json``: name, status, best validation accuracy, the writing process's pid;
  replaced atomically;
* ``weights.safetensors``: the final weights (also written when a run is stopped).

A run whose status says ``running`` but whose process is gone is reported as
``interrupted``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RUNNING, FINISHED, STOPPED, DIVERGED, FAILED, INTERRUPTED = (
    "running", "finished", "stopped", "diverged", "failed", "interrupted")


@dataclass
class RunInfo:
    id: str
    path: Path
    name: str
    dataset: str
    model: str
    status: str
    best_val_acc: float | None
    created: float
    epochs_done: int


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunWriter:
    """Writes one run as it goes. Every method leaves the files consistent on disk."""

    def __init__(self, path: Path, status: dict) -> None:
        self.path = path
        self.id = path.name
        self._status = status
        self._metrics = open(path / "metrics.jsonl", "a", buffering=1)

    def append(self, record: dict) -> None:
        """Append one metric point (a line, flushed: a crash keeps it)."""
        self._metrics.write(json.dumps(record, separators=(",", ":")) + "\n")

    def update(self, **fields: Any) -> None:
        # The name may have been changed (renamed in the runs table) while the run trains.
        try:
            with open(self.path / "status.json") as f:
                self._status["name"] = json.load(f).get("name", self._status.get("name"))
        except (OSError, ValueError):
            pass
        self._status.update(fields)
        _write_json_atomic(self.path / "status.json", self._status)

    def save_weights(self, state_dict: dict) -> Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()
                   if hasattr(v, "detach")}
        target = self.path / "weights.safetensors"
        tmp = target.with_name("weights.tmp.safetensors")
        save_file(tensors, str(tmp), metadata={"run": self.id})
        os.replace(tmp, target)
        return target

    def close(self, status: str, **fields: Any) -> None:
        self.update(status=status, ended=time.time(), **fields)
        self._metrics.close()


class RunStore:
    """All runs in one folder: create, list, read, rename, delete, export."""

    def __init__(self, root: Path | str | None = None) -> None:
        if root is None:
            from ...paths import runs_dir

            root = runs_dir()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, config: dict, name: str = "") -> RunWriter:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^a-z0-9]+", "-", f"{config.get('model', '')}-{config.get('dataset', '')}".lower())
        base = f"{stamp}-{slug.strip('-')}"
        path, k = self.root / base, 1
        while path.exists():
            k += 1
            path = self.root / f"{base}-{k}"
        path.mkdir(parents=True)
        _write_json_atomic(path / "config.json", config)
        status = {"name": name or f"{config.get('model')} on {config.get('dataset')}",
                  "status": RUNNING, "best_val_acc": None, "epochs_done": 0,
                  "created": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
        writer = RunWriter(path, status)
        writer.update()
        return writer

    def _status(self, path: Path) -> dict:
        try:
            with open(path / "status.json") as f:
                status = json.load(f)
        except (OSError, ValueError):
            status = {"status": INTERRUPTED}
        if status.get("status") == RUNNING:
            same_host = status.get("host") in (None, socket.gethostname())
            if same_host and not _pid_alive(int(status.get("pid", -1))):
                status["status"] = INTERRUPTED
        return status

    def list_runs(self) -> list[RunInfo]:
        runs = []
        for path in sorted(self.root.iterdir()):
            if not (path / "config.json").exists():
                continue
            runs.append(self.info(path.name))
        return runs

    def info(self, run_id: str) -> RunInfo:
        path = self.root / run_id
        config = self.config(run_id)
        status = self._status(path)
        return RunInfo(id=run_id, path=path, name=status.get("name") or run_id,
                       dataset=config.get("dataset", "?"), model=config.get("model", "?"),
                       status=status.get("status", "?"), best_val_acc=status.get("best_val_acc"),
                       created=float(status.get("created") or path.stat().st_mtime),
                       epochs_done=int(status.get("epochs_done") or 0))

    def config(self, run_id: str) -> dict:
        try:
            with open(self.root / run_id / "config.json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def metrics(self, run_id: str) -> list[dict]:
        """Every complete metric line of a run (a line torn by a crash is skipped)."""
        path = self.root / run_id / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def exists(self, run_id: str) -> bool:
        return (self.root / run_id).is_dir()

    def metric_columns(self, run_id: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A run's step and epoch metrics as columns: ({"step": array, "loss": ...}, {...})."""
        steps, epochs = {}, {}
        records = self.metrics(run_id)
        for kind, columns in (("step", steps), ("epoch", epochs)):
            rows = [r for r in records if r.get("kind") == kind]
            keys = {k for r in rows[:1] for k in r if k != "kind"}
            for k in keys:
                columns[k] = np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)
        return steps, epochs

    def weights_path(self, run_id: str) -> Path | None:
        path = self.root / run_id / "weights.safetensors"
        return path if path.exists() else None

    def rename(self, run_id: str, name: str) -> None:
        path = self.root / run_id
        status = self._status(path)
        status["name"] = name.strip() or run_id
        _write_json_atomic(path / "status.json", status)

    def delete(self, run_id: str) -> None:
        target = (self.root / run_id).resolve()
        if target.parent != self.root.resolve():
            raise ValueError(f"{run_id!r} is not a run of this store")
        shutil.rmtree(target)

    def export_csv(self, run_ids: list[str], dest: Path | str) -> Path:
        """One row per metric point of the given runs, with the run's id and name."""
        dest = Path(dest)
        keys = ["run", "name", "kind", "step", "epoch", "time", "loss", "lr", "grad_norm",
                "train_acc", "val_loss", "val_acc"]
        with open(dest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            for run_id in run_ids:
                name = self.info(run_id).name
                for rec in self.metrics(run_id):
                    writer.writerow({"run": run_id, "name": name, **rec})
        return dest
