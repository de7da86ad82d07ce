"""Live separation: a causal Conv-TasNet run chunk by chunk while the audio is recorded.

:class:`StreamingSeparator` takes any number of new samples at a time (1, 7, 333, 0, not a
multiple of the hop) and returns the separated samples that have become *final*. The
concatenation of everything :meth:`~StreamingSeparator.push` returned plus what
:meth:`~StreamingSeparator.flush` returns equals the offline ``model(whole_recording)`` to
float rounding. Nothing of the past is recomputed: every layer carries just enough state.

Notation: L the encoder's filter length, S = L / 2 its hop, frame k covers the input samples
``[k S, k S + L)``. A push computes all its new complete frames at once, layer by layer.

The state each layer carries, and why the result is the offline one:

* **Encoder** (Conv1d, kernel L, stride S, no bias; the optional ReLU is per frame). It keeps
  the samples from the start of the next frame on (between S and L - 1 of them after a push:
  the L - S = S samples that the next frame shares with the last one, plus the incomplete
  ones). A frame is computed once all its L samples are in; it is then exactly the offline
  frame, which reads the same samples.
* **1x1 convolutions, PReLUs, masks** (bottleneck, a block's in_conv / res_conv / skip_conv,
  the output PReLU and conv, sigmoid / ReLU / softmax over speakers): they act on each frame
  alone, so they carry nothing.
* **Cumulative layer norms** (cLN: the separator's input norm and each block's two norms).
  At frame k the offline model divides by the mean and variance over the channels and the
  frames 0..k. Each norm here keeps the frames-so-far count, sum and sum of squares (per
  batch item); a push's new frames get their cumulative sums seeded by those, which are
  the offline cumulative sums. (They are kept in float64, so hours of recording do not
  drift; the offline float32 ``cumsum`` agrees to rounding.)
* **Causal depthwise convolutions** (kernel P, dilation d): offline, frame k reads its
  input frames k - (P-1) d .. k, zero-padded on the left. Each keeps the last (P-1) d
  frames of its input (zeros at the start, as the offline padding), prepended to the new
  frames; the convolution of that then gives exactly the new output frames.
* **Decoder** (ConvTranspose1d, kernel L, stride S, no bias): an overlap-add of one
  L-sample piece per frame. The decoded pieces of a push are added up, the S-sample tail
  that the previous push left is added to their start, and all but the last S samples are
  returned: those are final, since the next frame only adds to the last S.

So after n samples pushed, the frames 0..K-1 with K = floor(n / S) - 1 (when n >= L) have
gone through the whole network and the samples ``[0, K S)`` are final.

**Latency.** Output sample t gets pieces from frames floor(t / S) - 1 and floor(t / S); it
is final once the later one is complete, i.e. once ``floor(t / S) S + L`` samples have been
pushed. Counting time in sample periods from the start of sample t, the wait is
``floor(t / S) S + L - t``: L for the first sample of a hop, S + 1 for its last. The
algorithmic latency :attr:`~StreamingSeparator.latency_samples` is the worst case, **L**
(the frame length; the paper's 2 ms for L = 16 at 8 kHz). The real latency also counts the
compute: :attr:`~StreamingSeparator.last_compute_s` is the time the last push took.

**The end.** :meth:`~StreamingSeparator.flush` pads the last, incomplete frame with zeros
as the offline model does (it pads the recording to whole frames), runs the frames left,
returns every sample not returned yet (up to the recording's length) and resets.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import UserError
from .model import EPS, ConvTasNet, CumulativeLayerNorm


class _RunningNorm:
    """A cumulative layer norm continued from its frames-so-far count, sum and sum of squares."""

    def __init__(self, norm: CumulativeLayerNorm, batch: int, device: torch.device) -> None:
        self.norm = norm
        self.frames = 0                                                    # frames seen so far
        self.sum = torch.zeros(batch, dtype=torch.float64, device=device)  # over channels and frames
        self.sum_sq = torch.zeros(batch, dtype=torch.float64, device=device)

    def __call__(self, x: Tensor) -> Tensor:  # x [B, C, k]: the new frames only
        channels, k = x.shape[1], x.shape[2]
        cum_sum = self.sum.unsqueeze(1) + x.sum(dim=1).double().cumsum(dim=1)            # [B, k]
        cum_sq = self.sum_sq.unsqueeze(1) + x.square().sum(dim=1).double().cumsum(dim=1)
        count = (self.frames + torch.arange(1, k + 1, dtype=torch.float64, device=x.device)) * channels
        self.frames += k
        self.sum, self.sum_sq = cum_sum[:, -1], cum_sq[:, -1]
        mean = cum_sum / count
        var = (cum_sq / count - mean.square()).clamp_min(0)
        mean, var = mean.to(x.dtype).unsqueeze(1), var.to(x.dtype).unsqueeze(1)
        return self.norm.gamma * (x - mean) / torch.sqrt(var + EPS) + self.norm.beta


class _CausalDepthwise:
    """A left-padded depthwise convolution continued from the last (P-1)*dilation input frames."""

    def __init__(self, conv: torch.nn.Conv1d, context: int, batch: int, channels: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.conv = conv
        self.context = context
        self.history = torch.zeros(batch, channels, context, dtype=dtype, device=device)  # the zero padding

    def __call__(self, y: Tensor) -> Tensor:  # y [B, H, k] -> [B, H, k]
        y = torch.cat([self.history, y], dim=2)
        self.history = y[:, :, y.shape[2] - self.context:]
        return self.conv(y)


class StreamingSeparator:
    """Separate a recording as it comes in with a causal Conv-TasNet (see the module docstring).

    ``push(samples)`` -> the separated samples now final, ``[C, m]``; ``flush()`` -> the rest,
    after which the separator is ready for a new recording (as after ``reset()``). The outputs
    are float32 (float64 for a float64 model).
    """

    def __init__(self, model: ConvTasNet) -> None:
        cfg = model.config
        if cfg.norm != "cLN" or not all(
                isinstance(norm, CumulativeLayerNorm) for norm in self._norm_modules(model)):
            raise UserError("Live separation needs a causal Conv-TasNet with the cumulative layer norm (cLN): "
                            f"this one uses {cfg.norm}, and gLN looks at the future (its mean and variance "
                            "are taken over the whole recording).")
        if not cfg.causal or not all(block.causal for block in model.separator.blocks):
            raise UserError("Live separation needs a causal Conv-TasNet: this one pads its depthwise "
                            "convolutions on both sides, so every frame looks at future frames.")
        if model.decoder.bias is not None:
            raise UserError("Live separation needs a decoder without a bias (the overlap-add would add it twice).")
        self.model = model
        self.config = cfg
        self.L = cfg.L
        self.hop = cfg.stride
        parameter = next(model.parameters())
        self._dtype, self._device = parameter.dtype, parameter.device
        self._out_dtype = np.float64 if self._dtype == torch.float64 else np.float32   # what push returns
        self.last_compute_s = 0.0
        self.reset()

    @staticmethod
    def _norm_modules(model: ConvTasNet) -> list[torch.nn.Module]:
        blocks = model.separator.blocks
        return [model.separator.in_norm, *(b.norm1 for b in blocks), *(b.norm2 for b in blocks)]

    # ---- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the recording: the next push starts a new one."""
        cfg, dtype, device = self.config, self._dtype, self._device
        self._pending = np.zeros(0, dtype=np.float32)   # input from the next frame's start on
        self._samples_in = 0
        self._samples_out = 0
        self._frames_done = 0
        self._in_norm = _RunningNorm(self.model.separator.in_norm, 1, device)
        self._blocks = [
            (_RunningNorm(block.norm1, 1, device),
             _CausalDepthwise(block.depthwise, block.pad, 1, cfg.H, dtype, device),
             _RunningNorm(block.norm2, 1, device))
            for block in self.model.separator.blocks]
        self._tail = torch.zeros(cfg.n_src, self.L - self.hop, dtype=dtype, device=device)  # decoder overlap

    @property
    def n_src(self) -> int:
        return self.config.n_src

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def samples_in(self) -> int:
        """Samples pushed since the last reset."""
        return self._samples_in

    @property
    def samples_out(self) -> int:
        """Separated samples (per speaker) returned since the last reset."""
        return self._samples_out

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency, worst case: L (a frame's first sample waits for the whole frame)."""
        return self.L

    @property
    def latency_s(self) -> float:
        return self.latency_samples / self.sample_rate

    # ---- feeding -----------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed new samples ``[n]`` (any n, 0 too); return the separated samples now final, ``[C, m]``."""
        start = time.perf_counter()
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise UserError(f"Live separation takes one channel of samples [n], not an array of shape "
                            f"{samples.shape}.")
        self._pending = np.concatenate([self._pending, samples])
        self._samples_in += samples.size
        out = self._run_frames(self._complete_frames())
        self.last_compute_s = time.perf_counter() - start
        return out

    def flush(self) -> np.ndarray:
        """The rest of the recording ``[C, m]`` (the last frame zero-padded, as offline); then reset."""
        start = time.perf_counter()
        total = self._samples_in
        if total == 0:
            out = np.zeros((self.n_src, 0), dtype=self._out_dtype)
        else:
            frames = max(1, math.ceil((total - self.L) / self.hop) + 1)   # the offline model's frame count
            left, missing = frames - self._frames_done, total - self._samples_out
            needed = (left - 1) * self.hop + self.L if left else 0
            self._pending = np.pad(self._pending, (0, max(0, needed - self._pending.size)))
            out = self._run_frames(left)
            rest = self._numpy(self._tail)
            out = np.concatenate([out, rest], axis=1)[:, :missing]
        self.reset()
        self.last_compute_s = time.perf_counter() - start
        return out

    def _complete_frames(self) -> int:
        n = self._pending.size
        return (n - self.L) // self.hop + 1 if n >= self.L else 0

    def _run_frames(self, k: int) -> np.ndarray:
        """Run the next k frames (all of their samples are in ``_pending``) through the network."""
        if k <= 0:
            return np.zeros((self.n_src, 0), dtype=self._out_dtype)
        cfg, hop = self.config, self.hop
        chunk = self._pending[:(k - 1) * hop + self.L]
        self._pending = self._pending[k * hop:]
        with torch.inference_mode():
            mix = torch.as_tensor(chunk, device=self._device).to(self._dtype).unsqueeze(0)   # [1, n]
            w = self.model.encode(mix)                                                      # [1, N, k]
            masks = self._separate(w)                                                       # [1, C, N, k]
            masked = (w.unsqueeze(1) * masks).reshape(cfg.n_src, cfg.N, k)                  # [C, N, k]
            pieces = self.model.decoder(masked)[:, 0]                                       # [C, (k+1) S]
            pieces = torch.cat([pieces[:, :hop] + self._tail, pieces[:, hop:]], dim=1)
            self._tail = pieces[:, k * hop:]
            out = self._numpy(pieces[:, :k * hop])
        self._frames_done += k
        self._samples_out += out.shape[1]
        return out

    def _numpy(self, x: Tensor) -> np.ndarray:
        return x.to(torch.float64 if self._out_dtype == np.float64 else torch.float32).cpu().numpy()

    def _separate(self, w: Tensor) -> Tensor:
        """The separator on new frames: Separator.forward with the norms and depthwise convs continued."""
        sep, cfg = self.model.separator, self.config
        x = sep.bottleneck(self._in_norm(w))
        skips = torch.zeros(x.shape[0], cfg.Sc, x.shape[2], device=x.device, dtype=x.dtype)
        for block, (norm1, depthwise, norm2) in zip(sep.blocks, self._blocks, strict=True):
            y = norm1(block.act1(block.in_conv(x)))
            y = norm2(block.act2(depthwise(y)))
            if block.res_conv is not None:
                x = x + block.res_conv(y)
            skips = skips + block.skip_conv(y)
        scores = sep.out_conv(sep.out_act(skips)).view(x.shape[0], cfg.n_src, cfg.N, -1)
        if cfg.mask_act == "sigmoid":
            return torch.sigmoid(scores)
        if cfg.mask_act == "relu":
            return F.relu(scores)
        return torch.softmax(scores, dim=1)
