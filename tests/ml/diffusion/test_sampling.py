"""The recording sampler against diffusers' pipelines and plain loops; records, the memory bound, guidance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from playground.errors import UserError
from playground.ml.diffusion import samplers, sampling
from playground.ml.diffusion.sampling import RecordingPlan, StepRecord
from playground.progress import Progress


def drain(gen):
    """Run a generator to its end: (everything it yielded, what it returned)."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def run(unet, scheduler, **kwargs):
    items, images = drain(sampling.sample(unet, scheduler, **kwargs))
    records = [r for r in items if isinstance(r, StepRecord)]
    plans = [p for p in items if isinstance(p, RecordingPlan)]
    progress = [p for p in items if isinstance(p, Progress)]
    return images, records, plans, progress


def plain_loop(unet, scheduler, steps, batch, seed, eta=None):
    """The loop every diffusers pipeline runs, written out (the reference for the samplers without a pipeline)."""
    from diffusers.utils.torch_utils import randn_tensor

    g = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = randn_tensor((batch, 1, 8, 8), generator=g, dtype=unet.dtype) * scheduler.init_noise_sigma
    extra = {"eta": eta} if eta is not None else {}
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(out, t, x, generator=g, **extra).prev_sample
    return x


@pytest.mark.parametrize("steps", [50, 13])
def test_ddpm_equals_the_ddpm_pipeline(tiny_unet, steps):
    from diffusers import DDPMPipeline, DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=1000)
    pipe = DDPMPipeline(unet=tiny_unet, scheduler=sch)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=steps,
               output_type="pt").images
    ours, records, _, _ = run(tiny_unet, samplers.make_scheduler("ddpm", sch.config), steps=steps, batch=3, seed=7,
                              record=steps < 20)
    # the pipeline returns (x / 2 + 0.5).clamp(0, 1); the final x is the clipped x0, inside [-1, 1], so nothing is lost
    assert ours.abs().max() <= 1.0
    torch.testing.assert_close(ours / 2 + 0.5, ref, rtol=0, atol=1e-6)
    if steps < 20:
        assert len(records) == steps


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_equals_the_ddim_pipeline(tiny_unet, eta):
    from diffusers import DDIMPipeline, DDPMScheduler

    config = DDPMScheduler(beta_schedule="squaredcos_cap_v2").config
    pipe = DDIMPipeline(unet=tiny_unet, scheduler=samplers.make_scheduler("ddim", config))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), eta=eta, num_inference_steps=20,
               output_type="pt").images
    ours, _, _, _ = run(tiny_unet, samplers.make_scheduler("ddim", config), steps=20, batch=2, seed=3, eta=eta)
    assert ours.abs().max() <= 1.0
    torch.testing.assert_close(ours / 2 + 0.5, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(samplers.SAMPLERS))
def test_every_sampler_equals_a_plain_diffusers_loop(tiny_unet, name):
    eta = 0.3 if name == "ddim" else None
    ref = plain_loop(tiny_unet, samplers.make_scheduler(name), 6, 2, 11, eta)
    ours, records, _, _ = run(tiny_unet, samplers.make_scheduler(name), steps=6, batch=2, seed=11, eta=eta or 0.0)
    # float precision: the sigma samplers' noise levels are kept in float64 here (samplers.prepare)
    tol = dict(rtol=0, atol=1e-6) if name in ("ddpm", "ddim") else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, ref, **tol)
    assert [r.index for r in records] == list(range(6))


def test_euler_starts_at_its_largest_sigma_for_the_steps_asked(tiny_unet):
    config = {"timestep_spacing": "leading", "steps_offset": 1}  # the first timestep is 751 of 999 for 4 steps
    _, records, _, _ = run(tiny_unet, samplers.make_scheduler("euler", config), steps=4, batch=1, seed=5)
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    assert records[0].t == 751
    np.testing.assert_allclose(records[0].x_t.numpy(), noise.numpy(), atol=2e-3)


