"""Live separation: chunk by chunk through a causal Conv-TasNet, against the offline model.

The reference is ``model(whole)``: streamed outputs (every push, then flush) must match it,
for chunks of any size, 3 speakers, each mask nonlinearity, a ReLU encoder and a last block
without a residual conv. A float64 model pins the match to ~1e-12 (the same arithmetic, only
summed in another order); float32 to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.errors import UserError
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig
from playground.ml.separation.streaming import StreamingSeparator

torch.set_num_threads(1)

TOL = 1e-5
CHUNKS = [1, 7, 8, 100, 333, 0, 3, 4, 5, 16, 61, 0, 2]


def _tiny_model(seed: int = 0, last_residual: bool = True, **overrides) -> ConvTasNet:
    """A few thousand parameters; norm gammas/betas and PReLU slopes randomised so they matter."""
    values = dict(N=16, L=8, B=8, H=16, Sc=8, P=3, X=3, R=2, n_src=2, norm="cLN", causal=True)
    values.update(overrides)
    torch.manual_seed(seed)
    model = ConvTasNet(ConvTasNetConfig(**values), last_residual=last_residual)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("beta"):
                p.copy_(0.2 * torch.randn_like(p))
            elif ".act" in name or "out_act" in name:
                p.copy_(0.25 + 0.2 * torch.randn_like(p))
    return model.eval()


def _audio(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.3


def _stream(sep: StreamingSeparator, audio: np.ndarray, sizes: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Push audio in chunks of the given sizes (cycled), then flush; return every push's output and the flush."""
    outs, pos, i = [], 0, 0
    while pos < audio.size:
        size = sizes[i % len(sizes)]
        outs.append(sep.push(audio[pos:pos + size]))
        pos += size
        i += 1
    return outs, sep.flush()


def _offline(model: ConvTasNet, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(audio).to(next(model.parameters()).dtype)).numpy()


def _check_against_offline(model: ConvTasNet, audio: np.ndarray, sizes: list[int], tol: float = TOL) -> float:
    sep = StreamingSeparator(model)
    outs, rest = _stream(sep, audio, sizes)
    streamed = np.concatenate([*outs, rest], axis=1)
    expected = _offline(model, audio)
    assert streamed.shape == expected.shape == (model.n_src, audio.size)
    assert all(o.shape[0] == model.n_src and o.dtype == expected.dtype for o in [*outs, rest])
    diff = float(np.abs(streamed - expected).max(initial=0.0))
    assert diff < tol, diff
    return diff


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunks_equal_offline(seed):
    model = _tiny_model(seed)
    rng = np.random.default_rng(seed)
    sizes = list(rng.permutation(CHUNKS))
    _check_against_offline(model, _audio(1500 + seed * 37, seed), sizes)


@pytest.mark.parametrize("sizes", [[1], [4], [8], [3], [1000]])
def test_fixed_chunk_sizes(sizes):
    _check_against_offline(_tiny_model(), _audio(613), sizes)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 8, 9, 12, 13, 16, 17])
def test_short_recordings_and_the_padded_last_frame(length):
    """Lengths around the frame and hop sizes: the flush pads exactly as the offline model does."""
    model = _tiny_model()
    for sizes in ([1], [5], [length or 1]):
        _check_against_offline(model, _audio(length), sizes)


def test_float64_matches_to_rounding():
    _check_against_offline(_tiny_model().double(), _audio(1200), CHUNKS, tol=1e-11)


@pytest.mark.parametrize("overrides", [
    {"n_src": 3},
    {"mask_act": "relu"},
    {"mask_act": "softmax", "n_src": 3},
    {"encoder_act": "relu"},
    {"P": 2, "L": 4},
    {"P": 1},
])
def test_variants(overrides):
    _check_against_offline(_tiny_model(**overrides), _audio(900), CHUNKS)


def test_last_block_without_residual():
    model = _tiny_model(last_residual=False)
    assert model.separator.blocks[-1].res_conv is None
    _check_against_offline(model, _audio(700), CHUNKS)


def test_outputs_never_change_with_the_future():
    """What a push returned is final: offline on the prefix plus any future agrees with it."""
    model = _tiny_model()
    prefix = _audio(517, seed=3)
    sep = StreamingSeparator(model)
    got = np.concatenate([sep.push(prefix[i:i + 50]) for i in range(0, prefix.size, 50)], axis=1)
    assert got.shape[1] == (prefix.size // model.config.stride - 1) * model.config.stride
    for seed in (4, 5):
        future = _audio(300, seed=seed) * 3
        expected = _offline(model, np.concatenate([prefix, future]))[:, :got.shape[1]]
        assert np.abs(got - expected).max() < TOL
    # And two streams that share the prefix return the same samples for it.
    other = StreamingSeparator(model)
    first = [other.push(prefix)]
    first.append(other.push(_audio(200, seed=9)))
    assert np.abs(np.concatenate(first, axis=1)[:, :got.shape[1]] - got).max() < TOL


def test_latency():
    """Output sample t is returned by the push that brings the input to floor(t/S) S + L samples."""
    model = _tiny_model()
    sep = StreamingSeparator(model)
    L, S = model.config.L, model.config.stride
    assert sep.latency_samples == L
    assert sep.latency_s == pytest.approx(L / model.sample_rate)
    ready_at = []                       # for each output sample, how many samples were in
    for n, sample in enumerate(_audio(100), start=1):
        out = sep.push(sample[None])
        ready_at += [n] * out.shape[1]
        assert sep.last_compute_s >= 0
    assert ready_at[0] == sep.latency_samples            # the first output after exactly L samples
    assert ready_at == [(t // S) * S + L for t in range(len(ready_at))]
    assert max(n - t for t, n in enumerate(ready_at)) == sep.latency_samples
    assert min(n - t for t, n in enumerate(ready_at)) == S + 1
    assert sep.samples_in == 100 and sep.samples_out == len(ready_at)


def test_partial_input_waits_then_empty_outputs():
    model = _tiny_model()
    sep = StreamingSeparator(model)
    assert sep.push(np.zeros(0, np.float32)).shape == (2, 0)
    assert sep.push(_audio(model.config.L - 1)).shape == (2, 0)
    assert sep.push(_audio(1)).shape == (2, model.config.stride)


def test_reset_and_flush_start_a_new_recording():
    model = _tiny_model()
    audio = _audio(300)
    expected = _offline(model, audio)
    sep = StreamingSeparator(model)
    sep.push(_audio(123, seed=7))
    sep.reset()                                  # forget that recording
    assert sep.samples_in == sep.samples_out == 0
    for _ in range(2):                           # the second time: right after the first's flush
        outs, rest = _stream(sep, audio, [37])
        assert sep.samples_in == 0
        assert np.abs(np.concatenate([*outs, rest], axis=1) - expected).max() < TOL


def test_non_causal_model_refused():
    with pytest.raises(UserError, match="gLN looks at the future"):
        StreamingSeparator(ConvTasNet(ConvTasNetConfig(N=8, L=4, B=4, H=8, Sc=4, X=2, R=1)))
    with pytest.raises(UserError, match="causal"):
        StreamingSeparator(ConvTasNet(ConvTasNetConfig(N=8, L=4, B=4, H=8, Sc=4, X=2, R=1, norm="cLN")))


def test_bad_input_shape_refused():
    sep = StreamingSeparator(_tiny_model())
    with pytest.raises(UserError, match="one channel"):
        sep.push(np.zeros((2, 10), np.float32))
