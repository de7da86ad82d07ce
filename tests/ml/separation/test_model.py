"""Conv-TasNet: shapes, the paper's parameter count, causality, the two norms, and the config's checks."""

from __future__ import annotations

import pytest
import torch

from playground.errors import UserError
from playground.ml.separation.model import (
    EPS,
    ConvTasNet,
    ConvTasNetConfig,
    CumulativeLayerNorm,
    GlobalLayerNorm,
    grow,
    parameter_count,
    widen,
)

TINY = dict(N=16, L=4, B=8, H=12, Sc=6, P=3, X=3, R=2)


def test_the_papers_config_has_5050545_parameters_and_a_receptive_field_of_153_s():
    with torch.device("meta"):
        model = ConvTasNet(ConvTasNetConfig())
    assert parameter_count(model) == 5_050_545
    assert ConvTasNetConfig().receptive_field_s() == pytest.approx(1.532, abs=1e-3)
    # torchaudio's conv_tasnet_base has no residual output in its last block: 512*128 + 128 fewer
    with torch.device("meta"):
        assert parameter_count(ConvTasNet(ConvTasNetConfig(), last_residual=False)) == 5_050_545 - 65_664


@pytest.mark.parametrize("length", [1, 3, 4, 37, 64, 101])
@pytest.mark.parametrize("n_src", [2, 3])
def test_output_shapes_match_the_input_length(length, n_src):
    torch.manual_seed(0)
    model = ConvTasNet(ConvTasNetConfig(n_src=n_src, **TINY)).eval()
    mix = torch.randn(2, length)
    out, w, masks = model(mix, return_masks=True)
    assert out.shape == (2, n_src, length)
    frames = w.shape[-1]
    assert (frames - 1) * 2 + 4 >= length  # whole frames (stride 2, L 4) cover every sample
    assert masks.shape == (2, n_src, 16, frames)
    assert model(mix[0]).shape == (n_src, length)  # a single mixture [T] -> [C, T]


def test_softmax_masks_sum_to_one_and_sigmoid_masks_lie_in_0_1():
    torch.manual_seed(0)
    mix = torch.randn(1, 50)
    soft = ConvTasNet(ConvTasNetConfig(mask_act="softmax", **TINY)).eval()
    _, _, masks = soft(mix, return_masks=True)
    assert torch.allclose(masks.sum(dim=1), torch.ones_like(masks[:, 0]), atol=1e-5)
    sig = ConvTasNet(ConvTasNetConfig(mask_act="sigmoid", **TINY)).eval()
    _, _, masks = sig(mix, return_masks=True)
    assert masks.min() >= 0 and masks.max() <= 1
    # with all masks summing to one and a linear decoder, the sources add up to the decoded mixture
    out, w, _ = soft(mix, return_masks=True)
    whole = soft.decoder(w)[..., :50]
    assert torch.allclose(out.sum(dim=1), whole[:, 0], atol=1e-5)


def test_the_causal_model_uses_only_the_past():
    """An output sample n depends on input samples up to n + L - 1 (the frame that holds n), never later."""
    torch.manual_seed(0)
    cfg = ConvTasNetConfig(norm="cLN", causal=True, **TINY)
    model = ConvTasNet(cfg).eval()
    mix = torch.randn(1, 60, requires_grad=True)
    n = 25
    model(mix)[0, :, n].sum().backward()
    grad = mix.grad[0]
    assert grad[n + cfg.L:].abs().max() == 0
    assert grad[: n + 1].abs().max() > 0
    # the non-causal model looks ahead
    mix.grad = None
    ConvTasNet(ConvTasNetConfig(**TINY)).eval()(mix)[0, :, n].sum().backward()
    assert mix.grad[0, n + cfg.L:].abs().max() > 0


