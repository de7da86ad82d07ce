"""Train a StyleGAN2 on the project's procedural faces: the Drag tab's embedded default model.

The recipe is StyleGAN2's (Karras et al. 2020, config F as in stylegan2-ada-pytorch),
scaled down to a CPU:

* the non-saturating logistic loss: G minimises softplus(-D(G(z))), D minimises
  softplus(D(G(z))) + softplus(-D(x));
* R1 regularisation on reals, gamma/2 * ||grad_x D(x)||^2, lazily every ``r1_interval``
  steps (scaled by the interval, with D's Adam lr and betas adjusted for it);
* style mixing: with probability ``style_mixing`` the ws after a random cut-off come
  from a second latent;
* an EMA generator (``G_ema``, half-life ``ema_kimg`` thousand images, ramped up over
  the first steps), which is what is saved and shipped;
* Adam (lr 0.0025, betas (0, 0.99)), x-flips of the training faces.

:func:`train` is a generator like every long job of the app: it yields ``Progress``,
:class:`GANStep` after every step and a :class:`GANPreview` (a grid of G_ema samples)
after every tick, and writes the Training tab's run files (the G loss as the training
loss, the D loss as the validation loss, D's accuracy on reals and fakes as the two
accuracy curves), so its losses can be watched live. Snapshots of G_ema and a resume
state are kept in the run folder, so a run stopped by the end of a session continues
with ``--resume``.

Command line (the command that made ``resources/stylegan2-faces-64.safetensors`` is in
its JSON)::

    python -m playground.ml.stylegan2.train --kimg 200 --out resources/stylegan2-faces-64.safetensors
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...progress import Progress
from .. import checkpoints
from ..training import runs as runstore



@dataclass
class FaceGANConfig:
    """Everything that defines a training run. Defaults: the shipped 64 px face model."""

    resolution: int = 64
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 8
    channel_base: int = 2048  # channels at resolution r: min(channel_base / r, channel_max)
    channel_max: int = 128
    batch: int = 16
    kimg: float = 200.0  # thousands of real images shown to D
    dataset_size: int = 20000
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 0.05  # stylegan2-ada's heuristic 0.0002 * res^2 / batch at 64 px, batch 16
    r1_interval: int = 16
    style_mixing: float = 0.9
    ema_kimg: float = 5.0  # 10 kimg per 32 images of batch, as stylegan2-ada
    ema_rampup: float = 0.05
    xflip: bool = True
    tick_kimg: float = 2.0  # a point in the epoch table (and a preview) every this many kimg
    snapshot_kimg: float = 20.0  # a G_ema snapshot and a resume state every this many kimg
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> dict[str, str]:
        bad = {}
        if self.resolution not in (16, 32, 64, 128, 256):
            bad["resolution"] = "The resolution must be 16, 32, 64, 128 or 256."
        for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "batch", "dataset_size",
                     "r1_interval"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                bad[name] = f"{name} must be a whole number of at least 1."
        if not (0 < self.kimg <= 1e5):
            bad["kimg"] = "kimg must be above 0."
        if not (0 < self.lr < 1):
            bad["lr"] = "The learning rate must be between 0 and 1."
        if not (0 <= self.style_mixing <= 1):
            bad["style_mixing"] = "The style-mixing probability must be from 0 to 1."
        return bad

    def generator_kwargs(self) -> dict:
        return dict(z_dim=self.z_dim, c_dim=0, w_dim=self.w_dim, img_resolution=self.resolution, img_channels=3,
                    mapping_kwargs={"num_layers": self.mapping_layers},
                    channel_base=self.channel_base, channel_max=self.channel_max, num_fp16_res=0, conv_clamp=None)

    def discriminator_kwargs(self) -> dict:
        return dict(c_dim=0, img_resolution=self.resolution, img_channels=3, channel_base=self.channel_base,
                    channel_max=self.channel_max, num_fp16_res=0, conv_clamp=None)


@dataclass(frozen=True)
class GANStep:
    step: int
    kimg: float
    time: float
    g_loss: float
    d_loss: float
    r1: float  # the last R1 penalty measured (NaN before the first)
    d_real_acc: float  # share of reals D scores above 0
    d_fake_acc: float  # share of fakes D scores below 0


@dataclass(frozen=True)
class GANPreview:
    kimg: float
    grid: np.ndarray  # uint8 (H, W, 3): G_ema samples from fixed latents


# -- pieces ---------------------------------------------------------------------------------
def build_networks(cfg: FaceGANConfig, device: torch.device):
    from .model import Discriminator, Generator

    G = Generator(**cfg.generator_kwargs()).to(device)
    D = Discriminator(**cfg.discriminator_kwargs()).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    return G, D, G_ema


def mixed_ws(G, z: torch.Tensor, prob: float, gen: torch.Generator, update_emas: bool) -> torch.Tensor:
    """Mapped latents with style mixing: past a random cut-off the ws come from a second z."""
    ws = G.mapping(z, None, update_emas=update_emas)
    if prob > 0 and torch.rand((), generator=gen).item() < prob:
        cutoff = int(torch.randint(1, ws.shape[1], (), generator=gen))
        z2 = torch.randn(z.shape, generator=gen).to(z.device)
        ws = ws.clone()
        ws[:, cutoff:] = G.mapping(z2, None, update_emas=False)[:, cutoff:]
    return ws


def r1_penalty(D, reals: torch.Tensor) -> torch.Tensor:
    """||grad_x D(x)||^2 per real image (create_graph: the penalty is itself minimised)."""
    reals = reals.detach().requires_grad_(True)
    scores = D(reals, None)
    (grad,) = torch.autograd.grad(scores.sum(), reals, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])


@torch.no_grad()
def update_ema(G_ema, G, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), as the official code converts."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for k in range(n):
        r, q = divmod(k, columns)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[k]
    return grid


@torch.no_grad()
def sample_grid(G_ema, z: torch.Tensor, psi: float = 1.0) -> np.ndarray:
    img = G_ema(z, None, truncation_psi=psi, noise_mode="const")
    return image_grid(to_uint8(img), columns=int(math.ceil(math.sqrt(len(z)))))


def save_generator_file(G, path: Path, sidecar: dict) -> Path:
    """Our own format (.safetensors + JSON with ``init_kwargs`` and what made it), through the loader's module."""
    from .pickles import save_generator

    return save_generator(G, path, sidecar)


