"""What the Separation tab shows beside the voices: the model's insides, and scores against true voices.

* :func:`inside_view`: the encoder's output w (log magnitude) and each voice's mask for the
  first seconds of a recording, as [0, 1] pictures (Conv-TasNet's encoder -> mask -> decoder).
* :func:`score`: the estimates put in the true voices' order, with SI-SNR, the mixture's
  SI-SNR and SI-SNRi per voice (dB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import audio, losses

INSIDE_SECONDS = 4.0  # the "inside the model" pictures show the first seconds of the input
INSIDE_MAX_FRAMES = 600


@dataclass(frozen=True)
class Inside:
    """The model's encoder output and masks on the first seconds, as [0, 1] pictures [N, K']."""

    w: np.ndarray
    masks: np.ndarray  # [C, N, K']
    mask_means: tuple[float, ...]
    frames: int  # K of the whole input


def frame_count(model, samples: int) -> int:
    """K: the encoder frames the model makes of ``samples`` samples at its own rate."""
    cfg = model.config
    return max(1, math.ceil((samples - cfg.L) / cfg.stride) + 1)


def _picture(values: np.ndarray, max_frames: int = INSIDE_MAX_FRAMES) -> np.ndarray:
    """[rows, K] -> [rows, <= max_frames] (means of column bins)."""
    k = values.shape[1]
    if k > max_frames:
        step = math.ceil(k / max_frames)
        m = k // step
        values = values[:, :m * step].reshape(values.shape[0], m, step).mean(axis=2)
    return np.ascontiguousarray(values, dtype=np.float32)


def inside_view(model, mixture: np.ndarray, rate: int, seconds: float = INSIDE_SECONDS) -> Inside:
    """Run the model on the first ``seconds`` of ``mixture`` and keep w (log-magnitude) and the masks."""
    x = audio.resample(mixture[:max(1, int(seconds * rate))], rate, model.sample_rate)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            _, w, masks = model(torch.from_numpy(np.ascontiguousarray(x)).to(device)[None], return_masks=True)
    finally:
        model.train(was_training)
    w = w[0].float().cpu().numpy()
    masks = masks[0].float().cpu().numpy()
    logw = np.log10(np.abs(w) + 1e-4)
    lo, hi = np.percentile(logw, 2), logw.max()
    w_pic = _picture(np.clip((logw - lo) / max(hi - lo, 1e-6), 0.0, 1.0))
    top = max(1.0, float(masks.max()))  # ReLU masks may pass 1
    mask_pics = np.stack([_picture(np.clip(m / top, 0.0, 1.0)) for m in masks])
    frames = frame_count(model, int(round(len(mixture) * model.sample_rate / rate)))
    return Inside(w_pic, mask_pics, tuple(float(m.mean()) for m in masks), frames)


def score(estimates: np.ndarray, references: np.ndarray, mixture: np.ndarray):
    """Put the estimates in the references' order and score them: (ordered [C, T], SI-SNR, of the
    mixture, SI-SNRi), all per voice, in dB."""
    with torch.no_grad():
        e = torch.from_numpy(np.ascontiguousarray(estimates))[None].double()
        r = torch.from_numpy(np.ascontiguousarray(references))[None].double()
        m = torch.from_numpy(np.ascontiguousarray(mixture))[None].double()
        _, perm = losses.best_permutation(losses.pairwise_si_snr(e, r))
        ordered = losses.reorder(e, perm)
        snr = losses.si_snr(ordered, r)[0]
        snr_mix = losses.si_snr(m.unsqueeze(1).expand_as(r), r)[0]
        snri = losses.si_snr_improvement(ordered, r, m)[0]
    order = perm[0].numpy()
    return (np.ascontiguousarray(estimates[order]), tuple(float(v) for v in snr), tuple(float(v) for v in snr_mix),
            tuple(float(v) for v in snri))


