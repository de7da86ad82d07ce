"""The training loop behind the dashboard and ``python -m playground train``.

:func:`train` is a generator. It yields, in this order of appearance:

* :class:`~playground.progress.Progress` now and then;
* one :class:`RunStarted` once the data and model are ready;
* a :class:`StepPoint` after every optimisation step (loss, learning rate, gradient norm);
* an :class:`EpochPoint` (validation loss and accuracy) and an :class:`EpochPictures`
  (confusion matrix, validation samples with predictions, first-layer filters) per epoch;
* a :class:`Diverged` if the loss stops being finite (the run then ends, marked diverged).

It returns a :class:`RunResult`. Closing the generator (a cancel) stops the run at the
next step; the weights so far are saved and the run is marked ``stopped``. When a
:class:`~playground.ml.training.runs.RunStore` is given, every point is written as it
comes.

The last writing (weights and final status) is shielded from a second Ctrl-C or a SIGTERM
when the run trains on the main thread (the command line): see :func:`signals_held`.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...progress import Progress
from . import runs as runstore
from .data import DATASETS, DataBundle, load_dataset
from .models import MODELS, build_model, first_layer_filters, models_for

OPTIMIZERS = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam", "adamw": "AdamW"}
SCHEDULES = {"constant": "Constant", "step": "Step (x0.1 at 50% and 75%)",
             "cosine": "Cosine", "warmup_cosine": "Warm-up + cosine"}


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults: a quick, good run on the digits."""

    dataset: str = "digits"
    model: str = "mlp"
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    batch_size: int = 64
    epochs: int = 10
    weight_decay: float = 0.0
    dropout: float = 0.2
    momentum: float = 0.9
    seed: int = 0
    val_fraction: float = 0.2
    folder: str = ""
    image_size: int = 32
    device: str = "cpu"
    name: str = ""

    def validate(self) -> dict[str, str]:
        """Field name -> what is wrong with it (empty when the config is good)."""
        bad: dict[str, str] = {}
        if self.dataset not in DATASETS:
            bad["dataset"] = f"Unknown data set {self.dataset!r}."
        if self.model not in MODELS:
            bad["model"] = f"Unknown model {self.model!r}."
        if self.optimizer not in OPTIMIZERS:
            bad["optimizer"] = f"Unknown optimizer {self.optimizer!r}."
        if self.schedule not in SCHEDULES:
            bad["schedule"] = f"Unknown schedule {self.schedule!r}."
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 10 and math.isfinite(self.lr)):
            bad["lr"] = "The learning rate must be a number above 0 and at most 10."
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65536):
            bad["batch_size"] = "The batch size must be a whole number from 1 to 65536."
        if not (isinstance(self.epochs, int) and 1 <= self.epochs <= 100000):
            bad["epochs"] = "The number of epochs must be a whole number from 1 to 100000."
        if not (0 <= self.weight_decay < 1):
            bad["weight_decay"] = "Weight decay must be at least 0 and below 1."
        if not (0 <= self.dropout < 1):
            bad["dropout"] = "Dropout must be at least 0 and below 1."
        if not (0 <= self.momentum < 1):
            bad["momentum"] = "Momentum must be at least 0 and below 1."
        if not (isinstance(self.seed, int) and 0 <= self.seed <= 2**31 - 1):
            bad["seed"] = "The seed must be a whole number from 0 to 2147483647."
        if not (0 < self.val_fraction < 1):
            bad["val_fraction"] = "The validation fraction must be between 0 and 1."
        if not (isinstance(self.image_size, int) and 4 <= self.image_size <= 256):
            bad["image_size"] = "The image size must be from 4 to 256 pixels."
        if self.dataset == "folder" and not self.folder:
            bad["folder"] = "Choose an image folder."
        return bad

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- what the generator yields --------------------------------------------------------------
@dataclass(frozen=True)
class RunStarted:
    run_id: str
    config: dict
    classes: list[str]
    data_note: str
    input_shape: tuple[int, ...]
    steps_per_epoch: int
    total_steps: int
    parameters: int


@dataclass(frozen=True)
class StepPoint:
    step: int
    epoch: float  # fractional epoch
    time: float  # seconds since the run started
    loss: float
    lr: float
    grad_norm: float


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    step: int
    time: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float


