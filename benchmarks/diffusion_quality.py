"""The digits default's quality bar: guided samples classified as the digit that was asked for.

A classifier is trained by the project on the real digits (the DDPM trainer's own training
split; its accuracy on the held-out digits the DDPM never saw is printed), then labels
``--per-class`` guided samples of each digit. The anchor is the issue's bar: at least 90% of
samples classified as asked. Also printed: the same classifier on the real held-out digits
(the ceiling a perfect generator would reach), per-class figures and a confusion matrix.

    python benchmarks/diffusion_quality.py [--model resources/ddpm-digits-16.safetensors]
        [--per-class 50] [--configs ddpm:100:3,ddim:50:1.5,ddim:50:3] [--picture out.png]

``--configs`` lists sampler:steps:guidance; the first is the one held to the bar, the others are
printed beside it (DDIM with a strong guidance overshoots on this small model: see the README).

The last line is ``all goals met`` or ``goals missed: ...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.ml.checkpoints import read_sidecar  # noqa: E402
from playground.ml.diffusion import models, quality, scrub  # noqa: E402

GOAL = 0.90


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "resources" / "ddpm-digits-16.safetensors"))
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--configs", default="ddpm:100:3,ddim:50:1.5,ddim:50:3",
                   help="sampler:steps:guidance, comma-separated; the first is held to the bar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--picture", default="", help="save a grid of the samples (one row per digit) here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = models.read_unet_file(args.model)
    side = read_sidecar(args.model)
    t0 = time.perf_counter()
    classifier, held_out = quality.train_classifier(seed=args.seed)
    print(f"digits classifier (trained on the DDPM's {1797 - 180} training digits): "
          f"held-out accuracy {held_out:.1%} on 180 digits the DDPM never saw ({time.perf_counter() - t0:.0f} s)")
    print(f"model: {args.model} ({side.get('steps', '?')} training steps, {side.get('seconds', 0) / 60:.0f} min)")
    configs = []
    for item in args.configs.split(","):
        sampler, steps, guidance = item.split(":")
        configs.append((sampler, int(steps), float(guidance)))
    reports = []
    for sampler, steps, guidance in configs:
        t0 = time.perf_counter()
        report = quality.guided_accuracy(model, classifier, per_class=args.per_class, guidance=guidance,
                                         sampler=sampler, steps=steps, seed=args.seed)
        reports.append(report)
        print(f"\n{sampler}, {steps} steps, guidance {guidance:g}: {10 * args.per_class} samples in "
              f"{time.perf_counter() - t0:.0f} s; classified as asked {report.overall:.1%}")
        print("  per digit:  " + "  ".join(f"{d}:{f:.0%}" for d, f in enumerate(report.per_class)))
        print("  confusion (rows: asked, columns: labelled):")
        for d, row in enumerate(report.confusion):
            print(f"    {d}: " + " ".join(f"{n:3d}" for n in row))
    report = reports[0]
    sampler, steps, guidance = configs[0]
    ratio = report.overall / GOAL
    print(f"\nclassified as asked ({sampler}, {steps} steps, guidance {guidance:g}): ours {report.overall:.1%}  |  "
          f"anchor (the bar) {GOAL:.0%}  |  ratio {ratio:.2f}  |  real held-out digits {held_out:.1%}")
    if args.picture:
        images = scrub.to_uint8(report.samples[np.arange(len(report.samples)).reshape(10, -1)[:, :10].ravel()])
        from PIL import Image

        Image.fromarray(scrub.grid(images, 10)).resize((10 * 17 * 4, 10 * 17 * 4), Image.NEAREST).save(args.picture)
        print(f"samples saved to {args.picture}")
    missed = [] if report.overall >= GOAL else [f"guided samples classified as asked {report.overall:.1%} < {GOAL:.0%}"]
    print("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
