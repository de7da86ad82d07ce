"""Our StyleGAN2 against a reference written here, straight from the formulas.

The reference (``_ref_*`` below) is deliberately built another way than the model: per-sample
loops, the modulated weight materialised, upsampling done as NVIDIA's generic route (insert
zeros, pad, filter, then convolve with the flipped kernel) instead of a transposed
convolution followed by the filter, the image upsampling as explicit 1-D formulas. It reads
the weights by their official state-dict names, so it also pins the naming. The comparisons
run in float64, where the two routes must agree to ~1e-12; the tolerance asked for is 1e-5.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from playground.ml.stylegan2 import model as m

TOL = 1e-5


def _tiny_generator(res: int = 16, c_dim: int = 0, conv_clamp: float | None = None, seed: int = 0,
                    **kwargs) -> m.Generator:
    """A few thousand parameters, with non-zero noise strengths, biases and w_avg so every term counts."""
    torch.manual_seed(seed)
    G = m.Generator(z_dim=6, c_dim=c_dim, w_dim=5, img_resolution=res, img_channels=3,
                    mapping_kwargs={"num_layers": 2}, channel_base=8 * res, channel_max=6,
                    conv_clamp=conv_clamp, **kwargs)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "affine" in name else 0.0))
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    return G.double()


def _ws(G: m.Generator, n: int) -> torch.Tensor:
    """ws with a different vector for every layer (as W+ editing makes them), so a wrong index shows."""
    ws = G.mapping(torch.randn(n, G.z_dim, dtype=torch.float64), None, truncation_psi=0.8)
    return (ws + 0.5 * torch.randn_like(ws)).detach()


# ----------------------------------------------------------------------------------------------
# The reference, from the formulas.


def _lrelu(x):
    return torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)


def _ref_fc(sd, name, x, lr_mult=1.0, act=False):
    w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    y = x @ (w * lr_mult / math.sqrt(w.shape[1])).t() + b * lr_mult
    return _lrelu(y) if act else y


def _ref_mapping(G, z, c=None, psi=1.0, cutoff=None):
    sd = G.state_dict()
    x = z / torch.sqrt((z ** 2).mean(dim=1, keepdim=True) + 1e-8)
    if c is not None:
        y = _ref_fc(sd, "mapping.embed", c)
        x = torch.cat([x, y / torch.sqrt((y ** 2).mean(dim=1, keepdim=True) + 1e-8)], dim=1)
    for i in range(G.mapping.num_layers):
        x = _ref_fc(sd, f"mapping.fc{i}", x, lr_mult=0.01, act=True)
    ws = x[:, None, :].repeat(1, G.num_ws, 1)
    avg = sd["mapping.w_avg"]
    cut = G.num_ws if cutoff is None else cutoff
    ws[:, :cut] = avg + psi * (ws[:, :cut] - avg)
    return ws


def _ref_upfirdn(x, f, up, pad, gain):
    """NVIDIA's upfirdn2d by its definition: insert zeros, pad (x0, x1, y0, y1), convolve with f * gain."""
    n, c, h, w = x.shape
    z = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, pad)
    k = (f * gain).flip((0, 1)).to(x.dtype)
    return F.conv2d(z, k[None, None].repeat(c, 1, 1, 1), groups=c)


def _ref_upsample_image(x):
    """The image's x2 upsampling as 1-D formulas on rows then columns, with zeros outside."""
    def along_last(t):
        p = F.pad(t, (1, 1))
        even = (p[..., :-2] + 3 * p[..., 1:-1]) / 4            # (x[m-1] + 3 x[m]) / 4
        odd = (3 * p[..., 1:-1] + p[..., 2:]) / 4              # (3 x[m] + x[m+1]) / 4
        return torch.stack([even, odd], dim=-1).flatten(-2)
    return along_last(along_last(x).transpose(-1, -2)).transpose(-1, -2)