def test_cumulative_layer_norm_matches_its_formula_and_ignores_the_future():
    torch.manual_seed(0)
    norm = CumulativeLayerNorm(5)
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(1, 5, 1))
        norm.beta.copy_(torch.randn(1, 5, 1))
    x = torch.randn(2, 5, 7, dtype=torch.float64)
    y = norm.double()(x)
    for k in range(7):
        past = x[:, :, : k + 1]
        mean = past.mean(dim=(1, 2), keepdim=True)
        var = ((past - mean) ** 2).mean(dim=(1, 2), keepdim=True)
        want = norm.gamma * (x[:, :, k:k + 1] - mean) / torch.sqrt(var + EPS) + norm.beta
        assert torch.allclose(y[:, :, k:k + 1], want, atol=1e-9)
    x2 = x.clone().requires_grad_(True)
    norm(x2)[:, :, 3].sum().backward()
    assert x2.grad[:, :, 4:].abs().max() == 0 and x2.grad[:, :, :4].abs().max() > 0


def test_global_layer_norm_matches_its_formula():
    torch.manual_seed(0)
    norm = GlobalLayerNorm(4).double()
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(1, 4, 1))
        norm.beta.copy_(torch.randn(1, 4, 1))
    x = torch.randn(3, 4, 9, dtype=torch.float64) * 3 + 1
    y = norm(x)
    for b in range(3):
        mean = x[b].mean()
        var = ((x[b] - mean) ** 2).mean()
        want = norm.gamma[0] * (x[b] - mean) / torch.sqrt(var + EPS) + norm.beta[0]
        assert torch.allclose(y[b], want, atol=1e-9)
    # it is GroupNorm with one group (torchaudio's gLN)
    group = torch.nn.GroupNorm(1, 4, eps=EPS).double()
    with torch.no_grad():
        group.weight.copy_(norm.gamma.view(-1))
        group.bias.copy_(norm.beta.view(-1))
    assert torch.allclose(group(x), y, atol=1e-9)


@pytest.mark.parametrize("norm_class", [GlobalLayerNorm, CumulativeLayerNorm])
def test_layer_norms_in_float32_stay_close_to_float64_with_an_offset(norm_class):
    # the norms take the variance as E[x^2] - mean^2 (one pass fewer); an offset ten times the spread
    # must not cost float32 more than a thousandth
    torch.manual_seed(1)
    norm = norm_class(16)
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(1, 16, 1))
        norm.beta.copy_(torch.randn(1, 16, 1))
    x = torch.randn(2, 16, 500, dtype=torch.float64) * 2 + 20
    want = norm.double()(x)
    got = norm.float()(x.float())
    assert (got.double() - want).abs().max() < 1e-3


def test_config_round_trips_and_refuses_bad_values():
    cfg = ConvTasNetConfig(n_src=3, norm="cLN", causal=True, **TINY)
    assert ConvTasNetConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        ({"N": 0}, "at least 1"),
        ({"L": 5}, "even"),
        ({"norm": "BN"}, "norm must be"),
        ({"mask_act": "tanh"}, "mask_act"),
        ({"encoder_act": "gelu"}, "encoder_act"),
        ({"causal": True}, "cumulative"),        # causal with gLN
        ({"sample_rate": 100}, "sample rate"),
        ({"N": 3.5}, "whole number"),
        ({"N": True}, "whole number"),
        ({"causal": 1}, "true or false"),
        ({"norm": 1}, "text"),
        ({"speakers": 2}, "Unknown"),
    ]
    for values, words in bad:
        with pytest.raises(UserError, match=words):
            ConvTasNetConfig.from_dict(values)


@pytest.mark.parametrize("causal", [False, True])
def test_a_grown_model_computes_what_the_small_one_did_then_can_learn_more(causal):
    torch.manual_seed(0)
    norm = "cLN" if causal else "gLN"
    small = ConvTasNet(ConvTasNetConfig(**TINY, norm=norm, causal=causal)).eval()
    for p in small.parameters():                      # make every weight matter (PReLU, norms, biases)
        p.data.add_(0.1 * torch.randn_like(p))
    big = grow(small, ConvTasNetConfig(**{**TINY, "X": 5, "R": 3}, norm=norm, causal=causal)).eval()
    assert len(big.separator.blocks) == 15 and parameter_count(big) > parameter_count(small)
    x = torch.randn(2, 400)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=1e-6)
    # The old blocks keep their dilation: small's repeat 1, block 2 (d=4) is big's block 1*5+2.
    torch.testing.assert_close(big.separator.blocks[7].depthwise.weight, small.separator.blocks[5].depthwise.weight)
    assert big.separator.blocks[7].depthwise.dilation == small.separator.blocks[5].depthwise.dilation == (4,)
    # New blocks start silent but are trained: their output convolutions get a gradient.
    new = big.separator.blocks[3]
    assert not new.res_conv.weight.any() and not new.skip_conv.weight.any()
    big.train()
    big(x).square().mean().backward()
    assert new.skip_conv.weight.grad.abs().sum() > 0