@dataclass(frozen=True)
class EpochPictures:
    epoch: int
    confusion: np.ndarray  # (classes, classes) counts, rows = true label
    samples: np.ndarray  # (n, H, W) or (n, H, W, 3) uint8 images, or (n, L) float sequences
    sample_labels: np.ndarray
    sample_preds: np.ndarray
    filters: np.ndarray | None  # first-layer filters of a conv net


@dataclass(frozen=True)
class Diverged:
    step: int
    loss: float
    message: str


@dataclass
class RunResult:
    run_id: str
    status: str
    epochs_done: int
    best_val_acc: float | None
    final_val_acc: float | None
    steps: int
    seconds: float
    history: list[EpochPoint] = field(default_factory=list)


# -- pieces -------------------------------------------------------------------------------
def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning-rate multiplier at ``step`` of ``total`` for a schedule."""
    p = step / max(1, total)
    if schedule == "step":
        return 1.0 if p < 0.5 else 0.1 if p < 0.75 else 0.01
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "warmup_cosine":
        warm = 0.05
        return p / warm if p < warm else 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))
    return 1.0


def _to_display(x: torch.Tensor) -> np.ndarray:
    """Validation inputs as pictures: uint8 images (grey (n,H,W) or colour (n,H,W,3)) or sequences."""
    x = x.detach().cpu()
    if x.dim() == 4:
        img = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return img[:, 0] if img.shape[1] == 1 else img.transpose(0, 2, 3, 1)
    return x.numpy().astype(np.float32)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean: float, std: float,
             num_classes: int, batch_size: int = 512) -> Generator[Progress, None, tuple]:
    """Validation loss, accuracy, confusion matrix and predictions; yields between batches."""
    model.eval()
    total_loss, preds = 0.0, []
    for i in range(0, len(x), batch_size):
        logits = model((x[i:i + batch_size] - mean) / std)
        total_loss += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        preds.append(logits.argmax(1))
        yield Progress(None, "")  # a chance to cancel; the run's own progress stays on screen
    model.train()
    pred = torch.cat(preds)
    confusion = torch.bincount(y * num_classes + pred, minlength=num_classes ** 2)
    return (total_loss / len(x), float((pred == y).float().mean()),
            confusion.view(num_classes, num_classes).cpu().numpy(), pred.cpu().numpy())


@contextmanager
def signals_held(redeliver: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM for the duration of the block (main thread only; elsewhere a no-op).

    A signal that arrives inside the block is recorded instead of interrupting it, so a
    run's final files are written whole even when Ctrl-C is pressed twice. On leaving,
    the held signals are sent again to the restored handlers, except a held SIGINT when
    ``redeliver`` is False (the run is already stopping because of a Ctrl-C). Yields the
    list of signals held so far.
    """
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held  # only the main thread receives signals in Python; a worker has nothing to fear
        return
    wanted = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None]
    previous = {s: signal.getsignal(s) for s in wanted}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: not ours to replace

    def hold(signum, frame) -> None:
        held.append(signum)

    for s in previous:
        signal.signal(s, hold)
    try:
        yield held
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):  # each kind of signal once, in the order they came
            if redeliver or s != signal.SIGINT:
                signal.raise_signal(s)