def _ref_layer(sd, name, x, w, noise_mode, conv_clamp, up):
    """One synthesis layer, sample by sample, with the modulated weight written out."""
    weight = sd[f"{name}.weight"]
    styles = _ref_fc(sd, f"{name}.affine", w)
    f = sd[f"{name}.resample_filter"]
    out = []
    for i in range(x.shape[0]):
        wm = weight * styles[i][None, :, None, None]
        wm = wm / torch.sqrt((wm ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xi = x[i:i + 1]
        if up:
            y = F.conv2d(_ref_upfirdn(xi, f, 2, (3, 2, 3, 2), 4.0), wm.flip((2, 3)))
        else:
            y = F.conv2d(xi, wm, padding=1)
        out.append(y)
    y = torch.cat(out)
    if noise_mode == "const":
        y = y + sd[f"{name}.noise_const"] * sd[f"{name}.noise_strength"]
    y = _lrelu(y + sd[f"{name}.bias"][None, :, None, None])
    return y.clamp(-conv_clamp, conv_clamp) if conv_clamp is not None else y


def _ref_torgb(sd, name, x, w, conv_clamp):
    weight = sd[f"{name}.weight"][:, :, 0, 0]
    styles = _ref_fc(sd, f"{name}.affine", w) / math.sqrt(weight.shape[1])
    y = torch.stack([(weight * styles[i][None]) @ x[i].flatten(1) for i in range(x.shape[0])])
    y = y.view(x.shape[0], -1, *x.shape[2:]) + sd[f"{name}.bias"][None, :, None, None]
    return y.clamp(-conv_clamp, conv_clamp) if conv_clamp is not None else y


def _ref_synthesis(G, ws, noise_mode="const", conv_clamp=None):
    """Returns the image and every block's output x."""
    sd = G.state_dict()
    n = ws.shape[0]
    feats = {}
    x = sd["synthesis.b4.const"][None].repeat(n, 1, 1, 1)
    x = _ref_layer(sd, "synthesis.b4.conv1", x, ws[:, 0], noise_mode, conv_clamp, up=False)
    img = _ref_torgb(sd, "synthesis.b4.torgb", x, ws[:, 1], conv_clamp)
    feats[4] = x
    for k, res in enumerate(G.synthesis.block_resolutions[1:], start=1):
        b = f"synthesis.b{res}"
        x = _ref_layer(sd, f"{b}.conv0", x, ws[:, 2 * k - 1], noise_mode, conv_clamp, up=True)
        x = _ref_layer(sd, f"{b}.conv1", x, ws[:, 2 * k], noise_mode, conv_clamp, up=False)
        img = _ref_upsample_image(img) + _ref_torgb(sd, f"{b}.torgb", x, ws[:, 2 * k + 1], conv_clamp)
        feats[res] = x
    return img, feats


# ----------------------------------------------------------------------------------------------
# Pieces.


def test_reference_upfirdn_matches_the_written_out_image_upsampling():
    """Checks the test's own helper: zero insertion + pad (2,1,2,1) + filter*4 is the 1-D formula."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    f = m._filter_2d([1, 3, 3, 1]).double()
    torch.testing.assert_close(_ref_upfirdn(x, f, 2, (2, 1, 2, 1), 4.0), _ref_upsample_image(x), rtol=0, atol=1e-12)


def test_image_upsampling_matches_the_formula():
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    f = m._filter_2d([1, 3, 3, 1]).double()
    out = m._upsample2d(x, f * 4)
    assert out.shape == (2, 3, 12, 8)
    torch.testing.assert_close(out, _ref_upsample_image(x), rtol=0, atol=TOL)


def test_resample_filter_is_the_normalised_outer_product():
    f = m._filter_2d([1, 3, 3, 1])
    expected = torch.tensor([[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]], dtype=torch.float32) / 64
    torch.testing.assert_close(f, expected)


# ----------------------------------------------------------------------------------------------
# Mapping network.


@pytest.mark.parametrize("c_dim", [0, 3])
@pytest.mark.parametrize(("psi", "cutoff"), [(1.0, None), (0.7, None), (0.5, 2)])
def test_mapping_matches_the_formula(c_dim, psi, cutoff):
    G = _tiny_generator(c_dim=c_dim)
    z = torch.randn(4, G.z_dim, dtype=torch.float64)
    c = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]] if c_dim else None
    ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
    assert ws.shape == (4, G.num_ws, G.w_dim)
    torch.testing.assert_close(ws, _ref_mapping(G, z, c, psi, cutoff), rtol=0, atol=TOL)


def test_truncation_pulls_towards_w_avg_only_up_to_the_cutoff():
    G = _tiny_generator()
    z = torch.randn(2, G.z_dim, dtype=torch.float64)
    w1 = G.mapping(z, None)
    w0 = G.mapping(z, None, truncation_psi=0.0)
    torch.testing.assert_close(w0, G.mapping.w_avg.expand_as(w0))
    wc = G.mapping(z, None, truncation_psi=0.0, truncation_cutoff=3)
    torch.testing.assert_close(wc[:, :3], w0[:, :3])
    torch.testing.assert_close(wc[:, 3:], w1[:, 3:])


def test_w_avg_moves_only_with_update_emas():
    G = _tiny_generator()
    z = torch.randn(8, G.z_dim, dtype=torch.float64)
    before = G.mapping.w_avg.clone()
    G.mapping(z, None)
    torch.testing.assert_close(G.mapping.w_avg, before)
    w = G.mapping(z, None, update_emas=True)[:, 0]
    beta = G.mapping.w_avg_beta
    torch.testing.assert_close(G.mapping.w_avg, beta * before + (1 - beta) * w.mean(dim=0))


def test_mapping_refuses_a_missing_label():
    G = _tiny_generator(c_dim=3)
    with pytest.raises(ValueError, match="label"):
        G.mapping(torch.randn(1, G.z_dim, dtype=torch.float64), None)


# ----------------------------------------------------------------------------------------------
# Synthesis network against the reference, through every form of the modulated convolution.


@pytest.mark.parametrize("noise_mode", ["const", "none"])
@pytest.mark.parametrize("conv_clamp", [None, 0.6])
def test_synthesis_matches_the_reference(noise_mode, conv_clamp):
    G = _tiny_generator(res=16, conv_clamp=conv_clamp)
    ws = _ws(G, 3)
    ref, _ = _ref_synthesis(G, ws, noise_mode, conv_clamp)
    if conv_clamp is not None:   # the clamp must really bite somewhere, or this case tests nothing new
        assert not torch.allclose(ref, _ref_synthesis(G, ws, noise_mode, None)[0])
    with torch.no_grad():        # batch: grouped convolution; single samples: weight folded
        torch.testing.assert_close(G.synthesis(ws, noise_mode=noise_mode), ref, rtol=0, atol=TOL)
        torch.testing.assert_close(G.synthesis(ws[:1], noise_mode=noise_mode), ref[:1], rtol=0, atol=TOL)
    # styles needing gradients: input scaled by s, output by d (batch and single sample)
    wr = ws.detach().requires_grad_(True)
    torch.testing.assert_close(G.synthesis(wr, noise_mode=noise_mode), ref, rtol=0, atol=TOL)
    torch.testing.assert_close(G.synthesis(wr[:1], noise_mode=noise_mode), ref[:1], rtol=0, atol=TOL)


def test_synthesis_with_frozen_weights_matches_too():
    """The drag freezes G: the layer then caches sum_k W^2, which must follow a change of weights."""
    G = _tiny_generator().requires_grad_(False)
    ws = _ws(G, 2)
    torch.testing.assert_close(G.synthesis(ws), _ref_synthesis(G, ws)[0], rtol=0, atol=TOL)
    with torch.no_grad():
        G.synthesis.b8.conv1.weight.mul_(1.5).add_(0.1)
    torch.testing.assert_close(G.synthesis(ws), _ref_synthesis(G, ws)[0], rtol=0, atol=TOL)


def test_generator_forward_is_mapping_then_synthesis():
    G = _tiny_generator(c_dim=2)
    z = torch.randn(2, G.z_dim, dtype=torch.float64)
    c = torch.eye(2, dtype=torch.float64)
    img = G(z, c, truncation_psi=0.6, truncation_cutoff=3, noise_mode="none")
    ref, _ = _ref_synthesis(G, _ref_mapping(G, z, c, 0.6, 3), "none")
    assert img.shape == (2, 3, 16, 16)
    torch.testing.assert_close(img, ref, rtol=0, atol=TOL)


def test_float32_is_the_default_and_matches_float64():
    G64 = _tiny_generator()
    G32 = _tiny_generator().float()
    z = torch.randn(2, G64.z_dim)
    img32 = G32(z, None)
    assert img32.dtype == torch.float32
    torch.testing.assert_close(img32.double(), G64(z.double(), None), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Features for DragGAN.


def test_feature_block_returns_each_blocks_output():
    G = _tiny_generator(res=32)
    ws = _ws(G, 2)
    ref_img, ref_feats = _ref_synthesis(G, ws)
    for res in G.synthesis.block_resolutions:
        img, feat = G.synthesis(ws, feature_block=res)
        torch.testing.assert_close(img, ref_img, rtol=0, atol=TOL)
        assert feat.shape == (2, G.synthesis.__getattr__(f"b{res}").out_channels, res, res)
        torch.testing.assert_close(feat, ref_feats[res], rtol=0, atol=TOL)
        none, early = G.synthesis(ws, feature_block=res, stop_at_feature=True)
        assert none is None
        torch.testing.assert_close(early, feat, rtol=0, atol=TOL)


def test_stop_at_feature_computes_nothing_above_the_block_nor_any_torgb():
    G = _tiny_generator(res=32)
    ws = G.mapping(torch.randn(1, G.z_dim, dtype=torch.float64), None)
    ran: list[str] = []
    for name, module in G.synthesis.named_modules():
        if isinstance(module, (m.SynthesisLayer, m.ToRGBLayer)):
            module.register_forward_hook(lambda mod, inp, out, name=name: ran.append(name))
    G.synthesis(ws, feature_block=16, stop_at_feature=True)
    assert ran == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1"]
    ran.clear()
    G.synthesis(ws, feature_block=16)
    assert "b32.conv1" in ran and "b32.torgb" in ran and "b4.torgb" in ran


def test_feature_block_must_be_a_block():
    G = _tiny_generator()
    ws = G.mapping(torch.randn(1, G.z_dim, dtype=torch.float64), None)
    with pytest.raises(ValueError, match="feature_block"):
        G.synthesis(ws, feature_block=12)
    with pytest.raises(ValueError, match="feature_block"):
        G.synthesis(ws, stop_at_feature=True)
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesis(ws[:, :-1])


def test_gradients_reach_exactly_the_ws_used_below_the_feature_block():
    """Features of b16 depend on ws[0..4] (b4 conv1; b8 conv0, conv1; b16 conv0, conv1) and no later w."""
    G = _tiny_generator(res=32).requires_grad_(False)
    ws = _ws(G, 1).requires_grad_(True)
    _, feat = G.synthesis(ws, feature_block=16, stop_at_feature=True)
    (feat * torch.randn_like(feat)).sum().backward()
    per_w = ws.grad.abs().sum(dim=2)[0]
    assert (per_w[:5] > 0).all()
    assert (per_w[5:] == 0).all()


def test_gradients_match_finite_differences():
    """gradcheck through every modulated-conv form: one sample (input scaled) and a batch."""
    G = _tiny_generator(res=8).requires_grad_(False)
    ws = _ws(G, 2)
    for sample in (ws[:1], ws):
        w = sample.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda w: G.synthesis(w, noise_mode="const"), (w,))
    w = ws[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: G.synthesis(w, feature_block=8, stop_at_feature=True)[1], (w,))


def test_double_backward_for_path_length_regularisation():
    G = _tiny_generator(res=8)
    ws = G.mapping(torch.randn(2, G.z_dim, dtype=torch.float64), None)
    img = G.synthesis(ws, noise_mode="const")
    (g,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    g.square().sum().backward()
    assert G.synthesis.b8.conv1.weight.grad.abs().sum() > 0
    assert G.mapping.fc0.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Noise.


def test_noise_modes():
    G = _tiny_generator()
    ws = _ws(G, 2)
    const = G.synthesis(ws, noise_mode="const")
    none = G.synthesis(ws, noise_mode="none")
    torch.manual_seed(3)
    r1 = G.synthesis(ws, noise_mode="random")
    r2 = G.synthesis(ws, noise_mode="random")
    torch.manual_seed(3)
    r3 = G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(const, none)
    assert not torch.allclose(r1, r2) and not torch.allclose(r1, const)
    torch.testing.assert_close(r1, r3)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
    torch.testing.assert_close(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="loud")


# ----------------------------------------------------------------------------------------------
# Names, shapes, rebuilding.


def _official_keys(res: int, z_dim: int, w_dim: int, channels) -> dict[str, tuple]:
    """The official G state dict's names and shapes, from the naming pattern of the facts note."""
    keys: dict[str, tuple] = {}
    for i in range(8):
        keys[f"mapping.fc{i}.weight"] = (w_dim, z_dim if i == 0 else w_dim)
        keys[f"mapping.fc{i}.bias"] = (w_dim,)
    keys["mapping.w_avg"] = (w_dim,)
    resolutions = [2 ** i for i in range(2, int(math.log2(res)) + 1)]

    def layer(prefix, c_in, c_out, r, k=3, noise=True):
        keys[f"{prefix}.weight"] = (c_out, c_in, k, k)
        keys[f"{prefix}.bias"] = (c_out,)
        keys[f"{prefix}.affine.weight"] = (c_in, w_dim)
        keys[f"{prefix}.affine.bias"] = (c_in,)
        if noise:
            keys[f"{prefix}.noise_const"] = (r, r)
            keys[f"{prefix}.noise_strength"] = ()
            keys[f"{prefix}.resample_filter"] = (4, 4)

    for r in resolutions:
        b = f"synthesis.b{r}"
        keys[f"{b}.resample_filter"] = (4, 4)
        if r == 4:
            keys[f"{b}.const"] = (channels(4), 4, 4)
        else:
            layer(f"{b}.conv0", channels(r // 2), channels(r), r)
        layer(f"{b}.conv1", channels(r), channels(r), r)
        layer(f"{b}.torgb", channels(r), 3, r, k=1, noise=False)
    return keys


def test_state_dict_has_the_official_names_and_shapes_at_64px():
    G = m.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
                    channel_base=1024, channel_max=64)
    shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    channels = lambda r: min(1024 // r, 64)
    assert shapes == _official_keys(64, 512, 512, channels)
    # spot checks spelled out
    assert shapes["mapping.fc0.weight"] == (512, 512)
    assert shapes["synthesis.b4.conv1.affine.weight"] == (64, 512)
    assert shapes["synthesis.b8.conv0.weight"] == (64, 64, 3, 3)
    assert shapes["synthesis.b64.conv0.weight"] == (16, 32, 3, 3)
    assert shapes["synthesis.b8.conv0.noise_const"] == (8, 8)
    assert shapes["synthesis.b64.torgb.weight"] == (3, 16, 1, 1)
    assert G.num_ws == G.mapping.num_ws == G.synthesis.num_ws == 10


@pytest.mark.parametrize(("res", "num_ws"), [(4, 2), (32, 8), (64, 10), (128, 12), (256, 14)])
def test_num_ws(res, num_ws):
    G = m.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=res, img_channels=3, channel_base=512,
                    channel_max=2, mapping_kwargs={"num_layers": 1})
    assert G.num_ws == num_ws
    assert G.synthesis.block_resolutions == [2 ** i for i in range(2, int(math.log2(res)) + 1)]
    assert G(torch.randn(1, 4), None).shape == (1, 3, res, res)


def test_conditional_generator_has_the_embedding():
    G = _tiny_generator(c_dim=3)
    sd = G.state_dict()
    assert tuple(sd["mapping.embed.weight"].shape) == (G.w_dim, 3)
    assert tuple(sd["mapping.fc0.weight"].shape) == (G.w_dim, G.z_dim + G.w_dim)


def test_init_kwargs_rebuild_the_same_generator():
    G = _tiny_generator(c_dim=2, conv_clamp=256, num_fp16_res=2, fused_modconv_default="inference_only")
    kwargs = json.loads(json.dumps(G.init_kwargs))
    assert kwargs == G.init_kwargs
    G2 = m.Generator(**kwargs).double()
    G2.load_state_dict(G.state_dict(), strict=True)
    z, c = torch.randn(2, G.z_dim, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(G2(z, c), G(z, c))


def test_nested_synthesis_kwargs_of_stylegan2_ada_are_accepted():
    G = m.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3,
                    synthesis_kwargs={"channel_base": 64, "channel_max": 4, "conv_clamp": 256})
    assert G.synthesis.b8.conv1.conv_clamp == 256
    assert G.synthesis.b8.conv1.weight.shape == (4, 4, 3, 3)


def test_unsupported_configurations_are_refused():
    with pytest.raises(ValueError, match="skip"):
        m.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3, architecture="resnet")
    with pytest.raises(ValueError, match="no channels"):
        m.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=128, img_channels=3, channel_base=64)
    with pytest.raises(ValueError, match="power of two"):
        m.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=48, img_channels=3)


