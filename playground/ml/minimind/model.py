"""MiniMind (jingyaogong/minimind): a small decoder-only language model, one readable file.

The model reads token ids and, at every position, gives scores ("logits") for the next
token. Each of its ``num_hidden_layers`` blocks is *pre-norm*::

    h   = x + Attention(RMSNorm(x))
    out = h + MLP(RMSNorm(h))

then a last RMSNorm and ``lm_head``, a linear map back to the vocabulary. No layer has
a bias. The pieces, in the order a token meets them:

* **Embedding**: ``embed_tokens`` turns an id into a vector of ``hidden_size`` numbers.
  With ``tie_word_embeddings`` the same matrix is ``lm_head``'s weight (one copy, read
  both ways); the Llama-format MiniMind2 folders on Hugging Face keep two copies.
* **RMSNorm**: ``w * x / sqrt(mean(x^2) + eps)``, computed in float32 (or float64) whatever the
  model's type, then cast back (half precision would lose the small squares).
* **Grouped-query attention** (GQA): ``num_attention_heads`` query heads share
  ``num_key_value_heads`` key/value heads (8 queries and 2 keys in MiniMind2, so the
  key-value cache is four times smaller). Scores are ``q . k / sqrt(head_dim)`` under a
  causal mask: a position sees itself and the past, never the future.
* **Rotary position embedding** (RoPE): before the scores, each (q, k) is rotated by an
  angle proportional to its position, in ``head_dim / 2`` planes of different speeds
  (``theta ** (-2i / head_dim)`` radians per position). Then ``q_m . k_n`` depends only on
  ``m - n``: attention sees relative positions. The planes pair element ``i`` with
  ``i + head_dim / 2`` (the "rotate half" layout of GPT-NeoX and Hugging Face).
* **SwiGLU MLP**: ``down(silu(gate(x)) * up(x))``, the gate deciding, per hidden unit, how
  much of ``up(x)`` passes.
* **Mixture of experts** (MoE, optional): the MLP is replaced by ``n_routed_experts``
  MLPs and a router (``gate``, a linear map to one score per expert). Each token goes to
  its ``num_experts_per_tok`` best experts, their outputs weighted by the router's
  softmax probabilities (with ``norm_topk_prob``, renormalised over the chosen ones:
  MiniMind2 only when it chooses more than one, minimind-3 always). MiniMind2 adds
  ``n_shared_experts`` MLPs that every token goes through. Training adds a small
  *balance loss* so that the router does not send everything to one expert
  (see :func:`balance_loss`).

**The three generations** (``MiniMindConfig.generation``) differ in small ways:

* ``"minimind2"`` (the 2025-04-26 code): head_dim = hidden / heads, eps 1e-5, MoE with a
  shared expert and top-2 routing.
* ``"minimind3"`` (2026-04, Qwen3's layout): an extra RMSNorm over each head's q and k
  (``q_norm``, ``k_norm``) before RoPE, an explicit head_dim, eps 1e-6; its MoE routes to
  one expert and has no shared one.
* ``"legacy"`` (MiniMind v1 and the first MiniMind2, before 2025-04-26): the same network
  under other names and with interleaved RoPE; :mod:`.loaders` renames the weights and
  permutes the q/k rows so that this one implementation runs them.

Parameter names are exactly those of the published state dicts (``model.layers.3.self_attn.q_proj.weight``,
...), so the released files load without renaming.

**Decoding** reuses work: a :class:`KVCache` keeps every layer's keys and values, so each
new token costs one position's worth of compute. The cache is allocated ahead and
written in place; the RoPE angles are a table computed once and grown on demand.

**Inference** (eval mode without gradients) does not go through the modules: it runs one
loop over weights prepared once (:class:`_Prepared`: q, k, v stacked with the input norm's
weight folded in; gate and up stacked), the same arithmetic in fewer operations, and for
one new token of one sequence (:meth:`MiniMindForCausalLM._infer_one`) matrix-vector
products into reused vectors. At that size each small operation costs several
microseconds whatever its work (the big products have just pushed everything else out of
the processor's caches), so the count of operations is what decides. Training, and any
call with gradients, uses the modules as written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import UserError

GENERATIONS = ("minimind2", "minimind3", "legacy")


def minimind2_intermediate_size(hidden_size: int) -> int:
    """MiniMind2's MLP width: 8/3 of the hidden size, rounded up to a multiple of 64 (512 -> 1408)."""
    return 64 * math.ceil(int(hidden_size * 8 / 3) / 64)


def minimind3_intermediate_size(hidden_size: int) -> int:
    """minimind-3's MLP width: pi times the hidden size, rounded up to a multiple of 64 (768 -> 2432)."""
    return math.ceil(hidden_size * math.pi / 64) * 64


