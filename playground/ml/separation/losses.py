"""SI-SNR, permutation-invariant training, and the improvement figures (SI-SNRi, SDRi).

SI-SNR (scale-invariant signal-to-noise ratio), for an estimate s_hat of a source s, both
made zero-mean first::

    s_target = <s_hat, s> s / ||s||^2        (the part of s_hat along s)
    e_noise  = s_hat - s_target
    SI-SNR   = 10 log10(||s_target||^2 / ||e_noise||^2)   dB

Scaling s_hat changes nothing. uPIT trains on the best assignment of estimates to
sources: loss = -max over permutations pi of mean_c SI-SNR(s_hat_pi(c), s_c). SI-SNRi is
SI-SNR(estimate) - SI-SNR(mixture, as the estimate of every source).
"""

from __future__ import annotations

import itertools

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