# ----------------------------------------------------------------------------------------------
# Discriminator.


def _ref_conv(sd, name, x, act=True, down=False, gain=1.0, bias=True):
    w = sd[f"{name}.weight"]
    w = w / math.sqrt(w[0].numel())
    k = w.shape[-1]
    if down:   # NVIDIA's definition: filter (pad k//2 + 1 each side), convolve, keep every 2nd pixel
        f = sd[f"{name}.resample_filter"]
        p = k // 2 + 1
        x = _ref_upfirdn(x, f, 1, (p, p, p, p), 1.0)
        x = F.conv2d(x, w)[:, :, ::2, ::2]
    else:
        x = F.conv2d(x, w, padding=k // 2)
    if bias:
        x = x + sd[f"{name}.bias"][None, :, None, None]
    return (_lrelu(x) if act else x) * gain


def _ref_discriminator(D, img, group):
    sd = D.state_dict()
    x = None
    for r in D.block_resolutions:
        b = f"b{r}"
        if x is None:
            x = _ref_conv(sd, f"{b}.fromrgb", img)
        y = _ref_conv(sd, f"{b}.skip", x, act=False, down=True, gain=math.sqrt(0.5), bias=False)
        x = _ref_conv(sd, f"{b}.conv0", x)
        x = y + _ref_conv(sd, f"{b}.conv1", x, down=True, gain=math.sqrt(0.5))
    n, c, h, w = x.shape
    stds = []
    for i in range(n):   # the std over sample i's group: samples i % (n/G) + k (n/G)
        members = x[i % (n // group)::n // group]
        stds.append(members.std(dim=0, unbiased=False).mean())
    x = torch.cat([x, torch.stack(stds)[:, None, None, None].expand(n, 1, h, w)], dim=1)
    x = _ref_conv(sd, "b4.conv", x)
    x = _ref_fc(sd, "b4.fc", x.flatten(1), act=True)
    return _ref_fc(sd, "b4.out", x)


def _tiny_discriminator(**kwargs) -> m.Discriminator:
    torch.manual_seed(1)
    D = m.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8, **kwargs)
    with torch.no_grad():
        for name, p in D.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
    return D.double()


def test_discriminator_matches_the_reference():
    D = _tiny_discriminator(mbstd_group_size=2)
    img = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    out = D(img, None)
    assert out.shape == (4, 1)
    torch.testing.assert_close(out, _ref_discriminator(D, img, group=2), rtol=0, atol=TOL)


def test_discriminator_keys_follow_the_official_names():
    D = m.Discriminator(c_dim=5, img_resolution=32, img_channels=3, channel_base=256, channel_max=16)
    shapes = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    assert shapes["b32.fromrgb.weight"] == (8, 3, 1, 1)
    assert shapes["b32.conv0.weight"] == (8, 8, 3, 3)
    assert shapes["b32.conv1.weight"] == (16, 8, 3, 3)
    assert shapes["b32.skip.weight"] == (16, 8, 1, 1)
    assert "b32.skip.bias" not in shapes and "b16.fromrgb.weight" not in shapes
    assert shapes["b32.resample_filter"] == (4, 4) and shapes["b32.conv1.resample_filter"] == (4, 4)
    assert shapes["b4.conv.weight"] == (16, 17, 3, 3)     # + 1 minibatch-std channel
    assert shapes["b4.fc.weight"] == (16, 16 * 4 * 4)
    assert shapes["b4.out.weight"] == (16, 16)             # cmap_dim = channels at 4x4
    assert shapes["mapping.embed.weight"] == (16, 5)
    assert "mapping.w_avg" not in shapes


def test_discriminator_trains_with_r1_and_a_label():
    D = m.Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    c = torch.eye(3)[[0, 1, 2, 0]]
    logits = D(img, c)
    assert logits.shape == (4, 1)
    (r1,) = torch.autograd.grad(logits.sum(), img, create_graph=True)   # R1 needs a double backward
    (F.softplus(-logits).mean() + r1.square().sum(dim=(1, 2, 3)).mean()).backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert D.b16.conv0.weight.grad.abs().sum() > 0
    assert D.mapping.embed.weight.grad.abs().sum() > 0


def test_minibatch_std_groups():
    D = _tiny_discriminator(mbstd_group_size=4)
    with pytest.raises(ValueError, match="multiple"):
        D(torch.randn(6, 3, 16, 16, dtype=torch.float64), None)
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64)   # fewer samples than the group: one group
    torch.testing.assert_close(D(img, None), _ref_discriminator(D, img, group=2), rtol=0, atol=TOL)


def test_frozen_discriminator_layers_keep_their_names():
    D = m.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                        block_kwargs={"freeze_layers": 2})
    params = dict(D.named_parameters())
    assert "b16.fromrgb.weight" not in params and "b16.conv0.weight" not in params
    assert "b16.conv1.weight" in params
    assert "b16.fromrgb.weight" in D.state_dict()