def test_the_samplers_are_the_ones_asked_for():
    import diffusers

    dpm = samplers.make_scheduler("dpmpp-2m-karras", {"beta_schedule": "squaredcos_cap_v2",
                                                      "prediction_type": "v_prediction", "clip_sample": True})
    assert isinstance(dpm, diffusers.DPMSolverMultistepScheduler)
    assert dpm.config.use_karras_sigmas and dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2
    assert dpm.config.beta_schedule == "squaredcos_cap_v2" and dpm.config.prediction_type == "v_prediction"
    assert isinstance(samplers.make_scheduler("euler-a"), diffusers.EulerAncestralDiscreteScheduler)
    assert isinstance(samplers.make_scheduler("euler"), diffusers.EulerDiscreteScheduler)
    ddim = samplers.make_scheduler("ddim", {"clip_sample": False, "_class_name": "DDPMScheduler"})
    assert isinstance(ddim, diffusers.DDIMScheduler) and not ddim.config.clip_sample
    with pytest.raises(UserError, match="Unknown sampler"):
        samplers.make_scheduler("heun")


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("name", list(samplers.SAMPLERS))
def test_every_sampler_runs_with_every_prediction_type(tiny_unet, name, ptype):
    sch = samplers.make_scheduler(name, {"beta_schedule": "squaredcos_cap_v2", "prediction_type": ptype,
                                         "clip_sample": False})
    images, records, plans, progress = run(tiny_unet, sch, steps=4, batch=2, seed=0)
    assert images.shape == (2, 1, 8, 8) and images.dtype == torch.float32 and torch.isfinite(images).all()
    assert len(plans) == 1 and plans[0].message == ""
    assert [p.fraction for p in progress] == [0.25, 0.5, 0.75, 1.0]
    assert [r.index for r in records] == [0, 1, 2, 3]
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for r in records:
        assert r.x_t.shape == r.x0.shape == r.eps.shape == (2, 1, 8, 8)
        assert r.x_t.data.dtype == np.float16
        assert 0 < r.alpha_bar < 1
        # x_t is in the model's own scale, and x0 and eps recombine into it: the forward jump
        recombined = math.sqrt(r.alpha_bar) * r.x0.numpy() + math.sqrt(1 - r.alpha_bar) * r.eps.numpy()
        np.testing.assert_allclose(recombined, r.x_t.numpy(), atol=3e-2 * max(1, np.abs(r.x0.numpy()).max()))
    # the first step's x_t is the seed's noise, whatever the sampler's own scale (Euler's starts at sigma_max)
    np.testing.assert_allclose(records[0].x_t.numpy(), noise.numpy(), atol=2e-3)


def test_cosine_schedule_with_few_steps_stays_finite(tiny_unet):
    """Plain diffusers gives NaN (Euler a) or runs past its sigmas (DPM++ 2M Karras) here; see samplers.prepare."""
    config = {"beta_schedule": "squaredcos_cap_v2", "clip_sample": False}
    for name in ("euler-a", "dpmpp-2m-karras"):
        images, records, _, _ = run(tiny_unet, samplers.make_scheduler(name, config), steps=4, batch=1, seed=0)
        assert torch.isfinite(images).all() and len(records) == 4


def test_euler_ancestral_takes_sample_predictions_as_the_noise_they_imply(tiny_unet):
    sch = samplers.make_scheduler("euler-a", {"prediction_type": "sample"})
    assert sch.config.prediction_type == "epsilon" and samplers.model_prediction_type(sch) == "sample"
    assert samplers.model_prediction_type(samplers.make_scheduler("euler", {"prediction_type": "sample"})) == "sample"


def test_any_number_of_steps_and_bad_steps_refused(tiny_unet):
    for steps in (1, 3, 250):
        images, _, _, progress = run(tiny_unet, samplers.make_scheduler("dpmpp-2m-karras"), steps=steps, batch=1,
                                     seed=0, record=False)
        assert torch.isfinite(images).all() and len(progress) == steps
    for bad in (0, 1001, 2.5):
        with pytest.raises(UserError, match="number of steps"):
            drain(sampling.sample(tiny_unet, samplers.make_scheduler("ddpm"), steps=bad, batch=1))


