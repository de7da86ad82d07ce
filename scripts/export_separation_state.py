"""Write a separation training run's current state as an embedded model (while it still trains).

    python scripts/export_separation_state.py --preset default --state data/sep-default.state.pt \\
        --out resources/convtasnet-tts-8k.safetensors

The JSON beside it records the training command to continue or repeat the run and the step
reached; the run itself writes the final file when its time budget ends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.ml.checkpoints import load_state_dict_strict, torch_load  # noqa: E402
from playground.ml.separation.loaders import save_separator  # noqa: E402
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig  # noqa: E402
from playground.ml.separation.train import PRESETS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--state", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    state = torch_load(args.state)
    model = ConvTasNet(ConvTasNetConfig(**PRESETS[args.preset]))
    load_state_dict_strict(model, state["model"], what="the run's model")
    command = (f"python -m playground.ml.separation.train --preset {args.preset} --threads 1 "
               f"--max-steps {int(state['step'])} --out {args.out}")
    save_separator(args.out, model, {
        "made_by": "playground.ml.separation.train", "command": command, "seed": 0, "steps": int(state["step"]),
        "seconds": round(float(state.get("seconds", 0.0)), 1), "status": "exported while training",
        "validation_si_snri_db": round(float(state["best"]), 2),
        "training_data": "two-speaker mixtures of espeak-ng and flite voices reading sentences of "
                         "playground.ml.separation.speech's grammar, synthesised offline"})
    print(f"{args.out}: step {state['step']}, best validation SI-SNRi {state['best']:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
