"""Conv-TasNet (Luo and Mesgarani, TASLP 2019, arXiv 1809.07454), one readable file.

A mixture waveform is separated in a learned 1-D "filterbank" domain:

1. **Encoder**: a Conv1d of N filters of length L with stride L/2 (no bias), optionally
   followed by a ReLU (the paper's best is linear). ``mix [B, T] -> w [B, N, K]`` frames.
2. **Separator** (temporal convolutional network): a norm of w, a 1x1 bottleneck to B
   channels, then X blocks with dilations 1, 2, ..., 2^(X-1), repeated R times. A block:
   1x1 conv B -> H, PReLU, norm, depthwise conv (kernel P, dilation d), PReLU, norm, then a
   1x1 residual conv H -> B (added to the block's input) and a 1x1 skip conv H -> Sc. The
   skips are summed, then PReLU and a 1x1 conv to C x N, and the mask nonlinearity
   (sigmoid, ReLU or a softmax across the C speakers) gives ``m [B, C, N, K]``.
3. **Decoder**: a ConvTranspose1d of the masked frames ``w * m_c`` back to a waveform, cut
   (or zero-padded) to the input length.

Norms: ``gLN`` (global layer norm: mean and variance over channels *and* time, gamma and
beta per channel) for the non-causal model; ``cLN`` (cumulative layer norm: the mean and
variance over channels and the frames *up to* k only) for the causal one, whose depthwise
convolutions are also padded on the left only, so that no output depends on the future.

The paper's best configuration (Table II) is the :class:`ConvTasNetConfig` default: N=512,
L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, gLN, sigmoid masks, 5.05 M parameters with two
speakers. The module names mirror that structure; :mod:`.loaders` maps asteroid's and
torchaudio's state dicts onto them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import UserError

NORMS = ("gLN", "cLN")
MASKS = ("sigmoid", "relu", "softmax")
EPS = 1e-8


@dataclass
class ConvTasNetConfig:
    """Every hyper-parameter, with the paper's names (Table I) and best values (Table II)."""

    n_src: int = 2          # C: speakers
    N: int = 512            # encoder filters
    L: int = 16             # filter length in samples (stride L // 2)
    B: int = 128            # bottleneck channels
    H: int = 512            # channels inside a block
    Sc: int = 128           # skip-connection channels
    P: int = 3              # depthwise kernel size
    X: int = 8              # blocks per repeat (dilations 1 .. 2^(X-1))
    R: int = 3              # repeats
    norm: str = "gLN"       # "gLN" (non-causal) or "cLN" (cumulative, causal)
    causal: bool = False
    mask_act: str = "sigmoid"
    encoder_act: str = "linear"  # "linear" or "relu"
    sample_rate: int = 8000

    def validate(self) -> None:
        if self.n_src < 1 or min(self.N, self.B, self.H, self.Sc, self.P, self.X, self.R) < 1:
            raise UserError("Conv-TasNet sizes must all be at least 1.")
        if self.L < 2 or self.L % 2:
            raise UserError(f"The filter length L must be even and at least 2, not {self.L}.")
        if self.norm not in NORMS:
            raise UserError(f"norm must be one of {', '.join(NORMS)}, not {self.norm!r}.")
        if self.mask_act not in MASKS:
            raise UserError(f"mask_act must be one of {', '.join(MASKS)}, not {self.mask_act!r}.")
        if self.encoder_act not in ("linear", "relu"):
            raise UserError(f"encoder_act must be linear or relu, not {self.encoder_act!r}.")
        if self.causal and self.norm == "gLN":
            raise UserError("A causal Conv-TasNet needs the cumulative layer norm (cLN): gLN looks at the future.")
        if self.sample_rate < 1000:
            raise UserError(f"The sample rate must be at least 1000 Hz, not {self.sample_rate}.")

    @property
    def stride(self) -> int:
        return self.L // 2

    def receptive_field_s(self) -> float:
        """Seconds of input one output frame sees (the paper's 1.53 s for the best config)."""
        frames = 1 + self.R * sum((self.P - 1) * 2 ** x for x in range(self.X))
        return (frames * self.stride + self.L - self.stride) / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConvTasNetConfig:
        """Read a config back field by field (unknown keys are refused, wrong types too)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"Unknown Conv-TasNet settings: {', '.join(unknown)}.")
        values = {}
        for name, value in data.items():
            default = getattr(cls(), name)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise UserError(f"Conv-TasNet setting {name} must be true or false, not {value!r}.")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise UserError(f"Conv-TasNet setting {name} must be a whole number, not {value!r}.")
            elif isinstance(default, str) and not isinstance(value, str):
                raise UserError(f"Conv-TasNet setting {name} must be text, not {value!r}.")
            values[name] = value
        config = cls(**values)
        config.validate()
        return config


class GlobalLayerNorm(nn.Module):
    """gLN: normalise over channels and time together; gamma, beta per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:  # x [B, C, K]
        mean = x.mean(dim=(1, 2), keepdim=True)                                    # [B, 1, 1]
        var = (x.square().mean(dim=(1, 2), keepdim=True) - mean.square()).clamp_min(0)
        # gamma * (x - mean) / sqrt(var + eps) + beta, as one scale and shift per channel: x * a + b
        a = self.gamma * torch.rsqrt(var + EPS)                                    # [B, C, 1]
        return torch.addcmul(self.beta - mean * a, x, a)


