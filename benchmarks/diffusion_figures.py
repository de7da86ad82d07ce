"""The Diffusion tab's figures that need no window: what recording costs, and what it keeps.

(1) Recording costs little: the same UNet (the digits default's architecture, weights from
    ``--model`` when given, else random: the cost does not depend on them) and the same
    scheduler, sampled through our recording loop (:func:`playground.ml.diffusion.sampling.sample`)
    and through a plain diffusers loop, one run of each in turn; throughput ratio ours /
    plain, goal at least 0.95, for each sampler in ``--samplers``.
(2) Memory: a long run (``--long-steps`` DDPM steps of a 4x4 grid) is recorded within the
    bound, in a compact form (float16, then 8 bits, then every k-th step), and says so.

(The slider's redraw time is the panel's figure: benchmarks/diffusion_slider.py, when the
tab exists.) The last line is ``all goals met`` or ``goals missed: ...``.

    python benchmarks/diffusion_figures.py [--steps 50] [--batch 16] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.ml.diffusion import models, samplers, sampling  # noqa: E402


def run_ours(unet, name: str, steps: int, batch: int, seed: int, labels, guidance: float) -> float:
    scheduler = samplers.make_scheduler(name, models.DEFAULT_SCHEDULER_CONFIG)
    t = time.perf_counter()
    gen = sampling.sample(unet, scheduler, steps=steps, batch=batch, seed=seed, class_labels=labels,
                          guidance_scale=guidance)
    try:
        while True:
            next(gen)
    except StopIteration:
        pass
    return time.perf_counter() - t


def run_plain(unet, name: str, steps: int, batch: int, seed: int, labels, guidance: float) -> float:
    """The loop a diffusers user writes (with the same guidance: one call on a doubled batch)."""
    scheduler = samplers.make_scheduler(name, models.DEFAULT_SCHEDULER_CONFIG)
    t0 = time.perf_counter()
    samplers.prepare(scheduler, steps, "cpu")
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = torch.randn((batch, unet.config.in_channels, size, size), generator=g) * scheduler.init_noise_sigma
    cond = torch.full((batch,), int(labels), dtype=torch.long) if labels is not None else None
    null = torch.full((batch,), models.null_label(unet), dtype=torch.long) if labels is not None else None
    with torch.inference_mode():
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            if cond is None:
                out = unet(x_in, t).sample
            else:
                both = unet(torch.cat([x_in, x_in]), t, class_labels=torch.cat([null, cond])).sample
                out_u, out_c = both.chunk(2)
                out = out_u + guidance * (out_c - out_u)
            x = scheduler.step(out, t, x, **samplers.step_kwargs(scheduler, generator=g)).prev_sample
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="", help="our .safetensors UNet (default: the digits architecture, random)")
    p.add_argument("--samplers", default="ddim,dpmpp-2m-karras,euler-a")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--long-steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    unet = (models.read_unet_file(args.model).unet if args.model else models.digits_unet(0)).eval()
    labels = 3 if models.num_classes(unet) else None
    print(f"UNet: {models.parameter_count(unet):,} parameters, {unet.config.sample_size} px, "
          f"{'class 3, guidance ' + str(args.guidance) if labels is not None else 'unconditional'}; "
          f"{args.steps} steps, batch {args.batch}, {args.threads} threads")
    missed: list[str] = []
    print("\n(1) throughput, ours (recording every step) / a plain diffusers loop (goal >= 0.95)")
    for name in args.samplers.split(","):
        ours, plain = [], []
        run_ours(unet, name, 3, args.batch, 0, labels, args.guidance)  # warm-up
        for k in range(args.repeats):
            pair = [("ours", run_ours), ("plain", run_plain)]
            for label, fn in (pair if k % 2 == 0 else pair[::-1]):
                seconds = fn(unet, name, args.steps, args.batch, k, labels, args.guidance)
                (ours if label == "ours" else plain).append(seconds)
        ratio = statistics.median(plain) / statistics.median(ours)
        print(f"{name:16s} ours {statistics.median(ours):6.2f} s  plain {statistics.median(plain):6.2f} s  "
              f"ratio {ratio:.3f}")
        if ratio < 0.95:
            missed.append(f"{name} recording ratio {ratio:.2f} < 0.95")

    print(f"\n(2) memory of a {args.long_steps}-step DDPM run of a 4x4 grid")
    size = unet.config.sample_size
    shape = (16, unet.config.in_channels, size, size)
    for bound in (sampling.DEFAULT_MAX_RECORD_BYTES, 8 * 2**20):
        plan = sampling.plan_recording(args.long_steps, shape, bound)
        print(f"bound {bound / 2**20:.0f} MB: {plan.recorded_steps} of {plan.steps} steps kept, {plan.bits}-bit, "
              f"{plan.total_bytes / 2**20:.1f} MB. {plan.message or 'Every step in full.'}")
        if plan.total_bytes > bound:
            missed.append(f"the records take {plan.total_bytes} bytes > the {bound} bound")
    print("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
