"""The sampling loop that records every step: x_t, the predicted x0 and the predicted noise.

One loop for every sampler (:mod:`.samplers`), the same work as a plain diffusers loop::

    scheduler.set_timesteps(steps)
    x = randn(shape, generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(out, t, x, generator=generator).prev_sample

and, at every step, from what is already at hand (no extra network call):

* ``x_t``: the network's input ``scale_model_input(x, t)``, i.e. x_t in the model's own
  (variance preserving) scale, ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``, for
  every sampler (Euler's own x is ``x_t / sqrt(alpha_bar)``);
* ``x0`` and ``eps``: the network's output turned into the clean image and the noise it
  implies (:func:`.schedules.to_x0_eps`, for any prediction type), at the noise level the
  sampler works at (:func:`.samplers.alpha_bar_at`). These are the network's own
  predictions, before a scheduler's clipping of x0.

**Classifier-free guidance** (Ho & Salimans 2022, arXiv 2207.12598). A class-conditional
model is trained with its labels sometimes replaced by the *null class*; here (and in our
training script) the null class is the last class embedding, ``num_class_embeds - 1``
(:func:`.models.null_label`). At sampling time
``out = out_uncond + w (out_cond - out_uncond)``: ``w = 1`` is the plain conditional model
(one network call), ``w = 0`` the unconditional one, ``w > 1`` pushes samples towards the
class. For ``w`` other than 0 and 1 both predictions come from one call on a doubled batch.

**Noise.** All noise comes from one seeded ``torch.Generator`` on the CPU, drawn in the
order diffusers' pipelines draw it (the initial noise, then each step's), so a seed gives
the same samples on any device, and the DDPM / DDIM pipelines' samples exactly.

**Recording** costs little: each recorded array is cast to float16 on the device and copied
to the CPU without waiting; the loop collects it one step later, while the device already
works on the next step. :class:`RecordingPlan` bounds the memory the records take
(``max_record_bytes``): over the bound they are kept as 8-bit arrays, then only every k-th
step (and the last), with a message saying so.

:func:`sample` is a generator (see :mod:`playground.progress`): it yields the
:class:`RecordingPlan` first, then a :class:`~playground.progress.Progress` and a
:class:`StepRecord` per step, so a job can cancel it between steps; it returns the final
images (float32, on the CPU, in the model's range, usually [-1, 1]).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...errors import UserError
from ...progress import Progress
from .models import null_label, num_classes
from .samplers import alpha_bar_at, model_prediction_type, prediction_type, prepare, step_kwargs
from .schedules import to_x0_eps, training_target

DEFAULT_MAX_RECORD_BYTES = 512 * 2**20
KINDS = ("x_t", "x0", "eps")


# -- what is recorded ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CompactArray:
    """One recorded array [B, C, H, W] on the CPU: float16, or 8 bits per value over ``[lo, hi]``."""

    data: np.ndarray
    lo: float = 0.0
    hi: float = 0.0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def numpy(self) -> np.ndarray:
        """The values as float32 (8-bit data decoded back to ``[lo, hi]``)."""
        if self.data.dtype == np.uint8:
            return (self.lo + self.data.astype(np.float32) * ((self.hi - self.lo) / 255.0)).astype(np.float32)
        return self.data.astype(np.float32)


@dataclass(frozen=True)
class StepRecord:
    """One sampling step: its index (0 = the first, from pure noise), timestep, alpha_bar and the three images."""

    index: int
    steps: int
    t: float
    alpha_bar: float
    x_t: CompactArray
    x0: CompactArray
    eps: CompactArray

    @property
    def nbytes(self) -> int:
        return self.x_t.nbytes + self.x0.nbytes + self.eps.nbytes


@dataclass(frozen=True)
class RecordingPlan:
    """Which steps are recorded, in which form, and the message when detail had to be dropped."""

    steps: int
    every: int = 1          # record steps 0, every, 2 every, ... and always the last; 0: record none
    bits: int = 16          # 16: float16; 8: 8 bits per value
    step_bytes: int = 0     # the bytes one recorded step takes
    message: str = ""       # "" when every step is kept in float16

    def records(self, index: int) -> bool:
        if self.every <= 0:
            return False
        return index % self.every == 0 or index == self.steps - 1

    @property
    def recorded_steps(self) -> int:
        return sum(1 for i in range(self.steps) if self.records(i))

    @property
    def total_bytes(self) -> int:
        return self.recorded_steps * self.step_bytes


def _mb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def plan_recording(steps: int, shape: Sequence[int], max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> RecordingPlan:
    """How to record ``steps`` steps of three [B, C, H, W] arrays of ``shape`` within ``max_bytes``.

    Every step in float16 when it fits; else every step in 8 bits; else 8 bits for every
    k-th step with the smallest k that fits (the last step always kept).
    """
    values = 3 * math.prod(int(d) for d in shape)
    full = steps * values * 2
    if full <= max_bytes:
        return RecordingPlan(steps, 1, 16, values * 2)
    what = f"{steps} steps of {shape[0]} sample{'s' if shape[0] != 1 else ''} at {shape[-1]}x{shape[-2]}"
    if steps * values <= max_bytes:
        return RecordingPlan(steps, 1, 8, values, f"Recording {what} in full would take {_mb(full)}, over the "
                                                  f"{_mb(max_bytes)} bound: the steps are kept as 8-bit images.")
    fit = max_bytes // values
    if fit < 1:
        return RecordingPlan(steps, 0, 8, values, f"Recording {what} would take {_mb(values)} per step, over the "
                                                  f"{_mb(max_bytes)} bound: no steps are recorded, only the "
                                                  "final images are kept.")
    every = steps if fit == 1 else max(1, math.ceil((steps - 1) / (fit - 1)))
    plan = RecordingPlan(steps, every, 8, values)
    while plan.recorded_steps > fit:
        every += 1
        plan = RecordingPlan(steps, every, 8, values)
    kept = plan.recorded_steps
    return RecordingPlan(steps, every, 8, values,
                         f"Recording {what} in full would take {_mb(full)}, over the {_mb(max_bytes)} bound: "
                         f"{kept} of the steps (every {every}{_ordinal(every)} and the last) are kept, "
                         "as 8-bit images.")


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


class _Staged:
    """One step's arrays on their way to the CPU (copied without waiting; collected by :meth:`finish`)."""

    def __init__(self, index: int, steps: int, t: float, alpha_bar: float, arrays: tuple[Tensor, Tensor, Tensor],
                 bits: int):
        self.index, self.steps, self.t, self.alpha_bar, self.bits = index, steps, t, alpha_bar, bits
        device = arrays[0].device
        pin = device.type == "cuda"
        self.ranges = None
        if bits == 8:
            ranges = []
            packed = []
            for a in arrays:
                a = a.float()
                lo, hi = a.amin(), a.amax()
                scale = torch.where(hi > lo, 255.0 / (hi - lo), torch.zeros_like(hi))
                packed.append(((a - lo) * scale).round_().clamp_(0, 255).to(torch.uint8))
                ranges.append(torch.stack([lo, hi]))
            arrays = tuple(packed)
            self.ranges = _to_cpu(torch.stack(ranges), pin)
        else:
            arrays = tuple(a.to(torch.float16, copy=True) for a in arrays)
        self.cpu = tuple(_to_cpu(a, pin) for a in arrays)
        self.event = None
        if pin:
            self.event = torch.cuda.Event()
            self.event.record()

    def finish(self) -> StepRecord:
        if self.event is not None:
            self.event.synchronize()
        if self.ranges is not None:
            r = self.ranges.numpy().astype(float)
            packs = [CompactArray(c.numpy(), float(r[k, 0]), float(r[k, 1])) for k, c in enumerate(self.cpu)]
        else:
            packs = [CompactArray(c.numpy()) for c in self.cpu]
        return StepRecord(self.index, self.steps, self.t, self.alpha_bar, *packs)


