"""The samplers, by name: diffusers schedulers built from a model's own scheduler config.

Every sampler turns the network's prediction at x_t into the next, less noisy x; they
differ in how (all in diffusers' ``src/diffusers/schedulers``, one class with one ``step()``):

* ``"ddpm"``: ancestral sampling (Ho et al. 2020, eq. 11):
  ``x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) + sigma_t z``, one step
  per training step when ``steps = T``, or fewer steps over a coarser set of timesteps.
* ``"ddim"``: DDIM (Song et al. 2021, arXiv 2010.02502, eq. 12):
  ``x_{t-1} = sqrt(alpha_bar_{t-1}) x0 + sqrt(1 - alpha_bar_{t-1} - sigma^2) eps + sigma z``
  with ``sigma = eta sqrt((1 - ab_{t-1}) / (1 - ab_t)) sqrt(1 - ab_t / ab_{t-1})``: ``eta = 0`` is
  deterministic, ``eta = 1`` is DDPM's noise. ``eta`` is an argument of
  :func:`~.sampling.sample` (diffusers passes it to ``step()``).
* ``"dpmpp-2m-karras"``: DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095): a second-order
  multistep solver of the probability-flow ODE in the data-prediction form, here with the
  noise levels of Karras et al. 2022 (arXiv 2206.00364, eq. 5:
  ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
  rho = 7), "DPM++ 2M Karras" in other tools.
* ``"euler"``: Euler's method on the ODE ``dx/dsigma = (x - x0) / sigma`` in the variance
  exploding form ``x = x_t / sqrt(alpha_bar) = x0 + sigma eps`` (Karras et al. 2022, Alg. 1).
* ``"euler-a"``: Euler ancestral: an Euler step down to a lower sigma, then fresh noise
  back up to the next sigma ("Euler a").

The Euler samplers keep x in the variance-exploding scale (their initial noise has
standard deviation ``init_noise_sigma``) and feed the network ``scale_model_input(x)``,
which is x_t in the model's own scale; :func:`alpha_bar_at` gives the noise level each
step works at, whatever the sampler.

A sampler is built *from the model's scheduler config* (``from_config``), so the schedule
(betas, T), the prediction type and clipping follow the model; only the keys the chosen
class takes are passed on. diffusers' Euler ancestral cannot take ``sample`` predictions;
it is then built for epsilon and fed the noise the model's x0 implies
(:func:`model_prediction_type` tells the sampling loop).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ...errors import UserError

SAMPLERS: dict[str, str] = {
    "ddpm": "DDPM (ancestral)",
    "ddim": "DDIM",
    "dpmpp-2m-karras": "DPM++ 2M Karras",
    "euler": "Euler",
    "euler-a": "Euler ancestral",
}
"""Sampler names and the labels the tab shows."""

_CLASSES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpmpp-2m-karras": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
}
# What each diffusers class can be fed; a model that predicts something else has its prediction
# converted by the sampling loop (exactly: x0 and eps follow from any one of them at x_t).
_TAKES = {"euler-a": ("epsilon", "v_prediction")}
_SETTINGS: dict[str, dict[str, Any]] = {
    "dpmpp-2m-karras": {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2},
}

DEFAULT_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
    "prediction_type": "epsilon", "clip_sample": True,
}
"""DDPM's own settings (Ho et al. 2020), for a model that comes without a scheduler config."""


def scheduler_class(name: str) -> type:
    import diffusers

    if name not in _CLASSES:
        raise UserError(f"Unknown sampler {name!r}; the samplers are {', '.join(SAMPLERS)}.")
    return getattr(diffusers, _CLASSES[name])


def _accepted(cls: type) -> set[str]:
    return {p for p in inspect.signature(cls.__init__).parameters if p != "self"}


