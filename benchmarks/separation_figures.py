"""The Separation tab's figures: quality of the embedded models, speed, memory and live latency.

(1) SI-SNRi (and SDRi, BSS Eval's) on held-out text-to-speech mixtures: voice variants (and
    a flite voice) never used in training, 4 s, mixed as in training; two sets: grammar
    sentences from another seed, and half the utterances reading the held-out half of the
    fortunes corpus. Goal for the default model: at least 12 dB on each. The causal (live)
    model is printed beside it. For the default model also: the median, the mixtures under
    5 dB, the mean by held-out voice, the mixtures of one variant in two accents, and the
    same mixtures with their polarity inverted (waveforms times -1).
(2) SI-SNRi and SDRi on mixtures of real recorded speech: the little there is offline (Debian's
    pocketsphinx-testdata: five LibriVox sentences, each mixed with a recording of another
    speaker from the same package), so we know the gap to real microphones. No goal.
(3) Real-time factor (processing time / audio length) on this CPU, 2 threads, separating
    20 s with the tab's windowed separator: the default model (goal at most 0.05) and the
    paper's full configuration (N=512, L=16, B=128, H=512, P=3, X=8, R=3; goal at most 0.5).
(4) Peak memory separating a 10-minute recording (in a fresh process): goal under 2 GB.
(5) Live mode with the causal model, 20 ms blocks: latency from a sample entering to its
    separated sample being ready (the model's algorithmic latency plus the compute time of
    a block), and the real-time factor.

The last line is ``all goals met`` or ``goals missed: ...``.

    python benchmarks/separation_figures.py [--mixtures 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.ml.separation import loaders, losses, speech  # noqa: E402
from playground.ml.separation.audio import read_audio, resample  # noqa: E402
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig, parameter_count  # noqa: E402
from playground.ml.separation.separate import separate  # noqa: E402
from playground.paths import RESOURCES  # noqa: E402
from playground.progress import finish  # noqa: E402

REAL_SPEECH = Path("/usr/share/pocketsphinx/test/data")


def run_separate(model, audio: np.ndarray, rate: int) -> np.ndarray:
    return finish(separate(model, audio, rate))


def si_snri_values(model, mixtures: list[np.ndarray], sources: list[np.ndarray],
                   rate: int) -> tuple[list[float], list[float]]:
    """SI-SNRi and SDRi (dB) of the tab's separator on each mixture (the mean over its voices)."""
    values, sdr_values = [], []
    for mix, src in zip(mixtures, sources):
        est, ref, m = (torch.from_numpy(a[None]) for a in (run_separate(model, mix, rate), src, mix))
        values.append(float(losses.si_snr_improvement(est, ref, m).mean()))
        sdr_values.append(float(losses.sdr_improvement(est, ref, m).mean()))
    return values, sdr_values


def si_snri(model, mixtures: list[np.ndarray], sources: list[np.ndarray], rate: int,
            with_sdri: bool = False) -> float | tuple[float, float]:
    """Mean SI-SNRi (dB) of the tab's separator over the mixtures; with ``with_sdri``, (SI-SNRi, SDRi)."""
    values, sdr_values = si_snri_values(model, mixtures, sources, rate)
    return (float(np.mean(values)), float(np.mean(sdr_values))) if with_sdri else float(np.mean(values))


def by_voice(values: list[float], pairs: list[list[str]]) -> tuple[dict[str, float], list[float], list[float]]:
    """The mean SI-SNRi of the mixtures each voice is in (lowest first); the values of the mixtures
    of one voice (variant) with itself in another accent (which count as two speakers), and of the others."""
    per: dict[str, list[float]] = {}
    alike, others = [], []
    for value, speakers in zip(values, pairs):
        voices = {speech.voice_of(s) for s in speakers}
        for voice in voices:
            per.setdefault(voice, []).append(value)
        (alike if len(voices) < len(speakers) else others).append(value)
    means = {v: float(np.mean(x)) for v, x in per.items()}
    return dict(sorted(means.items(), key=lambda kv: kv[1])), alike, others


