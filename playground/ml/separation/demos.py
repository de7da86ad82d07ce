"""The demo mixtures shipped in ``resources/separation-demos/``, so the tab does something at once.

Each demo is a mixture and its true sources (OGG Vorbis, 8 kHz), listed in ``demos.json``
with the voices that spoke them; the true sources let the tab show SI-SNRi. They are made
by ``scripts/make_separation_demos.py`` from voice variants the default model never heard
in training (:data:`.speech.HELD_OUT_VARIANTS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BadFileError
from ...paths import RESOURCES
from .audio import read_audio, resample

DEMO_DIR = RESOURCES / "separation-demos"


@dataclass(frozen=True)
class Demo:
    name: str
    title: str
    mixture: Path
    sources: tuple[Path, ...]
    voices: tuple[str, ...] = ()


def list_demos(folder: Path = DEMO_DIR) -> list[Demo]:
    """The demos listed in ``folder/demos.json`` whose files are there ([] when there are none)."""
    index = folder / "demos.json"
    if not index.exists():
        return []
    try:
        entries = json.loads(index.read_text())["demos"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    demos = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            demo = Demo(str(entry["name"]), str(entry["title"]), folder / str(entry["mixture"]),
                        tuple(folder / str(s) for s in entry["sources"]),
                        tuple(str(v) for v in entry.get("voices", ())))
        except (KeyError, TypeError):
            continue
        if demo.mixture.exists() and all(s.exists() for s in demo.sources):
            demos.append(demo)
    return demos


def load_demo(demo: Demo) -> tuple[np.ndarray, np.ndarray, int]:
    """(mixture [T], sources [C, T], sample rate), all at the mixture's rate and length."""
    mixture, rate = read_audio(demo.mixture)
    sources = []
    for path in demo.sources:
        audio, r = read_audio(path)
        audio = resample(audio, r, rate)
        audio = np.pad(audio, (0, max(0, len(mixture) - len(audio))))[:len(mixture)]
        sources.append(audio)
    if not sources:
        raise BadFileError(f"The demo {demo.name} has no sources.")
    return mixture, np.stack(sources).astype(np.float32), rate