# -- the loop ---------------------------------------------------------------------------------
def train(cfg: FaceGANConfig, store: runstore.RunStore | None = None, out: Path | None = None,
          resume: Path | None = None, command: str = "", dataset=None) -> Generator[Any, None, dict]:
    """Train to ``cfg.kimg`` (or until closed); the G_ema weights go to ``out`` at the end."""
    problems = cfg.validate()
    if problems:
        raise ValueError(" ".join(problems.values()))
    device = torch.device(cfg.device)
    # Tiny (denormal) floats appear as a GAN trains and make CPU arithmetic many times slower:
    # flush them to zero (no effect on the results worth the name, none on a GPU).
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if dataset is None:
        from .faces import FaceDataset

        yield Progress(None, f"Rendering {cfg.dataset_size:,} faces at {cfg.resolution} px")
        dataset = FaceDataset(size=cfg.resolution, n=cfg.dataset_size, seed=cfg.seed)
    G, D, G_ema = build_networks(cfg, device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    c = cfg.r1_interval / (cfg.r1_interval + 1)  # lazy regularisation: D's Adam sees a longer step
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr * c, betas=(cfg.beta1 ** c, cfg.beta2 ** c))
    nimg, step = 0, 0
    if resume is not None:
        state = checkpoints.torch_load(resume)
        for module, key in ((G, "G"), (D, "D"), (G_ema, "G_ema")):
            checkpoints.load_state_dict_strict(module, state[key], what=f"the resumed {key}")
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        nimg, step = int(state["nimg"]), int(state["step"])
        gen.manual_seed(cfg.seed + step)
        rng = np.random.default_rng(cfg.seed + step)
    params = sum(p.numel() for p in G.parameters())
    preview_z = torch.randn(16, cfg.z_dim, generator=torch.Generator().manual_seed(1234)).to(device)
    run_config = {"dataset": "procedural faces", "model": f"stylegan2-{cfg.resolution}", **asdict(cfg),
                  "data_note": (f"StyleGAN2 on {len(dataset):,} procedural faces at {cfg.resolution} px. Training "
                                "loss = G loss, validation loss = D loss; accuracy = D's on reals (solid) and "
                                "on fakes (dashed)."), "parameters": params}
    writer = store.create(run_config, f"StyleGAN2 faces {cfg.resolution} px") if store is not None else None
    folder = writer.path if writer is not None else None
    total = int(cfg.kimg * 1000)
    start = time.perf_counter()
    status = runstore.RUNNING
    last_r1 = float("nan")
    tick = {"g": [], "d": [], "real": [], "fake": []}
    next_tick = (nimg // int(cfg.tick_kimg * 1000) + 1) * int(cfg.tick_kimg * 1000)
    next_snapshot = (nimg // int(cfg.snapshot_kimg * 1000) + 1) * int(cfg.snapshot_kimg * 1000)
    try:
        while nimg < total:
            idx = rng.integers(0, len(dataset), cfg.batch)
            reals = torch.from_numpy(dataset.batch(idx)).to(device)
            if cfg.xflip:
                flip = torch.from_numpy(rng.random(cfg.batch) < 0.5).to(device)
                reals = torch.where(flip[:, None, None, None], reals.flip(3), reals)
            # G: make D call the fakes real.
            z = torch.randn(cfg.batch, cfg.z_dim, generator=gen).to(device)
            fakes = G.synthesis(mixed_ws(G, z, cfg.style_mixing, gen, update_emas=True), noise_mode="random")
            g_loss = F.softplus(-D(fakes, None)).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            # D: tell reals from fakes (+ R1 on reals now and then).
            with torch.no_grad():
                z = torch.randn(cfg.batch, cfg.z_dim, generator=gen).to(device)
                fakes = G.synthesis(mixed_ws(G, z, cfg.style_mixing, gen, update_emas=False), noise_mode="random")
            fake_scores, real_scores = D(fakes, None), D(reals, None)
            d_loss = F.softplus(fake_scores).mean() + F.softplus(-real_scores).mean()
            total_d = d_loss
            if step % cfg.r1_interval == 0 and cfg.r1_gamma > 0:
                penalty = r1_penalty(D, reals)
                last_r1 = float(penalty.detach().mean())
                total_d = total_d + penalty.mean() * (cfg.r1_gamma / 2) * cfg.r1_interval
            opt_d.zero_grad(set_to_none=True)
            total_d.backward()
            opt_d.step()
            # EMA of G.
            nimg += cfg.batch
            step += 1
            ema_nimg = min(cfg.ema_kimg * 1000, nimg * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_kimg * 1000
            update_ema(G_ema, G, 0.5 ** (cfg.batch / max(ema_nimg, 1e-8)))
            g, d = float(g_loss.detach()), float(d_loss.detach())
            if not (math.isfinite(g) and math.isfinite(d)):
                status = runstore.DIVERGED
                raise ArithmeticError(f"The GAN losses became {g} / {d} at step {step}: training diverged.")
            real_acc = float((real_scores > 0).float().mean())
            fake_acc = float((fake_scores < 0).float().mean())
            point = GANStep(step, nimg / 1000, time.perf_counter() - start, g, d, last_r1, real_acc, fake_acc)
            for key, value in (("g", g), ("d", d), ("real", real_acc), ("fake", fake_acc)):
                tick[key].append(value)
            if writer:
                writer.append({"kind": "step", "step": step, "epoch": nimg / 1000, "time": point.time, "loss": g,
                               "lr": cfg.lr, "grad_norm": float("nan"), "d_loss": d, "r1": last_r1})
            yield point
            yield Progress(nimg / total, f"{nimg / 1000:.1f} of {cfg.kimg:g} kimg · G {g:.3f} · D {d:.3f}")
            if nimg >= next_tick or nimg >= total:
                next_tick += int(cfg.tick_kimg * 1000)
                if writer:
                    writer.append({"kind": "epoch", "epoch": round(nimg / 1000, 3), "step": step,
                                   "time": point.time, "train_loss": float(np.mean(tick["g"])),
                                   "train_acc": float(np.mean(tick["fake"])), "val_loss": float(np.mean(tick["d"])),
                                   "val_acc": float(np.mean(tick["real"]))})
                    writer.update(epochs_done=int(nimg / 1000 / cfg.tick_kimg))
                tick = {k: [] for k in tick}
                yield GANPreview(nimg / 1000, sample_grid(G_ema, preview_z))
            if folder is not None and (nimg >= next_snapshot or nimg >= total):
                next_snapshot += int(cfg.snapshot_kimg * 1000)
                (folder / "snapshots").mkdir(exist_ok=True)
                save_generator_file(G_ema, folder / "snapshots" / f"G_ema-{nimg // 1000:06d}kimg.safetensors",
                                    {"kimg": nimg / 1000, "config": asdict(cfg), "seed": cfg.seed})
                torch.save({"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "nimg": nimg, "step": step},
                           folder / "state.tmp.pt")
                (folder / "state.tmp.pt").replace(folder / "state.pt")
        status = runstore.FINISHED
    finally:
        if status == runstore.RUNNING:
            status = runstore.FAILED if sys.exc_info()[0] not in (None, GeneratorExit, KeyboardInterrupt) \
                else runstore.STOPPED
        seconds = time.perf_counter() - start
        if out is not None and status in (runstore.FINISHED, runstore.STOPPED):
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            save_generator_file(G_ema, Path(out), {
                "command": command, "config": asdict(cfg), "seed": cfg.seed, "kimg": nimg / 1000, "steps": step,
                "seconds": round(seconds, 1), "status": status, "made_by": "playground.ml.stylegan2.train",
                "training_data": "procedural faces from playground.ml.stylegan2.faces (rendered by the project)",
                "run": writer.id if writer else ""})
        if writer:
            writer.save_weights(G_ema.state_dict())
            writer.close(status, seconds=seconds, steps=step)
    return {"status": status, "kimg": nimg / 1000, "steps": step, "seconds": seconds, "G_ema": G_ema}


def main(argv: list[str] | None = None) -> int:
    d = FaceGANConfig()
    p = argparse.ArgumentParser(prog="python -m playground.ml.stylegan2.train",
                                description="Train the Drag tab's StyleGAN2 on procedural faces.")
    for f in fields(FaceGANConfig):
        default = getattr(d, f.name)
        kind = {bool: lambda s: s.lower() in ("1", "true", "yes"), int: int, float: float, str: str}[type(default)]
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default)
    p.add_argument("--out", default="", help="where the final G_ema goes (.safetensors + .json)")
    p.add_argument("--resume", default="", help="a run's state.pt to continue from")
    p.add_argument("--no-run", action="store_true", help="do not keep the run in the Training tab's run folder")
    args = p.parse_args(argv)
    cfg = FaceGANConfig(**{f.name: getattr(args, f.name) for f in fields(FaceGANConfig)})
    command = "python -m playground.ml.stylegan2.train " + " ".join(argv if argv is not None else sys.argv[1:])
    import signal

    from ...devices import configure_torch_threads

    def stop_on_term(signum, frame):  # a background run (where Ctrl-C is ignored) stops on SIGTERM
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    configure_torch_threads()
    gen = train(cfg, None if args.no_run else runstore.RunStore(), Path(args.out) if args.out else None,
                Path(args.resume) if args.resume else None, command)
    last = 0.0
    try:
        while True:
            item = next(gen)
            if isinstance(item, GANStep) and time.monotonic() - last > 30:
                last = time.monotonic()
                print(f"step {item.step:6d}  {item.kimg:7.2f} kimg  G {item.g_loss:.3f}  D {item.d_loss:.3f}  "
                      f"R1 {item.r1:.3f}  D acc real {item.d_real_acc:.2f} fake {item.d_fake_acc:.2f}  "
                      f"({item.time:.0f} s)", flush=True)
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        gen.close()
        print("stopped: the weights so far are saved", file=sys.stderr)
        return 130
    print(f"{result['status']}: {result['kimg']:.1f} kimg in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
