"""Make the Separation tab's demo mixtures: resources/separation-demos/ (OGG + demos.json).

    python scripts/make_separation_demos.py [--count 3] [--seconds 4] [--seed 2024]

Two voices each, from espeak-ng voice variants (and a flite voice) held out of the
default model's training, reading sentences of the project's grammar; mixed as the
training mixtures are (playground.ml.separation.speech.make_mixture).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.ml.separation import speech  # noqa: E402
from playground.ml.separation.audio import write_audio  # noqa: E402
from playground.ml.separation.demos import DEMO_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(args.count):
        voices = []
        while len(voices) < 2:
            v = speech.random_voice(rng, held_out=True)
            if all(v.speaker != u.speaker for u in voices):
                voices.append(v)
        utterances = [speech.synthesise(" ".join(speech.sentence(rng) for _ in range(2)), v) for v in voices]
        bank = speech.UtteranceBank(
            np.concatenate([(u / (np.abs(u).max() + 1e-9) * 0.9 * 32767).astype(np.int16) for u in utterances]),
            np.cumsum([0] + [len(u) for u in utterances]), [v.speaker for v in voices], speech.SAMPLE_RATE)
        mixture, sources = speech.make_mixture(bank, rng, int(args.seconds * speech.SAMPLE_RATE))
        name = f"demo{k + 1}"
        write_audio(DEMO_DIR / f"{name}-mix.ogg", mixture, speech.SAMPLE_RATE)
        for c in range(len(sources)):
            write_audio(DEMO_DIR / f"{name}-s{c + 1}.ogg", sources[c], speech.SAMPLE_RATE)
        entries.append({"name": name, "title": f"Demo {k + 1}: {voices[0].name} and {voices[1].name}",
                        "mixture": f"{name}-mix.ogg", "sources": [f"{name}-s{c + 1}.ogg" for c in range(len(sources))],
                        "voices": [f"{v.engine} {v.name} pitch {v.pitch} speed {v.speed}" for v in voices]})
    (DEMO_DIR / "demos.json").write_text(json.dumps({
        "made_by": "python scripts/make_separation_demos.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "source": "synthesised by the project with Debian's espeak-ng / flite (held-out voice variants)",
        "sample_rate": speech.SAMPLE_RATE, "demos": entries}, indent=2) + "\n")
    print(f"wrote {len(entries)} demos to {DEMO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
