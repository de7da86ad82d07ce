"""Noise schedules, the one-jump forward process and the prediction types of a diffusion model.

**The forward process** (DDPM, Ho et al. 2020, arXiv 2006.11239). Noise is added in T small
steps, ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``. With
``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{s<=t} alpha_s`` the steps compose into
one jump (the paper's eq. 4)::

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps,    eps ~ N(0, I)

so the signal-to-noise ratio at step t is ``SNR_t = alpha_bar_t / (1 - alpha_bar_t)``;
``log SNR`` falls from about +10 to about -10 over a good schedule. The variance-exploding
view that Euler and DPM-Solver use has ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)``
(= 1 / sqrt(SNR)), and ``x_t / sqrt(alpha_bar_t) = x0 + sigma_t eps`` (Karras et al. 2022).

**Schedules** (the betas), named as diffusers names them (``beta_schedule``):

* ``"linear"``: beta_t evenly from ``beta_start`` (1e-4) to ``beta_end`` (0.02), T = 1000:
  DDPM's schedule.
* ``"squaredcos_cap_v2"``: the cosine schedule of Nichol & Dhariwal 2021 (arXiv 2102.09672,
  eq. 17): ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2(((t/T) + s) / (1 + s) * pi/2)``,
  ``s = 0.008``, turned into betas ``beta_t = 1 - alpha_bar(t) / alpha_bar(t-1)`` clipped at
  0.999 (so that the last step does not divide by zero).
* ``"scaled_linear"``: sqrt(beta) evenly spaced (Stable Diffusion's), for external models.

**Indexing.** diffusers numbers the steps ``t = 0 .. T-1``; its ``alphas_cumprod[t]`` is the
paper's ``alpha_bar_{t+1}`` (the image after t + 1 noising steps). Every array here uses
diffusers' indexing, so that ``alpha_bar[t]`` is what a scheduler uses at its timestep t.

**Prediction types.** A network sees x_t and t and predicts one of (diffusers'
``prediction_type``): ``"epsilon"`` the noise eps (DDPM); ``"sample"`` x0 itself;
``"v_prediction"`` ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0`` (Salimans & Ho
2022). Given x_t, any one of them gives the other two (:func:`to_x0_eps`,
:func:`training_target`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import UserError

SCHEDULES = ("linear", "squaredcos_cap_v2", "scaled_linear")
SCHEDULE_LABELS = {"linear": "linear", "squaredcos_cap_v2": "cosine", "scaled_linear": "scaled linear"}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
COSINE_S = 0.008
MAX_BETA = 0.999


def cosine_alpha_bar(t: np.ndarray | float, T: int, s: float = COSINE_S) -> np.ndarray:
    """The published cosine alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T) + s) / (1 + s) pi/2), for t in [0, T]."""
    f = lambda u: np.cos((np.asarray(u, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return f(t) / f(0)


def make_betas(schedule: str = "linear", T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The T betas of a schedule (float64), as diffusers' ``DDPMScheduler(beta_schedule=...)`` builds them."""
    if T < 1:
        raise UserError(f"A schedule needs at least one step, not {T}.")
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        ab = cosine_alpha_bar(np.arange(T + 1), T)
        return np.minimum(1 - ab[1:] / ab[:-1], MAX_BETA)
    raise UserError(f"Unknown noise schedule {schedule!r}; this app knows {', '.join(SCHEDULES)}.")