def test_discriminator_init_kwargs_rebuild_it():
    D = m.Discriminator(c_dim=2, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                        mbstd_group_size=2)
    D2 = m.Discriminator(**json.loads(json.dumps(D.init_kwargs)))
    D2.load_state_dict(D.state_dict(), strict=True)
    img, c = torch.randn(2, 3, 16, 16), torch.eye(2)
    torch.testing.assert_close(D2(img, c), D(img, c))


def test_const_ws_from_stops_gradients_without_changing_the_result():
    G = _tiny_generator(res=16).requires_grad_(False)
    w_opt = _ws(G, 1).requires_grad_(True)
    w0 = _ws(G, 1)
    k = 3
    grads = []
    for const_from in (None, k):
        ws = torch.cat([w_opt[:, :k], w0[:, k:]], dim=1)     # the DragGAN pattern
        img, feat = G.synthesis(ws, feature_block=16, const_ws_from=const_from)
        torch.testing.assert_close(img, _ref_synthesis(G, ws.detach())[0], rtol=0, atol=TOL)
        (g,) = torch.autograd.grad((feat * feat.detach().sign()).sum(), w_opt)
        grads.append(g)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-12)
    assert grads[0][:, :k].abs().sum() > 0
    ws = _ws(G, 1).requires_grad_(True)
    G.synthesis(ws, const_ws_from=k).sum().backward()
    assert (ws.grad[:, :k].abs().sum(dim=2) > 0).all() and (ws.grad[:, k:] == 0).all()


def test_a_deep_copy_is_independent():
    """The trainer keeps G_ema as a deep copy: its layer lists must point at its own modules."""
    G = _tiny_generator()
    G_ema = copy.deepcopy(G)
    ws = _ws(G, 1)
    before = G_ema.synthesis(ws)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.5)
    torch.testing.assert_close(G_ema.synthesis(ws), before)
    assert not torch.allclose(G.synthesis(ws), before)
    assert all(b is getattr(G_ema.synthesis, f"b{b.resolution}") for b in G_ema.synthesis.blocks)