def _to_cpu(a: Tensor, pin: bool) -> Tensor:
    if a.device.type == "cpu":
        return a  # already a fresh copy (cast or packed above), so the loop's own tensors are not kept
    out = torch.empty(a.shape, dtype=a.dtype, pin_memory=pin)
    out.copy_(a, non_blocking=pin)
    return out


# -- classifier-free guidance -----------------------------------------------------------------------
def class_labels_tensor(unet, class_labels, batch: int, device) -> Tensor | None:
    """The labels as a [batch] long tensor (one label repeats), checked against the model's classes."""
    n = num_classes(unet)
    if class_labels is None:
        return None
    if n == 0:
        raise UserError("This model is unconditional: it takes no class labels.")
    labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(batch)
    if labels.numel() != batch:
        raise UserError(f"Give one class label or one per sample ({batch}), not {labels.numel()}.")
    bad = labels[(labels < 0) | (labels >= n)]
    if bad.numel():
        raise UserError(f"Class {int(bad[0])} is not one of this model's classes (0 to {n - 1}).")
    return labels.to(device)


def model_output(unet, x_in: Tensor, t: Tensor, labels: Tensor | None, guidance_scale: float = 1.0) -> Tensor:
    """The network's prediction at ``x_in``, guided: ``uncond + w (cond - uncond)`` (see the module's notes).

    ``labels`` None on a conditional model means unconditional sampling (the null class).
    A model that also predicts its variance (``2 C`` output channels) gives its first C.
    """
    channels = x_in.shape[1]
    if num_classes(unet) == 0:
        out = unet(x_in, t).sample
    else:
        null = torch.full((x_in.shape[0],), null_label(unet), dtype=torch.long, device=x_in.device)
        if labels is None or guidance_scale == 0:
            out = unet(x_in, t, class_labels=null).sample
        elif guidance_scale == 1:
            out = unet(x_in, t, class_labels=labels).sample
        else:
            both = unet(torch.cat([x_in, x_in]), t, class_labels=torch.cat([labels, null])).sample
            cond, uncond = both.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
    return out[:, :channels] if out.shape[1] == 2 * channels else out


