"""SI-SNR, uPIT and the improvement figures, on signals whose answers are known."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from playground.ml.separation.losses import (
    best_permutation,
    pairwise_si_snr,
    pit_si_snr_loss,
    reorder,
    sdr,
    si_snr,
    si_snr_improvement,
)


def _sources(c: int, t: int = 800, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, t, generator=g, dtype=torch.float64)


def test_si_snr_of_a_scaled_copy_is_very_high_and_scale_invariant():
    s = _sources(1)[0, 0]
    assert si_snr(3.7 * s, s) > 60
    assert si_snr(-0.2 * s + 5.0, s) > 60  # sign, scale and offset do not matter
    noisy = s + 0.1 * _sources(1, seed=1)[0, 0]
    assert si_snr(noisy, s).item() == pytest.approx(si_snr(42.0 * noisy, s).item(), abs=1e-6)  # up to eps
    assert si_snr(noisy, s).item() == pytest.approx(si_snr(noisy, 0.25 * s).item(), abs=1e-6)


def test_si_snr_matches_its_definition_on_a_known_mixture():
    s = _sources(1)[0, 0]
    n = _sources(1, seed=1)[0, 0]
    s, n = s - s.mean(), n - n.mean()
    n = n - (n @ s) / (s @ s) * s                            # zero-mean noise orthogonal to s
    est = s + 0.5 * n * (s.norm() / n.norm())               # noise at half the target's norm: +6.02 dB
    assert si_snr(est, s).item() == pytest.approx(20 * math.log10(2), abs=1e-3)


def test_si_snr_of_independent_noise_is_low():
    s = _sources(2, t=16000)
    assert si_snr(s[0, 0], s[0, 1]) < -15


def test_sdr_is_not_scale_invariant():
    s = _sources(1)[0, 0]
    assert sdr(s, s) > 60
    assert sdr(0.5 * s, s).item() == pytest.approx(20 * math.log10(2), abs=1e-6)


@pytest.mark.parametrize("c", [2, 3])
def test_pit_finds_the_permutation_for_every_order(c):
    refs = _sources(c)
    for order in itertools.permutations(range(c)):
        order = list(order)
        est = refs[:, order] * 2 + 0.05 * _sources(c, seed=7)          # est[k] is source order[k], noisy
        loss, perm = pit_si_snr_loss(est, refs)
        # estimate perm[c] goes with source c: est[perm[j]] = refs[order[perm[j]]] must be refs[j]
        assert [order[p] for p in perm[0].tolist()] == list(range(c))
        assert loss < -20
        assert torch.allclose(reorder(est, perm), refs * 2 + 0.05 * _sources(c, seed=7)[:, [order.index(j) for j in
                                                                                          range(c)]])


def test_pairwise_and_best_permutation_on_a_hand_made_table():
    table = torch.tensor([[[1.0, 9.0, 0.0], [8.0, 1.0, 0.0], [0.0, 0.0, 7.0]]])  # est x ref
    best, perm = best_permutation(table)
    assert perm.tolist() == [[1, 0, 2]] and best.item() == pytest.approx(8.0)
    refs = _sources(2)
    pw = pairwise_si_snr(refs.flip(1), refs)
    assert pw.shape == (1, 2, 2) and pw[0, 0, 1] > 60 and pw[0, 1, 0] > 60 and pw[0, 0, 0] < 0


def test_si_snr_improvement_on_a_known_case():
    refs = _sources(2, t=4000)
    mix = refs.sum(dim=1)
    # the mixture as an estimate of one of two equal-power independent sources: about 0 dB
    base = si_snr(mix.unsqueeze(1).expand_as(refs), refs)
    assert base.abs().max() < 0.5
    est = refs.flip(1) + 0.01 * _sources(2, t=4000, seed=3)   # swapped order, noise at -40 dB
    improvement = si_snr_improvement(est, refs, mix)
    assert improvement.shape == (1, 2)
    assert torch.allclose(improvement, si_snr(est.flip(1), refs) - base)
    assert (improvement > 35).all()


def test_bss_sdr_is_the_least_squares_projection_onto_delayed_copies():
    import numpy as np

    from playground.ml.separation.losses import bss_sdr

    rng = np.random.default_rng(0)
    t, taps = 400, 8
    s = rng.standard_normal(t)
    est = np.convolve(s, [0.6, -0.3, 0.1])[:t] + 0.2 * rng.standard_normal(t)
    # The long way: every delayed copy of s as a column (zero-padded to T + taps - 1), lstsq.
    n = t + taps - 1
    delayed = np.stack([np.concatenate([np.zeros(a), s, np.zeros(taps - 1 - a)]) for a in range(taps)], axis=1)
    e = np.concatenate([est, np.zeros(taps - 1)])
    target = delayed @ np.linalg.lstsq(delayed, e, rcond=None)[0]
    expected = 10 * np.log10(target @ target / ((e - target) @ (e - target)))
    assert delayed.shape == (n, taps)
    assert bss_sdr(est, s, taps) == pytest.approx(expected, abs=1e-6)


def test_sdr_forgives_a_short_filter_that_si_snr_does_not():
    import numpy as np

    from playground.ml.separation.losses import bss_sdr

    rng = np.random.default_rng(1)
    s = rng.standard_normal(8000)
    filtered = np.convolve(s, [1.0, 0.5, 0.25])[:8000]
    assert bss_sdr(filtered, s) > 40                                   # a filtered copy is the source
    assert si_snr(torch.from_numpy(filtered), torch.from_numpy(s)) < 10  # SI-SNR counts it as error
    assert bss_sdr(rng.standard_normal(8000), s) < -10                 # independent noise (512 taps fit a little)


def test_sdr_improvement_orders_like_si_snr_and_scores_a_perfect_estimate_high():
    from playground.ml.separation.losses import sdr_improvement

    refs = _sources(2, t=4000)
    mix = refs.sum(dim=1)
    swapped = refs.flip(1)                                               # estimates in the other order
    sdri = sdr_improvement(swapped, refs, mix, filter_len=64)
    assert sdri.shape == (refs.shape[0], 2) and (sdri > 40).all()
    assert (sdr_improvement(mix.unsqueeze(1).expand_as(refs), refs, mix, filter_len=64).abs() < 1e-6).all()
