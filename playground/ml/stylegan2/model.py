"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020), from scratch.

One file, read top to bottom: the small pieces (activations, the FIR filter, equalised
layers), then the generator (mapping network, synthesis layers, blocks, network), then the
discriminator. Plain torch ops only, fp32 only, no custom CUDA plugins.

Why it looks like NVIDIA's code
-------------------------------
Constructor arguments, module names and parameter/buffer names are exactly those of the
official PyTorch release (stylegan2-ada-pytorch / stylegan3's ``networks_stylegan2``), so an
official ``G_ema`` state dict loads with ``strict=True`` and its outputs match to float
rounding: ``mapping.fc0.weight``, ``mapping.w_avg``, ``synthesis.b4.const``,
``synthesis.b8.conv0.noise_const``, ``synthesis.b8.resample_filter`` ...

The maths
---------
Mapping: ``z -> z * rsqrt(mean(z^2) + 1e-8)``, then ``num_layers`` fully connected layers with
leaky ReLU. Weights are stored "equalised": initialised N(0, 1) / lr_mult and multiplied at
run time by ``lr_mult / sqrt(fan_in)`` (biases by ``lr_mult``), with lr_mult = 0.01 in the
mapping. ``w_avg`` tracks the mean w (``w_avg = lerp(mean(w), w_avg, beta)``) and truncation
pulls w towards it: ``w' = lerp(w_avg, w, psi)`` (only for the first ``cutoff`` ws if given).

Synthesis layer (a modulated 3x3 convolution), for one sample with style s = A(w)::

    w'_oik = W_oik * s_i                                 modulate
    d_o    = rsqrt(sum_ik w'_oik^2 + 1e-8)               demodulate
    y      = conv(x, w') * d + noise_strength * noise + bias
    y      = clamp(lrelu_0.2(y) * sqrt(2), +-conv_clamp)

conv0 of each block upsamples x2: a stride-2 transposed convolution (2H+1 pixels) followed by
the [1,3,3,1] x [1,3,3,1] low-pass filter (times 4) with 1 pixel of padding (2H pixels). ToRGB
is a modulated 1x1 convolution without demodulation (styles times 1/sqrt(C)). The image is
built by the "skip" architecture: ``img = upsample2d(img) + torgb(x)`` at every block, where
upsample2d inserts zeros, pads (2, 1, 2, 1) and applies the same filter times 4.

How it is made fast (CPU first)
-------------------------------
- The modulated conv picks its form by cost. For one sample it folds s and d into the weight
  (one plain convolution, nothing extra over the activations) unless the styles need a
  gradient, in which case it scales the input by s and the output by d around a convolution
  with the shared weight (the official ``fused_modconv=False`` path): then backward needs no
  weight gradient, only elementwise products. Batches use the grouped-convolution trick when
  no weight gradient is needed, the shared-weight form otherwise (training).
- Demodulation coefficients come from ``s^2 @ sum_k W^2`` (an [N, I] x [I, O] product) rather
  than from the [N, O, I, k, k] modulated weight; ``sum_k W^2`` is kept while W is frozen.
- The bias, noise, activation gain and demodulation are applied in one ``addcmul`` followed by
  an in-place leaky ReLU (the gain sqrt(2) is folded in: lrelu(a) * g == lrelu(a * g), g > 0).
  Dense layers get their equalisation gains through ``addmm``'s alpha and beta.
- ToRGB is a batched matrix product; ``stop_at_feature`` skips the blocks above the feature
  block and every ToRGB layer; ``const_ws_from`` tells the layers which ws need no gradient.
- Tried and dropped (slower end to end on a 2-core CPU): channels-last activations, and a
  separable filter (two 4-tap depthwise convolutions) instead of one 4x4 depthwise one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Activations: name -> (function, default gain). The gain keeps the signal's magnitude.
_ACTIVATIONS: dict[str, tuple[Any, float]] = {
    "linear": (lambda x, inplace=False: x, 1.0),
    "relu": (lambda x, inplace=False: F.relu(x, inplace=inplace), math.sqrt(2)),
    "lrelu": (lambda x, inplace=False: F.leaky_relu(x, 0.2, inplace=inplace), math.sqrt(2)),
}


def _activation(name: str) -> tuple[Any, float]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r} (supported: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale each vector to unit root-mean-square: the mapping network's input normalisation."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------------------------
# The low-pass filter used for every up- and downsampling.


def _filter_2d(f: Sequence[float]) -> Tensor:
    """The official ``resample_filter`` buffer: the outer product of the taps, summing to 1."""
    t = torch.as_tensor(f, dtype=torch.float32)
    if t.ndim != 1:
        raise ValueError("resample_filter must be a list of taps, e.g. [1, 3, 3, 1]")
    f2 = torch.outer(t, t)
    return f2 / f2.sum()


def _fir(x: Tensor, f: Tensor, pad: tuple[int, int, int, int], down: int = 1) -> Tensor:
    """Pad ``(left, right, top, bottom)``, filter every channel with the 2-D FIR ``f``, keep every ``down``-th pixel.

    ``f`` is flipped so that ``F.conv2d`` (a correlation) performs a true convolution, as NVIDIA's
    upfirdn2d does (the usual [1, 3, 3, 1] filter is symmetric anyway). One 4x4 depthwise
    convolution measured faster on CPU than two separable 4-tap ones.
    """
    c = x.shape[1]
    x = F.pad(x, pad)
    weight = f.flip((0, 1)).view(1, 1, *f.shape).expand(c, 1, *f.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def _upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """x2 upsampling of the image: insert zeros, pad (2, 1, 2, 1), filter with ``f`` (which carries the gain 4).

    Written out for a 1-D signal this is out[2m] = (x[m-1] + 3 x[m]) / 4 and
    out[2m+1] = (3 x[m] + x[m+1]) / 4 for the [1, 3, 3, 1] filter.
    """
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1)).reshape(n, c, 2 * h, 2 * w)
    k = f.shape[0]
    p0, p1 = (k + 1) // 2, (k - 2) // 2  # (2, 1) for 4 taps
    return _fir(x, f, (p0, p1, p0, p1))


# ----------------------------------------------------------------------------------------------
# Equalised-learning-rate layers.


class FullyConnectedLayer(nn.Module):
    """Dense layer with the weight stored at N(0,1)/lr_mult and scaled by lr_mult/sqrt(in) at run time."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.act_fn, self.act_gain = _activation(activation)
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        # lrelu(a) * g == lrelu(a * g) for g > 0, so the activation gain joins the weight and bias
        # gains, and addmm applies them to the small output instead of scaling the weight.
        g = self.act_gain
        if self.bias is None:
            return self.act_fn(x.matmul(self.weight.t()) * (self.weight_gain * g), inplace=True)
        y = torch.addmm(self.bias.unsqueeze(0), x, self.weight.t(), beta=self.bias_gain * g,
                        alpha=self.weight_gain * g)
        return self.act_fn(y, inplace=True)


class Conv2dLayer(nn.Module):
    """Equalised convolution with an optional x2 downsampling (the discriminator's layer).

    Downsampling filters first, then convolves with stride 2 (the official order); the
    activation gain and the caller's ``gain`` are folded into the weight and bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
                 channels_last: bool = False, trainable: bool = True):
        super().__init__()
        if up != 1 or down not in (1, 2):
            raise ValueError("Conv2dLayer supports down=1 or 2 and no upsampling")
        self.activation = activation
        self.act_fn, self.act_gain = _activation(activation)
        self.up, self.down = up, down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", _filter_2d(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_t) if bias_t is not None else None
        else:  # frozen layers (Freeze-D) keep the same names, as buffers
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_t)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        g = self.act_gain * gain
        w = self.weight * (self.weight_gain * g)
        b = self.bias * g if self.bias is not None else None
        if self.down == 1:
            x = F.conv2d(x, w, b, padding=self.padding)
        else:
            k_f = self.resample_filter.shape[0]
            pa = self.padding + (k_f - 1) // 2       # official: pad + (fw - down + 1) // 2
            pb = self.padding + (k_f - 2) // 2       # official: pad + (fw - down) // 2
            if w.shape[-1] == 1:                     # 1x1: downsample with the filter, then convolve
                x = F.conv2d(_fir(x, self.resample_filter, (pa, pb, pa, pb), down=2), w, b)
            else:                                    # filter, then strided convolution
                x = F.conv2d(_fir(x, self.resample_filter, (pa, pb, pa, pb)), w, b, stride=2)
        x = self.act_fn(x, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


# ----------------------------------------------------------------------------------------------
# Generator: mapping network.


class MappingNetwork(nn.Module):
    """z (and an optional class label c) -> w, broadcast to ``num_ws`` copies, with truncation."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.layers = [getattr(self, f"fc{idx}") for idx in range(num_layers)]  # plain list: no new keys
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Tensor | None, c: Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> Tensor:
        """Returns ws [N, num_ws, w_dim] (or [N, w_dim] when ``num_ws`` is None)."""
        dtype = self.layers[0].weight.dtype  # float32 (float64 works too, for precise tests)
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [N, {self.z_dim}]")
            x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must be [N, {self.c_dim}] (a label for this conditional model)")
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for layer in self.layers:
            x = layer(x)                                            # [N, w_dim]

        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])          # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


# ----------------------------------------------------------------------------------------------
# Generator: synthesis network.


def _modulated_conv(x: Tensor, weight: Tensor, styles: Tensor, demod: Tensor | None, up: bool,
                    fir: Tensor, padding: int) -> tuple[Tensor, Tensor | None]:
    """conv(x, W * s) with the output scale ``demod`` [N, O] applied or handed back.

    Returns ``(y, scale)``: when ``scale`` is not None the caller still has to multiply y by it
    ([N, O, 1, 1]); the two forms are explained in the module docstring.
    """
    n, in_ch = x.shape[0], x.shape[1]
    out_ch, _, kh, kw = weight.shape
    # For one sample whose styles need no gradient, or a batch without any weight gradient,
    # folding s and d into the weight avoids touching the activations.
    grad = torch.is_grad_enabled() and (styles.requires_grad or weight.requires_grad)
    fold = (n == 1 and not (grad and styles.requires_grad)) or (n > 1 and not grad)
    if fold:
        w = weight.unsqueeze(0) * styles.view(n, 1, in_ch, 1, 1)              # [N, O, I, k, k]
        if demod is not None:
            w = w * demod.view(n, out_ch, 1, 1, 1)
        scale = None
        if n == 1:
            w = w.squeeze(0)
            groups = 1
        else:
            x = x.reshape(1, n * in_ch, *x.shape[2:])
            groups = n
            if up:
                w = w.transpose(1, 2)                                       # [N, I, O, k, k]
            w = w.reshape(-1, w.shape[2], kh, kw)
    else:
        x = x * styles.view(n, in_ch, 1, 1)
        w, groups = weight, 1
        scale = demod.view(n, out_ch, 1, 1) if demod is not None else None
    if up:
        if groups == 1:
            w = w.transpose(0, 1)                                          # [I, O, k, k]
        x = F.conv_transpose2d(x, w, stride=2, groups=groups)              # [., ., 2H+1, 2W+1]
        c = x.shape[1]                                                     # filter with 1 px of padding:
        x = F.conv2d(x, fir.flip((0, 1)).view(1, 1, *fir.shape).expand(c, 1, *fir.shape), padding=1, groups=c)
    else:
        x = F.conv2d(x, w, padding=padding, groups=groups)
    if groups > 1:
        x = x.reshape(n, out_ch, *x.shape[2:])
    return x, scale


class SynthesisLayer(nn.Module):
    """Modulated (and demodulated) convolution + noise + bias + leaky ReLU; optional x2 upsampling."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
                 channels_last: bool = False):
        super().__init__()
        if up not in (1, 2):
            raise ValueError("SynthesisLayer supports up=1 or 2")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.act_fn, self.act_gain = _activation(activation)
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", _filter_2d(resample_filter))
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self._wsq_key: tuple | None = None   # cache of _weight_sq(), not part of the state
        self._wsq = torch.empty(0)

    def _weight_sq(self) -> Tensor:
        """sum_k W_oik^2 [O, I]; kept between calls while the weight is frozen (the drag, inference)."""
        w = self.weight
        if w.requires_grad and torch.is_grad_enabled():
            return w.square().sum(dim=(2, 3))
        key = (w.data_ptr(), w._version, w.device)
        if self._wsq_key != key:
            self._wsq = w.detach().square().sum(dim=(2, 3))
            self._wsq_key = key
        return self._wsq

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "const", at: tuple[int, int] = (0, 0)) -> Tensor:
        """x [N, I, R/up, R/up], w [N, w_dim] -> [N, O, R, R].

        ``at`` = (row, column) of x's first output pixel in the full R x R map, for a window
        of it (see :meth:`SynthesisNetwork.feature_windows`): the constant noise is cut to match.
        """
        n = x.shape[0]
        styles = self.affine(w)                                                # [N, I]
        # d_o = rsqrt(sum_i s_i^2 sum_k W_oik^2 + eps), then times the activation gain.
        demod = (styles.square() @ self._weight_sq().t() + 1e-8).rsqrt() * self.act_gain
        y, scale = _modulated_conv(x, self.weight, styles, demod, self.up == 2, self.resample_filter * 4, self.padding)

        g = self.act_gain
        h, wd = y.shape[-2:]
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([n, 1, h, wd], device=x.device, dtype=x.dtype) * (self.noise_strength * g)
            shift = noise + (self.bias * g).view(1, -1, 1, 1)                  # [N, O, R, R]
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const[at[0]:at[0] + h, at[1]:at[1] + wd]
            shift = torch.addcmul((self.bias * g).view(-1, 1, 1), noise.unsqueeze(0),
                                  self.noise_strength * g)                     # [O, R, R]
        elif noise_mode in ("const", "random", "none"):
            shift = (self.bias * g).view(1, -1, 1, 1)
        else:
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', not {noise_mode!r}")
        y = torch.addcmul(shift, y, scale) if scale is not None else y.add_(shift)
        y = self.act_fn(y, inplace=True)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to the image channels, no demodulation (a batched matrix product)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        if kernel_size != 1:
            raise ValueError("ToRGBLayer supports kernel_size=1")
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        n, c, h, wd = x.shape
        styles = self.affine(w) * self.weight_gain                             # [N, I]
        wmod = self.weight.view(1, -1, c) * styles.unsqueeze(1)                # [N, O, I]
        y = torch.baddbmm(self.bias.view(1, -1, 1), wmod, x.reshape(n, c, h * wd)).view(n, -1, h, wd)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 with x2 upsampling), conv1, and torgb added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: float | None = None, use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default: Any = True, **layer_kwargs: Any):
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"only the 'skip' generator architecture is supported, not {architecture!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.register_buffer("resample_filter", _filter_2d(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Sequence[Tensor], noise_mode: str = "const",
                need_img: bool = True, at: tuple[int, int] = (0, 0)) -> tuple[Tensor, Tensor | None]:
        """``ws``: the block's [N, w_dim] vectors (conv0, conv1, torgb; b4 has no conv0).

        ``at``: where x's window starts in the full map, at this block's resolution (features only).
        """
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws[0].shape[0], -1, -1, -1)     # [N, C, 4, 4]
            x = self.conv1(x, ws[0], noise_mode)
        else:
            assert x is not None
            x = self.conv0(x, ws[0], noise_mode, at)                            # [N, C, R, R]
            x = self.conv1(x, ws[1], noise_mode, at)
        if need_img:
            y = self.torgb(x, ws[self.num_conv])                                # [N, img_channels, R, R]
            img = _upsample2d(img, self.resample_filter * 4).add_(y) if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, R, R] in about [-1, 1]; optionally a block's features too."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, **block_kwargs: Any):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, not {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res  # accepted for compatibility; everything runs in fp32
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        if channels[img_resolution] < 1:
            raise ValueError(f"channel_base {channel_base} gives no channels at {img_resolution} px")
        self.num_ws = 0
        self.w_index: list[int] = []      # index of each block's first w in ws
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels,
                                   is_last=res == img_resolution, **block_kwargs)
            self.w_index.append(self.num_ws)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's torgb; every other torgb shares the next block's first w
        self.blocks = [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: Tensor, noise_mode: str = "const", feature_block: int | None = None,
                stop_at_feature: bool = False, const_ws_from: int | None = None, force_fp32: bool = True,
                update_emas: bool = False) -> Tensor | tuple[Tensor | None, Tensor]:
        """Returns img, or ``(img, feat)`` with ``feature_block=R`` (feat = block bR's output x).

        With ``stop_at_feature`` the blocks above R and every ToRGB layer are skipped and img is None.
        ``const_ws_from=k`` treats ``ws[:, k:]`` as constants: no gradient reaches them. DragGAN
        optimises only ws[:, :6] but passes all of them in one tensor that requires grad, and
        autograd cannot tell which parts of it matter; saying so lets the layers that use the
        later ws take the cheaper form (about 15% of a drag step at 256 px).
        ``force_fp32`` and ``update_emas`` are accepted for call compatibility with NVIDIA's code.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], not {list(ws.shape)}")
        if feature_block is not None and feature_block not in self.block_resolutions:
            raise ValueError(f"feature_block must be one of {self.block_resolutions}, not {feature_block}")
        if stop_at_feature and feature_block is None:
            raise ValueError("stop_at_feature needs a feature_block")
        w = ws.to(self.blocks[0].const.dtype).unbind(dim=1)                    # num_ws x [N, w_dim]
        if const_ws_from is not None:
            w = [v if i < const_ws_from else v.detach() for i, v in enumerate(w)]
        x = img = feat = None
        for block, i in zip(self.blocks, self.w_index):
            x, img = block(x, img, w[i:i + block.num_conv + 1], noise_mode, need_img=not stop_at_feature)
            if block.resolution == feature_block:
                feat = x
                if stop_at_feature:
                    return None, feat
        if feature_block is not None:
            return img, feat
        return img


    def feature_windows(self, ws: Tensor, feature_block: int, windows: Sequence[tuple[int, int, int, int]],
                        noise_mode: str = "const", const_ws_from: int | None = None,
                        max_area: float = 0.5) -> list[Tensor]:
        """Block bR's features in a few windows only: the same numbers as a crop of the full map.

        ``windows`` are ``(x0, y0, x1, y1)`` in bR's pixels, half-open and clipped to the map.
        A drag needs the features near its handles only (the tracking square and the pulled
        disk), so the top blocks, which hold most of the work, run on small windows (and so
        does their backward pass). Each block's window is the next block's input window
        grown by a halo the convolutions cannot see past; a window covering more than
        ``max_area`` of its map is computed whole instead. Returns one [N, C, y1-y0, x1-x0]
        tensor per window.
        """
        if feature_block not in self.block_resolutions:
            raise ValueError(f"feature_block must be one of {self.block_resolutions}, not {feature_block}")
        w = ws.to(self.blocks[0].const.dtype).unbind(dim=1)
        if const_ws_from is not None:
            w = [v if i < const_ws_from else v.detach() for i, v in enumerate(w)]
        top = self.block_resolutions.index(feature_block)
        # Each window's plan, from the top block down: (block, rows and columns wanted of its
        # output, its input window), until an input window would cover most of its map.
        plans = []
        for x0, y0, x1, y1 in windows:
            if not (0 <= x0 < x1 <= feature_block and 0 <= y0 < y1 <= feature_block):
                raise ValueError(f"window {(x0, y0, x1, y1)} is not inside the {feature_block} px map")
            wanted = ((y0, y1), (x0, x1))
            plan = []
            for k in range(top, 0, -1):
                inner = self.block_resolutions[k - 1]
                below = tuple((max(a // 2 - _WINDOW_HALO, 0), min(-(-b // 2) + _WINDOW_HALO, inner))
                              for a, b in wanted)
                plan.append((k, wanted, below))
                if (below[0][1] - below[0][0]) * (below[1][1] - below[1][0]) > max_area * inner * inner:
                    break
                wanted = below
            plans.append((plan[::-1], wanted if not plan else None))
        # The blocks under the highest plan's start, whole (every window starts from one of them).
        whole = max((plan[0][0] for plan, _ in plans if plan), default=top + 1)
        outputs, x = [], None
        for block, i in zip(self.blocks[:whole], self.w_index):
            x, _ = block(x, None, w[i:i + block.num_conv + 1], noise_mode, need_img=False)
            outputs.append(x)
        crops = []
        for plan, b4_window in plans:
            if not plan:  # the feature block is b4 itself
                (r0, r1), (c0, c1) = b4_window
                crops.append(outputs[0][:, :, r0:r1, c0:c1])
                continue
            x = None
            for k, ((a0, a1), (b0, b1)), ((r0, r1), (c0, c1)) in plan:
                if x is None:
                    x = outputs[k - 1][:, :, r0:r1, c0:c1]
                block, i = self.blocks[k], self.w_index[k]
                y, _ = block(x, None, w[i:i + block.num_conv + 1], noise_mode, need_img=False, at=(2 * r0, 2 * c0))
                x = y[:, :, a0 - 2 * r0:a1 - 2 * r0, b0 - 2 * c0:b1 - 2 * c0]
            crops.append(x)
        return crops


# How far (in input pixels) a block's input window must reach past the outputs wanted of it.
# Output pixel k of conv0 (stride-2 transposed 3x3, then the 4x4 filter with 1 pixel of
# padding) reads input pixels ceil((k-3)/2) .. floor((k+2)/2), and conv1 widens that by one
# output pixel on each side: 2 input pixels are enough, and no fewer (the test tries 1).
_WINDOW_HALO = 2


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs: Any):
        super().__init__()
        # Accept the stylegan2-ada nested form (synthesis_kwargs={...}) as well as the flat one.
        nested = synthesis_kwargs.pop("synthesis_kwargs", None) or {}
        synthesis_kwargs = {**nested, **synthesis_kwargs}
        mapping_kwargs = dict(mapping_kwargs or {})
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
        self._init_kwargs = {
            "z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "img_resolution": img_resolution,
            "img_channels": img_channels, "mapping_kwargs": _jsonable(mapping_kwargs), **_jsonable(synthesis_kwargs),
        }

    @property
    def init_kwargs(self) -> dict:
        """The constructor arguments as a JSON-able dict: ``Generator(**G.init_kwargs)`` rebuilds G."""
        return _jsonable(self._init_kwargs)

    def forward(self, z: Tensor, c: Tensor | None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "const", update_emas: bool = False) -> Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


def _jsonable(value: Any) -> Any:
    """A deep copy with tuples as lists, so that ``init_kwargs`` survives a JSON round trip unchanged."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Discriminator (resnet architecture).


