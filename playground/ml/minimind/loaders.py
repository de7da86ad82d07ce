"""Open MiniMind weights: released ``.pth`` files, Hugging Face folders, and our own files.

Every file goes through :mod:`playground.ml.checkpoints` (``torch_load`` with
``weights_only=True``; safetensors after ``read_safetensors_header``), and no code that
comes with a model is ever run: a Hugging Face folder's ``config.json`` is read as data
and the network is always our :class:`~.model.MiniMindForCausalLM`.

What :func:`load_minimind` accepts:

* **A MiniMind ``.pth``** (``full_sft_512.pth``, ``pretrain_768.pth``, ``*_moe.pth``, ...): a
  plain state dict, fp16 or fp32, with the published names. Nothing in it says which model
  it is, so the sizes are read off the shapes: hidden size and vocabulary from the
  embedding, the layer count from the key names, key/value heads from ``k_proj``'s rows,
  MLP width, experts (``mlp.gate`` rows), shared experts, and ``q_norm`` (which only
  minimind-3 has). What shapes cannot tell (the head count when there is no ``q_norm``,
  RoPE's theta, the norm's eps, experts per token) comes from the generation's preset.
  A training checkpoint (``{"model": state_dict, "optimizer": ...}``) works too.
* **A ``.pth`` from before 2025-04-26** (``tok_embeddings``, ``layers.0.attention.wq``,
  ``feed_forward.w1``, ...): renamed, and its q/k rows permuted (see :func:`interleaved_to_half`).
* **A Hugging Face folder** (or its ``config.json`` / weights file): ``LlamaForCausalLM``
  (MiniMind2), ``Qwen3ForCausalLM`` / ``Qwen3MoeForCausalLM`` (minimind-3) and MiniMind's
  own ``MiniMindForCausalLM`` / ``MiniMindLM`` (whose ``auto_map`` code is ignored: their
  config keys are known). Weights from ``model.safetensors`` (or a sharded index) or
  ``pytorch_model.bin``.
* **Our own files**: ``name.safetensors`` plus ``name.json`` with ``{"kind": "minimind",
  "config": MiniMindConfig.to_dict(), ...}`` (:func:`save_minimind`).

A file that does not fit is refused with one sentence in the file's own key names
("full_sft_512.pth has no model.layers.3.mlp.up_proj.weight"), never a list of keys.
Weights are checked against a skeleton on the "meta" device before any memory is set
aside for the model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...errors import BadFileError, UserError
from .. import checkpoints
from .model import PRESETS, MiniMindConfig, MiniMindForCausalLM, parameter_count

KIND = "minimind"                      # the "kind" in our sidecars
FORMAT_OURS = "safetensors (this app)"
FORMAT_PTH = "MiniMind .pth"
FORMAT_LEGACY = "MiniMind .pth (before 2025-04-26)"
FORMAT_SAFETENSORS = "safetensors state dict"
FORMAT_HF = "Hugging Face folder"

HF_ARCHITECTURES = ("LlamaForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "MiniMindForCausalLM",
                    "MiniMindLM")
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")
# buffers that some files carry and no model learns (RoPE tables, masks)
_IGNORED = re.compile(r"(^|\.)(rotary_emb\.inv_freq|freqs_cos|freqs_sin|pos_cis|attention\.mask)$")


@dataclass
class LoadedMiniMind:
    """What :func:`load_minimind` found: the model (eval mode) and what the Chat tab shows about it."""

    model: MiniMindForCausalLM
    config: MiniMindConfig
    name: str                          # the matching preset ("MiniMind2-Small"), else the file's name
    description: str                   # "MiniMind2-Small · 25.8 M parameters · 8 layers · hidden 512 · GQA 8/2 · dense"
    generation: str                    # "minimind2", "minimind3" or "legacy"
    format: str                        # one of the FORMAT_* names
    path: Path
    parameters: int
    tokenizer_dir: Path | None = None  # a folder with tokenizer.json / tokenizer_config.json / chat_template.jinja
    tokenizer_path: Path | None = None  # tokenizer.json itself, when there is one
    sidecar: dict = field(default_factory=dict)  # our own files: their JSON (how they were trained)


def _name(path: Path) -> str:
    return path.name or str(path)


def _shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


# -- what the pickers show ----------------------------------------------------------------------
def matching_preset(config: MiniMindConfig) -> str | None:
    """The released model with this architecture (tied or not), if there is one."""
    ignore = ("tie_word_embeddings", "max_position_embeddings", "rope_scaling", "aux_loss_alpha", "dropout",
              "bos_token_id", "eos_token_id")
    mine = {k: v for k, v in config.to_dict().items() if k not in ignore}
    for name, cfg in PRESETS.items():
        theirs = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
        if not config.use_moe:
            for k in ("n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
                      "norm_topk_prob", "seq_aux"):
                theirs.pop(k, None)
                mine.pop(k, None)
        if mine == theirs:
            return name
    return None


def describe(config: MiniMindConfig, parameters: int, name: str) -> str:
    """"MiniMind2-Small · 25.8 M parameters · 8 layers · hidden 512 · GQA 8/2 · dense"."""
    kind = "dense"
    if config.use_moe:
        shared = f" + {config.n_shared_experts} shared" if config.n_shared_experts else ""
        kind = f"MoE {config.n_routed_experts} experts{shared}, top-{config.num_experts_per_tok}"
    heads = f"GQA {config.num_attention_heads}/{config.num_key_value_heads}"
    if config.num_attention_heads == config.num_key_value_heads:
        heads = f"{config.num_attention_heads} heads"
    return (f"{name} · {parameters / 1e6:.1f} M parameters · {config.num_hidden_layers} layers · "
            f"hidden {config.hidden_size} · {heads} · {kind}")


def find_tokenizer(path: Path) -> Path | None:
    """The folder with the tokenizer for a model at ``path``: the folder itself (an HF folder),
    or, for a file, the folder it is in, a ``model/`` folder beside it or above it
    (MiniMind's ``out/full_sft_512.pth`` and ``model/tokenizer.json``), or its parent."""
    path = Path(path)
    base = path if path.is_dir() else path.parent
    for folder in (base, base / "model", base.parent / "model", base.parent):
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
            return folder
    return None


# -- one strict load, in the file's own key names --------------------------------------------------
def _skeleton(config: MiniMindConfig, what: str) -> MiniMindForCausalLM:
    try:
        config.validate()
        with torch.device("meta"):
            return MiniMindForCausalLM(config)
    except UserError as exc:
        raise BadFileError(f"{what} has settings this app cannot use: {exc}") from None


def build_and_load(config: MiniMindConfig, tensors: Mapping[str, Any], what: str, *,
                   file_key: Callable[[str], str] = lambda k: k, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu") -> MiniMindForCausalLM:
    """A model for ``config`` holding ``tensors`` (our names; ``file_key`` gives the file's name of one
    of ours, for messages). With tied weights ``lm_head.weight`` may be absent (or a second copy)."""
    skeleton = _skeleton(config, what)
    expected = skeleton.state_dict()
    tensors = dict(tensors)
    tied = config.tie_word_embeddings
    if tied:
        embed = tensors.get("model.embed_tokens.weight", tensors.get("lm_head.weight"))
        if embed is not None:
            tensors["model.embed_tokens.weight"] = tensors["lm_head.weight"] = embed
    for key in expected:
        if key not in tensors:
            raise BadFileError(f"{what} has no {file_key(key)}, which a model of its other weights' sizes needs.")
    for key in tensors:
        if key not in expected:
            raise BadFileError(f"{what} holds {file_key(key)}, which the model its other weights describe "
                               f"({config.num_hidden_layers} layers, hidden size {config.hidden_size}) has no "
                               "place for.")
    for key, want in expected.items():
        got = tensors[key]
        if not isinstance(got, Tensor):
            raise BadFileError(f"{what}: {file_key(key)} is a {type(got).__name__}, not a tensor.")
        if not got.is_floating_point():
            raise BadFileError(f"{what}: {file_key(key)} holds {str(got.dtype).replace('torch.', '')} numbers, "
                               "not floating point weights.")
        if tuple(got.shape) != tuple(want.shape):
            raise BadFileError(f"{what}: {file_key(key)} is {_shape_text(got.shape)} in the file but "
                               f"{_shape_text(want.shape)} in the model its other weights describe.")
    model = skeleton.to_empty(device=device)
    model.tie_weights()
    if dtype != torch.float32:
        model.to(dtype)
    if tied:  # one tensor, loaded once
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing != ["lm_head.weight"] or unexpected:
            raise BadFileError(f"The weights do not fit {what}: {checkpoints.key_mismatch(missing, unexpected)}.")
    else:
        checkpoints.load_state_dict_strict(model, tensors, what=what)
    return model.eval()


# -- reading a state dict's shapes -----------------------------------------------------------------
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def _shape(shapes: Mapping[str, Any], key: str, dims: int, what: str) -> tuple[int, ...]:
    t = shapes.get(key)
    if t is None:
        raise BadFileError(f"{what} has no {key}, which every MiniMind model has.")
    shape = tuple(t.shape) if isinstance(t, Tensor) else tuple(t)
    if len(shape) != dims:
        raise BadFileError(f"{what}: {key} is {_shape_text(shape)}, not a {dims}-D weight.")
    return shape


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if isinstance(k, str) and (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def config_from_state_dict(tensors: Mapping[str, Any], what: str, preset_name: str | None = None
                           ) -> MiniMindConfig:
    """The config of a state dict with the published names (250426 on), read off its shapes.

    ``tensors`` maps names to tensors (or shapes). The generation is minimind-3 when there
    is a ``q_norm`` (which also gives head_dim), MiniMind2 otherwise; the head count
    (without ``q_norm``), theta, eps and experts per token come from ``preset_name`` or the
    generation's preset. Tied weights: no ``lm_head.weight``, or the same numbers as the
    embedding.
    """
    keys = list(tensors)
    vocab, hidden = _shape(tensors, "model.embed_tokens.weight", 2, what)
    layers = _count(keys, r"^model\.layers\.(\d+)\.")
    if layers == 0:
        raise BadFileError(f"{what} has no transformer layers (no model.layers.0.* weights).")
    p = "model.layers.0."
    q_rows, _ = _shape(tensors, p + "self_attn.q_proj.weight", 2, what)
    k_rows, _ = _shape(tensors, p + "self_attn.k_proj.weight", 2, what)
    qk_norm = p + "self_attn.q_norm.weight" in tensors
    generation = "minimind3" if qk_norm else "minimind2"
    use_moe = p + "mlp.gate.weight" in tensors
    base = _base_preset(generation, hidden, layers, use_moe, preset_name, what)
    if qk_norm:
        (head_dim,) = _shape(tensors, p + "self_attn.q_norm.weight", 1, what)
    else:
        head_dim = q_rows // base.num_attention_heads
    if head_dim < 1 or q_rows % head_dim or k_rows % head_dim:
        raise BadFileError(f"{what}: its q_proj ({q_rows} rows) and k_proj ({k_rows} rows) do not split into "
                           f"heads of {head_dim}.")
    heads, kv = q_rows // head_dim, k_rows // head_dim
    moe: dict[str, Any] = {}
    if use_moe:
        experts, _ = _shape(tensors, p + "mlp.gate.weight", 2, what)
        width, _ = _shape(tensors, p + "mlp.experts.0.gate_proj.weight", 2, what)
        shared = _count(keys, r"^model\.layers\.0\.mlp\.shared_experts\.(\d+)\.")
        intermediate = (_shape(tensors, p + "mlp.shared_experts.0.gate_proj.weight", 2, what)[0] if shared
                        else width)
        moe = dict(n_routed_experts=experts, n_shared_experts=shared, moe_intermediate_size=width,
                   num_experts_per_tok=min(base.num_experts_per_tok, experts))
    else:
        intermediate, _ = _shape(tensors, p + "mlp.gate_proj.weight", 2, what)
        moe = dict(moe_intermediate_size=intermediate)
    head = tensors.get("lm_head.weight")
    tied = head is None or (isinstance(head, Tensor) and isinstance(tensors["model.embed_tokens.weight"], Tensor)
                            and head.shape == tensors["model.embed_tokens.weight"].shape
                            and torch.equal(head, tensors["model.embed_tokens.weight"]))
    return replace(base, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                   num_key_value_heads=kv, head_dim=head_dim, intermediate_size=intermediate, qk_norm=qk_norm,
                   use_moe=use_moe, tie_word_embeddings=tied, **moe)


def _base_preset(generation: str, hidden: int, layers: int, use_moe: bool, preset_name: str | None,
                 what: str) -> MiniMindConfig:
    """The preset whose heads, theta, eps and routing a file of these sizes takes."""
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise UserError(f"There is no MiniMind preset {preset_name!r}; the presets are {', '.join(PRESETS)}.")
        cfg = PRESETS[preset_name]
        if (cfg.num_hidden_layers, cfg.hidden_size, cfg.use_moe) != (layers, hidden, use_moe):
            kind = lambda moe: "a mixture of experts" if moe else "dense"
            raise BadFileError(f"{what} has {layers} layers and hidden size {hidden} ({kind(use_moe)}) but "
                               f"{preset_name} has {cfg.num_hidden_layers} layers and hidden size {cfg.hidden_size} "
                               f"({kind(cfg.use_moe)}).")
        if cfg.generation != generation:
            raise BadFileError(f"{what} is a {generation} model, not {preset_name} ({cfg.generation}).")
        return cfg
    same = [c for c in PRESETS.values() if c.generation == generation and c.use_moe == use_moe]
    exact = [c for c in same if (c.hidden_size, c.num_hidden_layers) == (hidden, layers)]
    return (exact or same)[0]


# -- before 2025-04-26 ---------------------------------------------------------------------------------
_LEGACY_FIXED = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_LEGACY_PARTS = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
                 "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
                 "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
                 "feed_forward.w3": "mlp.up_proj", "feed_forward.gate": "mlp.gate",
                 "feed_forward.shared_experts.w1": "mlp.shared_experts.0.gate_proj",
                 "feed_forward.shared_experts.w2": "mlp.shared_experts.0.down_proj",
                 "feed_forward.shared_experts.w3": "mlp.shared_experts.0.up_proj"}
_LEGACY_KEY = re.compile(r"^layers\.(\d+)\.(.+)\.weight$")
_LEGACY_EXPERT = re.compile(r"^feed_forward\.experts\.(\d+)\.w([123])$")
_W = {"1": "gate_proj", "2": "down_proj", "3": "up_proj"}


def is_legacy(keys) -> bool:
    return "tok_embeddings.weight" in keys or any(isinstance(k, str) and k.startswith("layers.0.attention.")
                                                  for k in keys)


def legacy_key(theirs: str) -> str | None:
    """Our (published) name for a pre-250426 weight name, or None if it is not one."""
    if theirs in _LEGACY_FIXED:
        return _LEGACY_FIXED[theirs]
    m = _LEGACY_KEY.match(theirs)
    if not m:
        return None
    i, part = m.groups()
    if part in _LEGACY_PARTS:
        return f"model.layers.{i}.{_LEGACY_PARTS[part]}.weight"
    e = _LEGACY_EXPERT.match(part)
    if e:
        return f"model.layers.{i}.mlp.experts.{e.group(1)}.{_W[e.group(2)]}.weight"
    return None


def legacy_name(ours: str) -> str:
    """The pre-250426 name of one of our weights (for messages about legacy files)."""
    for theirs, mine in _LEGACY_FIXED.items():
        if mine == ours:
            return theirs
    m = re.match(r"^model\.layers\.(\d+)\.(.+)\.weight$", ours)
    if m:
        i, part = m.groups()
        for theirs, mine in _LEGACY_PARTS.items():
            if mine == part:
                return f"layers.{i}.{theirs}.weight"
        e = re.match(r"^mlp\.experts\.(\d+)\.(\w+)$", part)
        if e:
            w = {v: k for k, v in _W.items()}[e.group(2)]
            return f"layers.{i}.feed_forward.experts.{e.group(1)}.w{w}.weight"
    return ours


def interleaved_to_half(weight: Tensor, head_dim: int) -> Tensor:
    """Reorder the rows of a q or k projection from interleaved RoPE to our rotate-half RoPE.

    Before 2025-04-26 MiniMind rotated each head's vector as complex numbers made of
    *neighbouring* elements, (x0, x1), (x2, x3), ..., plane i turning by ``theta_i * pos``.
    We pair element i with element i + d/2 instead. Moving, within every head, the even
    rows to the first half and the odd rows to the second puts each old pair (2i, 2i+1)
    at (i, i + d/2), turned by the same angle with the same signs (real part first). The
    dot product of a query and a key is a sum over elements, so permuting q and k the same
    way leaves every attention score as it was; v and o are untouched.
    """
    rows, cols = weight.shape
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])     # [d]
    return weight.view(rows // head_dim, head_dim, cols)[:, order].reshape(rows, cols)


def half_to_interleaved(weight: Tensor, head_dim: int) -> Tensor:
    """The inverse of :func:`interleaved_to_half` (to write legacy-format weights, e.g. in tests)."""
    rows, cols = weight.shape
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(head_dim)
    return weight.view(rows // head_dim, head_dim, cols)[:, inverse].reshape(rows, cols)


def legacy_config(tensors: Mapping[str, Any], what: str, preset_name: str | None = None) -> MiniMindConfig:
    """The config of a pre-250426 state dict: sizes from the shapes, heads from how k relates to q.

    MiniMind v1 (2024) had 16 query heads and 8 key/value heads (theta 1e4); the first
    MiniMind2 (2025-02) 8 and 2 (theta 1e6). So ``wk`` has half of ``wq``'s rows in v1 and a
    quarter in the first MiniMind2.
    """
    renamed = {}
    for k, v in tensors.items():
        ours = legacy_key(k) if isinstance(k, str) else None
        if ours is not None:
            renamed[ours] = v
    vocab, hidden = _shape(renamed, "model.embed_tokens.weight", 2, what)
    layers = _count(renamed, r"^model\.layers\.(\d+)\.")
    q_rows, _ = _shape(renamed, "model.layers.0.self_attn.q_proj.weight", 2, what)
    k_rows, _ = _shape(renamed, "model.layers.0.self_attn.k_proj.weight", 2, what)
    use_moe = "model.layers.0.mlp.gate.weight" in renamed
    if preset_name is not None:
        base = _base_preset("legacy", hidden, layers, use_moe, preset_name, what)
    elif 2 * k_rows == q_rows:
        base = PRESETS["minimind-v1-moe" if use_moe else "minimind-v1-small"]
    elif 4 * k_rows == q_rows:
        base = PRESETS["MiniMind2-MoE (2025-02)" if use_moe else "MiniMind2-Small (2025-02)"]
    else:
        raise BadFileError(f"{what} is an old MiniMind file whose wk ({k_rows} rows) and wq ({q_rows} rows) fit "
                           "neither MiniMind v1 (16 heads, 8 for keys) nor the first MiniMind2 (8 heads, 2 for keys).")
    head_dim = q_rows // base.num_attention_heads
    moe: dict[str, Any] = {}
    if use_moe:
        experts, _ = _shape(renamed, "model.layers.0.mlp.gate.weight", 2, what)
        width, _ = _shape(renamed, "model.layers.0.mlp.experts.0.gate_proj.weight", 2, what)
        shared = 1 if "model.layers.0.mlp.shared_experts.0.gate_proj.weight" in renamed else 0
        moe = dict(n_routed_experts=experts, n_shared_experts=shared, moe_intermediate_size=width,
                   num_experts_per_tok=min(base.num_experts_per_tok, experts))
        intermediate = width
    else:
        intermediate, _ = _shape(renamed, "model.layers.0.mlp.gate_proj.weight", 2, what)
    head = renamed.get("lm_head.weight")
    embed = renamed["model.embed_tokens.weight"]
    tied = head is None or (isinstance(head, Tensor) and isinstance(embed, Tensor) and head.shape == embed.shape
                            and torch.equal(head, embed))
    return replace(base, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                   num_attention_heads=q_rows // head_dim, num_key_value_heads=k_rows // head_dim, head_dim=head_dim,
                   intermediate_size=intermediate, use_moe=use_moe, tie_word_embeddings=tied, **moe)


def from_legacy(tensors: Mapping[str, Any], config: MiniMindConfig, what: str, **kw) -> MiniMindForCausalLM:
    """Our model from a pre-250426 state dict: renamed, q/k rows permuted to rotate-half RoPE."""
    ours: dict[str, Any] = {}
    for theirs, value in tensors.items():
        if isinstance(theirs, str) and _IGNORED.search(theirs):
            continue
        key = legacy_key(theirs) if isinstance(theirs, str) else None
        if key is None:
            raise BadFileError(f"{what} holds {theirs!r}, which an old MiniMind model has no place for.")
        ours[key] = value
    d = config.head_dim
    for key, value in list(ours.items()):
        if isinstance(value, Tensor) and key.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")) \
                and value.dim() == 2 and value.shape[0] % d == 0:
            ours[key] = interleaved_to_half(value, d)
    return build_and_load(config, ours, what, file_key=legacy_name, **kw)


# -- state dicts from .pth and bare safetensors ---------------------------------------------------
def _unwrap(obj: Any, what: str) -> Mapping[str, Any]:
    """The state dict in what a .pth holds (a training checkpoint keeps it under "model")."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                return inner
        if any(isinstance(k, str) and ".lora" in k for k in obj):
            raise BadFileError(f"{what} is a LoRA adapter (only the low-rank updates), not a whole model; merge it "
                               "into its base model with MiniMind's scripts/convert_model.py first.")
        return obj
    raise BadFileError(f"{what} holds a {type(obj).__name__}, not a MiniMind state dict.")


def from_state_dict(tensors: Mapping[str, Any], what: str, *, preset_name: str | None = None,
                    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                    ) -> tuple[MiniMindForCausalLM, str]:
    """(model, format) from a MiniMind state dict with the published or the pre-250426 names."""
    tensors = {k: v for k, v in tensors.items() if not (isinstance(k, str) and _IGNORED.search(k))}
    if not tensors:
        raise BadFileError(f"{what} holds no weights.")
    if is_legacy(tensors):
        config = legacy_config(tensors, what, preset_name)
        return from_legacy(tensors, config, what, dtype=dtype, device=device), FORMAT_LEGACY
    if "model.embed_tokens.weight" not in tensors:
        first = next(iter(tensors))
        raise BadFileError(f"{what} is not a MiniMind state dict: it has no model.embed_tokens.weight (its first "
                           f"entry is {str(first)[:80]!r}).")
    config = config_from_state_dict(tensors, what, preset_name)
    return build_and_load(config, tensors, what, dtype=dtype, device=device), FORMAT_PTH


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, its header checked first."""
    from safetensors.torch import load_file

    checkpoints.read_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadFileError(f"{_name(path)} is not a readable safetensors file ({first}).") from exc


# -- Hugging Face folders -------------------------------------------------------------------------
def _get(cfg: Mapping[str, Any], what: str, *names: str, default: Any = None, kind: type = int) -> Any:
    """The first of ``names`` in config.json (or ``default``), checked to be a ``kind``."""
    for name in names:
        if name in cfg and cfg[name] is not None:
            value = cfg[name]
            break
    else:
        if default is None:
            raise BadFileError(f"{what} does not give {names[0]}.")
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
    if not ok:
        raise BadFileError(f"{what} gives {names[0]} = {json.dumps(value)[:40]}, which is not a {kind.__name__}.")
    return value


def _token_id(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _rope_theta(cfg: Mapping[str, Any], what: str, default: float) -> float:
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping) and "rope_theta" in params and cfg.get("rope_theta") is None:
        return float(_get(params, what, "rope_theta", kind=float))
    return float(_get(cfg, what, "rope_theta", default=default, kind=float))


def _no_rope_scaling(cfg: Mapping[str, Any], what: str) -> None:
    for key in ("rope_scaling", "rope_parameters"):
        s = cfg.get(key)
        if isinstance(s, Mapping):
            kind = s.get("rope_type", s.get("type", "default"))
            if kind not in ("default", None):
                raise BadFileError(f"{what} uses {kind!r} RoPE scaling, which this app does not implement for "
                                   f"{cfg.get('architectures', ['this architecture'])[0]}.")


def _refuse_unless(cond: bool, what: str, text: str) -> None:
    if not cond:
        raise BadFileError(f"{what} {text}, which this app's MiniMind does not have.")


def config_from_hf(cfg: Mapping[str, Any], tensors: Mapping[str, Any], what: str) -> tuple[MiniMindConfig, bool]:
    """(config, legacy names?) from a Hugging Face config.json; ``tensors`` settle what the JSON leaves open."""
    archs = cfg.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch not in HF_ARCHITECTURES:
        code = " (it names its own Python code in auto_map, which this app never runs)" if cfg.get("auto_map") else ""
        raise BadFileError(f"{what} is a {arch or 'model of unknown architecture'}{code}; only MiniMind's "
                           f"architectures ({', '.join(HF_ARCHITECTURES)}) can be opened.")
    act = cfg.get("hidden_act", "silu")
    _refuse_unless(act in ("silu", "swish"), what, f"uses the activation {act!r}")
    _refuse_unless(not cfg.get("attention_bias") and not cfg.get("mlp_bias"), what, "has biases")
    common = dict(bos_token_id=_token_id(cfg, "bos_token_id", 1), eos_token_id=_token_id(cfg, "eos_token_id", 2))
    if arch == "MiniMindLM":   # the February 2025 custom code: LMConfig's names, pre-250426 weights
        use_moe = _get(cfg, what, "use_moe", default=False, kind=bool)
        heads = _get(cfg, what, "n_heads", default=8)
        kv = _get(cfg, what, "n_kv_heads", default=heads)
        hidden = _get(cfg, what, "dim", default=512)
        config = MiniMindConfig(
            generation="legacy", vocab_size=_get(cfg, what, "vocab_size", default=6400), hidden_size=hidden,
            num_hidden_layers=_get(cfg, what, "n_layers", default=8), num_attention_heads=heads,
            num_key_value_heads=kv, intermediate_size=cfg.get("hidden_dim") or None,
            max_position_embeddings=_get(cfg, what, "max_seq_len", default=8192),
            rope_theta=_get(cfg, what, "rope_theta", default=1e4, kind=float),  # v1 had no setting: 1e4
            rms_norm_eps=_get(cfg, what, "norm_eps", default=1e-5, kind=float), use_moe=use_moe,
            n_routed_experts=_get(cfg, what, "n_routed_experts", default=4),
            num_experts_per_tok=_get(cfg, what, "num_experts_per_tok", default=2),
            n_shared_experts=1 if cfg.get("n_shared_experts", True) else 0,
            norm_topk_prob=_get(cfg, what, "norm_topk_prob", default=True, kind=bool),
            aux_loss_alpha=_get(cfg, what, "aux_loss_alpha", default=0.1, kind=float),
            seq_aux=_get(cfg, what, "seq_aux", default=True, kind=bool), **common)
        return config, True
    hidden = _get(cfg, what, "hidden_size")
    heads = _get(cfg, what, "num_attention_heads")
    base = dict(
        vocab_size=_get(cfg, what, "vocab_size"), hidden_size=hidden,
        num_hidden_layers=_get(cfg, what, "num_hidden_layers"), num_attention_heads=heads,
        num_key_value_heads=_get(cfg, what, "num_key_value_heads", default=heads), **common)
    if arch == "LlamaForCausalLM":
        _no_rope_scaling(cfg, what)
        config = MiniMindConfig(
            generation="minimind2", head_dim=_get(cfg, what, "head_dim", default=hidden // heads),
            intermediate_size=_get(cfg, what, "intermediate_size"),
            max_position_embeddings=_get(cfg, what, "max_position_embeddings", default=2048),
            rope_theta=_rope_theta(cfg, what, 10000.0),
            rms_norm_eps=_get(cfg, what, "rms_norm_eps", default=1e-6, kind=float),
            tie_word_embeddings=_get(cfg, what, "tie_word_embeddings", default=False, kind=bool), **base)
        return config, False
    if arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM"):
        _no_rope_scaling(cfg, what)
        _refuse_unless(not cfg.get("use_sliding_window"), what, "uses sliding-window attention")
        moe: dict[str, Any] = {}
        if arch == "Qwen3MoeForCausalLM":
            _refuse_unless(cfg.get("decoder_sparse_step", 1) == 1 and not cfg.get("mlp_only_layers"), what,
                           "mixes dense and MoE layers")
            experts = _get(cfg, what, "num_experts", "num_local_experts")
            moe = dict(use_moe=True, n_routed_experts=experts, n_shared_experts=0,
                       num_experts_per_tok=_get(cfg, what, "num_experts_per_tok"),
                       moe_intermediate_size=_get(cfg, what, "moe_intermediate_size"),
                       norm_topk_prob=_get(cfg, what, "norm_topk_prob", default=False, kind=bool),
                       aux_loss_alpha=_get(cfg, what, "router_aux_loss_coef", default=0.001, kind=float),
                       seq_aux=False)
        config = MiniMindConfig(
            generation="minimind3", head_dim=_get(cfg, what, "head_dim", default=128), qk_norm=True,
            intermediate_size=_get(cfg, what, "intermediate_size"),
            max_position_embeddings=_get(cfg, what, "max_position_embeddings", default=32768),
            rope_theta=_rope_theta(cfg, what, 10000.0),
            rms_norm_eps=_get(cfg, what, "rms_norm_eps", default=1e-6, kind=float),
            tie_word_embeddings=_get(cfg, what, "tie_word_embeddings", default=False, kind=bool), **base, **moe)
        return config, False
    # MiniMindForCausalLM: MiniMind2's config (2025) or minimind-3's (2026, always with q_norm/k_norm)
    minimind3 = "model.layers.0.self_attn.q_norm.weight" in tensors
    scoring = cfg.get("scoring_func", "softmax")
    _refuse_unless(scoring == "softmax", what, f"scores its experts with {scoring!r}")
    scaling = None
    rs = cfg.get("rope_scaling")
    if isinstance(rs, Mapping) and rs.get("type", rs.get("rope_type")) == "yarn":
        scaling = {k: rs[k] for k in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                                      "attention_factor") if k in rs}
    elif rs is not None:
        _no_rope_scaling(cfg, what)
    gen = dict(generation="minimind3", qk_norm=True, n_shared_experts=0, seq_aux=False) if minimind3 else \
        dict(generation="minimind2", n_shared_experts=_get(cfg, what, "n_shared_experts", default=1))
    config = MiniMindConfig(
        head_dim=_get(cfg, what, "head_dim", default=hidden // heads),
        intermediate_size=cfg.get("intermediate_size") or None,
        max_position_embeddings=_get(cfg, what, "max_position_embeddings", default=32768),
        rope_theta=_rope_theta(cfg, what, 1e6), rope_scaling=scaling,
        rms_norm_eps=_get(cfg, what, "rms_norm_eps", default=1e-6 if minimind3 else 1e-5, kind=float),
        tie_word_embeddings=_get(cfg, what, "tie_word_embeddings", default=True, kind=bool),
        use_moe=_get(cfg, what, "use_moe", default=False, kind=bool),
        n_routed_experts=_get(cfg, what, "n_routed_experts", "num_experts", default=4),
        num_experts_per_tok=_get(cfg, what, "num_experts_per_tok", default=1 if minimind3 else 2),
        moe_intermediate_size=cfg.get("moe_intermediate_size") or None,
        norm_topk_prob=_get(cfg, what, "norm_topk_prob", default=True, kind=bool),
        aux_loss_alpha=_get(cfg, what, "router_aux_loss_coef", "aux_loss_alpha", default=0.1, kind=float),
        dropout=_get(cfg, what, "dropout", default=0.0, kind=float), **{**gen, **base})
    return config, False


def _shard_files(folder: Path, index_name: str) -> list[Path]:
    """The files an HF ``*.index.json`` names, each a plain file name inside ``folder``."""
    index = checkpoints.read_sidecar(folder / index_name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, Mapping) or not weight_map:
        raise BadFileError(f"{index_name} in {_name(folder)} has no weight_map.")
    files = []
    for shard in dict.fromkeys(weight_map.values()):
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise BadFileError(f"{index_name} names the shard {str(shard)[:80]!r}, which is not a file in the folder.")
        files.append(folder / shard)
    return files


def _split_fused_experts(tensors: dict[str, Any], what: str) -> dict[str, Any]:
    """transformers 5 stores a Qwen3-MoE layer's experts stacked: ``mlp.experts.gate_up_proj`` [E, 2I, h]
    (gate rows, then up rows) and ``mlp.experts.down_proj`` [E, h, I]; split them into per-expert weights."""
    out = {}
    for key, value in tensors.items():
        m = re.match(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$", key)
        if not m:
            out[key] = value
            continue
        if not isinstance(value, Tensor) or value.dim() != 3:
            raise BadFileError(f"{what}: {key} is not a stack of expert weights.")
        prefix, kind = m.groups()
        if kind == "gate_up_proj":
            if value.shape[1] % 2:
                raise BadFileError(f"{what}: {key} ({_shape_text(value.shape)}) does not split into gate and up.")
            gate, up = value.chunk(2, dim=1)
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = gate[e]
                out[f"{prefix}.{e}.up_proj.weight"] = up[e]
        else:
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = value[e]
    return out


def read_hf_folder(folder: Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                   ) -> tuple[MiniMindForCausalLM, str]:
    """(model, format) from a Hugging Face folder: config.json as data, the weights through checkpoints."""
    what = _name(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise BadFileError(f"{what} is a folder without config.json, so not a Hugging Face model; choose the "
                           ".pth or .safetensors file in it instead.")
    cfg = checkpoints.read_sidecar(config_path)
    if (folder / "model.safetensors").is_file():
        tensors = _read_safetensors(folder / "model.safetensors")
    elif (folder / "model.safetensors.index.json").is_file():
        tensors = {}
        for shard in _shard_files(folder, "model.safetensors.index.json"):
            tensors.update(_read_safetensors(shard))
    elif (folder / "pytorch_model.bin").is_file():
        tensors = dict(_unwrap(checkpoints.torch_load(folder / "pytorch_model.bin"), what))
    elif (folder / "pytorch_model.bin.index.json").is_file():
        tensors = {}
        for shard in _shard_files(folder, "pytorch_model.bin.index.json"):
            tensors.update(_unwrap(checkpoints.torch_load(shard), _name(shard)))
    else:
        raise BadFileError(f"{what} has a config.json but no weights (model.safetensors or pytorch_model.bin).")
    tensors = {k: v for k, v in tensors.items() if not (isinstance(k, str) and _IGNORED.search(k))}
    tensors = _split_fused_experts(tensors, what)
    config, legacy = config_from_hf(cfg, tensors, f"{what}/config.json")
    if legacy:
        return from_legacy(tensors, config, what, dtype=dtype, device=device), f"{FORMAT_HF} (MiniMindLM)"
    arch = (cfg.get("architectures") or ["?"])[0]
    return build_and_load(config, tensors, what, dtype=dtype, device=device), f"{FORMAT_HF} ({arch})"


# -- our own files ----------------------------------------------------------------------------------
def save_minimind(path: str | os.PathLike, model: MiniMindForCausalLM, sidecar_extra: dict | None = None) -> Path:
    """Save ``model`` as ``path`` (.safetensors) and its JSON: kind, config and ``sidecar_extra``
    (what the trainer records: command, data, steps, held-out perplexity ...). Tied weights are
    stored once."""
    extra = dict(sidecar_extra or {})
    for key in ("kind", "config"):
        if key in extra:
            raise ValueError(f"The sidecar key {key!r} is written by save_minimind itself.")
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()
               if not (model.config.tie_word_embeddings and k == "lm_head.weight")}
    return checkpoints.save_weights(path, tensors, {"kind": KIND, "config": model.config.to_dict(), **extra})


def read_minimind_file(path: Path, side: dict, *, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> MiniMindForCausalLM:
    """One of our files (.safetensors + .json with kind "minimind"), checked, as a model in eval mode."""
    side_name = checkpoints.sidecar_path(path).name
    if not isinstance(side.get("config"), dict):
        raise BadFileError(f"{side_name} does not give the model's settings (no config).")
    try:
        config = MiniMindConfig.from_dict(side["config"])
    except (UserError, TypeError) as exc:
        raise BadFileError(f"{side_name}: {exc}") from None
    tensors, _ = checkpoints.load_weights(path)
    return build_and_load(config, tensors, _name(path), dtype=dtype, device=device)


# -- one entry point for any supported path --------------------------------------------------------
def load_minimind(path: str | os.PathLike, *, preset_name: str | None = None, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> LoadedMiniMind:
    """Open any supported MiniMind model (a file or a Hugging Face folder), told apart by content.

    ``preset_name`` (one of :data:`~.model.PRESETS`) says which released model a ``.pth`` is;
    the file must then have its sizes. ``dtype``: the model's (weights are converted).
    """
    path = Path(path)
    sidecar: dict = {}
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        model, fmt = read_hf_folder(path, dtype=dtype, device=device)
    else:
        path = checkpoints.weights_path(path)
        what = _name(path)
        head = checkpoints.read_file_head(path, 14, "a MiniMind model file")
        in_hf_folder = (path.parent / "config.json").is_file() and path.name.startswith(("model", "pytorch_model"))
        if len(head) >= 9 and head[8:9] == b"{":   # safetensors: an 8-byte length, then a JSON header
            side = checkpoints.read_sidecar(path)
            if side.get("kind") == KIND:
                model, fmt, sidecar = read_minimind_file(path, side, dtype=dtype, device=device), FORMAT_OURS, side
            elif side and "kind" in side:
                raise BadFileError(f"{what} is this app's {side['kind']!r} file, not a MiniMind model.")
            elif in_hf_folder:
                path = path.parent
                model, fmt = read_hf_folder(path, dtype=dtype, device=device)
            else:
                model, fmt = from_state_dict(_read_safetensors(path), what, preset_name=preset_name, dtype=dtype,
                                             device=device)
                fmt = FORMAT_SAFETENSORS + (" (before 2025-04-26)" if fmt == FORMAT_LEGACY else "")
        elif head.startswith(_TORCH_MAGICS[0]) or head == _TORCH_MAGICS[1]:
            if in_hf_folder:
                path = path.parent
                model, fmt = read_hf_folder(path, dtype=dtype, device=device)
            else:
                tensors = _unwrap(checkpoints.torch_load(path), what)
                model, fmt = from_state_dict(tensors, what, preset_name=preset_name, dtype=dtype, device=device)
        elif head.startswith(b"GGUF"):
            raise BadFileError(f"{what} is a GGUF file (llama.cpp / ollama); open the PyTorch .pth or the Hugging "
                               "Face folder of the model instead.")
        else:
            raise BadFileError(f"{what} is neither a PyTorch file (.pth, .bin) nor safetensors, nor a Hugging "
                               "Face folder.")
    config = model.config
    count = parameter_count(model)
    name = matching_preset(config) or (path.stem if path.is_file() else _name(path))
    folder = find_tokenizer(path)
    tokenizer = folder / "tokenizer.json" if folder is not None and (folder / "tokenizer.json").is_file() else None
    return LoadedMiniMind(model=model, config=config, name=name, description=describe(config, count, name),
                          generation=config.generation, format=fmt, path=path, parameters=count,
                          tokenizer_dir=folder, tokenizer_path=tokenizer, sidecar=sidecar)
