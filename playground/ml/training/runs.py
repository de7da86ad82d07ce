"""Every training run kept on disk, so that a crash loses nothing already plotted.

One folder per run under ``<data dir>/runs/<run id>/``:

* ``config.json``: the :class:`~playground.ml.training.trainer.TrainConfig` and data facts;
* ``metrics.jsonl``: one JSON object per line, appended and flushed as points come
  (``{"kind": "step", ...}`` or ``{"kind": "epoch", ...}``); a torn last line is ignored;
* ``status.json``: name, status, best validation accuracy, the writing process's pid and
  its start time; replaced atomically;
* ``weights.safetensors``: the final weights (also written when a run is stopped).

A run whose status says ``running`` but whose process is gone is reported as
``interrupted``. "Gone" includes a pid that the system has since given to another
process: the writer's start time (Linux: clock ticks since boot, from ``/proc``) is kept
beside its pid, and a live pid with a different start time is someone else.

Everything read back is checked, because the app lists these folders when it starts and
must start whatever a crash, a hand edit or another version left in them: a file that is
not a JSON object makes the run ``unreadable`` (with a reason); a field of the wrong type
falls back to a safe default; a metric value that is not a number becomes NaN.
"""

from __future__ import annotations

import csv
import json
import math
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
UNREADABLE = "unreadable"  # the run's files cannot be understood; RunInfo.reason says why
STATUSES = (RUNNING, FINISHED, STOPPED, DIVERGED, FAILED, INTERRUPTED, UNREADABLE)


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
    reason: str = ""  # what was wrong with the run's files ("" when nothing was)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


MAX_JSON_BYTES = 16 << 20  # config.json and status.json are a few hundred bytes; a bigger one is not ours


def _read_json(path: Path) -> tuple[Any, str]:
    """A JSON file's value and "", or (None, why it could not be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            if os.fstat(f.fileno()).st_size > MAX_JSON_BYTES:
                return None, f"{path.name} is too large to be a run's file"
            return json.load(f), ""
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path.name} could not be read ({getattr(e, 'strerror', None) or e})"
    except (ValueError, RecursionError):  # not JSON, a number too long, nesting too deep
        return None, f"{path.name} is not valid JSON"


# -- values read from disk: each one checked, with its default when it is unusable ------------------
def _number(value: Any) -> float | None:
    """A finite float from a JSON value, or None (strings, lists, bools, NaN, 1e999, ... are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:  # an integer too big for a float
        return None
    return f if math.isfinite(f) else None


def _whole(value: Any) -> int | None:
    """A whole number >= 0 from a JSON value (an integral float counts), or None."""
    f = _number(value)
    if f is None or f < 0 or f != int(f):
        return None
    return int(f)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _metric_value(value: Any) -> float:
    """A metric as a float; anything that is not a number (text, a list, null) is NaN.

    NaN and infinities written by a diverging run are kept as they are (json writes them)."""
    if isinstance(value, float):
        return value
    f = _number(value)
    return np.nan if f is None else f


# -- is the writing process still the one that wrote? ---------------------------------------------
def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negative pids name process groups, never one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat).

    None where it cannot be known (not Linux, no such process): callers then go by the
    pid alone. The command name (field 2) is in parentheses and may hold spaces or
    parentheses itself, so the fields are counted from the last ')'.
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
        after_name = stat[stat.rindex(b")") + 1:].split()
        return int(after_name[19])  # field 3 (state) is after_name[0], so field 22 is [19]
    except (OSError, ValueError, IndexError, OverflowError):
        return None


def _writer_gone(pid: Any, started: Any) -> bool:
    """True when the process that wrote a 'running' status is certainly not running it any more."""
    pid = _whole(pid)
    if pid is None or not _pid_alive(pid):
        return True
    recorded = _whole(started)
    if recorded is None:  # written without a start time (an older version, another OS)
        return False
    now = process_start_time(pid)
    return now is not None and now != recorded


