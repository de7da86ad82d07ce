"""Schedules against the published formulas and diffusers; the one-jump forward process; prediction types."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from playground.errors import UserError
from playground.ml.diffusion import schedules
from playground.ml.diffusion.schedules import Schedule


@pytest.mark.parametrize("name", ["linear", "squaredcos_cap_v2", "scaled_linear"])
def test_betas_and_alpha_bar_match_diffusers(name):
    from diffusers import DDPMScheduler

    ours = Schedule.make(name, 1000, 1e-4, 0.02)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(ours.betas, theirs.betas.double().numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.alpha_bar, theirs.alphas_cumprod.double().numpy(), rtol=1e-4, atol=1e-9)
    assert Schedule.from_config(theirs.config).betas == pytest.approx(ours.betas)


def test_cosine_alpha_bar_is_the_published_formula():
    T, s = 1000, 0.008
    ab = Schedule.make("squaredcos_cap_v2", T).alpha_bar
    f = lambda t: math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2
    published = np.array([f(t + 1) / f(0) for t in range(T)])  # diffusers' index t is the paper's t + 1
    clipped = np.flatnonzero(Schedule.make("squaredcos_cap_v2", T).betas >= 0.999)
    assert list(clipped) == [T - 1]  # only the last beta is capped, as Nichol & Dhariwal do
    np.testing.assert_allclose(ab[:-1], published[:-1], rtol=1e-9, atol=1e-12)
    assert ab[0] == pytest.approx(1 - 4.1e-5, abs=2e-6)  # a tiny first step, unlike linear's 1e-4
    assert schedules.cosine_alpha_bar(0, T) == 1.0
    assert schedules.cosine_alpha_bar(T / 2, T) == pytest.approx(f(T / 2) / f(0))


def test_log_snr_falls_and_sigma_is_its_inverse_root():
    for name in ("linear", "squaredcos_cap_v2"):
        sch = Schedule.make(name)
        assert np.all(np.diff(sch.log_snr) < 0)
        assert sch.log_snr[0] > 8 and sch.log_snr[-1] < -9
        np.testing.assert_allclose(sch.sigmas, np.exp(-sch.log_snr / 2), rtol=1e-9)


def test_unknown_schedules_are_refused_or_read_off_diffusers():
    with pytest.raises(UserError, match="Unknown noise schedule"):
        Schedule.make("quadratic")
    sigmoid = Schedule.from_config({"beta_schedule": "sigmoid", "num_train_timesteps": 50})
    assert sigmoid.T == 50 and np.all(np.diff(sigmoid.alpha_bar) < 0)
    trained = Schedule.from_config({"trained_betas": [0.1, 0.2]})
    assert trained.alpha_bar == pytest.approx([0.9, 0.72])


def test_forward_jump_has_the_right_mean_and_variance():
    sch = Schedule.make("linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-1.0, -0.3, 0.2, 0.9], dtype=torch.float64)
    n = 200_000
    for t in (0, 250, 999):
        noise = torch.randn(n, 4, generator=g, dtype=torch.float64)
        xt = schedules.forward(x0.expand(n, 4), t, noise, sch.alpha_bar)
        ab = sch.alpha_bar[t]
        mean_err = (xt.mean(0) - math.sqrt(ab) * x0).abs().max().item()
        var = xt.var(0)
        assert mean_err < 5 * math.sqrt((1 - ab) / n)
        assert torch.allclose(var, torch.full_like(var, 1 - ab), rtol=5 * math.sqrt(2 / n))


def test_forward_jump_equals_add_noise_with_a_step_per_sample():
    from diffusers import DDPMScheduler

    sch = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1, torch.randn(5, 1, 4, 4, generator=g)
    t = torch.tensor([0, 10, 500, 900, 999])
    ours = schedules.forward(x0, t, noise, sch.alphas_cumprod)
    torch.testing.assert_close(ours, sch.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ptype", schedules.PREDICTION_TYPES)
def test_prediction_types_round_trip_and_agree_with_diffusers(ptype):
    from diffusers import DDPMScheduler

    g = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1, torch.randn(3, 1, 4, 4, generator=g)
    sch = DDPMScheduler(prediction_type=ptype, clip_sample=False)
    t = 400
    ab = float(sch.alphas_cumprod[t])
    xt = schedules.forward(x0, t, eps, sch.alphas_cumprod)
    target = schedules.training_target(x0, eps, ab, ptype)
    got_x0, got_eps = schedules.to_x0_eps(target, xt, ab, ptype)
    torch.testing.assert_close(got_x0, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_eps, eps, rtol=1e-4, atol=1e-4)
    sch.set_timesteps(1000)
    theirs = sch.step(target, t, xt).pred_original_sample
    torch.testing.assert_close(got_x0, theirs, rtol=1e-4, atol=1e-4)
    if ptype == "v_prediction":
        torch.testing.assert_close(target, sch.get_velocity(x0, eps, torch.tensor([t] * 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="prediction type"):
        schedules.to_x0_eps(target, xt, ab, "score")