class CumulativeLayerNorm(nn.Module):
    """cLN: at frame k, the mean and variance over channels and frames 1..k only (causal)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:  # x [B, C, K]
        c = x.shape[1]
        count = torch.arange(1, x.shape[2] + 1, device=x.device, dtype=x.dtype) * c   # [K]
        cum_sum = x.sum(dim=1).cumsum(dim=1)                                          # [B, K]
        cum_sq = x.square().sum(dim=1).cumsum(dim=1)
        mean = cum_sum / count
        var = (cum_sq / count - mean.square()).clamp_min(0)
        # (x - mean) / sqrt(var + eps) as x * a + b with a, b per frame, then gamma and beta per channel
        a = torch.rsqrt(var + EPS).unsqueeze(1)                                       # [B, 1, K]
        return torch.addcmul(self.beta, torch.addcmul(-mean.unsqueeze(1) * a, x, a), self.gamma)


def make_norm(kind: str, channels: int) -> nn.Module:
    return GlobalLayerNorm(channels) if kind == "gLN" else CumulativeLayerNorm(channels)


class TemporalBlock(nn.Module):
    """1x1 B->H, PReLU, norm, depthwise (P, dilation d), PReLU, norm; residual H->B and skip H->Sc."""

    def __init__(self, cfg: ConvTasNetConfig, dilation: int, residual: bool = True) -> None:
        super().__init__()
        self.causal = cfg.causal
        self.pad = (cfg.P - 1) * dilation
        self.in_conv = nn.Conv1d(cfg.B, cfg.H, 1)
        self.act1 = nn.PReLU()
        self.norm1 = make_norm(cfg.norm, cfg.H)
        self.depthwise = nn.Conv1d(cfg.H, cfg.H, cfg.P, dilation=dilation, groups=cfg.H)
        self.act2 = nn.PReLU()
        self.norm2 = make_norm(cfg.norm, cfg.H)
        # torchaudio's last block has no residual output (nothing reads it); asteroid's does.
        self.res_conv = nn.Conv1d(cfg.H, cfg.B, 1) if residual else None
        self.skip_conv = nn.Conv1d(cfg.H, cfg.Sc, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x [B, B, K]
        y = self.norm1(self.act1(self.in_conv(x)))                                # [B, H, K]
        if self.causal:
            y = F.pad(y, (self.pad, 0))                                           # the past only
        else:
            y = F.pad(y, (self.pad // 2, self.pad - self.pad // 2))
        y = self.norm2(self.act2(self.depthwise(y)))                              # [B, H, K]
        residual = x + self.res_conv(y) if self.res_conv is not None else x
        return residual, self.skip_conv(y)


class Separator(nn.Module):
    """The TCN: norm, bottleneck, X*R temporal blocks, summed skips -> C masks over N channels."""

    def __init__(self, cfg: ConvTasNetConfig, last_residual: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_norm = make_norm(cfg.norm, cfg.N)
        self.bottleneck = nn.Conv1d(cfg.N, cfg.B, 1)
        count = cfg.X * cfg.R
        self.blocks = nn.ModuleList(
            TemporalBlock(cfg, 2 ** (i % cfg.X), residual=last_residual or i < count - 1) for i in range(count))
        self.out_act = nn.PReLU()
        self.out_conv = nn.Conv1d(cfg.Sc, cfg.n_src * cfg.N, 1)

    def forward(self, w: Tensor) -> Tensor:  # w [B, N, K] -> masks [B, C, N, K]
        x = self.bottleneck(self.in_norm(w))
        skips = torch.zeros(x.shape[0], self.cfg.Sc, x.shape[2], device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x, skip = block(x)
            skips = skips + skip
        scores = self.out_conv(self.out_act(skips)).view(x.shape[0], self.cfg.n_src, self.cfg.N, -1)
        if self.cfg.mask_act == "sigmoid":
            return torch.sigmoid(scores)
        if self.cfg.mask_act == "relu":
            return F.relu(scores)
        return torch.softmax(scores, dim=1)


class ConvTasNet(nn.Module):
    """mix [B, T] (or [T]) -> separated sources [B, C, T] (or [C, T])."""

    def __init__(self, config: ConvTasNetConfig | None = None, last_residual: bool = True) -> None:
        super().__init__()
        self.config = config or ConvTasNetConfig()
        self.config.validate()
        cfg = self.config
        self.encoder = nn.Conv1d(1, cfg.N, cfg.L, stride=cfg.stride, bias=False)
        self.separator = Separator(cfg, last_residual=last_residual)
        self.decoder = nn.ConvTranspose1d(cfg.N, 1, cfg.L, stride=cfg.stride, bias=False)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def n_src(self) -> int:
        return self.config.n_src

    def encode(self, mix: Tensor) -> Tensor:
        """mix [B, T] -> the encoder's frames w [B, N, K] (what the Learn panel shows)."""
        w = self.encoder(mix.unsqueeze(1))
        return F.relu(w) if self.config.encoder_act == "relu" else w

    def forward(self, mix: Tensor, return_masks: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        single = mix.dim() == 1
        if single:
            mix = mix.unsqueeze(0)
        t = mix.shape[-1]
        cfg = self.config
        # Pad so that every sample is covered by whole frames.
        frames = max(1, math.ceil((t - cfg.L) / cfg.stride) + 1)
        padded = F.pad(mix, (0, (frames - 1) * cfg.stride + cfg.L - t))
        w = self.encode(padded)                                                   # [B, N, K]
        masks = self.separator(w)                                                 # [B, C, N, K]
        masked = (w.unsqueeze(1) * masks).reshape(-1, cfg.N, w.shape[-1])         # [B*C, N, K]
        out = self.decoder(masked).view(mix.shape[0], cfg.n_src, -1)[..., :t]     # [B, C, T]
        if single:
            out = out[0]
        if return_masks:
            return out, w, masks
        return out


WIDTHS = ("N", "B", "H", "Sc")        # the channel counts :func:`widen` can grow
NORMED = ("N", "H")                   # ... of which a layer norm reads all channels at once


def _copies(old: int, new: int) -> Tensor:
    """Which old channel each of ``new`` channels copies: 0..old-1 first, then again in turn."""
    return torch.arange(new) % old


def _shares(source: Tensor, generator: torch.Generator) -> Tensor:
    """For each new channel, its share of what its old channel fed forward: the copies of one
    channel get random shares (0.5 .. 1.5, then normalised) that add up to exactly 1."""
    raw = 0.5 + torch.rand(len(source), generator=generator, dtype=torch.float64)
    total = torch.zeros(int(source.max()) + 1, dtype=torch.float64).index_add_(0, source, raw)
    return (raw / total[source]).float()


def widen(small: ConvTasNet, config: ConvTasNetConfig, seed: int = 0) -> ConvTasNet:
    """A wider model (more N, B, H and/or Sc channels) that computes exactly what ``small`` does.

    Net2Net's "wider" operation: each new channel is a copy of an old one (its incoming weights,
    bias, norm gain and bias copied), and every layer that reads the copies of a channel gets
    that channel's outgoing weights split among them in random shares that add up to 1. The sum
    is unchanged, so the output is too; the shares differ, so the copies get different gradients
    and learn different things. N and H must be whole multiples of the old counts: a layer norm
    averages over all channels, and copying each channel the same number of times keeps its mean
    and variance. Depth and everything else must be the same (:func:`grow` deepens).
    """
    old = small.config
    same = [k for k in fields(config) if k.name not in WIDTHS]
    differ = [k.name for k in same if getattr(old, k.name) != getattr(config, k.name)]
    if differ:
        raise UserError(f"Only N, B, H and Sc can widen; these differ: {', '.join(differ)}.")
    for k in WIDTHS:
        a, b = getattr(old, k), getattr(config, k)
        if b < a:
            raise UserError(f"Widening cannot shrink: {k} {a} -> {b}.")
        if k in NORMED and b % a:
            raise UserError(f"{k} can only widen to a whole multiple of {a} (a layer norm reads all of its "
                            f"channels), not {b}.")
    g = torch.Generator().manual_seed(seed)
    src = {k: _copies(getattr(old, k), getattr(config, k)) for k in WIDTHS}
    share = {k: _shares(src[k], g) for k in WIDTHS}

    def rows(t: Tensor, k: str) -> Tensor:           # copy a layer's outputs (dim 0)
        return t.index_select(0, src[k]).clone()

    def cols(t: Tensor, k: str) -> Tensor:           # split a layer's inputs (dim 1) among the copies
        shape = [1, -1] + [1] * (t.dim() - 2)
        return (t.index_select(1, src[k]) * share[k].view(shape)).clone()

    def norm(t: Tensor, k: str) -> Tensor:            # gamma, beta [1, C, 1]
        return t.index_select(1, src[k]).clone()

    last_residual = small.separator.blocks[-1].res_conv is not None
    big = ConvTasNet(config, last_residual=last_residual)
    s = small.state_dict()
    t: dict[str, Tensor] = {}
    t["encoder.weight"] = rows(s["encoder.weight"], "N")                              # [N, 1, L]
    t["decoder.weight"] = rows(s["decoder.weight"], "N") * share["N"].view(-1, 1, 1)  # [N, 1, L]: reads N
    for name in ("gamma", "beta"):
        t[f"separator.in_norm.{name}"] = norm(s[f"separator.in_norm.{name}"], "N")
    t["separator.bottleneck.weight"] = rows(cols(s["separator.bottleneck.weight"], "N"), "B")
    t["separator.bottleneck.bias"] = rows(s["separator.bottleneck.bias"], "B")
    for j in range(len(small.separator.blocks)):
        b = f"separator.blocks.{j}."
        t[b + "in_conv.weight"] = rows(cols(s[b + "in_conv.weight"], "B"), "H")
        t[b + "in_conv.bias"] = rows(s[b + "in_conv.bias"], "H")
        t[b + "depthwise.weight"] = rows(s[b + "depthwise.weight"], "H")
        t[b + "depthwise.bias"] = rows(s[b + "depthwise.bias"], "H")
        for n in ("norm1", "norm2"):
            for name in ("gamma", "beta"):
                t[b + f"{n}.{name}"] = norm(s[b + f"{n}.{name}"], "H")
        for a in ("act1", "act2"):
            t[b + f"{a}.weight"] = s[b + f"{a}.weight"].clone()
        if b + "res_conv.weight" in s:
            t[b + "res_conv.weight"] = rows(cols(s[b + "res_conv.weight"], "H"), "B")
            t[b + "res_conv.bias"] = rows(s[b + "res_conv.bias"], "B")
        t[b + "skip_conv.weight"] = rows(cols(s[b + "skip_conv.weight"], "H"), "Sc")
        t[b + "skip_conv.bias"] = rows(s[b + "skip_conv.bias"], "Sc")
    t["separator.out_act.weight"] = s["separator.out_act.weight"].clone()
    # out_conv's outputs are C masks of N channels each: copy within each speaker's block of N.
    c, n_old = old.n_src, old.N
    speaker_rows = (torch.arange(c)[:, None] * n_old + src["N"][None, :]).reshape(-1)  # [C * N_new]
    out_w = cols(s["separator.out_conv.weight"], "Sc")
    t["separator.out_conv.weight"] = out_w.index_select(0, speaker_rows).clone()
    t["separator.out_conv.bias"] = s["separator.out_conv.bias"].index_select(0, speaker_rows).clone()
    big.load_state_dict(t)
    return big


def grow(small: ConvTasNet, config: ConvTasNetConfig) -> ConvTasNet:
    """A bigger model (deeper: more blocks X and/or repeats R; wider: more N, B, H, Sc channels)
    that computes exactly what ``small`` does.

    Net2Net-style growth. Wider first (:func:`widen`), then deeper: every block of ``small``
    keeps its place (repeat r, dilation 2**x), and each new block starts with zero residual and
    skip convolutions, so it passes its input through unchanged and adds nothing to the skips
    until training teaches it something. Everything else (L, P, the norm, causality, speakers,
    mask) must be the same.
    """
    old = small.config
    same = ("L", "P", "norm", "causal", "n_src", "mask_act", "encoder_act", "sample_rate")
    differ = [k for k in same if getattr(old, k) != getattr(config, k)]
    if differ:
        raise UserError(f"Only X, R, N, B, H and Sc can grow; these differ: {', '.join(differ)}.")
    if config.X < old.X or config.R < old.R:
        raise UserError(f"Growth cannot shrink: X {old.X} -> {config.X}, R {old.R} -> {config.R}.")
    keys = ("X", "R") + WIDTHS
    if all(getattr(config, k) == getattr(old, k) for k in keys):
        raise UserError(f"Nothing to grow: the model already has {describe(old)} (to go on training it, "
                        "resume its --state instead).")
    if any(getattr(config, k) != getattr(old, k) for k in WIDTHS):
        small = widen(small, replace(old, **{k: getattr(config, k) for k in WIDTHS}))
        old = small.config
        if (config.X, config.R) == (old.X, old.R):
            return small
    big = ConvTasNet(config)
    target = big.state_dict()
    for key, value in small.state_dict().items():
        if not key.startswith("separator.blocks."):
            target[key] = value.clone()
    source = {(i // old.X) * config.X + i % old.X: block for i, block in enumerate(small.separator.blocks)}
    for j in range(len(big.separator.blocks)):
        block = source.get(j)                                                     # same repeat, same dilation
        copied = block.state_dict() if block is not None else {}
        for key, value in copied.items():
            target[f"separator.blocks.{j}.{key}"] = value.clone()
        for conv in ("res_conv", "skip_conv"):                                    # new outputs start silent
            for name in ("weight", "bias"):
                if f"{conv}.{name}" not in copied:
                    target[f"separator.blocks.{j}.{conv}.{name}"].zero_()
    big.load_state_dict(target)
    return big


def describe(config: ConvTasNetConfig) -> str:
    """``X=8, R=2, N=64, B=64, H=128, Sc=64``: the sizes :func:`grow` can change."""
    return ", ".join(f"{k}={getattr(config, k)}" for k in ("X", "R") + WIDTHS)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
