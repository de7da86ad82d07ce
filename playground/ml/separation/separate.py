"""Separate a recording of any length: resampling, overlapping windows, speaker order, no clipping.

:func:`separate` is a job (a generator that yields :class:`~playground.progress.Progress`
and returns the sources). What it does, in order:

1. **Resample** the mono input to the model's rate (:func:`resample`, polyphase).
2. **Windows.** The input is cut into windows of ``window_s`` seconds overlapping by
   ``overlap`` of a window (the last window ends at the input's end); each goes through
   the network alone, so memory stays bounded however long the input is. Each window's
   output is weighted by a crossfade (raised-cosine ramps over its overlaps, flat
   elsewhere) and the sum is divided by the sum of the weights, so the weights add up to
   exactly 1 at every sample.
3. **Speaker order.** Windows are separated independently, and a separator's output order
   is arbitrary: voice 1 of one window may be voice 2 of the next. Each window's sources
   are put in the order that maximises the mean SI-SNR against the previous window's
   (already ordered) sources over their overlap. A silent overlap keeps the order.
   **Polarity.** SI-SNR cannot tell a voice from its negative, so a trained separator may
   hand out a voice upside down (the embedded default does, for its second output), and
   not always for the same speaker. Each window's sources are first given the sign that
   correlates with that window's mixture (the mixture is their sum), so that a voice has
   one polarity in every window and the crossfades add up instead of cancelling.
4. **Resample back** to the input's rate and length.
5. **No clipping.** If the loudest sample of any source is above ``peak``, every source is
   scaled by the same gain (their relative levels stay); quieter output is not amplified.

The model is any module ``mix [B, T] -> [B, C, T]`` with ``sample_rate`` and ``n_src``
attributes (:class:`~.model.ConvTasNet`).
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import UserError
from ...progress import Progress
from .audio import resample  # noqa: F401 - also part of this module's API
from .losses import best_permutation, pairwise_si_snr

DEFAULT_WINDOW_S = 8.0
# A quarter of a window: 2 s of the default 8 s, twice the default model's receptive field, so both
# windows see enough context over the crossfade. 0.5 would separate every sample twice; this, 1.33 times.
DEFAULT_OVERLAP = 0.25
DEFAULT_PEAK = 0.99


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Starts of the windows that cover ``length`` samples: every ``window - round(window * overlap)``
    samples, the last one moved back to end at the input's end (one window if it fits in one)."""
    if length <= window:
        return [0]
    hop = max(1, window - round(window * overlap))
    starts = list(range(0, length - window, hop))
    starts.append(length - window)
    return starts


def _ramp(n: int) -> np.ndarray:
    """n raised-cosine values rising from near 0 to near 1; ramp + its reverse = 1 at every sample."""
    return (np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2).astype(np.float32)


def crossfade_weights(starts: list[int], window: int, length: int) -> list[np.ndarray]:
    """The weight of each window: ramps up over its overlap with the previous window and down over
    its overlap with the next one; 1 elsewhere (and at the input's two ends). All weights are > 0."""
    weights = []
    for i, a in enumerate(starts):
        n = min(window, length - a)
        w = np.ones(n, dtype=np.float32)
        if i > 0:
            ov = min(n, starts[i - 1] + window - a)
            w[:ov] *= _ramp(ov)
        if i + 1 < len(starts):
            ov = min(n, a + window - starts[i + 1])
            w[n - ov:] *= _ramp(ov)[::-1]
        weights.append(w)
    return weights