class DiscriminatorBlock(nn.Module):
    """(fromrgb at the top block) conv0, conv1 with x2 downsampling, plus a 1x1 skip; both halves scaled by sqrt(.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 first_layer_idx: int, architecture: str = "resnet", activation: str = "lrelu",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
                 use_fp16: bool = False, fp16_channels_last: bool = False, freeze_layers: int = 0):
        super().__init__()
        if architecture != "resnet":
            raise ValueError(f"only the 'resnet' discriminator architecture is supported, not {architecture!r}")
        if in_channels not in (0, tmp_channels):
            raise ValueError("in_channels must be 0 (first block) or tmp_channels")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.register_buffer("resample_filter", _filter_2d(resample_filter))
        trainable = (first_layer_idx + i >= freeze_layers for i in range(4))
        common = dict(activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=next(trainable), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=next(trainable), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter,
                                 trainable=next(trainable), **common)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                resample_filter=resample_filter, trainable=next(trainable))
        self.num_layers = 4 if in_channels == 0 else 3

    def forward(self, x: Tensor | None, img: Tensor | None) -> tuple[Tensor, None]:
        if self.in_channels == 0:
            assert img is not None
            x = self.fromrgb(img)                                               # [N, C, R, R]
        assert x is not None
        y = self.skip(x, gain=math.sqrt(0.5))                                   # [N, C', R/2, R/2]
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y.add_(x), None


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation across groups of samples as extra feature maps (fights mode collapse)."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise ValueError(f"the batch size ({n}) must be a multiple of the minibatch-std group size ({g})")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)           # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()      # [n, F, c, H, W] std over each group
        y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1)  # [n, F, 1, 1]
        y = y.repeat(g, 1, h, w)                        # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch std, conv, fc, out (and the projection onto the label's embedding)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, cmap: Tensor | None) -> Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            assert cmap is not None
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x                                        # [N, 1]


class Discriminator(nn.Module):
    """StyleGAN2 resnet discriminator: image [N, C, R, R] (and label c) -> one logit per image [N, 1]."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, cmap_dim: int | None = None, mbstd_group_size: int | None = 4,
                 mbstd_num_channels: int = 1, block_kwargs: dict | None = None, mapping_kwargs: dict | None = None,
                 epilogue_kwargs: dict | None = None):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, not {img_resolution}")
        self._init_kwargs = _jsonable({
            "c_dim": c_dim, "img_resolution": img_resolution, "img_channels": img_channels,
            "architecture": architecture, "channel_base": channel_base, "channel_max": channel_max,
            "num_fp16_res": num_fp16_res, "conv_clamp": conv_clamp, "cmap_dim": cmap_dim,
            "mbstd_group_size": mbstd_group_size, "mbstd_num_channels": mbstd_num_channels,
            "block_kwargs": dict(block_kwargs or {}), "mapping_kwargs": dict(mapping_kwargs or {}),
            "epilogue_kwargs": dict(epilogue_kwargs or {}),
        })
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        if channels[img_resolution] < 1:
            raise ValueError(f"channel_base {channel_base} gives no channels at {img_resolution} px")
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, first_layer_idx=layer_idx,
                                       **(block_kwargs or {}), **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        epilogue = {"mbstd_group_size": mbstd_group_size, "mbstd_num_channels": mbstd_num_channels,
                    **(epilogue_kwargs or {})}
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue, **common)
        self.blocks = [getattr(self, f"b{res}") for res in self.block_resolutions]

    @property
    def init_kwargs(self) -> dict:
        """The constructor arguments as a JSON-able dict: ``Discriminator(**D.init_kwargs)`` rebuilds D."""
        return _jsonable(self._init_kwargs)

    def forward(self, img: Tensor, c: Tensor | None = None, update_emas: bool = False) -> Tensor:
        x = None
        for block in self.blocks:
            x, _ = block(x, img)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)
