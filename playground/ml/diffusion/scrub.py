"""What the Diffusion tab shows, computed off the GUI thread: sampled trajectories as images, the
forward process of a real image, the embedded models and the trajectory's exports (GIF, film strip).

* :func:`load_default` / :func:`load_default_faces`: the embedded models in ``resources/``
  (trained by :mod:`.train`); :func:`load_for_picker`: a diffusers folder or one of our files.
* :func:`sample_frames`: runs :func:`.sampling.sample` (once, or twice with two samplers from the
  same seed, hence the same initial noise) and turns each recorded step into a :class:`Frame`
  of ready-to-draw uint8 images, so the tab's slider only shows what is cached.
* :func:`forward_frames`: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for one image,
  one fixed noise and every t (:func:`.schedules.forward`), as images.
* :func:`grid`, :func:`composite`, :func:`save_gif`, :func:`save_film_strip`: pictures with PIL.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import BadFileError, UserError
from ...progress import Progress
from ..checkpoints import LoadedModel
from . import models, samplers, sampling, schedules

DEFAULT_DIGITS = "ddpm-digits-16.safetensors"
DEFAULT_FACES = "ddpm-faces-32.safetensors"
EPS_RANGE = 2.5  # the noise is drawn over [-2.5, 2.5] (a standard normal, nearly all of it)
FORWARD_MAX_BYTES = 64 * 2**20


# -- the models ---------------------------------------------------------------------------------------
def _load_embedded(file_name: str, title: str) -> Generator[Progress, None, LoadedModel]:
    from ...paths import RESOURCES

    path = RESOURCES / file_name
    if not path.exists():
        raise BadFileError(f"The embedded {title} ({file_name}) is missing from {RESOURCES} (it is trained by "
                           "python -m playground.ml.diffusion.train); open a diffusers UNet folder instead.")
    yield Progress(None, f"Reading the embedded {title}")
    model = models.read_unet_file(path)
    return models.describe(model, name=title[0].upper() + title[1:], source=str(path), format=models.FORMAT_OURS)


def load_default() -> Generator[Progress, None, LoadedModel]:
    """The embedded class-conditional digits DDPM (16x16)."""
    return (yield from _load_embedded(DEFAULT_DIGITS, "digits DDPM (embedded)"))


def load_default_faces() -> Generator[Progress, None, LoadedModel]:
    """The embedded unconditional faces DDPM (32x32 RGB)."""
    return (yield from _load_embedded(DEFAULT_FACES, "faces DDPM (embedded)"))


def load_for_picker(path: str) -> Generator[Progress, None, LoadedModel]:
    """A diffusers UNet2DModel folder (or a file in one), or one of our ``.safetensors`` UNet files."""
    p = Path(path)
    if p.is_dir() or p.name in ("config.json", "model_index.json", *models.WEIGHT_FILES, *models.BIN_FILES):
        return (yield from models.load_folder_for_picker(path))
    yield Progress(None, f"Reading {p.name}")
    model = models.read_unet_file(p)
    return models.describe(model, name=p.stem, source=str(p), format=models.FORMAT_OURS)


def fetch_hub(repo_id: str) -> Generator[Progress, None, str]:
    """Download a UNet2DModel from the Hugging Face hub by id (see :func:`.models.fetch_hub_model`) and
    return its folder, for the model picker to open (offline: an :class:`~playground.errors.OfflineError`)."""
    loaded = yield from models.fetch_hub_model(repo_id)
    return loaded.source


# -- images -------------------------------------------------------------------------------------------
def to_uint8(batch: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> list[np.ndarray]:
    """[B, C, H, W] floats over [lo, hi] as B uint8 images (H, W) grey or (H, W, 3) RGB."""
    a = np.asarray(batch, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    scaled = np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)
    out = []
    for im in scaled:
        c = im.shape[0]
        if c == 1:
            out.append(np.ascontiguousarray(im[0]))
        elif c >= 3:
            out.append(np.ascontiguousarray(im[:3].transpose(1, 2, 0)))
        else:
            out.append(np.ascontiguousarray(im.mean(0).astype(np.uint8)))
    return out


def grid(images: Sequence[np.ndarray], columns: int | None = None, pad: int = 1, fill: int = 255) -> np.ndarray:
    """Images of one size in a grid (RGB uint8), ``pad`` pixels of ``fill`` between them."""
    if not images:
        raise ValueError("No images to put in a grid")
    rgb = [im if im.ndim == 3 else np.repeat(im[:, :, None], 3, axis=2) for im in images]
    h, w = rgb[0].shape[:2]
    n = len(rgb)
    columns = columns or math.ceil(math.sqrt(n))
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    out = np.full((rows * h + (rows - 1) * pad, columns * w + (columns - 1) * pad, 3), fill, np.uint8)
    for k, im in enumerate(rgb):
        r, c = divmod(k, columns)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = im[:h, :w]
    return out


def hstack(pictures: Sequence[np.ndarray], pad: int = 4, fill: int = 255) -> np.ndarray:
    """RGB pictures side by side (tops aligned), ``pad`` pixels apart."""
    h = max(p.shape[0] for p in pictures)
    w = sum(p.shape[1] for p in pictures) + pad * (len(pictures) - 1)
    out = np.full((h, w, 3), fill, np.uint8)
    x = 0
    for p in pictures:
        out[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + pad
    return out


def vstack(pictures: Sequence[np.ndarray], pad: int = 4, fill: int = 255) -> np.ndarray:
    h = sum(p.shape[0] for p in pictures) + pad * (len(pictures) - 1)
    w = max(p.shape[1] for p in pictures)
    out = np.full((h, w, 3), fill, np.uint8)
    y = 0
    for p in pictures:
        out[y:y + p.shape[0], :p.shape[1]] = p
        y += p.shape[0] + pad
    return out


# -- sampled trajectories -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One recorded step of one lane (0, or 1 for the compared sampler), ready to draw."""

    lane: int
    index: int          # the recorded step's index among the sampler's steps
    steps: int
    t: float
    alpha_bar: float
    x_t: tuple[np.ndarray, ...]      # uint8 images, one per sample
    x0: tuple[np.ndarray, ...]
    eps: tuple[np.ndarray, ...]
    x_t_record: sampling.CompactArray  # the recorded x_t (float16 or 8-bit, as the plan says)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> all samples in one RGB grid

    @property
    def x_t_values(self) -> np.ndarray:
        """x_t in the model's own scale, [B, C, H, W] float32 (decoded on demand, not kept)."""
        return self.x_t_record.numpy()

    def images(self, kind: str) -> tuple[np.ndarray, ...]:
        return {"x_t": self.x_t, "x0": self.x0, "eps": self.eps}[kind]

    def grid(self, kind: str) -> np.ndarray:
        """All samples of ``kind`` in one picture (made in the worker, so drawing it costs nothing)."""
        if kind not in self.grids:
            self.grids[kind] = grid(self.images(kind), grid_columns(len(self.x_t)))
        return self.grids[kind]

    def composite(self, columns: int | None = None) -> np.ndarray:
        return composite([self], columns)


