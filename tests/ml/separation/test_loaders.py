"""Opening separators: asteroid checkpoints, torchaudio state dicts, our own files, and refusals.

No downloaded file is used. The asteroid and torchaudio fixtures are written here with
those libraries' key names and shapes, from tiny configs, and each is checked against a
forward pass written here from that library's own formulas (asteroid: no encoder padding,
cropped frames, [C] norm gains; torchaudio: GroupNorm(1), padding = stride, no residual
output in the last block).
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from playground.errors import BadFileError
from playground.ml.checkpoints import LoadedModel
from playground.ml.separation import loaders
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig, parameter_count
from playground.progress import Progress

TINY = dict(n_src=2, N=16, L=4, B=8, H=12, Sc=6, P=3, X=3, R=2)


# -- asteroid: its key names and shapes, and its forward ---------------------------------------------
def asteroid_state_dict(cfg: ConvTasNetConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3, mean=0.0):
        return torch.randn(*shape, generator=g) * scale + mean

    N, L, B, H, Sc, P = cfg.N, cfg.L, cfg.B, cfg.H, cfg.Sc, cfg.P
    sd = {
        "encoder.filterbank._filters": r(N, 1, L),
        "decoder.filterbank._filters": r(N, 1, L),
        "masker.bottleneck.0.gamma": r(N, scale=0.1, mean=1.0),
        "masker.bottleneck.0.beta": r(N, scale=0.1),
        "masker.bottleneck.1.weight": r(B, N, 1),
        "masker.bottleneck.1.bias": r(B, scale=0.1),
    }
    depthwise = "shared_block.3.0" if cfg.causal else "shared_block.3"
    for i in range(cfg.X * cfg.R):
        p = f"masker.TCN.{i}."
        sd.update({
            p + "shared_block.0.weight": r(H, B, 1), p + "shared_block.0.bias": r(H, scale=0.1),
            p + "shared_block.1.weight": r(1, scale=0.05, mean=0.25),
            p + "shared_block.2.gamma": r(H, scale=0.1, mean=1.0), p + "shared_block.2.beta": r(H, scale=0.1),
            p + depthwise + ".weight": r(H, 1, P), p + depthwise + ".bias": r(H, scale=0.1),
            p + "shared_block.4.weight": r(1, scale=0.05, mean=0.25),
            p + "shared_block.5.gamma": r(H, scale=0.1, mean=1.0), p + "shared_block.5.beta": r(H, scale=0.1),
            p + "res_conv.weight": r(B, H, 1), p + "res_conv.bias": r(B, scale=0.1),
            p + "skip_conv.weight": r(Sc, H, 1), p + "skip_conv.bias": r(Sc, scale=0.1),
        })
    sd["masker.mask_net.0.weight"] = r(1, scale=0.05, mean=0.25)
    sd["masker.mask_net.1.weight"] = r(cfg.n_src * N, Sc, 1)
    sd["masker.mask_net.1.bias"] = r(cfg.n_src * N, scale=0.1)
    return sd


def asteroid_args(cfg: ConvTasNetConfig) -> dict:
    """model_args as asteroid's get_model_args() writes them (filterbank config + masker config)."""
    return {"fb_name": "FreeFB", "n_filters": cfg.N, "kernel_size": cfg.L, "stride": cfg.L // 2,
            "sample_rate": float(cfg.sample_rate), "in_chan": cfg.N, "out_chan": cfg.N, "bn_chan": cfg.B,
            "hid_chan": cfg.H, "skip_chan": cfg.Sc, "conv_kernel_size": cfg.P, "n_blocks": cfg.X,
            "n_repeats": cfg.R, "n_src": cfg.n_src, "norm_type": "cgLN" if cfg.norm == "cLN" else "gLN",
            "mask_act": cfg.mask_act, "causal": cfg.causal,
            "encoder_activation": None if cfg.encoder_act == "linear" else cfg.encoder_act}