def make_scheduler(name: str, config: Mapping[str, Any] | None = None, **overrides: Any):
    """A fresh diffusers scheduler for sampler ``name`` from a model's scheduler ``config``.

    ``config`` is a scheduler config (``scheduler_config.json``, any scheduler class's, or a
    scheduler's ``.config``); ``None`` means :data:`DEFAULT_CONFIG`. The sampler's own
    settings (Karras sigmas and the solver for DPM++ 2M Karras) and ``overrides`` win over
    the config. Keys the class does not take are dropped, so a DDPM config makes an Euler
    sampler without warnings.
    """
    cls = scheduler_class(name)
    base = dict(DEFAULT_CONFIG if config is None else config)
    base = {k: v for k, v in base.items() if not k.startswith("_")}
    base.update(_SETTINGS.get(name, {}))
    base.update(overrides)
    model_prediction = str(base.get("prediction_type", "epsilon"))
    if model_prediction not in _TAKES.get(name, (model_prediction,)):
        base["prediction_type"] = "epsilon"
    accepted = _accepted(cls)
    try:
        scheduler = cls.from_config({k: v for k, v in base.items() if k in accepted})
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise UserError(f"The {SAMPLERS[name]} sampler cannot use this model's scheduler settings ({exc}).") from None
    scheduler.model_prediction_type = model_prediction
    return scheduler


def step_kwargs(scheduler, *, generator: torch.Generator | None, eta: float = 0.0) -> dict[str, Any]:
    """The extra arguments ``scheduler.step()`` takes: the generator (ancestral noise) and DDIM's eta."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in params:
        kwargs["generator"] = generator
    if "eta" in params:
        kwargs["eta"] = float(eta)
    return kwargs


def prepare(scheduler, steps: int, device: torch.device | str = "cpu") -> None:
    """``scheduler.set_timesteps(steps)``, made safe for every schedule.

    Two fixes over a plain call, which change nothing where the plain call works:

    * The step counter starts at the first timestep (``set_begin_index(0)``). Karras sigmas
      over the cosine schedule map the first two steps to the same timestep (998, 998, ...),
      and diffusers would otherwise start at the *second* of equal timesteps (its img2img
      convention) and run past its sigmas.
    * The sigmas are kept in float64 (except on Apple's MPS, which has no float64). The cosine
      schedule ends at sigma_max ~ 2e4; in float32, Euler ancestral's
      ``sigma_down = sqrt(sigma_to^2 - sigma_up^2)`` then rounds to the square root of a
      negative number (NaN) when a few steps make sigma_to / sigma_from ~ 1e-4. The images
      stay in the model's dtype.
    """
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    if uses_sigmas(scheduler) and torch.device(device).type != "mps":
        scheduler.sigmas = scheduler.sigmas.to(torch.float64)


def uses_sigmas(scheduler) -> bool:
    """Whether a scheduler works with noise levels sigma (Euler, DPM-Solver) rather than alphas_cumprod[t]."""
    sigmas = getattr(scheduler, "sigmas", None)
    return isinstance(sigmas, torch.Tensor) and len(sigmas) == len(scheduler.timesteps) + 1


def alpha_bar_at(scheduler, index: int, timestep: torch.Tensor | float) -> float:
    """alpha_bar at the ``index``-th step (timestep ``timestep``) of a scheduler after ``set_timesteps``.

    For sigma-based samplers ``alpha_bar = 1 / (1 + sigma_i^2)`` (their sigmas can fall between
    the training steps, as Karras' do); otherwise ``alphas_cumprod[t]``.
    """
    if uses_sigmas(scheduler):
        sigma = float(scheduler.sigmas[index])
        return 1.0 / (1.0 + sigma * sigma)
    return float(scheduler.alphas_cumprod[int(timestep)])


def prediction_type(scheduler_or_config) -> str:
    """What the scheduler expects the network's output to be (its config's ``prediction_type``)."""
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    return str(config.get("prediction_type", "epsilon"))


def model_prediction_type(scheduler) -> str:
    """What the *model* predicts: the scheduler's own type unless :func:`make_scheduler` had to feed it
    another (Euler ancestral takes no ``sample`` predictions: it gets the noise they imply)."""
    return str(getattr(scheduler, "model_prediction_type", prediction_type(scheduler)))
