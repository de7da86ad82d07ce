"""Separating long recordings: windows, crossfades, speaker order across windows, resampling, levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from playground.errors import UserError
from playground.ml.separation.losses import si_snr
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig
from playground.ml.separation.separate import (
    align_to_previous,
    crossfade_weights,
    resample,
    separate,
    window_starts,
)
from playground.progress import Progress


class StandIn(nn.Module):
    """A 'separator' whose answer is known; it records the length of every window it is given."""

    def __init__(self, fn, n_src: int = 2, sample_rate: int = 8000):
        super().__init__()
        self.fn, self.n_src, self.sample_rate = fn, n_src, sample_rate
        self.lengths: list[int] = []
        self.scale = nn.Parameter(torch.ones(()))  # so that it has a device, like a real model

    def forward(self, mix: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, C, T]
        assert not torch.is_grad_enabled()
        self.lengths.append(mix.shape[-1])
        return self.fn(mix * self.scale, len(self.lengths) - 1)


def identity(mix, call):
    return torch.stack([mix, torch.zeros_like(mix)], dim=1)


def band_split(cutoff_hz: float, rate: int, flip_odd_calls: bool, negate_second: bool = False):
    """[low band, high band] by an FFT mask; the order swaps on every other window when asked, and
    the second output comes out upside down when asked (SI-SNR training allows either sign)."""
    def fn(mix, call):
        spec = torch.fft.rfft(mix.double())
        freqs = torch.fft.rfftfreq(mix.shape[-1], 1 / rate)
        low = torch.fft.irfft(spec * (freqs < cutoff_hz), n=mix.shape[-1])
        high = torch.fft.irfft(spec * (freqs >= cutoff_hz), n=mix.shape[-1])
        out = [high, low] if flip_odd_calls and call % 2 else [low, high]
        if negate_second:
            out[1] = -out[1]
        return torch.stack(out, dim=1).float()
    return fn


def run(gen):
    """Drain a job: (its progress reports, its return value)."""
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as done:
            return reports, done.value


def _tone(freq, seconds, rate, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_overlap_add_of_an_identity_model_gives_the_input_back_in_bounded_windows():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(8000 * 3 + 123)).astype(np.float32)  # peak < 0.99
    model = StandIn(identity)
    reports, out = run(separate(model, audio, 8000, window_s=0.5, overlap=0.5))
    assert out.shape == (2, audio.size) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], audio, atol=1e-6)
    assert np.abs(out[1]).max() == 0
    assert max(model.lengths) == 4000 and len(model.lengths) == len(window_starts(audio.size, 4000, 0.5)) > 10
    fractions = [r.fraction for r in reports]
    assert all(isinstance(r, Progress) for r in reports) and fractions[-1] == 1.0
    assert fractions == sorted(fractions)


def test_a_short_input_is_one_window_and_the_real_model_is_used_as_is():
    torch.manual_seed(0)
    model = ConvTasNet(ConvTasNetConfig(N=16, L=4, B=8, H=12, Sc=6, P=3, X=3, R=2)).eval()
    audio = (0.1 * np.random.default_rng(1).standard_normal(3000)).astype(np.float32)
    _, out = run(separate(model, audio, 8000, window_s=1.0, peak=None))
    with torch.no_grad():
        want = model(torch.from_numpy(audio)).numpy()
    want *= np.sign(want @ audio)[:, None]                  # each voice in phase with the mixture
    np.testing.assert_allclose(out, want, atol=1e-5)
    # longer than a window: windows of the real model, finite output of the input's length
    long = np.tile(audio, 4)
    _, out = run(separate(model, long, 8000, window_s=0.5))
    assert out.shape == (2, long.size) and np.isfinite(out).all()
    assert model.training is False


def test_the_speaker_order_is_kept_across_windows_that_each_come_out_in_any_order():
    rate = 8000
    low, high = _tone(200, 3.0, rate), _tone(2500, 3.0, rate, amp=0.3)   # whole periods in every window
    aligned = StandIn(band_split(1000, rate, flip_odd_calls=True))
    _, out = run(separate(aligned, low + high, rate, window_s=0.5))
    assert len(aligned.lengths) >= 6                                       # so the order flipped often
    assert si_snr(torch.from_numpy(out[0]), torch.from_numpy(low)) > 40
    assert si_snr(torch.from_numpy(out[1]), torch.from_numpy(high)) > 40


def test_align_to_previous_picks_the_best_permutation_and_keeps_the_order_of_silence():
    rng = np.random.default_rng(0)
    prev = rng.standard_normal((3, 500)).astype(np.float32)
    cur = prev[[2, 0, 1]] * np.float32(0.5) + 0.05 * rng.standard_normal((3, 500)).astype(np.float32)
    perm = align_to_previous(cur, prev)
    assert perm.tolist() == [1, 2, 0]
    np.testing.assert_allclose(cur[perm], prev * 0.5, atol=0.3)
    assert align_to_previous(np.zeros((2, 100), np.float32), np.zeros((2, 100), np.float32)).tolist() == [0, 1]


def test_crossfade_weights_of_consecutive_windows_sum_to_one():
    window, length = 1000, 1000 + 7 * 500
    starts = window_starts(length, window, 0.5)
    assert starts == list(range(0, length - window + 1, 500))
    total = np.zeros(length)
    for a, w in zip(starts, crossfade_weights(starts, window, length)):
        assert (w > 0).all()
        total[a:a + len(w)] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # the last window is moved back to end at the input's end
    assert window_starts(2345, 1000, 0.5) == [0, 500, 1000, 1345] and window_starts(999, 1000, 0.5) == [0]


def test_resampling_16k_to_8k_and_back():
    rate = 16000
    audio = _tone(440, 2.0, rate) + _tone(1500, 2.0, rate, amp=0.2)
    model = StandIn(identity, sample_rate=8000)
    reports, out = run(separate(model, audio, rate, window_s=0.5))
    assert out.shape == (2, audio.size)
    assert max(model.lengths) == 4000                                      # the model saw 8 kHz windows
    assert any("Resampling" in r.text for r in reports)
    middle = slice(800, -800)                                              # away from the filter's edges
    np.testing.assert_allclose(out[0, middle], audio[middle], atol=2e-3)
    down = resample(audio, 16000, 8000)
    assert down.shape == (16000,) and down.dtype == np.float32
    np.testing.assert_allclose(resample(down, 8000, 16000)[middle], audio[middle], atol=2e-3)


def test_loud_output_is_scaled_by_one_gain_so_nothing_clips_and_quiet_output_is_left_alone():
    audio = _tone(300, 1.0, 8000, amp=0.9)
    louder = StandIn(lambda m, c: torch.stack([2 * m, m], dim=1))
    _, out = run(separate(louder, audio, 8000, window_s=0.5))
    assert np.abs(out).max() == pytest.approx(0.99, abs=1e-6)
    np.testing.assert_allclose(out[0], 2 * out[1], atol=1e-6)             # the relative levels stay
    _, quiet = run(separate(StandIn(identity), 0.1 * audio, 8000, window_s=0.5))
    np.testing.assert_allclose(quiet[0], 0.1 * audio, atol=1e-6)
    _, raw = run(separate(StandIn(lambda m, c: torch.stack([2 * m, m], dim=1)), audio, 8000, peak=None))
    assert np.abs(raw).max() == pytest.approx(1.8, abs=1e-3)


def test_closing_the_job_stops_it_between_windows():
    model = StandIn(identity)
    model.train()
    gen = separate(model, np.zeros(8000 * 4, np.float32), 8000, window_s=0.5)
    for _ in range(3):
        next(gen)
    gen.close()
    assert len(model.lengths) == 2 and model.training                      # no more windows; mode restored


@pytest.mark.parametrize("audio, kwargs, words", [
    (np.zeros((2, 100), np.float32), {}, "mono"),
    (np.zeros(0, np.float32), {}, "no samples"),
    (np.array([0.0, np.nan], np.float32), {}, "NaN"),
    (np.zeros(100, np.float32), {"overlap": 0.8}, "overlap"),
    (np.zeros(100, np.float32), {"overlap": 0.0}, "overlap"),
    (np.zeros(100, np.float32), {"window_s": 0.001}, "too short"),
])
def test_bad_input_is_refused(audio, kwargs, words):
    with pytest.raises(UserError, match=words):
        run(separate(StandIn(identity), audio, 8000, **kwargs))


def test_a_tensor_input_of_shape_1_t_is_accepted():
    audio = torch.linspace(-0.5, 0.5, 1000).unsqueeze(0)
    _, out = run(separate(StandIn(identity), audio, 8000))
    np.testing.assert_allclose(out[0], audio[0].numpy(), atol=1e-6)


def test_a_voice_keeps_one_polarity_across_windows_when_the_separator_hands_it_out_upside_down():
    rate = 8000
    low, high = _tone(200, 3.0, rate), _tone(2500, 3.0, rate, amp=0.3)
    # the second output is negated and the order swaps every other window: without a sign of its
    # own, each voice would flip polarity from window to window and cancel in the crossfades
    model = StandIn(band_split(1000, rate, flip_odd_calls=True, negate_second=True))
    _, out = run(separate(model, low + high, rate, window_s=0.5))
    assert len(model.lengths) >= 6
    for got, want in zip(out, (low, high)):
        assert si_snr(torch.from_numpy(got), torch.from_numpy(want)) > 40
        assert got @ want > 0                                   # in phase with the mixture's part