@dataclass(frozen=True)
class Schedule:
    """One noise schedule's arrays (float64, index t = 0 .. T-1 as diffusers numbers the steps)."""

    name: str
    betas: np.ndarray

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @property
    def snr(self) -> np.ndarray:
        ab = self.alpha_bar
        return ab / (1.0 - ab)

    @property
    def log_snr(self) -> np.ndarray:
        """log(alpha_bar / (1 - alpha_bar)): the curve to plot next to alpha_bar."""
        ab = self.alpha_bar
        return np.log(ab) - np.log1p(-ab)

    @property
    def sigmas(self) -> np.ndarray:
        """The variance-exploding noise level sqrt((1 - alpha_bar) / alpha_bar) (Euler's, DPM-Solver's)."""
        ab = self.alpha_bar
        return np.sqrt((1.0 - ab) / ab)

    @classmethod
    def make(cls, schedule: str = "linear", T: int = 1000, beta_start: float = 1e-4,
             beta_end: float = 0.02) -> Schedule:
        return cls(schedule, make_betas(schedule, T, beta_start, beta_end))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Schedule:
        """The schedule a diffusers scheduler config describes (``beta_schedule``, ``beta_start``, ...).

        ``trained_betas`` are taken as given; a schedule this module has no formula for
        (``sigmoid``, ``laplace``, zero-SNR rescaling) is read off diffusers' own
        ``DDPMScheduler``, so that a plot always shows what the sampler uses.
        """
        T = int(config.get("num_train_timesteps", 1000))
        if config.get("trained_betas") is not None:
            return cls("trained", np.asarray(config["trained_betas"], dtype=np.float64))
        name = config.get("beta_schedule", "linear")
        if name in SCHEDULES and not config.get("rescale_betas_zero_snr", False):
            return cls.make(name, T, float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)))
        from diffusers import DDPMScheduler

        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "rescale_betas_zero_snr")
        try:
            ddpm = DDPMScheduler(**{k: config[k] for k in keys if k in config})
        except (NotImplementedError, ValueError, TypeError) as exc:
            raise UserError(f"The noise schedule {name!r} is not one diffusers knows ({exc}).") from None
        return cls(str(name), ddpm.betas.double().numpy())


# -- the forward process -------------------------------------------------------------------------
def _per_sample(alpha_bar: Tensor | np.ndarray | float, t: Tensor | int, like: Tensor) -> Tensor:
    """alpha_bar at ``t`` (an int, or one step per sample), shaped to broadcast over ``like`` [B, ...]."""
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    if ab.dim() == 0:
        value = ab
    else:
        value = ab[torch.as_tensor(t, dtype=torch.long).cpu()]
    value = value.to(device=like.device, dtype=like.dtype)
    if value.dim() == 1:
        value = value.reshape(-1, *([1] * (like.dim() - 1)))
    return value


def forward(x0: Tensor, t: Tensor | int, noise: Tensor, alpha_bar: np.ndarray | Tensor) -> Tensor:
    """The one jump ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.

    ``t`` is one step for the whole batch or one per sample; ``alpha_bar`` is a schedule's
    array (:attr:`Schedule.alpha_bar` or a scheduler's ``alphas_cumprod``). The same as
    diffusers' ``scheduler.add_noise(x0, noise, t)``.
    """
    ab = _per_sample(alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# -- prediction types ----------------------------------------------------------------------------
def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise UserError(f"Unknown prediction type {prediction_type!r}; diffusion models here predict "
                        f"{', '.join(PREDICTION_TYPES)}.")
    return prediction_type


def to_x0_eps(output: Tensor, x_t: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a network's ``output`` at ``x_t`` with ``alpha_bar`` (a number or one per sample).

    * epsilon: ``x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)``
    * sample:  ``eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)``
    * v:       ``x0 = sqrt(ab) x_t - sqrt(1 - ab) v``,  ``eps = sqrt(1 - ab) x_t + sqrt(ab) v``
    """
    check_prediction_type(prediction_type)
    ab = torch.as_tensor(alpha_bar, dtype=output.dtype, device=output.device)
    if ab.dim() == 1:
        ab = ab.reshape(-1, *([1] * (output.dim() - 1)))
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * output) / a, output
    if prediction_type == "sample":
        return output, (x_t - a * output) / s
    return a * x_t - s * output, s * x_t + a * output


def training_target(x0: Tensor, eps: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> Tensor:
    """What a network of ``prediction_type`` is trained to output for (x0, eps) at ``alpha_bar``."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    ab = torch.as_tensor(alpha_bar, dtype=x0.dtype, device=x0.device)
    if ab.dim() == 1:
        ab = ab.reshape(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0
