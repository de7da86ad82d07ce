"""SI-SNR, permutation-invariant training, and the improvement figures (SI-SNRi, SDRi).

SI-SNR (scale-invariant signal-to-noise ratio), for an estimate s_hat of a source s, both
made zero-mean first::

    s_target = <s_hat, s> s / ||s||^2        (the part of s_hat along s)
    e_noise  = s_hat - s_target
    SI-SNR   = 10 log10(||s_target||^2 / ||e_noise||^2)   dB

Scaling s_hat changes nothing. uPIT trains on the best assignment of estimates to
sources: loss = -max over permutations pi of mean_c SI-SNR(s_hat_pi(c), s_c). SI-SNRi is
SI-SNR(estimate) - SI-SNR(mixture, as the estimate of every source).

SDR, as the separation papers report it (BSS Eval's ``bss_eval_sources``, Vincent et al.
2006, with mir_eval's 512-tap filter): the estimate is projected onto the span of its
source's delayed copies (delays 0 .. 511), so a short time-invariant filter of the source
counts as the source; the rest is error. SDRi = SDR(estimate) - SDR(mixture).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

EPS = 1e-8


def si_snr(estimate: Tensor, reference: Tensor, eps: float = EPS) -> Tensor:
    """SI-SNR in dB over the last axis: [..., T] x [..., T] -> [...]."""
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    dot = (estimate * reference).sum(dim=-1, keepdim=True)
    target = dot * reference / (reference.square().sum(dim=-1, keepdim=True) + eps)
    noise = estimate - target
    return 10 * torch.log10((target.square().sum(dim=-1) + eps) / (noise.square().sum(dim=-1) + eps))


def pairwise_si_snr(estimates: Tensor, references: Tensor) -> Tensor:
    """[B, C, T] x [B, C, T] -> [B, C_est, C_ref]: every estimate against every source."""
    return si_snr(estimates.unsqueeze(2), references.unsqueeze(1))


def best_permutation(pairwise: Tensor) -> tuple[Tensor, Tensor]:
    """For [B, C, C] scores (higher is better): (best mean score [B], perm [B, C]) where
    estimate perm[b, c] goes with source c. Tries every permutation (C is 2 or 3)."""
    c = pairwise.shape[-1]
    perms = torch.tensor(list(itertools.permutations(range(c))), device=pairwise.device)   # [P, C]
    sources = torch.arange(c, device=pairwise.device)
    # score of permutation p: mean over sources c of pairwise[b, perm[p, c], c]
    scores = pairwise[:, perms, sources].mean(dim=-1)                                       # [B, P]
    best, index = scores.max(dim=1)
    return best, perms[index]


def pit_si_snr_loss(estimates: Tensor, references: Tensor) -> tuple[Tensor, Tensor]:
    """uPIT with negative SI-SNR: (loss scalar, perm [B, C]) for [B, C, T] estimates and sources."""
    best, perm = best_permutation(pairwise_si_snr(estimates, references))
    return -best.mean(), perm


def reorder(estimates: Tensor, perm: Tensor) -> Tensor:
    """The estimates put in the sources' order: out[b, c] = estimates[b, perm[b, c]]."""
    return torch.gather(estimates, 1, perm.unsqueeze(-1).expand(-1, -1, estimates.shape[-1]))


def si_snr_improvement(estimates: Tensor, references: Tensor, mixture: Tensor) -> Tensor:
    """SI-SNRi per source [B, C] with the best permutation: [B, C, T], [B, C, T], [B, T]."""
    _, perm = best_permutation(pairwise_si_snr(estimates, references))
    ordered = reorder(estimates, perm)
    return si_snr(ordered, references) - si_snr(mixture.unsqueeze(1).expand_as(references), references)


def sdr(estimate: Tensor, reference: Tensor, eps: float = EPS) -> Tensor:
    """Plain SDR in dB (no scale invariance, no distortion filter): 10 log10(||s||^2 / ||s - s_hat||^2)."""
    error = (reference - estimate).square().sum(dim=-1)
    return 10 * torch.log10((reference.square().sum(dim=-1) + eps) / (error + eps))


def bss_sdr(estimate: np.ndarray, reference: np.ndarray, filter_len: int = 512) -> float:
    """BSS Eval SDR (dB) of one estimate [T] of one source [T], distortion filter ``filter_len`` taps.

    The allowed target is ``s_target = sum_a c[a] s[t - a]`` with c minimising
    ||estimate - s_target||^2: the normal equations are Toeplitz (the source's autocorrelation
    at lags 0 .. filter_len - 1 against its cross-correlation with the estimate), solved by
    Levinson recursion. Both signals are zero-padded by filter_len - 1 samples at the end.
    """
    from scipy.linalg import solve_toeplitz
    from scipy.signal import fftconvolve

    s = np.asarray(reference, np.float64)
    e = np.concatenate([np.asarray(estimate, np.float64), np.zeros(filter_len - 1)])
    n = len(s) + filter_len - 1
    size = 1 << (2 * n - 1).bit_length()
    s_f = np.fft.rfft(s, size)
    auto = np.fft.irfft(s_f * np.conj(s_f), size)[:filter_len]               # sum_t s[t] s[t + k]
    cross = np.fft.irfft(np.fft.rfft(e, size) * np.conj(s_f), size)[:filter_len]  # sum_t e[t + a] s[t]
    auto[0] += 1e-10 * max(auto[0], 1e-12)                                    # a silent source stays solvable
    coeffs = solve_toeplitz(auto, cross)
    target = fftconvolve(s, coeffs)[:n]
    error = e - target
    return float(10 * np.log10((target @ target + EPS) / (error @ error + EPS)))


def sdr_improvement(estimates: Tensor, references: Tensor, mixture: Tensor, filter_len: int = 512) -> Tensor:
    """SDRi per source [B, C] (BSS Eval SDR, see :func:`bss_sdr`) with SI-SNR's best permutation."""
    _, perm = best_permutation(pairwise_si_snr(estimates, references))
    ordered = reorder(estimates, perm).detach().double().cpu().numpy()
    refs = references.detach().double().cpu().numpy()
    mix = mixture.detach().double().cpu().numpy()
    out = [[bss_sdr(ordered[b, c], refs[b, c], filter_len) - bss_sdr(mix[b], refs[b, c], filter_len)
            for c in range(refs.shape[1])] for b in range(refs.shape[0])]
    return torch.tensor(out, dtype=torch.float64)