class RunWriter:
    """Writes one run as it goes. Every method leaves the files consistent on disk."""

    def __init__(self, path: Path, status: dict, config: dict | None = None) -> None:
        self.path = path
        self.id = path.name
        self._status = status
        self._config = config or {}
        self._metrics = open(path / "metrics.jsonl", "a", buffering=1)

    def append(self, record: dict) -> None:
        """Append one metric point (a line, flushed: a crash keeps it)."""
        self._metrics.write(json.dumps(record, separators=(",", ":")) + "\n")

    def update(self, **fields: Any) -> None:
        # The name may have been changed (renamed in the runs table) while the run trains.
        on_disk, _ = _read_json(self.path / "status.json")
        if isinstance(on_disk, dict) and _text(on_disk.get("name")):
            self._status["name"] = on_disk["name"]
        self._status.update(fields)
        _write_json_atomic(self.path / "status.json", self._status)

    def save_weights(self, state_dict: dict) -> Path:
        """The weights in the project's format: ``weights.safetensors`` and ``weights.json``
        (what made them: the trainer, the run's config and seed)."""
        from ..checkpoints import save_weights

        tensors = {k: v for k, v in state_dict.items() if hasattr(v, "detach")}
        return save_weights(self.path / "weights.safetensors", tensors, {
            "made_by": "playground.ml.training.trainer.train", "run": self.id,
            "command": "python -m playground train " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in self._config.items()
                if k in ("dataset", "model", "optimizer", "lr", "schedule", "batch_size", "epochs", "seed")),
            "config": {k: v for k, v in self._config.items() if isinstance(v, (str, int, float, bool, type(None)))},
            "seed": self._config.get("seed")})

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
        started = process_start_time(os.getpid())
        if started is not None:
            status["pid_start"] = started
        writer = RunWriter(path, status, config)
        writer.update()
        return writer

    def _status(self, path: Path) -> tuple[dict, str]:
        """The run's status.json as checked values, and what was wrong with it ("" if nothing).

        The status is UNREADABLE when the file exists but is not a JSON object or names no
        known status; a missing file (a crash right after the run was created) is INTERRUPTED.
        """
        raw, why = _read_json(path / "status.json")
        if raw is None and not (path / "status.json").exists():
            return {"status": INTERRUPTED}, ""
        if why or not isinstance(raw, dict):
            return {"status": UNREADABLE}, why or "status.json is not a JSON object"
        problems = []
        status = _text(raw.get("status"))
        if status not in STATUSES:
            problems.append(f"status.json names no known status ({str(raw.get('status'))[:40]!r})")
            status = UNREADABLE
        clean: dict[str, Any] = {"status": status}
        for key, check in (("name", _text), ("best_val_acc", _number), ("created", _number),
                           ("epochs_done", _whole)):
            if key in raw and raw[key] is not None:
                value = check(raw[key])
                if value is None:
                    problems.append(f"status.json: {key!r} is not usable ({str(raw[key])[:40]!r})")
                clean[key] = value
        if status == UNREADABLE and _text(raw.get("reason")):  # kept by a rename of an unreadable run
            problems.insert(0, raw["reason"])
        if status == RUNNING:
            same_host = raw.get("host") is None or raw.get("host") == socket.gethostname()
            if same_host and _writer_gone(raw.get("pid"), raw.get("pid_start")):
                clean["status"] = INTERRUPTED
        return clean, "; ".join(problems)

    def list_runs(self) -> list[RunInfo]:
        runs = []
        try:
            paths = sorted(self.root.iterdir())
        except OSError:
            return []
        for path in paths:
            try:
                if not (path / "config.json").exists():
                    continue
            except OSError:
                continue
            runs.append(self.info(path.name))
        return runs

    def info(self, run_id: str) -> RunInfo:
        """What is known of a run; never raises, whatever its files hold."""
        path = self.root / run_id
        config, config_why = _read_json(path / "config.json")
        status, status_why = self._status(path)
        reasons = [r for r in (config_why, status_why) if r]
        if config_why or not isinstance(config, dict):
            if not config_why:
                reasons.insert(0, "config.json is not a JSON object")
            config = {}
            status["status"] = UNREADABLE
        created = status.get("created")
        if created is None:
            try:
                created = path.stat().st_mtime
            except OSError:
                created = 0.0
        return RunInfo(id=run_id, path=path, name=status.get("name") or run_id,
                       dataset=_text(config.get("dataset")) or "?", model=_text(config.get("model")) or "?",
                       status=status["status"], best_val_acc=status.get("best_val_acc"),
                       created=created, epochs_done=status.get("epochs_done") or 0, reason="; ".join(reasons))

    def config(self, run_id: str) -> dict:
        config, _ = _read_json(self.root / run_id / "config.json")
        return config if isinstance(config, dict) else {}

    def metrics(self, run_id: str) -> list[dict]:
        """Every complete metric line of a run (a line torn by a crash is skipped)."""
        path = self.root / run_id / "metrics.jsonl"
        records = []
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(record, dict):
                        records.append(record)
        except OSError:  # no metrics yet, or a folder where the file should be
            return records
        return records

    def exists(self, run_id: str) -> bool:
        return (self.root / run_id).is_dir()

    def metric_columns(self, run_id: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A run's step and epoch metrics as columns: ({"step": array, "loss": ...}, {...}).

        A value that is not a number (text, a list, null, missing) is NaN in its column."""
        steps: dict[str, np.ndarray] = {}
        epochs: dict[str, np.ndarray] = {}
        records = self.metrics(run_id)
        for kind, columns in (("step", steps), ("epoch", epochs)):
            rows = [r for r in records if r.get("kind") == kind]
            keys = [k for r in rows[:1] for k in r if k != "kind"]
            for k in keys:
                columns[k] = np.array([_metric_value(r.get(k)) for r in rows], dtype=np.float64)
        return steps, epochs

    def weights_path(self, run_id: str) -> Path | None:
        path = self.root / run_id / "weights.safetensors"
        return path if path.is_file() else None

    def rename(self, run_id: str, name: str) -> None:
        """Give a run a new name; only the name changes in its status.json.

        A status.json that is not a JSON object is replaced by one that keeps the run
        unreadable (with its reason) under the new name."""
        path = self.root / run_id
        raw, _ = _read_json(path / "status.json")
        if not isinstance(raw, dict):
            _, reason = self._status(path)
            raw = {"status": UNREADABLE, "reason": reason} if reason else {"status": INTERRUPTED}
        raw["name"] = (name.strip() if isinstance(name, str) else "") or run_id
        try:
            _write_json_atomic(path / "status.json", raw)
        except FileNotFoundError:  # the run was deleted meanwhile: nothing left to rename
            pass

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
                    writer.writerow({**rec, "run": run_id, "name": name})
        return dest