def asteroid_file(cfg: ConvTasNetConfig, seed: int = 0) -> dict:
    return {"model_name": "ConvTasNet", "state_dict": asteroid_state_dict(cfg, seed), "model_args": asteroid_args(cfg),
            "infos": {"software_versions": {"torch_version": "2.0", "asteroid_version": "0.7.0"},
                      "recipe_name": "test", "license_note": "none"}}


def _gln(x, gamma, beta):
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(1, 2), keepdim=True)
    return gamma[None, :, None] * (x - mean) / torch.sqrt(var + 1e-8) + beta[None, :, None]


def _cum_ln(x, gamma, beta):
    out = torch.empty_like(x)
    for k in range(x.shape[2]):
        past = x[:, :, : k + 1]
        mean = past.mean(dim=(1, 2), keepdim=True)
        var = (past ** 2).mean(dim=(1, 2), keepdim=True) - mean ** 2   # asteroid's CumLN: E[x^2] - mean^2
        out[:, :, k:k + 1] = gamma[None, :, None] * (x[:, :, k:k + 1] - mean) / torch.sqrt(var + 1e-8) \
            + beta[None, :, None]
    return out


def _masks(scores, kind):
    return {"sigmoid": torch.sigmoid, "relu": F.relu, "softmax": lambda s: torch.softmax(s, dim=1)}[kind](scores)


