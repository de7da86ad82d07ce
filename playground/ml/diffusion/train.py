"""Train the Diffusion tab's default models: a class-conditional DDPM on the digits, an unconditional one on faces.

    python -m playground.ml.diffusion.train --dataset digits --minutes 90 \\
        --out resources/ddpm-digits-16.safetensors [--max-steps N] [--state data/ddpm-digits.state.pt]
    python -m playground.ml.diffusion.train --dataset faces --minutes 120 --out resources/ddpm-faces-32.safetensors

The DDPM objective (Ho et al. 2020): draw an image x0, a step t uniformly from 0..T-1 and
noise eps; jump to x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps in one go
(:func:`.schedules.forward`) and regress the UNet's output on the target of the scheduler's
prediction type (eps by default) with a mean squared error. Classifier-free guidance (Ho and
Salimans 2022): for the digits the class label is replaced by the null class
(:func:`.models.null_label`, the last class embedding) with probability ``drop_label``, so
the same network also learns the unconditional prediction that guidance pushes away from.

Data: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), resized to 16x16
(bilinear) and scaled to [-1, 1], 10% held out for the quality figure's classifier; or the
procedural faces of :mod:`playground.ml.stylegan2.faces` at 32 px. Adam(W), an EMA of the
weights (what is saved and sampled), a time budget, state kept for resuming, and the Training
tab's run files (the loss curve; "validation loss" is the loss on held-out images at fixed
t and noise).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...progress import Progress
from ..training import runs as runstore
from ..training import script
from . import models, schedules


@dataclass
class TrainConfig:
    dataset: str = "digits"       # "digits" (16x16, 10 classes) or "faces" (32x32 RGB, unconditional)
    seed: int = 0
    batch: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema: float = 0.999
    drop_label: float = 0.1       # classifier-free guidance: how often the label becomes the null class
    minutes: float = 90.0         # the time budget (in all, resumed runs included)
    max_steps: int = 0            # stop after this many steps too (0: no limit)
    check_every: int = 200
    faces: int = 20000            # faces data set size
    hold_out: float = 0.1         # digits kept out of training (the quality figure's classifier tests on them)


@dataclass
class DiffusionStep:
    step: int
    loss: float
    seconds: float


def digits_data(seed: int, hold_out: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images [N, 1, 16, 16] in [-1, 1], train labels, held-out images, held-out labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)       # [N, 1, 8, 8] in [0, 1]
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False) * 2 - 1
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_out = int(round(hold_out * len(labels)))
    test, train = order[:n_out], order[n_out:]
    x = images.numpy()
    return x[train], labels[train], x[test], labels[test]


def unet_for(dataset: str, seed: int):
    return models.digits_unet(seed) if dataset == "digits" else models.faces_unet(seed)


def train(cfg: TrainConfig, store: runstore.RunStore | None, out: Path | None, state_path: Path | None,
          command: str = "", unet=None, data=None) -> Generator[Any, None, dict]:
    """Train to the budget; yields :class:`DiffusionStep` and Progress, returns a summary. ``unet``
    and ``data`` (images [N, C, H, W] in [-1, 1], labels or None) replace the defaults (tests)."""
    if cfg.dataset not in ("digits", "faces"):
        raise ValueError(f"dataset must be digits or faces, not {cfg.dataset!r}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if data is None:
        if cfg.dataset == "digits":
            x_train, y_train, _, _ = digits_data(cfg.seed, cfg.hold_out)
        else:
            from ..stylegan2.faces import FaceDataset

            yield Progress(None, f"Rendering {cfg.faces:,} faces at 32 px")
            faces = FaceDataset(size=32, n=cfg.faces, seed=cfg.seed)
            x_train, y_train = faces.batch(np.arange(len(faces))), None
    else:
        x_train, y_train = data
    x_train = torch.as_tensor(np.ascontiguousarray(x_train), dtype=torch.float32)
    y_train = None if y_train is None else torch.as_tensor(y_train, dtype=torch.long)
    unet = unet if unet is not None else unet_for(cfg.dataset, cfg.seed)
    conditional = models.num_classes(unet) > 0 and y_train is not None
    null = models.null_label(unet) if conditional else None
    scheduler_config = dict(models.DEFAULT_SCHEDULER_CONFIG)
    sched = schedules.Schedule.from_config(scheduler_config)
    alpha_bar = torch.as_tensor(sched.alpha_bar, dtype=torch.float32)
    T = len(alpha_bar)
    prediction = scheduler_config.get("prediction_type", "epsilon")
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # A fixed check: 64 images (or fewer) at fixed steps and noise.
    g = torch.Generator().manual_seed(cfg.seed + 1)
    check_idx = torch.randperm(len(x_train), generator=g)[:64]
    check_x = x_train[check_idx]
    check_t = torch.randint(0, T, (len(check_x),), generator=g)
    check_eps = torch.randn(check_x.shape, generator=g)
    check_y = None if y_train is None or not conditional else y_train[check_idx]
    step, elapsed = 0, 0.0
    if state_path is not None and state_path.exists():
        from ..checkpoints import load_state_dict_strict, torch_load

        state = torch_load(state_path)
        load_state_dict_strict(unet, state["unet"], what="the resumed UNet")
        load_state_dict_strict(ema, state["ema"], what="the resumed EMA UNet")
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state.get("seconds", 0.0))
        rng = np.random.default_rng(cfg.seed + step)
        torch.manual_seed(cfg.seed + step)
        yield Progress(None, f"resumed at step {step}")
    params = models.parameter_count(unet)
    run_config = {"dataset": f"{cfg.dataset} ({len(x_train):,} images)", "model": f"ddpm-{cfg.dataset}",
                  **asdict(cfg), "parameters": params,
                  "data_note": "Training loss = MSE of the predicted noise; validation loss = the same on fixed "
                               "images, steps and noise, with the EMA weights."}
    writer = store.create(run_config, f"DDPM on {cfg.dataset}") if store is not None else None
    start = time.perf_counter() - elapsed
    last_state = time.perf_counter()
    status = runstore.RUNNING
    recent: list[float] = []
    unet.train()
    try:
        while time.perf_counter() - start < cfg.minutes * 60 and not (cfg.max_steps and step >= cfg.max_steps):
            idx = torch.from_numpy(rng.integers(0, len(x_train), cfg.batch))
            x0 = x_train[idx]
            t = torch.randint(0, T, (len(idx),))
            eps = torch.randn_like(x0)
            x_t = schedules.forward(x0, t, eps, alpha_bar)
            labels = None
            if conditional:
                labels = y_train[idx].clone()
                labels[torch.rand(len(idx)) < cfg.drop_label] = null
            target = schedules.training_target(x0, eps, alpha_bar[t], prediction)
            loss = F.mse_loss(unet(x_t, t, class_labels=labels).sample, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0))
            value = float(loss.detach())
            if not math.isfinite(value):
                status = runstore.DIVERGED
                raise ArithmeticError(f"The loss became {value} at step {step}: training diverged.")
            opt.step()
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), unet.parameters()):
                    p_ema.lerp_(p, 1 - cfg.ema)
            step += 1
            recent.append(value)
            seconds = time.perf_counter() - start
            if writer:
                writer.append({"kind": "step", "step": step, "epoch": step / cfg.check_every, "time": seconds,
                               "loss": value, "lr": cfg.lr, "grad_norm": grad_norm})
            yield DiffusionStep(step, value, seconds)
            if step % cfg.check_every == 0:
                with torch.no_grad():
                    x_c = schedules.forward(check_x, check_t, check_eps, alpha_bar)
                    target_c = schedules.training_target(check_x, check_eps, alpha_bar[check_t],
                                                         prediction)
                    val = float(F.mse_loss(ema(x_c, check_t, class_labels=check_y).sample, target_c))
                if writer:
                    writer.append({"kind": "epoch", "epoch": step / cfg.check_every, "step": step, "time": seconds,
                                   "train_loss": float(np.mean(recent)), "val_loss": val,
                                   "train_acc": float("nan"), "val_acc": float("nan")})
                    writer.update(epochs_done=step // cfg.check_every)
                recent = []
                yield Progress(min(seconds / (cfg.minutes * 60), 1.0),
                               f"step {step}: loss {value:.4f}, EMA check {val:.4f}")
            if state_path is not None and time.perf_counter() - last_state > 300:
                last_state = time.perf_counter()
                save_state(state_path, unet, ema, opt, step, time.perf_counter() - start)
        status = runstore.FINISHED
    finally:
        status = script.ended_status(status)
        seconds = time.perf_counter() - start
        if state_path is not None and status in (runstore.FINISHED, runstore.STOPPED):
            save_state(state_path, unet, ema, opt, step, seconds)
        if out is not None and status in (runstore.FINISHED, runstore.STOPPED):
            models.save_unet(out, models.DiffusionModel(ema, scheduler_config), {
                "command": command, "train_config": asdict(cfg), "seed": cfg.seed, "steps": step,
                "seconds": round(seconds, 1), "status": status, "made_by": "playground.ml.diffusion.train",
                "null_label": null, "training_data": (
                    "scikit-learn's handwritten digits (BSD-3-Clause), 8x8 resized to 16x16" if cfg.dataset == "digits"
                    else "procedural faces rendered by playground.ml.stylegan2.faces")})
        if writer:
            writer.save_weights(ema.state_dict())
            writer.close(status, seconds=seconds, steps=step)
    return {"status": status, "steps": step, "seconds": seconds, "ema": ema, "scheduler_config": scheduler_config}


def save_state(path: Path, unet, ema, opt, step: int, seconds: float) -> None:
    script.save_state(path, {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                             "step": step, "seconds": seconds})


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m playground.ml.diffusion.train",
                                description="Train the Diffusion tab's DDPM on the digits or the procedural faces.")
    script.add_config_arguments(p, d)
    p.add_argument("--out", default="", help="where the EMA weights go (.safetensors + .json)")
    p.add_argument("--state", default="", help="a state file kept during the run (and continued from)")
    p.add_argument("--no-run", action="store_true", help="do not keep the run in the Training tab's run folder")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    cfg = script.config_from_arguments(TrainConfig, args)
    command = "python -m playground.ml.diffusion.train " + " ".join(argv if argv is not None else sys.argv[1:])

    gen = train(cfg, None if args.no_run else runstore.RunStore(), Path(args.out) if args.out else None,
                Path(args.state) if args.state else None, command)
    return script.run_in_terminal(
        gen, args.threads, DiffusionStep,
        lambda s: f"step {s.step:6d}  loss {s.loss:.4f}  ({s.seconds:.0f} s)",
        lambda r: f"{r['status']}: {r['steps']} steps in {r['seconds']:.0f} s")

if __name__ == "__main__":
    sys.exit(main())