# -- the loop --------------------------------------------------------------------------------------
def _model_device(unet) -> torch.device:
    try:
        return next(unet.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def initial_noise(shape: Sequence[int], generator: torch.Generator, device, dtype) -> Tensor:
    """The starting noise, drawn as diffusers' pipelines draw it (``randn_tensor``)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)


def sample(unet, scheduler, *, steps: int, batch: int = 1, seed: int = 0, class_labels=None,
           guidance_scale: float = 1.0, eta: float = 0.0, device=None, record: bool = True,
           max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
           ) -> Generator[RecordingPlan | Progress | StepRecord, None, Tensor]:
    """Sample ``batch`` images with ``scheduler`` in ``steps`` steps, yielding the steps as they come.

    ``unet`` is a diffusers ``UNet2DModel`` (in eval mode); ``scheduler`` a diffusers
    scheduler (:func:`.samplers.make_scheduler`), which this call sets to ``steps``
    timesteps. ``class_labels``: one class or one per sample, for a class-conditional model
    (None: unconditional); ``guidance_scale`` is the classifier-free guidance weight;
    ``eta`` is DDIM's noise (0: deterministic). ``device``: where to sample (None: where
    the model is). ``record=False`` is the plain loop, recording nothing.

    Yields the :class:`RecordingPlan` (when recording), then per step a
    :class:`~playground.progress.Progress` and, for each recorded step, its
    :class:`StepRecord` (one step late, so that copying never stalls the device). Returns
    the final images, float32 on the CPU.
    """
    T = int(scheduler.config.get("num_train_timesteps", 1000))
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
        raise UserError(f"The number of steps must be a whole number from 1 to {T}, not {steps!r}.")
    steps = int(steps)
    if batch < 1:
        raise UserError(f"The batch size must be at least 1, not {batch}.")
    device = torch.device(device) if device is not None else _model_device(unet)
    dtype = unet.dtype
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size, cfg.sample_size)
    shape = (batch, cfg.in_channels, *size)
    labels = class_labels_tensor(unet, class_labels, batch, device)
    ptype = model_prediction_type(scheduler)
    fed = prediction_type(scheduler)
    prepare(scheduler, steps, device)  # first: Euler's init_noise_sigma is its largest sigma *for these steps*
    timesteps = scheduler.timesteps
    n = len(timesteps)
    plan = plan_recording(n, shape, max_record_bytes) if record else RecordingPlan(n, every=0)
    if record:
        yield plan

    generator = torch.Generator("cpu").manual_seed(int(seed))
    x = initial_noise(shape, generator, device, dtype) * scheduler.init_noise_sigma
    kwargs = step_kwargs(scheduler, generator=generator, eta=eta)
    pending: _Staged | None = None
    for i, t in enumerate(timesteps):
        x, staged = _one_step(unet, scheduler, x, i, t, labels, guidance_scale, (ptype, fed), kwargs, plan)
        if pending is not None:
            yield pending.finish()
        pending = staged
        yield Progress((i + 1) / n, f"Step {i + 1} of {n} (t = {_t_text(t)})")
    if pending is not None:
        yield pending.finish()
    return x.detach().float().cpu()


def final_sample(unet, scheduler, **kwargs) -> Tensor:
    """Only the final images of :func:`sample` (nothing recorded): the loop run to its end."""
    gen = sample(unet, scheduler, record=False, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def _t_text(t) -> str:
    value = float(t)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


@torch.no_grad()
def _one_step(unet, scheduler, x, i, t, labels, guidance_scale, types, kwargs, plan):
    """One sampler step (and its record staged for the CPU, when this step is recorded).

    ``types``: (what the model predicts, what the scheduler takes); when they differ the
    output is converted through x0 and eps.
    """
    ptype, fed = types
    x_in = scheduler.scale_model_input(x, t)
    out = model_output(unet, x_in, t, labels, guidance_scale)
    staged = None
    if plan.records(i) or fed != ptype:
        ab = alpha_bar_at(scheduler, i, t)
        x0, eps = to_x0_eps(out.float(), x_in.float(), ab, ptype)
        if plan.records(i):
            staged = _Staged(i, plan.steps, float(t), ab, (x_in, x0, eps), plan.bits)
        if fed != ptype:
            out = training_target(x0, eps, ab, fed).to(out.dtype)
    x = scheduler.step(out, t, x, **kwargs).prev_sample
    return x, staged