def test_the_seed_decides_the_samples(tiny_unet):
    a, _, _, _ = run(tiny_unet, samplers.make_scheduler("euler-a"), steps=5, batch=2, seed=1, record=False)
    b, _, _, _ = run(tiny_unet, samplers.make_scheduler("euler-a"), steps=5, batch=2, seed=1)
    c, _, _, _ = run(tiny_unet, samplers.make_scheduler("euler-a"), steps=5, batch=2, seed=2, record=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_recording_makes_no_extra_network_calls(conditional_unet):
    calls = []
    handle = conditional_unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        run(conditional_unet, samplers.make_scheduler("ddim"), steps=5, batch=3, seed=0)
        assert calls == [3] * 5  # unconditional sampling of a conditional model: the null class, one call
        calls.clear()
        run(conditional_unet, samplers.make_scheduler("ddim"), steps=5, batch=3, seed=0, class_labels=1,
            guidance_scale=3.0)
        assert calls == [6] * 5  # guided: conditional and unconditional in one doubled batch
    finally:
        handle.remove()


# -- the memory bound -------------------------------------------------------------------------------
def test_the_plan_keeps_everything_when_it_fits_and_says_what_it_drops():
    shape = (16, 3, 256, 256)
    full = sampling.plan_recording(10, shape, 2**30)
    assert (full.every, full.bits, full.message) == (1, 16, "") and full.recorded_steps == 10
    step16 = 3 * math.prod(shape) * 2
    eight = sampling.plan_recording(10, shape, 10 * step16 // 2)
    assert (eight.every, eight.bits) == (1, 8) and "8-bit" in eight.message
    thin = sampling.plan_recording(1000, shape, 512 * 2**20)
    assert thin.bits == 8 and thin.every > 1 and thin.total_bytes <= 512 * 2**20
    assert thin.records(0) and thin.records(999) and not thin.records(1)
    assert f"every {thin.every}" in thin.message and "1000 steps of 16 samples at 256x256" in thin.message
    assert "GB" in thin.message and "512 MB" in thin.message
    none = sampling.plan_recording(10, shape, 100)
    assert none.every == 0 and none.recorded_steps == 0 and "no steps are recorded" in none.message


def test_a_long_run_over_the_bound_drops_detail_with_a_message(tiny_unet):
    step8 = 3 * 2 * 64  # 8-bit bytes of one step: x_t, x0, eps of 2 samples of 8x8
    images, records, plans, _ = run(tiny_unet, samplers.make_scheduler("ddpm"), steps=50, batch=2, seed=0,
                                    max_record_bytes=10 * step8)
    full, _, _, _ = run(tiny_unet, samplers.make_scheduler("ddpm"), steps=50, batch=2, seed=0)
    assert torch.equal(images, full)  # what is recorded never changes the samples
    (plan,) = plans
    assert plan.message and plan.bits == 8 and len(records) == plan.recorded_steps <= 10
    assert records[0].index == 0 and records[-1].index == 49
    assert sum(r.nbytes for r in records) <= 10 * step8
    _, full_records, _, _ = run(tiny_unet, samplers.make_scheduler("ddpm"), steps=50, batch=2, seed=0)
    for r in records:
        ref = full_records[r.index]
        assert r.x_t.data.dtype == np.uint8
        for kind in sampling.KINDS:
            packed, exact = getattr(r, kind), getattr(ref, kind).numpy()
            step = (packed.hi - packed.lo) / 255
            np.testing.assert_allclose(packed.numpy(), exact, atol=step * 0.51 + 2e-3 * np.abs(exact).max())


def test_records_are_copies_on_the_cpu(tiny_unet):
    _, records, _, _ = run(tiny_unet, samplers.make_scheduler("ddpm"), steps=3, batch=1, seed=0)
    assert records[0].x_t.data is not records[1].x_t.data
    assert not np.array_equal(records[0].x_t.data, records[2].x_t.data)
    assert all(isinstance(getattr(r, k).data, np.ndarray) for r in records for k in sampling.KINDS)


# -- classifier-free guidance ------------------------------------------------------------------------
def test_guidance_scale_one_is_the_conditional_and_zero_the_unconditional_prediction(conditional_unet):
    unet = conditional_unet
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    labels = torch.tensor([0, 1, 2])
    null = torch.full((3,), 3)
    with torch.no_grad():
        cond = unet(x, t, class_labels=labels).sample
        uncond = unet(x, t, class_labels=null).sample
        assert not torch.allclose(cond, uncond, atol=1e-3)  # the labels matter in this model
        torch.testing.assert_close(sampling.model_output(unet, x, t, labels, 1.0), cond)
        torch.testing.assert_close(sampling.model_output(unet, x, t, labels, 0.0), uncond)
        torch.testing.assert_close(sampling.model_output(unet, x, t, labels, 4.0), uncond + 4.0 * (cond - uncond),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sampling.model_output(unet, x, t, None, 4.0), uncond)


def test_guided_sampling_follows_the_labels(conditional_unet, make_unet):
    a, _, _, _ = run(conditional_unet, samplers.make_scheduler("ddim"), steps=4, batch=2, seed=0, class_labels=[0, 2],
                     guidance_scale=2.0)
    b, _, _, _ = run(conditional_unet, samplers.make_scheduler("ddim"), steps=4, batch=2, seed=0, class_labels=[1, 2],
                     guidance_scale=2.0)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    with pytest.raises(UserError, match="not one of this model's classes"):
        drain(sampling.sample(conditional_unet, samplers.make_scheduler("ddim"), steps=2, class_labels=3))
    with pytest.raises(UserError, match="one per sample"):
        drain(sampling.sample(conditional_unet, samplers.make_scheduler("ddim"), steps=2, batch=3, class_labels=[0, 1]))
    with pytest.raises(UserError, match="unconditional"):
        drain(sampling.sample(make_unet(), samplers.make_scheduler("ddim"), steps=2, class_labels=0))


def test_cancelling_between_steps_stops_the_network(tiny_unet):
    calls = []
    handle = tiny_unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        gen = sampling.sample(tiny_unet, samplers.make_scheduler("ddpm"), steps=100, batch=1)
        for item in gen:
            if isinstance(item, Progress) and item.fraction >= 0.03:
                gen.close()
                break
        assert len(calls) == 3
    finally:
        handle.remove()
