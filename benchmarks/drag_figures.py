"""The Drag tab's figures: drag accuracy on the default model, and time per drag step.

(1) Accuracy, after DragGAN's protocol: ``--trials`` random trials (default 100). Each
    takes a random seed's face, a handle at a random point of the face (the central half
    of the picture, where the procedural faces are), and a target 5-10% of the image
    width away in a random direction, and drags for at most 300 steps. Printed: the
    share of trials whose handle reached the stop distance (goal: at least 80%) and the
    mean final distance in pixels, for DragGAN and for FreeDrag.
(2) Speed on the default model, 2 threads: drag steps per second with the picture
    rendered at every step (goal: at least 5 steps/s, and so at least 5 pictures/s).
(3) Speed against the official implementation at 256 px on the CPU (goal: ours at least
    2x faster): the generator part of one drag step, which is nearly all of its cost. The
    official renderer runs the whole synthesis network every step and back-propagates from
    block b128's output; ours runs up to b128 only and back-propagates from there. NVIDIA's
    generator comes from a checkout of NVlabs/stylegan2-ada-pytorch (or DragGAN, which
    carries it) given with ``--official``, run here and never shipped; both get the same
    weights. Without ``--official`` this figure is reported as not measured.

The last line is ``all goals met`` or ``goals missed: ...``.

    python benchmarks/drag_figures.py [--trials 100] [--model resources/stylegan2-faces-64.safetensors]
                                      [--official /path/to/stylegan2-ada-pytorch]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.ml import draggan  # noqa: E402
from playground.ml.stylegan2 import pickles  # noqa: E402
from playground.paths import RESOURCES  # noqa: E402


def accuracy(G, method: str, trials: int, seed: int) -> tuple[float, float, float]:
    """(share reached, mean final distance px, mean steps) over random trials."""
    rng = np.random.default_rng(seed)
    size = G.img_resolution
    reached, finals, steps = 0, [], []
    for k in range(trials):
        face_seed = int(rng.integers(0, 2**31 - 1))
        h = rng.uniform(0.25 * size, 0.75 * size, 2)
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.05, 0.10) * size
        t = np.clip(h + length * np.array([math.cos(angle), math.sin(angle)]), 0, size - 1)
        cfg = draggan.DragConfig(method=method, max_steps=300, render_every=0,
                                 lr=draggan.FACE_LR if method == "draggan" else None)
        session = draggan.DragSession(G, cfg, ws0=draggan.initial_ws(G, face_seed, 0.7))
        gen = session.run([tuple(h)], [tuple(t)])
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            result = stop.value
        reached += result.reason == "reached"
        finals.append(float(result.distances[0]))
        steps.append(result.steps)
        if (k + 1) % 10 == 0:
            print(f"  {method}: {k + 1}/{trials} trials, {reached} reached", flush=True)
    return reached / trials, float(np.mean(finals)), float(np.mean(steps))


def step_rate(G, render_every: int, steps: int = 60) -> float:
    """Median drag steps per second on one long drag (the first steps are warm-up)."""
    size = G.img_resolution
    cfg = draggan.DragConfig(max_steps=steps, render_every=render_every, stop_distance=0.01)
    session = draggan.DragSession(G, cfg, ws0=draggan.initial_ws(G, 0, 0.7))
    times, last = [], time.perf_counter()
    for _ in session.run([(0.3 * size, 0.5 * size)], [(0.7 * size, 0.5 * size)]):
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return 1 / statistics.median(times[5:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=str(RESOURCES / "stylegan2-faces-64.safetensors"))
    p.add_argument("--methods", default="draggan,freedrag")
    p.add_argument("--official", default="", help="a checkout of NVlabs/stylegan2-ada-pytorch (for figure 3)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    G = pickles.load_generator(args.model)
    print(f"model {args.model}: {G.img_resolution} px, {sum(q.numel() for q in G.parameters()):,} parameters, "
          f"{args.threads} threads")
    missed = []
    print(f"\n(1) accuracy: {args.trials} trials, target 5-10% of the width away, at most 300 steps")
    print(f"{'method':10s} {'reached':>8s} {'goal':>6s} {'mean final distance':>20s} {'mean steps':>11s}")
    for method in args.methods.split(","):
        share, final, steps = accuracy(G, method, args.trials, args.seed)
        print(f"{method:10s} {share:8.0%} {'>=80%':>6s} {final:17.2f} px {steps:11.1f}")
        if share < 0.8:
            missed.append(f"{method} reached {share:.0%} < 80%")
    print("\n(2) speed on the default model (median step of a 60-step drag)")
    with_image = step_rate(G, render_every=1)
    without = step_rate(G, render_every=0)
    print(f"steps/s with the picture every step: {with_image:.1f} (goal >= 5); without: {without:.1f}")
    if with_image < 5:
        missed.append(f"{with_image:.1f} steps/s with pictures < 5")
    print("\n(3) ours against the official generator at 256 px")
    if not args.official:
        print("not measured: no --official checkout given")
        missed.append("speed against the official code not measured")
    else:
        missed += official_speed(Path(args.official), args.threads)
    print("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return 0 if not missed else 1


def official_speed(checkout: Path, threads: int) -> list[str]:
    """One drag step at 256 px through NVIDIA's generator and through ours, same weights."""
    sys.path.insert(0, str(checkout))
    try:
        import training.networks as official  # type: ignore  # noqa: PLC0415 - the checkout's own module
    except ImportError as exc:
        print(f"not measured: {checkout} has no training/networks.py ({exc})")
        return ["speed against the official code not measured"]
    from playground.ml.stylegan2.model import Generator

    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3)
    synth = dict(channel_base=16384, channel_max=512, num_fp16_res=0, conv_clamp=None)
    theirs = official.Generator(**kwargs, mapping_kwargs={}, synthesis_kwargs=synth).eval().requires_grad_(False)
    ours = Generator(**kwargs, **synth).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ws0 = ours.mapping(torch.randn(1, 512), None)

    def their_step(ws):
        feat = None
        x = img = None
        block_ws, w_idx = [], 0
        for res in theirs.synthesis.block_resolutions:
            block = getattr(theirs.synthesis, f"b{res}")
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        for res, cur_ws in zip(theirs.synthesis.block_resolutions, block_ws):
            x, img = getattr(theirs.synthesis, f"b{res}")(x, img, cur_ws, noise_mode="const", force_fp32=True)
            if res == 128:
                feat = x  # DragGAN's renderer runs every block (the image is drawn each step) and takes b128's x
        return feat

    def our_step(ws):
        return ours.synthesis(ws, noise_mode="const", feature_block=128, stop_at_feature=True)[1]

    results = {}
    for label, fn in (("official", their_step), ("ours", our_step)):
        times = []
        for _ in range(6):
            ws = ws0.detach().clone().requires_grad_(True)
            t = time.perf_counter()
            fn(ws).abs().mean().backward()
            times.append(time.perf_counter() - t)
        results[label] = statistics.median(times[1:])
        print(f"{label:9s} forward+backward to b128: {results[label]:.3f} s")
    ratio = results["official"] / results["ours"]
    print(f"speed-up {ratio:.2f}x (goal >= 2x)")
    return [] if ratio >= 2 else [f"speed-up {ratio:.2f}x < 2x against the official code"]


if __name__ == "__main__":
    sys.exit(main())