def test_a_torchaudio_style_small_model_without_a_last_residual_grows_exactly_too():
    torch.manual_seed(2)
    small = ConvTasNet(ConvTasNetConfig(**TINY), last_residual=False).eval()
    assert small.separator.blocks[-1].res_conv is None
    big = grow(small, ConvTasNetConfig(**{**TINY, "X": 4})).eval()
    # small's last block (repeat 1, d=4) sits mid-stack now: its new residual output starts at zero
    assert not big.separator.blocks[6].res_conv.weight.any()
    x = torch.randn(1, 300)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=1e-6)


def test_a_model_grows_only_in_size():
    small = ConvTasNet(ConvTasNetConfig(**TINY))
    with pytest.raises(UserError, match="L"):
        grow(small, ConvTasNetConfig(**{**TINY, "L": 8}))
    with pytest.raises(UserError, match="shrink"):
        grow(small, ConvTasNetConfig(**{**TINY, "X": 2}))
    with pytest.raises(UserError, match="shrink: B 8 -> 6"):
        grow(small, ConvTasNetConfig(**{**TINY, "B": 6}))
    with pytest.raises(UserError, match="whole multiple of 12"):      # H is read whole by gLN
        grow(small, ConvTasNetConfig(**{**TINY, "H": 18}))
    with pytest.raises(UserError, match="Nothing to grow"):
        grow(small, ConvTasNetConfig(**TINY))
    with pytest.raises(UserError, match="X"):                          # widen leaves depth to grow
        widen(small, ConvTasNetConfig(**{**TINY, "X": 4}))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("last_residual", [True, False])
def test_a_widened_model_computes_what_the_narrow_one_did_and_its_copies_learn_apart(causal, last_residual):
    torch.manual_seed(3)
    norm = "cLN" if causal else "gLN"
    small = ConvTasNet(ConvTasNetConfig(**TINY, norm=norm, causal=causal), last_residual=last_residual).eval()
    for p in small.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    wide = ConvTasNetConfig(**{**TINY, "N": 48, "B": 11, "H": 24, "Sc": 9}, norm=norm, causal=causal)
    big = grow(small, ConvTasNetConfig(**{**wide.to_dict(), "X": 4})).eval()       # wider and deeper at once
    assert big.config.N == 48 and len(big.separator.blocks) == 8
    x = torch.randn(2, 300)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=1e-5)
    # Channel 16 + 3 copies channel 3 of the encoder; what reads them (the decoder) is split unevenly.
    w = widen(small, wide)
    torch.testing.assert_close(w.encoder.weight[19], small.encoder.weight[3])
    torch.testing.assert_close(w.decoder.weight[[3, 19, 35]].sum(0), small.decoder.weight[3])
    assert not torch.allclose(w.decoder.weight[3], w.decoder.weight[19])
    # ... so one step of training moves the copies apart.
    w.train()
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    w(x).square().mean().backward()
    opt.step()
    assert not torch.allclose(w.encoder.weight[3], w.encoder.weight[19])
    # Each speaker's mask over the new channels copies its own old channel, not the other speaker's.
    with torch.no_grad():
        _, _, masks_small = small(x, return_masks=True)
        _, _, masks_wide = widen(small, wide)(x, return_masks=True)
    torch.testing.assert_close(masks_wide[:, :, 16 + 5], masks_small[:, :, 5], rtol=0, atol=1e-5)


