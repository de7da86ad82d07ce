"""The tab's helpers in the ML core: scores against true voices, and the pictures of the model's insides."""

import numpy as np
import torch

from playground.ml.separation import analysis
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig


def test_score_puts_swapped_estimates_back_in_order_and_measures_them():
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 4000)).astype(np.float32)
    mixture = refs.sum(axis=0)
    noisy = refs + 0.1 * rng.standard_normal((2, 4000)).astype(np.float32)
    ordered, snr, snr_mix, snri = analysis.score(noisy[::-1].copy() * 3.0, refs, mixture)  # swapped and scaled
    np.testing.assert_allclose(ordered, noisy * 3.0, rtol=1e-6)
    assert all(19 < v < 21 for v in snr)  # 10 log10(1 / 0.01) = 20 dB
    assert all(abs(v) < 1 for v in snr_mix)  # the mixture is half each voice: about 0 dB
    np.testing.assert_allclose(snri, np.array(snr) - np.array(snr_mix), atol=1e-4)


def test_inside_view_gives_pictures_in_0_1_for_each_voice():
    torch.manual_seed(0)
    model = ConvTasNet(ConvTasNetConfig(N=16, L=8, B=8, H=16, Sc=8, X=2, R=1, n_src=3))
    mixture = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1  # 2 s at 8 kHz
    inside = analysis.inside_view(model, mixture, 8000, seconds=1.0)
    assert inside.w.shape[0] == 16 and inside.masks.shape[:2] == (3, 16)
    assert inside.masks.shape[2] == inside.w.shape[1] <= analysis.INSIDE_MAX_FRAMES
    for picture in (inside.w, *inside.masks):
        assert picture.min() >= 0 and picture.max() <= 1
    assert len(inside.mask_means) == 3 and inside.frames == (16000 - 8) // 4 + 1
    assert model.training  # left as it was