def held_out_mixtures(count: int, seed: int, corpus: float = 0.0
                      ) -> tuple[list[np.ndarray], list[np.ndarray], list[list[str]]]:
    """``count`` 4 s mixtures of held-out voices (``corpus``: the share reading held-out fortunes),
    their sources, and the speakers in each."""
    bank = None
    for item in speech.build_bank(speech.BankConfig(max(2 * count, 20), seed, held_out=True, corpus=corpus),
                                  Path("data/tts-cache")):
        bank = item if isinstance(item, speech.UtteranceBank) else bank
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    pairs = [speech.make_mixture(bank, rng, 4 * speech.SAMPLE_RATE, picked=picked) for _ in range(count)]
    speakers = [[bank.speakers[i] for i in picked[2 * k:2 * k + 2]] for k in range(count)]
    return [m for m, _ in pairs], [s for _, s in pairs], speakers


def _read_raw(path: Path, rate: int = 16000) -> tuple[np.ndarray, int]:
    return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0, rate


def real_mixtures(rate: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """LibriVox sentences (one reader) each mixed at 0 dB with a recording of another speaker."""
    readings = sorted((REAL_SPEECH / "librivox").glob("*.wav"))
    others = sorted((REAL_SPEECH / "cards").glob("*.wav")) + [REAL_SPEECH / n for n in
                                                              ("goforward.raw", "numbers.raw", "something.raw")]
    others = [p for p in others if p.exists()]
    mixtures, sources = [], []
    for k, path in enumerate(readings):
        a, ra = read_audio(path)
        other = others[k % len(others)]
        b, rb = _read_raw(other) if other.suffix == ".raw" else read_audio(other)
        a, b = resample(a, ra, rate), resample(b, rb, rate)
        n = min(len(a), len(b), 6 * rate)
        a, b = a[:n] / (np.std(a[:n]) + 1e-8), b[:n] / (np.std(b[:n]) + 1e-8)
        mix = a + b
        scale = 0.9 / np.abs(mix).max()
        mixtures.append((mix * scale).astype(np.float32))
        sources.append((np.stack([a, b]) * scale).astype(np.float32))
    return mixtures, sources


def rtf(model, seconds: float = 20.0, repeats: int = 2) -> float:
    audio = np.random.default_rng(0).standard_normal(int(seconds * model.sample_rate)).astype(np.float32) * 0.1
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_separate(model, audio, model.sample_rate)
        times.append(time.perf_counter() - t)
    return min(times) / seconds


def peak_memory_gb(model_path: str, minutes: float, threads: int) -> float:
    """Separate ``minutes`` of audio in a fresh process; its peak resident memory in GB."""
    code = f"""
import resource, sys, numpy as np, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
torch.set_num_threads({threads})
from separation_figures import run_separate
from playground.ml.separation import loaders
model = loaders.load_separator({model_path!r}).model.eval()
audio = (np.random.default_rng(0).standard_normal(int({minutes} * 60 * model.sample_rate)) * 0.1).astype(np.float32)
out = run_separate(model, audio, model.sample_rate)
assert out.shape[-1] == audio.shape[-1]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                          cwd=str(Path(__file__).resolve().parent.parent))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return int(done.stdout.strip().splitlines()[-1]) / 1024 / 1024  # ru_maxrss is in KiB on Linux


def live(model, seconds: float = 20.0, block_s: float = 0.02) -> tuple[float, float, float]:
    """(algorithmic latency s, median compute per block s, real-time factor) of streaming separation."""
    from playground.ml.separation.streaming import StreamingSeparator

    stream = StreamingSeparator(model)
    audio = np.random.default_rng(1).standard_normal(int(seconds * model.sample_rate)).astype(np.float32) * 0.1
    block = int(block_s * model.sample_rate)
    computes = []
    for start in range(0, len(audio), block):
        stream.push(audio[start:start + block])
        computes.append(stream.last_compute_s)
    stream.flush()
    return stream.latency_s, statistics.median(computes), sum(computes) / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mixtures", type=int, default=50)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-minutes", type=float, default=10.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    missed: list[str] = []
    models = {}
    for label, name in (("default", loaders.DEFAULT_MODEL), ("causal", loaders.DEFAULT_CAUSAL_MODEL)):
        path = RESOURCES / name
        if path.exists():
            models[label] = (path, loaders.load_separator(path).model.eval())
        else:
            print(f"{label} model: {path} is missing")
            missed.append(f"{label} model missing")
    for label, (path, model) in models.items():
        print(f"{label}: {path.name}, {parameter_count(model):,} parameters, receptive field "
              f"{model.config.receptive_field_s():.2f} s")

    print(f"\n(1) SI-SNRi (SDRi) on {args.mixtures} held-out TTS mixtures (voices never trained on), 4 s each")
    for text, corpus in (("grammar sentences", 0.0), ("half held-out fortunes", 0.5)):
        mixtures, sources, pairs = held_out_mixtures(args.mixtures, args.seed, corpus)
        for label, (_path, model) in models.items():
            values, sdr_values = si_snri_values(model, mixtures, sources, speech.SAMPLE_RATE)
            value, sdri = float(np.mean(values)), float(np.mean(sdr_values))
            goal = " (goal >= 12 dB)" if label == "default" else ""
            print(f"{text:23s} {label:8s} SI-SNRi {value:6.2f} dB{goal}, SDRi {sdri:6.2f} dB, "
                  f"median {np.median(values):.2f}, {sum(v < 5 for v in values)} under 5 dB")
            if label == "default":
                voices, alike, others = by_voice(values, pairs)
                print(f"{'':32s} by voice: " + ", ".join(f"{v} {x:.1f}" for v, x in voices.items()))
                if alike and others:
                    print(f"{'':32s} {len(alike)} mixtures of one variant in two accents: {np.mean(alike):.2f} dB "
                          f"(the other {len(others)}: {np.mean(others):.2f} dB)")
                flipped, _ = si_snri_values(model, [-m for m in mixtures], [-s for s in sources], speech.SAMPLE_RATE)
                print(f"{'':32s} the same mixtures, polarity inverted (a microphone may record either; "
                      f"the training voices came in one): {np.mean(flipped):.2f} dB")
                if value < 12:
                    missed.append(f"held-out SI-SNRi ({text}) {value:.1f} dB < 12 dB")

    print("\n(2) SI-SNRi on mixtures of real recorded speech (pocketsphinx-testdata)")
    if not (REAL_SPEECH / "librivox").exists():
        print("not measured: Debian's pocketsphinx-testdata is not installed")
    else:
        real_mix, real_src = real_mixtures(speech.SAMPLE_RATE)
        for label, (_path, model) in models.items():
            value, sdri = si_snri(model, real_mix, real_src, speech.SAMPLE_RATE, with_sdri=True)
            print(f"{label:8s} SI-SNRi {value:6.2f} dB, SDRi {sdri:6.2f} dB ({len(real_mix)} mixtures)")

    print(f"\n(3) real-time factor, 20 s of audio, {args.threads} threads")
    paper = ConvTasNet(ConvTasNetConfig()).eval()
    contenders = [(label, model, 0.05) for label, (_p, model) in models.items() if label == "default"]
    contenders.append(("paper config", paper, 0.5))
    for label, model, goal in contenders:
        value = rtf(model)
        print(f"{label:13s} RTF {value:.4f} (goal <= {goal}: {value / goal:.2f} of the budget)")
        if value > goal:
            missed.append(f"{label} RTF {value:.3f} > {goal}")

    print(f"\n(4) peak memory separating {args.memory_minutes:g} minutes")
    if "default" in models:
        gb = peak_memory_gb(str(models["default"][0]), args.memory_minutes, args.threads)
        print(f"default model: {gb:.2f} GB (goal < 2 GB)")
        if gb >= 2:
            missed.append(f"peak memory {gb:.2f} GB >= 2 GB")
    else:
        missed.append("peak memory not measured")

    print("\n(5) live mode (causal model, 20 ms blocks)")
    if "causal" in models:
        algorithmic, compute, live_rtf = live(models["causal"][1])
        print(f"latency {1000 * (algorithmic + compute):.1f} ms (algorithmic {1000 * algorithmic:.1f} ms + compute "
              f"{1000 * compute:.1f} ms per block; a block waits up to 20 ms to fill), real-time factor {live_rtf:.3f}")
        if live_rtf >= 1:
            missed.append(f"live real-time factor {live_rtf:.2f} >= 1")
    else:
        missed.append("live mode not measured")
    print(f"(this process's peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    print("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