# -- configuration ------------------------------------------------------------------------------
@dataclass
class MiniMindConfig:
    """Every hyper-parameter, with MiniMind's names; ``None`` sizes are derived in ``__post_init__``."""

    generation: str = "minimind2"       # "minimind2", "minimind3" or "legacy" (names the tokenizer and template too)
    vocab_size: int = 6400
    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int | None = None         # None: hidden_size // num_attention_heads
    intermediate_size: int | None = None  # None: 8/3 * hidden (MiniMind2), pi * hidden (minimind-3), to 64
    max_position_embeddings: int = 32768
    rope_theta: float = 1e6
    rope_scaling: dict | None = None    # YaRN as MiniMind's inference_rope_scaling: {"type": "yarn", "factor": 16, ...}
    rms_norm_eps: float = 1e-5
    qk_norm: bool = False               # minimind-3: RMSNorm over head_dim on q and k before RoPE
    tie_word_embeddings: bool = True
    # mixture of experts (ignored when use_moe is False)
    use_moe: bool = False
    n_routed_experts: int = 4
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1           # MiniMind2: 1; minimind-3: 0
    moe_intermediate_size: int | None = None  # None: intermediate_size
    norm_topk_prob: bool = True
    aux_loss_alpha: float = 0.1         # MiniMind2 0.1 (0.01 after 2025-12); minimind-3's router_aux_loss_coef 5e-4
    seq_aux: bool = True                # balance per sequence (MiniMind2) or over the whole batch (minimind-3)
    bos_token_id: int = 1
    eos_token_id: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.head_dim is None and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = (minimind3_intermediate_size(self.hidden_size) if self.generation == "minimind3"
                                      else minimind2_intermediate_size(self.hidden_size))
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size

    def validate(self) -> None:
        if self.generation not in GENERATIONS:
            raise UserError(f"The MiniMind generation must be one of {', '.join(GENERATIONS)}, "
                            f"not {self.generation!r}.")
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "intermediate_size", "max_position_embeddings")
        for name in sizes:
            if getattr(self, name) < 1:
                raise UserError(f"The MiniMind setting {name} must be at least 1, not {getattr(self, name)}.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(f"{self.num_attention_heads} attention heads cannot be shared evenly by "
                            f"{self.num_key_value_heads} key/value heads.")
        if self.head_dim % 2:
            raise UserError(f"RoPE needs an even head_dim, not {self.head_dim}.")
        if self.rope_theta <= 1:
            raise UserError(f"rope_theta must be above 1, not {self.rope_theta}.")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout must be in [0, 1), not {self.dropout}.")
        if self.rope_scaling is not None and self.rope_scaling.get("type", "yarn") != "yarn":
            raise UserError(f"Only YaRN RoPE scaling is supported, not {self.rope_scaling.get('type')!r}.")
        if self.use_moe:
            if self.n_routed_experts < 1 or not 1 <= self.num_experts_per_tok <= self.n_routed_experts:
                raise UserError(f"A MoE needs 1 <= experts per token ({self.num_experts_per_tok}) <= routed "
                                f"experts ({self.n_routed_experts}).")
            if self.n_shared_experts < 0 or self.moe_intermediate_size < 1:
                raise UserError("The MoE's shared experts and expert width cannot be negative.")

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniMindConfig:
        """Read a config back field by field (unknown keys and wrong types are refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"Unknown MiniMind settings: {', '.join(unknown)}.")
        defaults = cls()
        for name, value in data.items():
            default = getattr(defaults, name)
            if value is None and name in ("head_dim", "intermediate_size", "moe_intermediate_size", "rope_scaling"):
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif isinstance(default, str):
                ok = isinstance(value, str)
            else:
                ok = isinstance(value, dict)
            if not ok:
                raise UserError(f"The MiniMind setting {name} has the wrong type: {value!r}.")
        config = cls(**data)
        config.validate()
        return config


def _minimind2(**kw) -> MiniMindConfig:
    return MiniMindConfig(generation="minimind2", num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5,
                          rope_theta=1e6, **kw)


def _minimind3(**kw) -> MiniMindConfig:
    return MiniMindConfig(generation="minimind3", hidden_size=768, num_hidden_layers=8, num_attention_heads=8,
                          num_key_value_heads=4, head_dim=96, intermediate_size=2432, rms_norm_eps=1e-6,
                          rope_theta=1e6, qk_norm=True, n_routed_experts=4, num_experts_per_tok=1, n_shared_experts=0,
                          aux_loss_alpha=5e-4, seq_aux=False, **kw)


def _legacy(**kw) -> MiniMindConfig:
    return MiniMindConfig(generation="legacy", rms_norm_eps=1e-5, **kw)


#: The released models, by the names of their Hugging Face pages (sizes counted with tied weights).
PRESETS: dict[str, MiniMindConfig] = {
    "MiniMind2-Small": _minimind2(hidden_size=512, num_hidden_layers=8),                 # 25.83 M
    "MiniMind2": _minimind2(hidden_size=768, num_hidden_layers=16),                      # 104.03 M
    "MiniMind2-MoE": _minimind2(hidden_size=640, num_hidden_layers=8, use_moe=True),     # 145.03 M
    "minimind-3": _minimind3(),                                                          # 63.91 M
    "minimind-3-moe": _minimind3(use_moe=True),                                          # 198.4 M
    # before 2025-04-26 (other weight names, interleaved RoPE): MiniMind v1 (2024) ...
    "minimind-v1-small": _legacy(hidden_size=512, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=8,
                                 rope_theta=1e4, max_position_embeddings=512),
    "minimind-v1": _legacy(hidden_size=768, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=8,
                           rope_theta=1e4, max_position_embeddings=512),
    "minimind-v1-moe": _legacy(hidden_size=512, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=8,
                               rope_theta=1e4, max_position_embeddings=512, use_moe=True, aux_loss_alpha=0.01),
    # ... and the first MiniMind2 release (2025-02)
    "MiniMind2-Small (2025-02)": _legacy(hidden_size=512, num_hidden_layers=8, max_position_embeddings=8192),
    "MiniMind2 (2025-02)": _legacy(hidden_size=768, num_hidden_layers=16, max_position_embeddings=8192),
    "MiniMind2-MoE (2025-02)": _legacy(hidden_size=640, num_hidden_layers=8, max_position_embeddings=8192,
                                       use_moe=True),
}


def preset(name: str, **overrides: Any) -> MiniMindConfig:
    """A copy of one of :data:`PRESETS`, with ``overrides`` (e.g. ``num_hidden_layers=2``)."""
    if name not in PRESETS:
        raise UserError(f"There is no MiniMind preset {name!r}; the presets are {', '.join(PRESETS)}.")
    base = PRESETS[name]
    if "hidden_size" in overrides or "num_attention_heads" in overrides:  # derived sizes follow, unless given
        overrides = {"head_dim": None, "intermediate_size": None, "moe_intermediate_size": None, **overrides}
    return replace(base, **overrides)


# -- the pieces ---------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension, in float32 (float64 for float64), cast back."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return normalize(x, self.weight, self.eps)   # float32 (and 64): one fused kernel, the same arithmetic


def rope_frequencies(config: MiniMindConfig) -> Tensor:
    """The rotation speed of each of the head_dim/2 planes, radians per position: ``theta^(-2i/d)``.

    With ``rope_scaling`` (YaRN, as MiniMind's ``inference_rope_scaling``) the slow planes,
    whose wavelength exceeds the trained context, are slowed ``factor`` times more, the fast
    ones kept, and a linear ramp in between; applied, as in MiniMind, whenever
    ``max_position_embeddings`` exceeds ``original_max_position_embeddings``.
    """
    d = config.head_dim
    base = config.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))        # [d/2]
    s = config.rope_scaling
    if s is not None:
        orig = s.get("original_max_position_embeddings", 2048)
        factor = s.get("factor", 16)
        beta_fast, beta_slow = s.get("beta_fast", 32.0), s.get("beta_slow", 1.0)
        if config.max_position_embeddings / orig > 1.0:
            # the plane index whose wavelength is 2*pi*orig/b rotations' worth
            plane = lambda b: d * math.log(orig / (b * 2 * math.pi)) / (2 * math.log(base))
            low, high = max(math.floor(plane(beta_fast)), 0), min(math.ceil(plane(beta_slow)), d // 2 - 1)
            ramp = ((torch.arange(d // 2, dtype=torch.float64) - low) / max(high - low, 0.001)).clamp(0, 1)
            freqs = freqs * (1 - ramp + ramp / factor)
    return freqs


def rope_table(config: MiniMindConfig, length: int, device=None) -> tuple[Tensor, Tensor]:
    """cos and sin [length, head_dim] in float32, each plane's angle written twice (rotate-half layout)."""
    angles = torch.outer(torch.arange(length, dtype=torch.float64), rope_frequencies(config))   # [L, d/2]
    angles = torch.cat([angles, angles], dim=-1)                                                # [L, d]
    scale = (config.rope_scaling or {}).get("attention_factor", 1.0)
    return ((angles.cos() * scale).float().to(device), (angles.sin() * scale).float().to(device))


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension's two halves: a quarter turn in every plane."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [..., T, d] by the angles of its positions (cos, sin [T, d]): the textbook form."""
    return x * cos + rotate_half(x) * sin


def signed_sin(sin: Tensor) -> Tensor:
    """sin with its first half negated, for :func:`apply_rope_rolled`."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def apply_rope_rolled(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """:func:`apply_rope` in three operations instead of six (the model's form, the same numbers):
    ``rotate_half(x) * sin == roll(x, d/2) * signed_sin(sin)``."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin_signed)


def pairs_side_by_side(x: Tensor, dim: int = -1) -> Tensor:
    """Reorder an axis of size head_dim from the rotate-half layout (plane i = elements i and i + d/2)
    to planes side by side (elements 2i and 2i + 1), where RoPE is one complex multiplication.

    A fixed permutation of head_dim: applied to both q and k it changes no score ``q . k``. The
    inference path computes q and k in this layout (the rows of its q/k weights are reordered once)
    and the :class:`KVCache` keeps the keys in it.
    """
    dim = dim % x.dim()
    shape = x.shape
    return x.reshape(*shape[:dim], 2, shape[dim] // 2, *shape[dim + 1:]).transpose(dim, dim + 1).reshape(shape)


def rotate_pairs_(x: Tensor, turns: Tensor) -> None:
    """RoPE in place on ``x`` [..., d] laid out by :func:`pairs_side_by_side`: plane (2i, 2i+1) read as the
    complex number ``x_2i + j x_2i+1`` and multiplied by ``turns`` (``cos + j sin``, [..., d/2], broadcast).
    Half-precision ``x`` is rotated in float32."""
    if x.dtype in (torch.float32, torch.float64):
        torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(turns)
    else:
        x.copy_(torch.view_as_real(torch.view_as_complex(x.float().unflatten(-1, (-1, 2))) * turns).flatten(-2))


def normalize(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """:class:`RMSNorm`'s arithmetic as a function (``weight`` None: the unit-RMS part alone)."""
    if x.dtype in (torch.float32, torch.float64):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return (xf if weight is None else weight.float() * xf).to(x.dtype)


def fused_weight(owner: nn.Module, linears: tuple[nn.Linear, ...]) -> Tensor:
    """The weights of ``linears`` stacked into one matrix, for one matrix product instead of several.

    No copy is kept: the first call moves the weights into one tensor and makes each
    parameter a view of its rows (the parameters keep their names, their gradients and
    their place in the state dict; an optimizer's in-place updates land in the stack).
    Later calls check that the views are still in place (``.to()``, ``load_state_dict(assign=True)``
    or ``param.data = ...`` replace them) and stack again if not.
    """
    weights = [lin.weight for lin in linears]
    ptrs = tuple(w.data_ptr() for w in weights)
    fused = owner.__dict__.get("_fused")
    if fused is None or owner.__dict__.get("_fused_ptrs") != ptrs or fused.dtype != weights[0].dtype:
        with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, even when called for inference
            fused = torch.cat([w.detach() for w in weights])
            row = 0
            for lin in linears:
                rows = lin.weight.shape[0]
                lin.weight.data = fused[row:row + rows]
                row += rows
        owner.__dict__["_fused"] = fused
        owner.__dict__["_fused_ptrs"] = tuple(lin.weight.data_ptr() for lin in linears)
    return fused


class _Scratch:
    """The single-token inference step's working vectors, and the views it reads them through."""

    def __init__(self, config: MiniMindConfig, like: Tensor) -> None:
        H, K, d, h = config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.hidden_size
        dense = 0 if config.use_moe else config.intermediate_size
        self.key = (H, K, d, h, dense, like.dtype, like.device)
        new = lambda *shape: torch.empty(*shape, dtype=like.dtype, device=like.device)
        with torch.inference_mode(False):   # ordinary tensors, whoever made them
            self.row, self.y_row, self.r, self.qkv = new(1, h), new(1, h), new(1), new((H + 2 * K) * d)
            self.x, self.y = self.row.view(-1), self.y_row.view(-1)              # the residual stream, the normed
            self.heads = self.qkv.view(H + 2 * K, d)
            self.qk = torch.view_as_complex(self.qkv[:(H + K) * d].view(H + K, d // 2, 2))   # RoPE's planes
            self.q = self.qkv[:H * d].view(1, K, H // K, d)                      # query heads by key head
            self.kv = self.qkv[H * d:].view(1, 2, K, d)                          # what the cache keeps
            self.gate_up = new(2 * dense)
            self.gate, self.up = self.gate_up[:dense], self.gate_up[dense:]


class KVCache:
    """Every layer's keys and values, [B, kv_heads, capacity, head_dim], written in place.

    Allocated on the first write (with the keys' batch, type and device) for ``capacity``
    positions and doubled when full, so a decoding step copies nothing. ``length`` is the
    number of positions held: the next token's position. ``ids`` keeps the token ids
    that were fed, so a chat can reuse the longest common prefix of its next prompt
    (:meth:`common_prefix`, :meth:`truncate`).

    Each layer's keys and values share one tensor ``kv[layer]`` [B, 2, kv_heads, capacity, d]
    (``keys[layer]`` and ``values[layer]`` are its two halves), so that one copy stores a
    step's keys and values. The keys are kept rotated, with their head_dim in the
    :func:`pairs_side_by_side` order (the model's attention reads them in that order).
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = max(1, int(capacity))
        self.length = 0
        self.kv: list[Tensor] = []
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.ids: Tensor | None = None   # [B, capacity] long
        self._scratch: _Scratch | None = None   # the single-token step's working vectors (see MiniMindForCausalLM)

    def _scratch_for(self, config: MiniMindConfig, like: Tensor) -> _Scratch:
        s = self._scratch
        if s is None or s.key != (config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                                  config.hidden_size, 0 if config.use_moe else config.intermediate_size,
                                  like.dtype, like.device):
            s = self._scratch = _Scratch(config, like)
        return s

    def _allocate(self, layers: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                  capacity: int) -> None:
        b, h, d = shape
        new_kv = [torch.zeros(b, 2, h, capacity, d, dtype=dtype, device=device) for _ in range(layers)]
        new_ids = torch.zeros(b, capacity, dtype=torch.long, device=device)
        n = self.length
        for old, new in zip(self.kv, new_kv):
            new[:, :, :, :n] = old[:, :, :, :n]
        if self.ids is not None:
            new_ids[:, :n] = self.ids[:, :n]
        self.kv, self.ids, self.capacity = new_kv, new_ids, capacity
        self.keys, self.values = [t[:, 0] for t in new_kv], [t[:, 1] for t in new_kv]

    def reserve(self, layers: int, like: Tensor, new: int) -> None:
        """Room for ``new`` more positions (``like``: one layer's new keys [B, kv_heads, T, d])."""
        self._reserve(layers, (like.shape[0], like.shape[1], like.shape[3]), like.dtype, like.device, new)

    def _reserve(self, layers: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                 new: int) -> None:
        """:meth:`reserve` for keys of ``shape`` (batch, kv_heads, head_dim)."""
        need = self.length + new
        if not self.kv:
            self.length = 0
            self._allocate(layers, shape, dtype, device, max(self.capacity, need))
            return
        k = self.kv[0]
        if len(self.kv) != layers or k.shape != (shape[0], 2, shape[1], self.capacity, shape[2]) or \
                k.dtype != dtype or k.device != device:
            raise ValueError(f"This cache holds keys {tuple(self.keys[0].shape)} in {k.dtype} on {k.device}, not "
                             f"{shape[:2]} x {shape[2]} in {dtype} on {device}; clear() it first.")
        if need > self.capacity:
            self._allocate(layers, shape, dtype, device, max(need, 2 * self.capacity))

    def write(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v [B, kv_heads, T, d] at positions start.. and return all keys and values so far (views)."""
        T = k.shape[2]
        ck, cv = self.keys[layer], self.values[layer]
        ck.narrow(2, start, T).copy_(k)
        cv.narrow(2, start, T).copy_(v)
        return ck.narrow(2, 0, start + T), cv.narrow(2, 0, start + T)

    def common_prefix(self, ids: Iterable[int]) -> int:
        """How many of ``ids`` (one sequence) the cache already holds, from the start."""
        if self.ids is None or self.length == 0:
            return 0
        held = self.ids[0, :self.length].tolist()
        n = 0
        for a, b in zip(held, ids):
            if a != b:
                break
            n += 1
        return n

    def holds_for(self, config: MiniMindConfig, batch: int, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether the tensors held (if any) are for this model's shapes, batch, device and type."""
        if not self.keys:
            return True
        k = self.keys[0]
        return (len(self.keys) == config.num_hidden_layers and k.shape[0] == batch
                and k.shape[1] == config.num_key_value_heads and k.shape[3] == config.head_dim
                and k.device == device and k.dtype == dtype)

    def clear(self) -> None:
        """Forget everything, tensors included (the next write allocates again)."""
        self.kv, self.keys, self.values, self.ids, self.length = [], [], [], None, 0

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on (they are overwritten by the next write)."""
        self.length = max(0, min(int(length), self.length))

    def reset(self) -> None:
        self.length = 0


class Attention(nn.Module):
    """Grouped-query causal self-attention with RoPE (and minimind-3's q/k norms)."""

    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = 1.0 / math.sqrt(config.head_dim)
        h, d = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * d, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * d, bias=False)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps)
            self.k_norm = RMSNorm(d, config.rms_norm_eps)
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout

    def forward(self, x: Tensor, B: int, cos: Tensor, sin_signed: Tensor, cache: KVCache | None = None,
                layer: int = 0, start: int = 0, want_probs: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [B*T, h] (already normed) -> (out [B*T, h], the newest query's attention [B, H, S] or None).

        ``cos``, ``sin_signed`` [T, 1, d] are the rotations of positions start .. start+T-1.
        The path for training (and gradients); inference runs :meth:`MiniMindForCausalLM.forward`'s
        own loop on prepared weights, with the same arithmetic.
        """
        H, K, d = self.n_heads, self.n_kv, self.head_dim
        T = x.shape[0] // B
        q = self.q_proj(x).view(B, T, H, d)
        k = self.k_proj(x).view(B, T, K, d)
        v = self.v_proj(x).view(B, T, K, d)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope_rolled(q, cos, sin_signed), apply_rope_rolled(k, cos, sin_signed)
        if cache is not None:   # the cache's layout (no score changes)
            q, k = pairs_side_by_side(q), pairs_side_by_side(k)
        k, v = k.transpose(1, 2), v.transpose(1, 2)                                 # [B, K, T, d]
        if cache is not None:
            k, v = cache.write(layer, start, k, v)                                  # [B, K, S, d], S = start + T
        S = k.shape[2]
        p = self.dropout if self.training else 0.0
        if T == 1:      # one new token sees every position: group the query heads of each key head
            grouped = q.reshape(B, K, H // K, d)                                    # [B, K, rep, d]
            out = F.scaled_dot_product_attention(grouped, k, v, dropout_p=p).reshape(B, H * d)
        else:
            q = q.transpose(1, 2)                                                   # [B, H, T, d]
            if T == S:  # no past: the plain causal mask
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=True)
            else:       # new tokens after a cached past: query i is at position start + i
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, enable_gqa=True)
            out = out.transpose(1, 2).reshape(B * T, H * d)
        probs = self.newest_query_probs(q[:, :, -1] if T > 1 else q.reshape(B, H, d), k) if want_probs else None
        out = self.o_proj(out)
        if p:
            out = F.dropout(out, p, True)
        return out, probs

    def newest_query_probs(self, q_last: Tensor, k: Tensor) -> Tensor:
        """The newest position's attention over the whole context, per head: [B, H, S] (float32).

        ``q_last`` [B, H, d] (rotated), ``k`` [B, K, S, d]. Computed apart from the attention
        itself, which is a fused kernel that never forms the probabilities; the newest
        query sees every position, so there is nothing to mask.
        """
        B, H, d = q_last.shape
        grouped = q_last.reshape(B, self.n_kv, H // self.n_kv, d).float()            # [B, K, rep, d]
        scores = grouped @ k.float().transpose(-1, -2) * self.scale                 # [B, K, rep, S]
        return scores.softmax(dim=-1).reshape(B, H, -1)


class FeedForward(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:   # one product for both (see fused_weight)
            gate, up = F.linear(x, fused_weight(self, (self.gate_proj, self.up_proj))).chunk(2, dim=-1)
        y = self.down_proj(F.silu(gate) * up)
        if self.dropout and self.training:
            y = F.dropout(y, self.dropout, True)
        return y


def balance_loss(scores: Tensor, chosen: Tensor, n_experts: int, per_sequence: bool) -> Tensor:
    """The load-balancing loss of a router, before its coefficient: ``E * sum_e f_e * P_e``.

    ``scores`` [B, T, E] are the router's softmax probabilities and ``chosen`` [B, T, k] the
    experts picked. ``f_e`` is the fraction of (token, choice) slots sent to expert e and
    ``P_e`` the mean probability the router gave it; the product is smallest, 1, when
    both are uniform (the Switch Transformer's loss). ``per_sequence`` (MiniMind2's
    ``seq_aux``) computes it within each sequence and averages; otherwise over the whole
    batch (for top-1 routing this is minimind-3's router loss exactly).
    """
    B, T, E = scores.shape
    k = chosen.shape[-1]
    if per_sequence:
        counts = scores.new_zeros(B, E).scatter_add_(1, chosen.reshape(B, T * k),
                                                     scores.new_ones(B, T * k))     # [B, E]
        f = counts / (T * k)
        return (f * scores.mean(dim=1)).sum(dim=1).mean() * n_experts
    f = F.one_hot(chosen.reshape(-1), E).to(scores.dtype).mean(0)                   # [E]
    return (f * scores.reshape(-1, E).mean(0)).sum() * n_experts


class MoEFeedForward(nn.Module):
    """Routed experts (top-k of a softmax router) plus optional shared experts; returns (y, aux loss)."""

    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        h, width = config.hidden_size, config.moe_intermediate_size
        self.top_k = config.num_experts_per_tok
        # MiniMind2 renormalises the chosen weights only when it chooses several; minimind-3 (and
        # Qwen3-MoE) whenever norm_topk_prob is set, so its top-1 expert gets weight 1.
        self.renormalise = config.norm_topk_prob and (self.top_k > 1 or config.generation == "minimind3")
        self.alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        self.gate = nn.Linear(h, config.n_routed_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(h, width, config.dropout) for _ in range(config.n_routed_experts))
        if config.n_shared_experts > 0:
            self.shared_experts = nn.ModuleList(FeedForward(h, config.intermediate_size, config.dropout)
                                                for _ in range(config.n_shared_experts))
        else:
            self.shared_experts = None

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, h] -> (router probabilities [N, E], the chosen experts' weights [N, k], their indices [N, k])."""
        scores = self.gate(x).float().softmax(dim=-1)
        weight, index = scores.topk(self.top_k, dim=-1)
        if self.renormalise:
            weight = weight / (weight.sum(dim=-1, keepdim=True) + 1e-20)
        return scores, weight, index

    def forward(self, x: Tensor, B: int) -> tuple[Tensor, Tensor]:
        """x [B*T, h] -> (y [B*T, h], the balance loss times its coefficient; 0 outside training)."""
        scores, weight, index = self.route(x)
        if x.shape[0] == 1:       # decoding one token: run just its experts
            y = None
            for w, e in zip(weight[0].tolist(), index[0].tolist()):
                out = self.experts[e](x) * w
                y = out if y is None else y + out
        else:                     # group the (token, choice) slots by expert
            y = torch.zeros_like(x)
            slots = index.reshape(-1)                                               # [N*k]
            order = slots.argsort()
            counts = torch.bincount(slots, minlength=len(self.experts)).tolist()
            slot_weight = weight.reshape(-1, 1).to(x.dtype)
            begin = 0
            for e, n in enumerate(counts):
                if n:
                    sel = order[begin:begin + n]
                    token = sel // self.top_k
                    y = y.index_add(0, token, self.experts[e](x[token]) * slot_weight[sel])
                    begin += n
        if self.shared_experts is not None:
            for expert in self.shared_experts:
                y = y + expert(x)
        if self.training and self.alpha > 0:
            E = len(self.experts)
            aux = balance_loss(scores.view(B, -1, E), index.view(B, -1, self.top_k), E, self.seq_aux) * self.alpha
        else:
            aux = scores.new_zeros(())
        return y, aux


class Block(nn.Module):
    """``h = x + attn(norm(x)); out = h + mlp(norm(h))``."""

    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.is_moe = config.use_moe
        self.mlp = MoEFeedForward(config) if config.use_moe else FeedForward(
            config.hidden_size, config.intermediate_size, config.dropout)

    def forward(self, x: Tensor, B: int, cos: Tensor, sin_signed: Tensor, cache: KVCache | None, layer: int,
                start: int, want_probs: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x [B*T, h] -> (out [B*T, h], MoE aux loss or None, newest-query attention or None)."""
        a, probs = self.self_attn(self.input_layernorm(x), B, cos, sin_signed, cache, layer, start, want_probs)
        x = x + a
        if self.is_moe:
            m, aux = self.mlp(self.post_attention_layernorm(x), B)
            return x + m, aux, probs
        return x + self.mlp(self.post_attention_layernorm(x)), None, probs


class MiniMindModel(nn.Module):
    """The stack without the head (HF's ``model.``): embeddings, blocks, final norm."""

    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        # (given its tensor, Embedding skips its own initialisation: init_weights does it)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class _Prepared:
    """The weights the inference path reads, made from the parameters once and made again when any changes.

    Per layer: q, k and v stacked into one matrix (one product instead of three), the q and k
    rows of every head reordered by :func:`pairs_side_by_side` (RoPE is then one complex
    multiplication, and the cache keeps keys in that order), with the input RMSNorm's
    weight multiplied into its columns (``W (w * u) == (W diag(w)) u``: the norm then only
    divides by the RMS); this matrix is a copy. The MLP's gate and up are stacked by
    :func:`fused_weight` (the parameters become views of the stack: no copy, and in-place
    updates land in it); o, down, the head and the other norms are the parameters themselves.

    "Changes" are seen through every parameter's data pointer and version counter, compared
    once per forward: ``load_state_dict``, ``.to()``, ``param.data = ...``, an optimizer's step
    or any in-place change under ``no_grad`` make it prepare again (``.to()`` at once, the rest
    at the next inference call). An in-place change through ``param.data`` bypasses the version
    counter and is not seen.
    """

    __slots__ = ("slots", "params", "versioned", "key", "layers", "final", "eps", "eps_t")

    def __init__(self, model: MiniMindForCausalLM) -> None:
        cfg = model.config
        H, K, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.eps = cfg.rms_norm_eps

        def rows(w: Tensor, heads: int) -> Tensor:   # each head's rows in the pairs_side_by_side order
            return pairs_side_by_side(w.detach().view(heads, d, -1), 1).reshape(heads * d, -1)

        with torch.inference_mode(False), torch.no_grad():   # ordinary tensors, even when called for inference
            layers = []
            for block in model.model.layers:
                a, mlp = block.self_attn, block.mlp
                qkv = torch.cat([rows(a.q_proj.weight, H), rows(a.k_proj.weight, K), a.v_proj.weight.detach()])
                w_in = block.input_layernorm.weight.detach()
                if qkv.dtype in (torch.float32, torch.float64):
                    qkv = qkv * w_in
                else:
                    qkv = (qkv.float() * w_in.float()).to(qkv.dtype)
                q_norm = pairs_side_by_side(a.q_norm.weight.detach()) if a.qk_norm else None
                k_norm = pairs_side_by_side(a.k_norm.weight.detach()) if a.qk_norm else None
                post = block.post_attention_layernorm.weight.detach()
                if block.is_moe:
                    gate_up, down, moe = None, None, mlp
                else:
                    gate_up, down, moe = fused_weight(mlp, (mlp.gate_proj, mlp.up_proj)), mlp.down_proj.weight, None
                layers.append((qkv, q_norm, k_norm, a.o_proj.weight.detach(), gate_up, post,
                               None if down is None else down.detach(), moe))
            self.layers = layers
            self.final = model.model.norm.weight.detach()
            self.eps_t = torch.full((1,), self.eps, dtype=self.final.dtype, device=self.final.device)
        self.slots = [(m._parameters, name) for m in model.modules() for name, p in m._parameters.items()
                      if p is not None]
        self.params = [d_[n] for d_, n in self.slots]   # held: a freed parameter's address is not reused
        self.versioned = not any(p.is_inference() for p in self.params)
        self.key = self.fingerprint()

    def fingerprint(self) -> list:
        if self.versioned:
            return [(p.data_ptr(), p._version) for p in [d[n] for d, n in self.slots]]
        return [d[n].data_ptr() for d, n in self.slots]

    def current(self) -> bool:
        try:
            return self.fingerprint() == self.key
        except (AttributeError, KeyError, RuntimeError):   # a parameter removed, or now an inference tensor
            return False


class ModelOutput(NamedTuple):
    logits: Tensor                      # [B, T, V] (or [B, 1, V] with last_only)
    cache: KVCache | None               # the cache, updated (None without use_cache)
    aux_loss: Tensor                    # the MoE balance loss (training only; 0 otherwise)
    attention: dict[int, Tensor] | None  # layer -> the newest query's attention [B, H, S], when asked for


class MiniMindForCausalLM(nn.Module):
    """input_ids [B, T] -> :class:`ModelOutput` (logits [B, T, V], cache, aux loss, attention)."""

    def __init__(self, config: MiniMindConfig | None = None) -> None:
        super().__init__()
        self.config = config or MiniMindConfig()
        self.config.validate()
        cfg = self.config
        self.model = MiniMindModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()
        self._rope: tuple[Tensor, Tensor] | None = None   # cos, sin [L, d], grown on demand (not in the state dict)
        self._turns: Tensor | None = None                 # the same as cos + i sin [L, d/2] (inference)
        if self.lm_head.weight.device.type != "meta":   # a skeleton for checking files needs no numbers
            self.init_weights()

    def tie_weights(self) -> None:
        """With ``tie_word_embeddings``, make ``lm_head.weight`` the embedding's very tensor (again:
        moving a model off the "meta" device gives every parameter a new one)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self, std: float = 0.02) -> None:
        """Normal(0, std) for every matrix (GPT-2's choice), ones for the norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def rope(self, start: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and signed sin [length, 1, d] for positions start.. (a table computed once, doubled when short)."""
        end = start + length
        table = self._rope
        if table is None or table[0].shape[0] < end or table[0].device != device or table[0].dtype != dtype:
            size = max(256, 1 << (end - 1).bit_length())
            if table is not None and table[0].device == device:
                size = max(size, table[0].shape[0])
            with torch.inference_mode(False):
                cos, sin = rope_table(self.config, size, device)
                self._rope = table = (cos.to(dtype).unsqueeze(1), signed_sin(sin).to(dtype).unsqueeze(1))
        return table[0][start:end], table[1][start:end]

    def rope_turns(self, start: int, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``cos + i sin`` [length, d/2] for positions start..: the inference path's RoPE (see
        :func:`rotate_pairs_`), complex64 (complex128 for a float64 model), a table like :meth:`rope`'s."""
        ctype = torch.complex128 if dtype == torch.float64 else torch.complex64
        end = start + length
        table = self._turns
        if table is None or table.shape[0] < end or table.device != device or table.dtype != ctype:
            size = max(256, 1 << (end - 1).bit_length())
            if table is not None and table.device == device:
                size = max(size, table.shape[0])
            with torch.inference_mode(False):
                cos, sin = rope_table(self.config, size, device)
                half, real = self.config.head_dim // 2, torch.float64 if dtype == torch.float64 else torch.float32
                self._turns = table = torch.complex(cos[:, :half].to(real), sin[:, :half].to(real))
        return table.narrow(0, start, length)

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_prepared", None)   # .to(), .double(), ...: new tensors (and free the old ones)
        return super()._apply(fn, recurse)

    def forward(self, input_ids: Tensor, cache: KVCache | None = None, *, use_cache: bool = False,
                attention_layers: int | Iterable[int] | str | None = None, last_only: bool = False) -> ModelOutput:
        """Logits for every position of ``input_ids`` [B, T] (after the positions ``cache`` already holds).

        ``use_cache``: make a new cache when none is given. ``attention_layers``: a layer
        index, several, or "all": return the newest query's attention over the context
        for those layers. ``last_only``: logits of the last position only (decoding).
        """
        B, T = input_ids.shape
        if cache is None and use_cache:
            cache = KVCache()
        cfg = self.config
        if attention_layers is None:
            wanted: set[int] = set()
        elif attention_layers == "all":
            wanted = set(range(cfg.num_hidden_layers))
        elif isinstance(attention_layers, int):
            wanted = {attention_layers % cfg.num_hidden_layers}
        else:
            wanted = {i % cfg.num_hidden_layers for i in attention_layers}
        if not self.training and not torch.is_grad_enabled():
            logits, attention = self._infer(input_ids, cache, wanted, last_only)
            return ModelOutput(logits, cache, logits.new_zeros((), dtype=torch.float32), attention if wanted else None)
        start = cache.length if cache is not None else 0
        x = self.model.embed_tokens(input_ids.reshape(-1))                          # [B*T, h]
        if cfg.dropout and self.training:
            x = F.dropout(x, cfg.dropout, True)
        cos, sin_signed = self.rope(start, T, x.device, x.dtype)                    # [T, 1, d]
        if cache is not None:
            cache._reserve(cfg.num_hidden_layers, (B, cfg.num_key_value_heads, cfg.head_dim), x.dtype, x.device, T)
        attention: dict[int, Tensor] = {}
        aux = x.new_zeros((), dtype=torch.float32)
        for i, block in enumerate(self.model.layers):
            x, layer_aux, probs = block(x, B, cos, sin_signed, cache, i, start, i in wanted)
            if layer_aux is not None:
                aux = aux + layer_aux
            if probs is not None:
                attention[i] = probs
        if cache is not None:
            cache.ids[:, start:start + T] = input_ids
            cache.length = start + T
        x = x.view(B, T, -1)
        if last_only:
            x = x[:, -1]
        logits = self.lm_head(self.model.norm(x))                                  # [B, T, V] or [B, V]
        if last_only:
            logits = logits.unsqueeze(1)
        return ModelOutput(logits, cache, aux, attention if wanted else None)

    # -- inference ------------------------------------------------------------------------------
    def _prepare(self) -> _Prepared:
        prepared = self.__dict__.get("_prepared")
        if prepared is None or not prepared.current():
            prepared = self.__dict__["_prepared"] = _Prepared(self)
        return prepared

    def _infer(self, input_ids: Tensor, cache: KVCache | None, wanted: set[int],
               last_only: bool) -> tuple[Tensor, dict[int, Tensor]]:
        """The forward pass in eval mode without gradients, on :class:`_Prepared` weights: (logits, attention).

        The same arithmetic as the modules' path, in fewer operations: one product for q, k
        and v, the input norm's weight folded into it, RoPE as one complex multiplication in
        place, one copy into the cache for keys and values, residual additions fused into
        the o and down products. One token of one sequence (decoding) goes through
        :meth:`_infer_one`, where every product is a matrix-vector one.
        """
        prepared = self._prepare()
        cfg = self.config
        B, T = input_ids.shape
        weight = self.model.embed_tokens.weight
        start = cache.length if cache is not None else 0
        if cache is not None:
            cache._reserve(cfg.num_hidden_layers, (B, cfg.num_key_value_heads, cfg.head_dim), weight.dtype,
                           weight.device, T)
        turns = self.rope_turns(start, T, weight.device, weight.dtype)             # [T, d/2]
        if B * T == 1 and weight.dtype in (torch.float32, torch.float64):
            logits, attention = self._infer_one(prepared, input_ids, cache, start, turns[0], wanted)
        else:
            logits, attention = self._infer_rows(prepared, input_ids, cache, start, turns, wanted, last_only)
        if cache is not None:
            cache.ids.narrow(1, start, T).copy_(input_ids)
            cache.length = start + T
        return logits, attention

    def _infer_rows(self, prepared: _Prepared, input_ids: Tensor, cache: KVCache | None, start: int, turns: Tensor,
                    wanted: set[int], last_only: bool) -> tuple[Tensor, dict[int, Tensor]]:
        cfg = self.config
        B, T = input_ids.shape
        H, K, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        S, eps = start + T, prepared.eps
        turns = turns.unsqueeze(1)                                                  # [T, 1, d/2]
        attention: dict[int, Tensor] = {}
        x = torch.embedding(self.model.embed_tokens.weight, input_ids.reshape(-1))  # [B*T, h], a new tensor
        for i, (qkv_w, q_norm, k_norm, o_w, gate_up_w, post_w, down_w, moe) in enumerate(prepared.layers):
            heads = F.linear(normalize(x, None, eps), qkv_w).view(B, T, H + 2 * K, d)
            if q_norm is not None:
                heads[:, :, :H] = normalize(heads[:, :, :H], q_norm, eps)
                heads[:, :, H:H + K] = normalize(heads[:, :, H:H + K], k_norm, eps)
            rotate_pairs_(heads[:, :, :H + K], turns)
            if cache is not None:
                cache.kv[i].narrow(3, start, T).copy_(heads[:, :, H:].unflatten(2, (2, K)).permute(0, 2, 3, 1, 4))
                k, v = cache.keys[i].narrow(2, 0, S), cache.values[i].narrow(2, 0, S)     # [B, K, S, d]
            else:
                k, v = heads[:, :, H:H + K].transpose(1, 2), heads[:, :, H + K:].transpose(1, 2)
            q = heads[:, :, :H]                                                     # [B, T, H, d]
            if T == 1:   # group the query heads of each key head
                q_last = q.reshape(B, H, d)
                out = F.scaled_dot_product_attention(q_last.view(B, K, H // K, d), k, v).reshape(B, H * d)
            else:
                q = q.transpose(1, 2)                                               # [B, H, T, d]
                q_last = q[:, :, -1]
                if T == S:
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                else:
                    mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
                out = out.transpose(1, 2).reshape(B * T, H * d)
            if i in wanted:
                attention[i] = self.model.layers[i].self_attn.newest_query_probs(q_last, k)
            x.addmm_(out, o_w.t())
            y = normalize(x, post_w, eps)
            if moe is None:
                gate, up = F.linear(y, gate_up_w).chunk(2, dim=-1)
                x.addmm_(F.silu(gate) * up, down_w.t())
            else:
                x.add_(moe(y, B)[0])
        x = x.view(B, T, -1)
        if last_only:
            x = x[:, -1:]
        return F.linear(normalize(x, prepared.final, eps), self.lm_head.weight), attention

    def _infer_one(self, prepared: _Prepared, input_ids: Tensor, cache: KVCache | None, start: int, turn: Tensor,
                   wanted: set[int]) -> tuple[Tensor, dict[int, Tensor]]:
        """One token of one sequence, float32 or float64: every product a matrix-vector one, written into
        the cache's :class:`_Scratch` (so no step allocates them or makes their views again), the residual
        stream one vector updated in place."""
        cfg = self.config
        H, K, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        weight = self.model.embed_tokens.weight
        s = cache._scratch_for(cfg, weight) if cache is not None else _Scratch(cfg, weight)
        row, x, y, r, qkv = s.row, s.x, s.y, s.r, s.qkv
        eps, eps_t, inv, S = prepared.eps, prepared.eps_t, 1.0 / cfg.hidden_size, start + 1
        attention: dict[int, Tensor] = {}
        torch.index_select(weight, 0, input_ids.view(1), out=row)
        for i, (qkv_w, q_norm, k_norm, o_w, gate_up_w, post_w, down_w, moe) in enumerate(prepared.layers):
            # RMSNorm: 1 / sqrt(x . x / h + eps) from one product; its weight is folded into qkv_w
            torch.addmv(eps_t, row, x, alpha=inv, out=r).rsqrt_()
            torch.mv(qkv_w, torch.mul(x, r, out=y), out=qkv)
            if q_norm is not None:
                s.heads[:H] = F.rms_norm(s.heads[:H], (d,), q_norm, eps)
                s.heads[H:H + K] = F.rms_norm(s.heads[H:H + K], (d,), k_norm, eps)
            s.qk.mul_(turn)                                                         # RoPE on q and k
            if cache is not None:
                cache.kv[i].select(3, start).copy_(s.kv)
                k, v = cache.keys[i].narrow(2, 0, S), cache.values[i].narrow(2, 0, S)     # [1, K, S, d]
            else:
                k, v = s.kv.view(2, 1, K, 1, d).unbind(0)
            x.addmv_(o_w, F.scaled_dot_product_attention(s.q, k, v).view(-1))
            if i in wanted:
                attention[i] = self.model.layers[i].self_attn.newest_query_probs(s.q.view(1, H, d), k)
            torch.addmv(eps_t, row, x, alpha=inv, out=r).rsqrt_()
            torch.mul(x, r, out=y).mul_(post_w)
            if moe is None:
                torch.mv(gate_up_w, y, out=s.gate_up)
                x.addmv_(down_w, F.silu(s.gate, inplace=True).mul_(s.up))
            else:
                x.add_(moe(s.y_row, 1)[0].view(-1))
        torch.addmv(eps_t, row, x, alpha=inv, out=r).rsqrt_()
        return torch.mv(self.lm_head.weight, torch.mul(x, r, out=y).mul_(prepared.final)).view(1, 1, -1), attention


def parameter_count(model: nn.Module) -> int:
    """Parameters, a tied embedding/head counted once."""
    return sum(p.numel() for p in model.parameters())