def align_to_previous(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The order of ``current``'s sources [C, n] that best matches ``previous`` [C, n] (same samples):
    ``perm`` with ``current[perm[c]]`` going with ``previous[c]``, by the highest mean SI-SNR."""
    with torch.no_grad():
        pairwise = pairwise_si_snr(torch.from_numpy(current)[None].double(), torch.from_numpy(previous)[None].double())
        _, perm = best_permutation(pairwise)
    return perm[0].numpy()


def _as_mono(audio: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(audio, Tensor):
        audio = audio.detach().to("cpu").numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise UserError(f"Separation needs mono audio (one channel), not an array of shape {audio.shape}.")
    if audio.size == 0:
        raise UserError("There is no audio to separate (it has no samples).")
    if not np.isfinite(audio).all():
        raise UserError("The audio holds invalid samples (NaN or infinity).")
    return audio


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def separate(model: nn.Module, audio: np.ndarray | Tensor, sample_rate: int, *, window_s: float = DEFAULT_WINDOW_S,
             overlap: float = DEFAULT_OVERLAP, device: str | torch.device | None = None,
             peak: float | None = DEFAULT_PEAK) -> Generator[Progress, None, np.ndarray]:
    """Separate mono ``audio`` [T] at ``sample_rate`` Hz: yields progress, returns float32 sources [C, T]
    at the input's rate and length.

    ``window_s``: seconds per window (in the model's rate); ``overlap``: the share of a window
    that consecutive windows overlap, in (0, 0.5]. ``device``: where the network runs (the
    model is moved there); None keeps the model where it is. ``peak``: the largest absolute
    sample allowed in the result (all sources scaled by one gain when above it); None leaves
    the levels as the model made them. Closing the generator (cancelling the job) stops it
    between two windows.
    """
    x = _as_mono(audio)
    if not 0 < overlap <= 0.5:
        raise UserError(f"The windows' overlap must be above 0 and at most 0.5, not {overlap}.")
    if peak is not None and not peak > 0:
        raise UserError(f"The peak level must be above 0, not {peak}.")
    model_rate = int(model.sample_rate)
    n_src = int(model.n_src)
    window = round(window_s * model_rate)
    if window < 16:
        raise UserError(f"The separation window ({window_s} s) is too short.")
    if device is not None:
        model.to(device)
    run_on = _model_device(model)

    if sample_rate != model_rate:
        yield Progress(0.0, f"Resampling from {sample_rate} to {model_rate} Hz")
    mix = resample(x, sample_rate, model_rate)
    length = mix.shape[0]
    starts = window_starts(length, window, overlap)
    weights = crossfade_weights(starts, window, length)
    total = np.zeros((n_src, length), dtype=np.float32)
    weight_sum = np.zeros(length, dtype=np.float32)
    previous: tuple[int, np.ndarray] | None = None  # (start, ordered sources) of the last window
    was_training = model.training
    model.eval()
    try:
        for i, (a, w) in enumerate(zip(starts, weights)):
            yield Progress(0.05 + 0.9 * i / len(starts), f"Separating window {i + 1} of {len(starts)}")
            piece = torch.from_numpy(mix[a:a + len(w)]).to(run_on)
            with torch.inference_mode():
                out = model(piece[None])[0].float().cpu().numpy()                 # [C, n]
            if out.shape != (n_src, len(w)):
                raise RuntimeError(f"The separator returned {out.shape} for a window of {len(w)} samples, "
                                   f"not ({n_src}, {len(w)}).")
            out *= np.where(out @ mix[a:a + len(w)] < 0, -1, 1).astype(np.float32)[:, None]   # polarity
            if previous is not None:
                prev_start, prev = previous
                ov = prev_start + prev.shape[1] - a
                if ov > 0:
                    out = out[align_to_previous(out[:, :ov], prev[:, a - prev_start:])]
            previous = (a, out)
            total[:, a:a + len(w)] += out * w
            weight_sum[a:a + len(w)] += w
    finally:
        model.train(was_training)
    sources = total / weight_sum

    if sample_rate != model_rate:
        yield Progress(0.95, f"Resampling back to {sample_rate} Hz")
        sources = resample(sources, model_rate, sample_rate)
    t = x.shape[0]
    if sources.shape[1] >= t:
        sources = sources[:, :t]
    else:
        sources = np.pad(sources, ((0, 0), (0, t - sources.shape[1])))
    loudest = float(np.abs(sources).max())
    if peak is not None and loudest > peak:
        sources = sources * np.float32(peak / loudest)
    yield Progress(1.0, "Separated")
    return np.ascontiguousarray(sources, dtype=np.float32)