def grid_columns(n: int) -> int:
    """The columns of a near-square grid of ``n`` samples."""
    return max(1, math.ceil(math.sqrt(n)))


def composite(frames: Sequence[Frame], columns: int | None = None) -> np.ndarray:
    """x_t | x0 | eps grids side by side, one row per lane."""
    rows = [hstack([grid(f.x_t, columns), grid(f.x0, columns), grid(f.eps, columns)], pad=6) for f in frames]
    return vstack(rows, pad=6)


def frame_of(record: sampling.StepRecord, lane: int, with_grids: bool = False) -> Frame:
    """A recorded step as pictures (and, ``with_grids``, each kind's grid of all samples).

    Only x_t's record is kept besides the uint8 pictures: with the plan's float16 records, a frame
    takes 5/6 of the bytes the plan counted for its step, so the plan's bound holds for the frames."""
    frame = Frame(lane, record.index, record.steps, float(record.t), float(record.alpha_bar),
                  tuple(to_uint8(record.x_t.numpy())), tuple(to_uint8(record.x0.numpy())),
                  tuple(to_uint8(record.eps.numpy(), -EPS_RANGE, EPS_RANGE)), record.x_t)
    if with_grids:
        for kind in ("x_t", "x0", "eps"):
            frame.grid(kind)
    return frame


@dataclass(frozen=True)
class LaneStart:
    """A lane begins: its sampler and how it is recorded (the plan's memory message)."""

    lane: int
    sampler: str
    plan: sampling.RecordingPlan