def asteroid_reference(sd, args, mix):
    """asteroid's ConvTasNet forward, from its code's formulas, on its state dict."""
    s, P, H, X = args["stride"], args["conv_kernel_size"], args["hid_chan"], args["n_blocks"]
    N, C, causal = args["n_filters"], args["n_src"], args["causal"]
    norm = _cum_ln if args["norm_type"] == "cgLN" else _gln
    w = F.conv1d(mix[:, None], sd["encoder.filterbank._filters"], stride=s)        # no padding
    if args["encoder_activation"] == "relu":
        w = F.relu(w)
    x = F.conv1d(norm(w, sd["masker.bottleneck.0.gamma"], sd["masker.bottleneck.0.beta"]),
                 sd["masker.bottleneck.1.weight"], sd["masker.bottleneck.1.bias"])
    skips = 0
    for i in range(X * args["n_repeats"]):
        d, p = 2 ** (i % X), f"masker.TCN.{i}."
        y = F.conv1d(x, sd[p + "shared_block.0.weight"], sd[p + "shared_block.0.bias"])
        y = norm(F.prelu(y, sd[p + "shared_block.1.weight"]), sd[p + "shared_block.2.gamma"],
                 sd[p + "shared_block.2.beta"])
        if causal:  # full padding on both sides, then the look-ahead chopped off (_Chop1d)
            pad = (P - 1) * d
            y = F.conv1d(y, sd[p + "shared_block.3.0.weight"], sd[p + "shared_block.3.0.bias"], padding=pad,
                         dilation=d, groups=H)[..., :-pad]
        else:
            y = F.conv1d(y, sd[p + "shared_block.3.weight"], sd[p + "shared_block.3.bias"],
                         padding=(P - 1) * d // 2, dilation=d, groups=H)
        y = norm(F.prelu(y, sd[p + "shared_block.4.weight"]), sd[p + "shared_block.5.gamma"],
                 sd[p + "shared_block.5.beta"])
        x = x + F.conv1d(y, sd[p + "res_conv.weight"], sd[p + "res_conv.bias"])
        skips = skips + F.conv1d(y, sd[p + "skip_conv.weight"], sd[p + "skip_conv.bias"])
    scores = F.conv1d(F.prelu(skips, sd["masker.mask_net.0.weight"]), sd["masker.mask_net.1.weight"],
                      sd["masker.mask_net.1.bias"])
    masks = _masks(scores.view(mix.shape[0], C, N, -1), args["mask_act"])
    masked = (w[:, None] * masks).reshape(-1, N, w.shape[-1])
    out = F.conv_transpose1d(masked, sd["decoder.filterbank._filters"], stride=s).view(mix.shape[0], C, -1)
    return F.pad(out, (0, mix.shape[-1] - out.shape[-1]))                         # pad_x_to_y


def _double(sd):
    return {k: v.double() for k, v in sd.items()}


@pytest.mark.parametrize("variant", [
    dict(),
    dict(norm="cLN", causal=True),
    dict(mask_act="relu", encoder_act="relu"),
    dict(mask_act="softmax", n_src=3, norm="cLN"),
])
def test_an_asteroid_checkpoint_loads_strictly_and_computes_what_asteroid_computes(variant):
    cfg = ConvTasNetConfig(**{**TINY, **variant})
    obj = asteroid_file(cfg)
    model = loaders.from_asteroid(obj)
    assert model.config == cfg
    torch.manual_seed(1)
    mix = torch.randn(2, 64, dtype=torch.float64)          # (64 - 4) a multiple of the stride: the framings agree
    want = asteroid_reference(_double(obj["state_dict"]), obj["model_args"], mix)
    got = model.double()(mix)
    assert got.shape == want.shape == (2, cfg.n_src, 64)
    assert torch.allclose(got, want, atol=1e-9), (got - want).abs().max()
    # on a length that does not fall on whole frames, ours has one more frame (asteroid zero-fills its tail)
    odd = torch.randn(1, 65, dtype=torch.float64)
    assert model(odd).shape == asteroid_reference(_double(obj["state_dict"]), obj["model_args"], odd).shape


def test_asteroid_model_args_missing_sample_rate_means_8000_and_a_float_rate_is_read_as_whole():
    cfg = ConvTasNetConfig(**TINY)
    obj = asteroid_file(cfg)
    del obj["model_args"]["sample_rate"]
    assert loaders.from_asteroid(obj).config.sample_rate == 8000
    obj["model_args"]["sample_rate"] = 16000.0
    assert loaders.from_asteroid(obj).config.sample_rate == 16000
    # settings left out take asteroid's ConvTasNet defaults (stride 8 only fits kernel 16)
    args = {"n_src": 2, "n_filters": 16, "kernel_size": 16, "bn_chan": 8, "hid_chan": 12, "skip_chan": 6,
            "n_blocks": 3, "n_repeats": 2}
    assert loaders.asteroid_config(args) == ConvTasNetConfig(**{**TINY, "L": 16})


@pytest.mark.parametrize("change, words", [
    (dict(model_name="DPRNNTasNet"), "DPRNNTasNet"),
    (dict(stride=3), "stride of 3"),
    (dict(kernel_size=6), "stride of 2"),
    (dict(norm_type="cLN"), "channel-wise"),
    (dict(norm_type="gLN", causal=True), "channel-wise"),
    (dict(norm_type="BN"), "only gLN and cgLN"),
    (dict(fb_name="stft"), "'stft' filterbank"),
    (dict(skip_chan=0), "without skip connections"),
    (dict(out_chan=32), "out_chan"),
    (dict(mask_act="tanh"), "'tanh' masks"),
    (dict(encoder_activation="gelu"), "encoder activation"),
    (dict(n_blocks="8"), "not a whole number"),
    (dict(causal="yes"), "not true or false"),
    (dict(n_blocks=4), "4 x 2 blocks but its weights hold 6"),
    (dict(sample_rate=500), "sample rate"),
])
def test_asteroid_settings_that_cannot_be_loaded_are_refused_with_a_reason(change, words):
    obj = asteroid_file(ConvTasNetConfig(**TINY))
    if "model_name" in change:
        obj.update(change)
    else:
        obj["model_args"].update(change)
    with pytest.raises(BadFileError, match=words) as info:
        loaders.from_asteroid(obj)
    assert "\n" not in str(info.value)


def test_asteroid_weights_that_do_not_fit_are_refused_in_the_files_names():
    cfg = ConvTasNetConfig(**TINY)
    obj = asteroid_file(cfg)
    obj["state_dict"]["masker.extra.weight"] = torch.zeros(3)
    with pytest.raises(BadFileError, match=r"1 unexpected \(first 'masker.extra.weight'\)"):
        loaders.from_asteroid(obj)
    obj = asteroid_file(cfg)
    del obj["state_dict"]["masker.TCN.4.skip_conv.bias"]
    with pytest.raises(BadFileError, match=r"1 missing \(first 'masker.TCN.4.skip_conv.bias'\)"):
        loaders.from_asteroid(obj)
    obj = asteroid_file(cfg)
    obj["state_dict"]["masker.TCN.1.res_conv.weight"] = torch.zeros(8, 13, 1)
    with pytest.raises(BadFileError, match=r"'masker.TCN.1.res_conv.weight' is 8x13x1 in the file but 8x12x1"):
        loaders.from_asteroid(obj)
    obj = asteroid_file(cfg)
    obj["state_dict"]["masker.bottleneck.1.bias"] = torch.zeros(8, dtype=torch.int64)
    with pytest.raises(BadFileError, match="not floating point"):
        loaders.from_asteroid(obj)
    obj = asteroid_file(cfg)
    obj["state_dict"]["masker.bottleneck.1.bias"] = [0.0] * 8
    with pytest.raises(BadFileError, match="is a list, not a tensor"):
        loaders.from_asteroid(obj)
    for key in ("model_args", "state_dict", "model_name"):
        obj = asteroid_file(cfg)
        del obj[key]
        with pytest.raises(BadFileError, match=f"no '{key}'"):
            loaders.from_asteroid(obj)


def test_settings_that_claim_a_huge_network_are_refused_without_allocating_it():
    obj = asteroid_file(ConvTasNetConfig(**TINY))
    obj["model_args"].update(n_filters=2_000_000, in_chan=None, out_chan=None, hid_chan=3_000_000)
    start = time.perf_counter()
    with pytest.raises(BadFileError, match="in the file but"):
        loaders.from_asteroid(obj)       # on a real device: 2e6 x 3e6 weights would be terabytes
    assert time.perf_counter() - start < 1.0


# -- torchaudio ----------------------------------------------------------------------------------------
def torchaudio_state_dict(N=16, L=4, B=8, H=12, P=3, X=3, R=2, n_src=2, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3, mean=0.0):
        return torch.randn(*shape, generator=g) * scale + mean

    sd = {"encoder.weight": r(N, 1, L), "decoder.weight": r(N, 1, L),
          "mask_generator.input_norm.weight": r(N, scale=0.1, mean=1.0),
          "mask_generator.input_norm.bias": r(N, scale=0.1),
          "mask_generator.input_conv.weight": r(B, N, 1), "mask_generator.input_conv.bias": r(B, scale=0.1)}
    for i in range(X * R):
        p = f"mask_generator.conv_layers.{i}."
        sd.update({
            p + "conv_layers.0.weight": r(H, B, 1), p + "conv_layers.0.bias": r(H, scale=0.1),
            p + "conv_layers.1.weight": r(1, scale=0.05, mean=0.25),
            p + "conv_layers.2.weight": r(H, scale=0.1, mean=1.0), p + "conv_layers.2.bias": r(H, scale=0.1),
            p + "conv_layers.3.weight": r(H, 1, P), p + "conv_layers.3.bias": r(H, scale=0.1),
            p + "conv_layers.4.weight": r(1, scale=0.05, mean=0.25),
            p + "conv_layers.5.weight": r(H, scale=0.1, mean=1.0), p + "conv_layers.5.bias": r(H, scale=0.1),
            p + "skip_out.weight": r(B, H, 1), p + "skip_out.bias": r(B, scale=0.1),
        })
        if i < X * R - 1:  # the last ConvBlock has no residual output
            sd[p + "res_out.weight"] = r(B, H, 1)
            sd[p + "res_out.bias"] = r(B, scale=0.1)
    sd["mask_generator.output_prelu.weight"] = r(1, scale=0.05, mean=0.25)
    sd["mask_generator.output_conv.weight"] = r(n_src * N, B, 1)
    sd["mask_generator.output_conv.bias"] = r(n_src * N, scale=0.1)
    return sd


def torchaudio_reference(sd, X, mix, mask_act="relu"):
    """torchaudio's ConvTasNet forward, from its code's formulas, on its state dict."""
    N, _, L = sd["encoder.weight"].shape
    s = L // 2
    t = mix.shape[-1]
    rest = t - (t // s) * s
    pad = s - rest if rest else 0                                    # _align_num_frames_with_strides
    w = F.conv1d(F.pad(mix, (0, pad))[:, None], sd["encoder.weight"], stride=s, padding=s)
    x = F.group_norm(w, 1, sd["mask_generator.input_norm.weight"], sd["mask_generator.input_norm.bias"], eps=1e-8)
    x = F.conv1d(x, sd["mask_generator.input_conv.weight"], sd["mask_generator.input_conv.bias"])
    H = sd["mask_generator.conv_layers.0.conv_layers.0.weight"].shape[0]
    skips, i = 0, 0
    while f"mask_generator.conv_layers.{i}.skip_out.weight" in sd:
        p, d = f"mask_generator.conv_layers.{i}.", 2 ** (i % X)
        y = F.conv1d(x, sd[p + "conv_layers.0.weight"], sd[p + "conv_layers.0.bias"])
        y = F.group_norm(F.prelu(y, sd[p + "conv_layers.1.weight"]), 1, sd[p + "conv_layers.2.weight"],
                         sd[p + "conv_layers.2.bias"], eps=1e-8)
        y = F.conv1d(y, sd[p + "conv_layers.3.weight"], sd[p + "conv_layers.3.bias"], padding=d, dilation=d, groups=H)
        y = F.group_norm(F.prelu(y, sd[p + "conv_layers.4.weight"]), 1, sd[p + "conv_layers.5.weight"],
                         sd[p + "conv_layers.5.bias"], eps=1e-8)
        if p + "res_out.weight" in sd:
            x = x + F.conv1d(y, sd[p + "res_out.weight"], sd[p + "res_out.bias"])
        skips = skips + F.conv1d(y, sd[p + "skip_out.weight"], sd[p + "skip_out.bias"])
        i += 1
    scores = F.conv1d(F.prelu(skips, sd["mask_generator.output_prelu.weight"]),
                      sd["mask_generator.output_conv.weight"], sd["mask_generator.output_conv.bias"])
    C = scores.shape[1] // N
    masks = _masks(scores, mask_act).view(mix.shape[0], C, N, -1)
    masked = (masks * w[:, None]).view(-1, N, w.shape[-1])
    out = F.conv_transpose1d(masked, sd["decoder.weight"], stride=s, padding=s).view(mix.shape[0], C, -1)
    return out[..., :t]


@pytest.mark.parametrize("length", [37, 40, 41])
def test_a_torchaudio_state_dict_loads_and_computes_what_torchaudio_computes(length):
    sd = torchaudio_state_dict()
    model = loaders.from_torchaudio(sd, X=3)
    assert model.config == ConvTasNetConfig(**{**TINY, "Sc": 8}, mask_act="relu")
    assert model.separator.blocks[-1].res_conv is None and model.separator.blocks[-2].res_conv is not None
    torch.manual_seed(2)
    mix = torch.randn(2, length, dtype=torch.float64)
    want = torchaudio_reference(_double(sd), 3, mix)
    got = loaders.torchaudio_framing(model.double(), mix)
    assert got.shape == want.shape == (2, 2, length)
    assert torch.allclose(got, want, atol=1e-9), (got - want).abs().max()
    # our own framing (no stride of zeros in front) gives the same shape, and other numbers
    assert model(mix).shape == want.shape and not torch.allclose(model(mix), want, atol=1e-6)


def test_torchaudio_conv_tasnet_base_is_the_papers_config_without_the_last_residual():
    sd = torchaudio_state_dict(N=512, L=16, B=128, H=512, X=8, R=3)
    model = loaders.from_torchaudio(sd)
    assert parameter_count(model) == 4_984_881  # what torchaudio's CONVTASNET_BASE_LIBRI2MIX reports
    assert model.config == ConvTasNetConfig(mask_act="relu")


def test_torchaudio_state_dicts_that_do_not_fit_are_refused():
    sd = torchaudio_state_dict()
    with pytest.raises(BadFileError, match="separates 2 speakers, not 3"):
        loaders.from_torchaudio(sd, n_src=3, X=3)
    with pytest.raises(BadFileError, match="6 conv blocks, not a whole number of stacks of 8"):
        loaders.from_torchaudio(sd)
    bad = dict(sd)
    del bad["mask_generator.input_conv.weight"]
    with pytest.raises(BadFileError, match="no 'mask_generator.input_conv.weight'"):
        loaders.from_torchaudio(bad, X=3)
    bad = dict(sd)
    bad["mask_generator.conv_layers.3.conv_layers.3.weight"] = torch.zeros(12, 1, 5)
    with pytest.raises(BadFileError, match=r"conv_layers.3.conv_layers.3.weight' is 12x1x5 in the file but 12x1x3"):
        loaders.from_torchaudio(bad, X=3)
    with pytest.raises(BadFileError, match="kernels of 5"):
        loaders.from_torchaudio(torchaudio_state_dict(P=5), X=3)


# -- files ---------------------------------------------------------------------------------------------
def test_our_format_round_trips_asteroid_and_torchaudio_models_exactly(tmp_path):
    mix = torch.randn(1, 50)
    for model in (loaders.from_asteroid(asteroid_file(ConvTasNetConfig(**TINY, norm="cLN", causal=True))),
                  loaders.from_torchaudio(torchaudio_state_dict(), X=3)):
        path = loaders.save_separator(tmp_path / "sep.safetensors", model, {"trained_on": "test"})
        loaded = loaders.load_separator(path)
        assert isinstance(loaded, LoadedModel) and loaded.format == loaders.FORMAT_OURS
        assert loaded.model.config == model.config
        assert torch.equal(loaded.model(mix), model(mix))
        # choosing the .json opens the weights beside it
        assert loaders.load_separator(tmp_path / "sep.json").model.config == model.config
    with pytest.raises(ValueError, match="kind"):
        loaders.save_separator(tmp_path / "x.safetensors", model, {"kind": "other"})


def test_files_of_every_format_open_by_content_and_are_described(tmp_path):
    cfg = ConvTasNetConfig(**TINY)
    obj = asteroid_file(cfg)
    torch.save(obj, tmp_path / "pytorch_model.bin")
    loaded = loaders.load_separator(tmp_path / "pytorch_model.bin")
    assert loaded.format == loaders.FORMAT_ASTEROID and loaded.name == "pytorch_model"
    assert loaded.details["Sample rate"] == "8000 Hz" and loaded.details["Speakers"] == "2"
    assert loaded.details["Causal"].startswith("no")
    assert loaded.details["Receptive field"] == f"{cfg.receptive_field_s():.2f} s"
    assert loaded.parameters == parameter_count(loaded.model) == sum(v.numel() for v in obj["state_dict"].values())
    # the weights are asteroid's, unchanged
    assert torch.equal(loaded.model.encoder.weight, obj["state_dict"]["encoder.filterbank._filters"])

    torch.save(torchaudio_state_dict(X=8, R=1), tmp_path / "conv_tasnet.pt")
    loaded = loaders.load_separator(tmp_path / "conv_tasnet.pt")
    assert loaded.format == loaders.FORMAT_TORCHAUDIO and loaded.model.config.mask_act == "relu"

    causal = loaders.describe(ConvTasNet(ConvTasNetConfig(**TINY, norm="cLN", causal=True)))
    assert causal.details["Causal"].startswith("yes") and causal.name == "Conv-TasNet"

    steps = loaders.load_for_picker(str(tmp_path / "conv_tasnet.pt"))
    assert isinstance(next(steps), Progress)
    with pytest.raises(StopIteration) as done:
        next(steps)
    assert isinstance(done.value.value, LoadedModel) and done.value.value.model.n_src == 2


def test_files_that_are_not_separators_are_refused_with_one_line(tmp_path):
    cases = {
        "notes.txt": (b"hello, this is text\n", "neither a PyTorch checkpoint"),
        "empty.pth": (b"", "is empty"),
        "model.h5": (b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5"),
        "model.ckpt.index": (b"\x00\x01\x02TFcheckpoint" + bytes(30), "neither a PyTorch checkpoint"),
        "plain.pkl": (pickle.dumps({"state_dict": {}}), "neither a PyTorch checkpoint"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadFileError, match=words) as info:
            loaders.load_separator(tmp_path / name)
        assert "\n" not in str(info.value), name
    with pytest.raises(BadFileError, match="does not exist"):
        loaders.load_separator(tmp_path / "missing.pth")
    with pytest.raises(BadFileError, match="folder"):
        loaders.load_separator(tmp_path)

    torch.save(asteroid_file(ConvTasNetConfig(**TINY)), tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadFileError, match="truncated|damaged|could not be read"):
        loaders.load_separator(tmp_path / "cut.pth")

    refused = {
        "bare_asteroid.pth": (asteroid_state_dict(ConvTasNetConfig(**TINY)), "without their model_args"),
        "lightning.ckpt": ({"state_dict": {"model.encoder.weight": torch.zeros(1)}, "epoch": 3}, "training checkpoint"),
        "other.pth": ({"fc.weight": torch.zeros(2, 2)}, "its first entry is 'fc.weight'"),
        "tensor.pt": (torch.zeros(3), "holds a Tensor"),
        "dprnn.pth": ({**asteroid_file(ConvTasNetConfig(**TINY)), "model_name": "DPRNNTasNet"}, "DPRNNTasNet"),
    }
    for name, (obj, words) in refused.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(BadFileError, match=words):
            loaders.load_separator(tmp_path / name)


def test_our_files_with_a_missing_or_wrong_sidecar_are_refused(tmp_path):
    model = ConvTasNet(ConvTasNetConfig(**TINY))
    path = loaders.save_separator(tmp_path / "sep.safetensors", model)
    side = tmp_path / "sep.json"
    text = side.read_text()
    side.write_text(text.replace('"conv-tasnet"', '"stylegan2-generator"'))
    with pytest.raises(BadFileError, match="does not describe a Conv-TasNet"):
        loaders.load_separator(path)
    side.write_text(text.replace('"L": 4', '"L": 5'))
    with pytest.raises(BadFileError, match="even"):
        loaders.load_separator(path)
    side.write_text(text.replace('"H": 12', '"H": 10'))   # tensors listed in the sidecar still match the file
    with pytest.raises(BadFileError, match="in the file but"):
        loaders.load_separator(path)
    side.unlink()
    with pytest.raises(BadFileError, match="no sep.json beside it"):
        loaders.load_separator(path)


class _RunsCode:
    """What a hostile checkpoint holds: unpickling it would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    obj = asteroid_file(ConvTasNetConfig(**TINY))
    obj["infos"]["recipe_name"] = _RunsCode(marker)
    torch.save(obj, tmp_path / "evil.pth")
    torch.save({"encoder.weight": _RunsCode(marker)}, tmp_path / "evil.pt")
    for name in ("evil.pth", "evil.pt"):
        with pytest.raises(BadFileError, match="not allowed") as info:
            loaders.load_separator(tmp_path / name)
        assert "system" in str(info.value)
    assert not marker.exists()


def test_only_norm_gains_are_reshaped_from_c_to_1_c_1():
    obj = asteroid_file(ConvTasNetConfig(**TINY))
    model = loaders.from_asteroid(obj)
    assert model.separator.in_norm.gamma.shape == (1, 16, 1)
    assert torch.equal(model.separator.in_norm.gamma.view(-1), obj["state_dict"]["masker.bottleneck.0.gamma"])
    # a conv bias given as [1, C, 1] is not silently reshaped
    obj["state_dict"]["masker.bottleneck.1.bias"] = torch.zeros(1, 8, 1)
    with pytest.raises(BadFileError, match="'masker.bottleneck.1.bias' is 1x8x1 in the file but 8 in"):
        loaders.from_asteroid(obj)