def train(cfg: TrainConfig, store: runstore.RunStore | None = None,
          data: DataBundle | None = None, samples: int = 32) -> Generator[Any, None, RunResult]:
    """Train ``cfg`` to its end (or until closed), yielding progress and points."""
    problems = cfg.validate()
    if problems:
        raise ValueError(" ".join(problems.values()))
    if data is None:
        yield Progress(None, f"Loading {DATASETS.get(cfg.dataset, cfg.dataset)}")
        data = yield from load_dataset(cfg.dataset, folder=cfg.folder or None, image_size=cfg.image_size,
                                       val_fraction=cfg.val_fraction, seed=cfg.seed)
    if cfg.model not in models_for(data.input_shape):
        raise ValueError(f"{MODELS[cfg.model]} does not fit {data.name} (input "
                         f"{'x'.join(map(str, data.input_shape))}); choose one of: "
                         + ", ".join(MODELS[m] for m in models_for(data.input_shape)) + ".")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.dropout).to(device)
    optimizer = make_optimizer(cfg, model.parameters())
    tx, ty = data.train_x.to(device), data.train_y.to(device)
    vx, vy = data.val_x.to(device), data.val_y.to(device)
    mean, std = data.mean, data.std
    n = len(tx)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    pick = torch.randperm(len(vx), generator=torch.Generator().manual_seed(1))[:samples]
    sample_images, sample_labels = _to_display(data.val_x[pick]), data.val_y[pick].numpy()

    config = {**cfg.to_dict(), "classes": data.classes, "input_shape": list(data.input_shape),
              "data_note": data.describe()}
    writer = store.create(config, cfg.name) if store is not None else None
    result = RunResult(writer.id if writer else "", runstore.RUNNING, 0, None, None, 0, 0.0)
    start = time.perf_counter()
    step = 0
    try:
        # Inside the try: a Stop right here still closes the run on disk as "stopped".
        yield RunStarted(result.run_id, config, data.classes, data.describe(), data.input_shape,
                         steps_per_epoch, total_steps, sum(p.numel() for p in model.parameters()))
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n, generator=gen).to(device)
            run_loss, run_correct = torch.zeros((), device=device), torch.zeros((), device=device)
            for b in range(steps_per_epoch):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                lr = cfg.lr * lr_factor(cfg.schedule, step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = model((tx[idx] - mean) / std)
                loss = F.cross_entropy(logits, ty[idx])
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    result.status = runstore.DIVERGED
                    message = (f"The loss became {loss_value} at step {step + 1}: the run diverged. "
                               f"Try a smaller learning rate (now {cfg.lr:g}).")
                    yield Diverged(step + 1, loss_value, message)
                    return result
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
                optimizer.step()
                step += 1
                run_loss += loss.detach() * len(idx)
                run_correct += (logits.detach().argmax(1) == ty[idx]).sum()
                point = StepPoint(step, step / steps_per_epoch, time.perf_counter() - start,
                                  loss_value, lr, grad_norm)
                if writer:
                    writer.append({"kind": "step", **asdict(point)})
                result.steps = step
                yield point
            val_loss, val_acc, confusion, preds = yield from evaluate(
                model, vx, vy, mean, std, data.num_classes)
            ep = EpochPoint(epoch, step, time.perf_counter() - start, float(run_loss) / n,
                            float(run_correct) / n, val_loss, val_acc)
            result.history.append(ep)
            result.epochs_done, result.final_val_acc = epoch, val_acc
            if not math.isfinite(val_loss):
                result.status = runstore.DIVERGED
                yield Diverged(step, val_loss, f"The validation loss became {val_loss} in epoch "
                                               f"{epoch}: the run diverged. Try a smaller learning rate.")
                return result
            result.best_val_acc = max(val_acc, result.best_val_acc or 0.0)
            if writer:
                writer.append({"kind": "epoch", **asdict(ep)})
                writer.update(best_val_acc=result.best_val_acc, epochs_done=epoch)
            yield ep
            yield EpochPictures(epoch, confusion, sample_images, sample_labels,
                                preds[pick.numpy()], first_layer_filters(model))
            yield Progress(epoch / cfg.epochs, f"Epoch {epoch}/{cfg.epochs} · val acc {val_acc:.1%}")
        result.status = runstore.FINISHED
        return result
    finally:
        # Runs on a normal end, a divergence, an error and a cancel (GeneratorExit, Ctrl-C) alike.
        stopping = sys.exc_info()[0] in (GeneratorExit, KeyboardInterrupt)
        with signals_held(redeliver=not stopping):
            if result.status == runstore.RUNNING:
                result.status = runstore.FAILED if sys.exc_info()[0] is not None and not stopping \
                    else runstore.STOPPED
            result.seconds = time.perf_counter() - start
            if writer:
                try:
                    writer.save_weights(model.state_dict())
                finally:  # weights that cannot be written still leave the run's status right
                    writer.close(result.status, seconds=result.seconds, steps=result.steps)


def run_to_end(cfg: TrainConfig, store: runstore.RunStore | None = None,
               data: DataBundle | None = None, on_item=None) -> RunResult:
    """Drain :func:`train` (scripts, benchmarks, tests); ``on_item`` sees every yielded item.

    Whatever ends the loop (a Ctrl-C inside ``on_item`` too), the run is closed on disk
    before this returns or raises."""
    gen = train(cfg, store, data)
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_item is not None:
                on_item(item)
    finally:
        gen.close()  # a no-op when the run ended by itself; otherwise it is stopped and saved