def sample_frames(model: models.DiffusionModel, sampler_names: Sequence[str], *, steps: int, batch: int = 1,
                  seed: int = 0, class_label: int | None = None, guidance_scale: float = 1.0, eta: float = 0.0,
                  device: str = "cpu", max_record_bytes: int = sampling.DEFAULT_MAX_RECORD_BYTES,
                  ) -> Generator[object, None, list[np.ndarray]]:
    """Sample with each sampler in turn (same seed: the same initial noise), yielding a
    :class:`LaneStart`, then Progress and :class:`Frame` s per lane. Returns the final images
    (one [B, C, H, W] array per lane)."""
    unet = model.unet.to(device)
    unet.eval()
    labels = class_label if model.conditional and class_label is not None else None
    finals = []
    n = len(sampler_names)
    for lane, name in enumerate(sampler_names):
        scheduler = samplers.make_scheduler(name, model.scheduler_config)
        run = sampling.sample(unet, scheduler, steps=steps, batch=batch, seed=seed, class_labels=labels,
                              guidance_scale=guidance_scale, eta=eta, device=device,
                              max_record_bytes=max_record_bytes // n)
        label = samplers.SAMPLERS.get(name, name)
        while True:
            try:
                item = next(run)
            except StopIteration as done:
                finals.append(done.value.numpy())
                break
            if isinstance(item, sampling.RecordingPlan):
                yield LaneStart(lane, name, item)
            elif isinstance(item, Progress):
                fraction = (lane + (item.fraction or 0.0)) / n
                yield Progress(fraction, f"{label}: {item.text}" if n > 1 else item.text)
            elif isinstance(item, sampling.StepRecord):
                yield frame_of(item, lane, with_grids=n > 1)
    return finals


def learn_values(alpha_bar: float, cleaner_alpha_bar: float | None, t: float, step: int) -> dict[str, float]:
    """The Learn sheet's live values at a step: alpha_t = alpha_bar_t / alpha_bar_{t-1}, where t-1 is the
    neighbouring, less noisy level (the sampler's next step, or the forward process's previous t; None:
    the clean image, alpha_bar = 1), alpha_bar_t, sigma_t (the variance-exploding noise level), the SNR,
    t and the step."""
    ab = min(max(float(alpha_bar), 1e-12), 1 - 1e-12)
    prev = 1.0 if cleaner_alpha_bar is None else float(cleaner_alpha_bar)
    return {"alpha_t": ab / prev if prev > 0 else float("nan"), "alpha_bar_t": ab,
            "sigma_t": math.sqrt((1 - ab) / ab), "snr": ab / (1 - ab), "t": float(t), "step": float(step)}


# -- the schedule's curves -----------------------------------------------------------------------------------
def schedule_curves(scheduler_config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, alpha_bar_t, log SNR_t) of a model's schedule, for the plot."""
    sched = schedules.Schedule.from_config(scheduler_config)
    ab = sched.alpha_bar
    return np.arange(len(ab), dtype=np.float64), ab, sched.log_snr


# -- the forward process -------------------------------------------------------------------------------------
def digit_image(index: int, size: int | tuple[int, int] = 16, channels: int = 1) -> np.ndarray:
    """Digit ``index`` of scikit-learn's handwritten digits as [C, H, W] in [-1, 1] (bilinear, as in training)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.target)
    if not 0 <= index < n:
        raise UserError(f"There are {n} digits: choose one from 0 to {n - 1}.")
    im = torch.from_numpy(digits.images[index].astype(np.float32) / 16.0)[None, None]
    hw = (size, size) if isinstance(size, int) else tuple(size)
    im = torch.nn.functional.interpolate(im, size=hw, mode="bilinear", align_corners=False)[0]
    im = im * 2 - 1
    return im.repeat(channels, 1, 1).numpy().astype(np.float32)


def file_image(path: str | os.PathLike, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """An image file resized to ``size`` as [C, H, W] in [-1, 1] (grey for one channel)."""
    from PIL import Image, UnidentifiedImageError

    h, w = (size, size) if isinstance(size, int) else size
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((w, h), Image.Resampling.BICUBIC)
            a = np.asarray(im, dtype=np.float32) / 127.5 - 1
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadFileError(f"{Path(path).name} is not an image this app can read ({exc}).") from None
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if a.shape[0] != channels:
        a = np.repeat(a[:1], channels, axis=0)
    return np.ascontiguousarray(a)


@dataclass(frozen=True)
class ForwardFrames:
    """x_t of one image at the timesteps ``ts`` with one fixed noise, and the pictures of them."""

    ts: np.ndarray            # [n] timesteps
    alpha_bar: np.ndarray     # [n] alpha_bar at them
    x0: np.ndarray            # [C, H, W]
    noise: np.ndarray         # [C, H, W]
    x_t: np.ndarray           # [n, C, H, W] float32
    images: tuple[np.ndarray, ...]   # n uint8 pictures of x_t
    x0_image: np.ndarray
    noise_image: np.ndarray

    def nearest(self, t: int) -> int:
        return int(np.abs(self.ts - t).argmin())


def forward_frames(x0: np.ndarray, scheduler_config, seed: int = 0, max_bytes: int = FORWARD_MAX_BYTES,
                   ) -> Generator[Progress, None, ForwardFrames]:
    """The one-jump forward process of ``x0`` [C, H, W] for every t (or every k-th, within ``max_bytes``)."""
    sched = schedules.Schedule.from_config(scheduler_config)
    T = sched.T
    per = int(np.prod(x0.shape)) * 5  # float32 + uint8
    count = int(max(2, min(T, max_bytes // max(per, 1))))
    ts = np.unique(np.linspace(0, T - 1, count).round().astype(np.int64))
    g = torch.Generator().manual_seed(int(seed))
    x = torch.as_tensor(x0, dtype=torch.float32)
    noise = torch.randn(x.shape, generator=g)
    out = np.empty((len(ts), *x.shape), np.float32)
    chunk = 64
    for start in range(0, len(ts), chunk):
        part = torch.as_tensor(ts[start:start + chunk])
        xs = schedules.forward(x.expand(len(part), *x.shape), part, noise.expand(len(part), *x.shape),
                               sched.alpha_bar)
        out[start:start + len(part)] = xs.numpy()
        yield Progress((start + len(part)) / len(ts), "Adding noise")
    images = tuple(to_uint8(out))
    return ForwardFrames(ts, sched.alpha_bar[ts], np.asarray(x0, np.float32), noise.numpy(), out, images,
                         to_uint8(x0)[0], to_uint8(noise.numpy(), -EPS_RANGE, EPS_RANGE)[0])


def forward_pictures(fw: ForwardFrames, count: int = 100) -> list[np.ndarray]:
    """x0 | x_t | eps side by side at ``count`` values of t, evenly spread (the forward process's export)."""
    x0, noise = grid([fw.x0_image]), grid([fw.noise_image])
    return [hstack([x0, grid([fw.images[k]]), noise], pad=2) for k in pick(len(fw.images), count)]


# -- exports -------------------------------------------------------------------------------------------------
def _scaled(picture: np.ndarray, scale: int):
    from PIL import Image

    im = Image.fromarray(picture)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    return im


def export_scale(picture: np.ndarray, target: int = 512) -> int:
    return max(1, min(8, target // max(picture.shape[1], 1)))


def save_gif(pictures: Sequence[np.ndarray], path: str | os.PathLike, frame_ms: int = 80, hold_ms: int = 1000,
             scale: int | None = None) -> Path:
    """An animated GIF of ``pictures`` (RGB uint8, one size), looping, the last frame held."""
    if not pictures:
        raise UserError("There is no trajectory to export yet: sample first.")
    scale = scale or export_scale(pictures[0])
    ims = [_scaled(p, scale) for p in pictures]
    durations = [frame_ms] * (len(ims) - 1) + [hold_ms]
    path = Path(path)
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=durations, loop=0, optimize=False)
    return path


def pick(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over 0..n-1, first and last included."""
    if n <= count:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, count)})


def save_film_strip(pictures: Sequence[np.ndarray], path: str | os.PathLike, count: int = 10,
                    scale: int | None = None) -> Path:
    """A PNG of ``count`` pictures of the trajectory, evenly spaced, in one row (or one column when wide)."""
    if not pictures:
        raise UserError("There is no trajectory to export yet: sample first.")
    chosen = [pictures[k] for k in pick(len(pictures), count)]
    wide = chosen[0].shape[1] > 2 * chosen[0].shape[0]
    strip = vstack(chosen, pad=4) if wide else hstack(chosen, pad=4)
    scale = scale or max(1, min(8, 256 // max(chosen[0].shape[0], 1)))
    path = Path(path)
    _scaled(strip, scale).save(path, format="PNG")
    return path
