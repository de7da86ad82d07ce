"""Open Conv-TasNet separators: our own files, asteroid's checkpoints and torchaudio's state dicts.

Three formats, every one read through :mod:`playground.ml.checkpoints` (``torch_load``
with ``weights_only=True``, or safetensors), never by unpickling code:

* **Ours**: ``name.safetensors`` plus ``name.json`` with ``{"kind": "conv-tasnet",
  "config": ConvTasNetConfig.to_dict(), "last_residual": bool}``
  (:func:`save_separator`). The state dict keys are :class:`~.model.ConvTasNet`'s own.
* **asteroid** (``BaseModel.serialize()``, e.g. the hub's ``pytorch_model.bin`` or a
  recipe's ``best_model.pth``): a dict ``{"model_name": "ConvTasNet", "model_args": {...},
  "state_dict": {...}, "infos": ...}`` (:func:`from_asteroid`).
* **torchaudio** (``conv_tasnet_base``, e.g. ``conv_tasnet_base_libri2mix.pt``): a plain
  state dict whose settings are read off the shapes (:func:`from_torchaudio`).

Each converted file is checked against a skeleton built on the "meta" device (no
memory) before anything is allocated, so a file whose settings claim a huge network
costs nothing; then every key must be used and every shape must fit, and a refusal is
one :class:`~playground.errors.BadFileError` line in the *file's* key names.

**Framing.** Our model does not pad the encoder's input on the left; it pads the end so
that whole frames cover every sample, and cuts the decoder's output to the input length.

* asteroid's encoder has no padding either, but it drops the samples after the last whole
  frame (and its decoder's output is zero-padded back to the input length). When
  ``(T - L)`` is a multiple of the stride the two agree exactly; otherwise ours has one
  frame more, which also moves gLN's statistics a little (they are global).
* torchaudio pads the encoder by one stride on *both* sides (``padding=stride``) after
  padding the end to a multiple of the stride, and its decoder removes one stride at each
  end. So ``torchaudio(x) == ours(stride zeros + x + zeros)[..., stride:stride + T]``
  exactly (:func:`torchaudio_framing` does it); plain ``ours(x)`` sees one frame fewer at
  the start, a small difference for a trained model (the first frame is mostly padding).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import BadFileError, UserError
from ...progress import Progress
from .. import checkpoints
from ..checkpoints import LoadedModel
from .model import ConvTasNet, ConvTasNetConfig, parameter_count

KIND = "conv-tasnet"  # the "kind" in our separators' JSON sidecar
FORMAT_OURS = "safetensors"
FORMAT_ASTEROID = "asteroid checkpoint"
FORMAT_TORCHAUDIO = "torchaudio state dict"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")

# asteroid's ConvTasNet.__init__ defaults: model_args that a file leaves out take these.
ASTEROID_DEFAULTS: dict[str, Any] = {
    "n_blocks": 8, "n_repeats": 3, "bn_chan": 128, "hid_chan": 512, "skip_chan": 128, "conv_kernel_size": 3,
    "norm_type": "gLN", "mask_act": "sigmoid", "causal": False, "fb_name": "free", "kernel_size": 16,
    "n_filters": 512, "stride": 8, "encoder_activation": None, "sample_rate": 8000,
}
ASTEROID_FREE_FILTERBANKS = ("free", "FreeFB")
ASTEROID_NORMS = {"gLN": "gLN", "cgLN": "cLN"}  # asteroid's "cLN" is *channel-wise*: not implemented here
ASTEROID_MASKS = ("sigmoid", "relu", "softmax")
ASTEROID_ENCODER_ACTS = {None: "linear", "linear": "linear", "relu": "relu"}


def _name(path: Path) -> str:
    return path.name or str(path)


def _shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


# -- one strict load, in the file's own key names ---------------------------------------------------
def _is_norm_key(key: str) -> bool:
    return key.endswith((".gamma", ".beta")) and ("norm" in key.rsplit(".", 2)[-2])


def _build_and_load(config: ConvTasNetConfig, state_dict: Mapping[str, Any], file_key: Callable[[str], str],
                    what: str, last_residual: bool = True) -> ConvTasNet:
    """A ConvTasNet for ``config`` with the file's tensors in it (``file_key`` names each of ours in the file).

    The keys and shapes are checked on a "meta" skeleton first; norms' gamma and beta may
    come as [C] (asteroid, torchaudio's GroupNorm) and are reshaped to our [1, C, 1].
    """
    try:
        with torch.device("meta"):
            skeleton = ConvTasNet(config, last_residual=last_residual)
    except UserError as exc:
        raise BadFileError(f"{what} has settings this app cannot use: {exc}") from None
    expected = skeleton.state_dict()
    ours_of = {file_key(ours): ours for ours in expected}
    unexpected = [k for k in state_dict if k not in ours_of]
    missing = [k for k in ours_of if k not in state_dict]
    if missing or unexpected:
        raise BadFileError(f"{what} does not fit the Conv-TasNet its settings describe: "
                           f"{checkpoints.key_mismatch(missing, unexpected)} of {len(ours_of)} expected weights.")
    mapped: dict[str, Tensor] = {}
    for theirs, ours in ours_of.items():
        got = state_dict[theirs]
        want = expected[ours].shape
        if not isinstance(got, Tensor):
            raise BadFileError(f"{what}: {theirs!r} is a {type(got).__name__}, not a tensor.")
        if not got.is_floating_point():
            raise BadFileError(f"{what}: {theirs!r} holds {str(got.dtype).replace('torch.', '')} numbers, "
                               "not floating point weights.")
        if tuple(got.shape) != tuple(want) and _is_norm_key(ours) and got.dim() == 1 and got.numel() == want.numel():
            got = got.reshape(want)
        if tuple(got.shape) != tuple(want):
            raise BadFileError(f"{what}: {theirs!r} is {_shape_text(got.shape)} in the file but "
                               f"{_shape_text(want)} in the Conv-TasNet its settings describe.")
        mapped[ours] = got
    model = skeleton.to_empty(device="cpu")
    checkpoints.load_state_dict_strict(model, mapped, what=what)
    return model.eval()


# -- asteroid -------------------------------------------------------------------------------------
_BLOCK_KEY = re.compile(r"separator\.blocks\.(\d+)\.(\w+)\.(\w+)$")
_ASTEROID_SHARED = {"in_conv": "0", "act1": "1", "norm1": "2", "depthwise": "3", "act2": "4", "norm2": "5"}
_ASTEROID_FIXED = {
    "encoder.weight": "encoder.filterbank._filters",
    "decoder.weight": "decoder.filterbank._filters",
    "separator.in_norm.gamma": "masker.bottleneck.0.gamma",
    "separator.in_norm.beta": "masker.bottleneck.0.beta",
    "separator.bottleneck.weight": "masker.bottleneck.1.weight",
    "separator.bottleneck.bias": "masker.bottleneck.1.bias",
    "separator.out_act.weight": "masker.mask_net.0.weight",
    "separator.out_conv.weight": "masker.mask_net.1.weight",
    "separator.out_conv.bias": "masker.mask_net.1.bias",
}


def asteroid_key(ours: str, causal: bool = False) -> str:
    """The name asteroid's ConvTasNet gives one of our weights (causal: the depthwise conv is
    ``shared_block.3.0``, the first of a Sequential with the chop of the look-ahead)."""
    if ours in _ASTEROID_FIXED:
        return _ASTEROID_FIXED[ours]
    m = _BLOCK_KEY.match(ours)
    if not m:
        raise KeyError(ours)
    i, module, param = m.groups()
    if module in ("res_conv", "skip_conv"):
        return f"masker.TCN.{i}.{module}.{param}"
    index = _ASTEROID_SHARED[module]
    if module == "depthwise" and causal:
        index = "3.0"
    return f"masker.TCN.{i}.shared_block.{index}.{param}"


def _arg(args: Mapping[str, Any], key: str, what: str, kind: type = int) -> Any:
    value = args.get(key, ASTEROID_DEFAULTS.get(key))
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadFileError(f"{what}: its model_args give {key} = {value!r}, not a whole number.")
    elif kind is bool and not isinstance(value, bool):
        raise BadFileError(f"{what}: its model_args give {key} = {value!r}, not true or false.")
    return value


def asteroid_config(model_args: Mapping[str, Any], what: str = "The asteroid checkpoint") -> ConvTasNetConfig:
    """Our config for asteroid's ConvTasNet ``model_args`` (missing ones take asteroid's defaults).

    Refused: other filterbanks than the free (learned) one, a stride other than
    ``kernel_size // 2``, masks computed without skip connections (``skip_chan`` 0),
    ``out_chan`` other than ``n_filters``, asteroid's channel-wise "cLN" (the paper's
    cumulative LN is asteroid's "cgLN", our "cLN"), and activations we do not have.
    Unknown extra arguments are ignored, as asteroid's free filterbank ignores them.
    """
    if not isinstance(model_args, Mapping):
        raise BadFileError(f"{what}: its model_args are a {type(model_args).__name__}, not a table of settings.")
    if "n_src" not in model_args:
        raise BadFileError(f"{what}: its model_args do not say how many speakers it separates (n_src).")
    fb = model_args.get("fb_name", ASTEROID_DEFAULTS["fb_name"])
    if fb not in ASTEROID_FREE_FILTERBANKS:
        raise BadFileError(f"{what} uses asteroid's {fb!r} filterbank; only the free (learned) filterbank of "
                           "Conv-TasNet is supported.")
    if model_args.get("who_is_pinv") or model_args.get("padding") or model_args.get("output_padding"):
        raise BadFileError(f"{what} uses a padded or pseudo-inverse filterbank, which is not supported.")
    n_filters = _arg(model_args, "n_filters", what)
    kernel = _arg(model_args, "kernel_size", what)
    stride = model_args.get("stride", ASTEROID_DEFAULTS["stride"])
    stride = kernel // 2 if stride is None else _arg(model_args, "stride", what)
    if stride != kernel // 2 or kernel % 2:
        raise BadFileError(f"{what} has filters of {kernel} samples with a stride of {stride}; this app's "
                           "Conv-TasNet needs an even filter length and a stride of half of it.")
    for key in ("in_chan", "out_chan"):
        if model_args.get(key) not in (None, n_filters):
            raise BadFileError(f"{what}: {key} = {model_args[key]!r} differs from n_filters = {n_filters}, "
                               "which this app's Conv-TasNet does not support.")
    skip = model_args.get("skip_chan", ASTEROID_DEFAULTS["skip_chan"])
    if not skip:
        raise BadFileError(f"{what} computes its masks without skip connections (skip_chan = {skip!r}), "
                           "which this app's Conv-TasNet does not support.")
    norm = model_args.get("norm_type", ASTEROID_DEFAULTS["norm_type"])
    if not isinstance(norm, str):
        raise BadFileError(f"{what}: its model_args give norm_type = {norm!r}, not a name.")
    causal = _arg(model_args, "causal", what, bool)
    if norm == "cLN" or (causal and norm not in ("cgLN", "cLN")):
        raise BadFileError(f"{what} uses asteroid's channel-wise layer norm (\"cLN\"), which this app does "
                           "not implement (only gLN and the cumulative \"cgLN\").")
    if norm not in ASTEROID_NORMS:
        raise BadFileError(f"{what} uses the norm {norm!r}; only gLN and cgLN (cumulative) are supported.")
    mask = model_args.get("mask_act", ASTEROID_DEFAULTS["mask_act"])
    if mask not in ASTEROID_MASKS:
        raise BadFileError(f"{what} uses {mask!r} masks; only {', '.join(ASTEROID_MASKS)} are supported.")
    enc = model_args.get("encoder_activation", ASTEROID_DEFAULTS["encoder_activation"])
    if not isinstance(enc, (str, type(None))) or enc not in ASTEROID_ENCODER_ACTS:
        raise BadFileError(f"{what} uses the encoder activation {enc!r}; only linear and relu are supported.")
    rate = model_args.get("sample_rate")
    rate = 8000 if rate is None else _arg(model_args, "sample_rate", what)  # asteroid's SR_HASHTABLE rule
    try:
        config = ConvTasNetConfig(
            n_src=_arg(model_args, "n_src", what), N=n_filters, L=kernel, B=_arg(model_args, "bn_chan", what),
            H=_arg(model_args, "hid_chan", what), Sc=_arg(model_args, "skip_chan", what),
            P=_arg(model_args, "conv_kernel_size", what), X=_arg(model_args, "n_blocks", what),
            R=_arg(model_args, "n_repeats", what), norm=ASTEROID_NORMS[norm], causal=causal, mask_act=mask,
            encoder_act=ASTEROID_ENCODER_ACTS[enc], sample_rate=rate)
        config.validate()
    except UserError as exc:
        raise BadFileError(f"{what} has settings this app cannot use: {exc}") from None
    return config


def _block_count(keys, pattern: re.Pattern) -> int:
    indices = {int(m.group(1)) for k in keys if isinstance(k, str) and (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def from_asteroid(obj: Any, what: str = "The asteroid checkpoint") -> ConvTasNet:
    """Our ConvTasNet from an asteroid ``serialize()`` dict (``model_name`` "ConvTasNet")."""
    if not isinstance(obj, Mapping):
        raise BadFileError(f"{what} holds a {type(obj).__name__}, not an asteroid model dict.")
    for key in ("model_name", "model_args", "state_dict"):
        if key not in obj:
            raise BadFileError(f"{what} is not a complete asteroid model: it has no {key!r}.")
    if obj["model_name"] != "ConvTasNet":
        raise BadFileError(f"{what} holds an asteroid {obj['model_name']!r}, not a ConvTasNet; only "
                           "Conv-TasNet separators can be opened.")
    config = asteroid_config(obj["model_args"], what)
    state_dict = obj["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise BadFileError(f"{what}: its state_dict is a {type(state_dict).__name__}, not a table of tensors.")
    blocks = _block_count(state_dict, re.compile(r"masker\.TCN\.(\d+)\."))
    if blocks != config.X * config.R:
        raise BadFileError(f"{what}: its model_args give {config.X} x {config.R} blocks but its weights hold "
                           f"{blocks}.")
    return _build_and_load(config, state_dict, lambda k: asteroid_key(k, config.causal), what)


def to_asteroid(model: ConvTasNet) -> dict[str, Any]:
    """The asteroid ``serialize()`` dict of one of our (asteroid-shaped) models: for tests and export."""
    cfg = model.config
    if model.separator.blocks[-1].res_conv is None:
        raise ValueError("asteroid's ConvTasNet always has a residual output in its last block.")
    norm = {"gLN": "gLN", "cLN": "cgLN"}[cfg.norm]
    state = {}
    for k, v in model.state_dict().items():
        state[asteroid_key(k, cfg.causal)] = v.reshape(-1).clone() if _is_norm_key(k) else v.clone()
    args = {"fb_name": "FreeFB", "n_filters": cfg.N, "kernel_size": cfg.L, "stride": cfg.stride,
            "sample_rate": float(cfg.sample_rate), "in_chan": cfg.N, "out_chan": cfg.N, "bn_chan": cfg.B,
            "hid_chan": cfg.H, "skip_chan": cfg.Sc, "conv_kernel_size": cfg.P, "n_blocks": cfg.X,
            "n_repeats": cfg.R, "n_src": cfg.n_src, "norm_type": norm, "mask_act": cfg.mask_act,
            "causal": cfg.causal, "encoder_activation": None if cfg.encoder_act == "linear" else cfg.encoder_act}
    return {"model_name": "ConvTasNet", "state_dict": state, "model_args": args}


# -- torchaudio -----------------------------------------------------------------------------------
_TORCHAUDIO_LAYERS = {"in_conv": "0", "act1": "1", "norm1": "2", "depthwise": "3", "act2": "4", "norm2": "5"}
_TORCHAUDIO_FIXED = {
    "encoder.weight": "encoder.weight",
    "decoder.weight": "decoder.weight",
    "separator.in_norm.gamma": "mask_generator.input_norm.weight",
    "separator.in_norm.beta": "mask_generator.input_norm.bias",
    "separator.bottleneck.weight": "mask_generator.input_conv.weight",
    "separator.bottleneck.bias": "mask_generator.input_conv.bias",
    "separator.out_act.weight": "mask_generator.output_prelu.weight",
    "separator.out_conv.weight": "mask_generator.output_conv.weight",
    "separator.out_conv.bias": "mask_generator.output_conv.bias",
}
_TORCHAUDIO_BLOCK = re.compile(r"mask_generator\.conv_layers\.(\d+)\.")


def torchaudio_key(ours: str) -> str:
    """The name torchaudio's ConvTasNet gives one of our weights (GroupNorm's weight/bias are our gamma/beta)."""
    if ours in _TORCHAUDIO_FIXED:
        return _TORCHAUDIO_FIXED[ours]
    m = _BLOCK_KEY.match(ours)
    if not m:
        raise KeyError(ours)
    i, module, param = m.groups()
    if module == "res_conv":
        return f"mask_generator.conv_layers.{i}.res_out.{param}"
    if module == "skip_conv":
        return f"mask_generator.conv_layers.{i}.skip_out.{param}"
    param = {"gamma": "weight", "beta": "bias"}.get(param, param)
    return f"mask_generator.conv_layers.{i}.conv_layers.{_TORCHAUDIO_LAYERS[module]}.{param}"


def _shape_of(state_dict: Mapping[str, Any], key: str, dims: int, what: str) -> tuple[int, ...]:
    t = state_dict.get(key)
    if t is None:
        raise BadFileError(f"{what} is not a torchaudio Conv-TasNet state dict: it has no {key!r}.")
    if not isinstance(t, Tensor) or t.dim() != dims:
        shown = _shape_text(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise BadFileError(f"{what}: {key!r} is {shown}, not a {dims}-D weight.")
    return tuple(t.shape)


def torchaudio_config(state_dict: Mapping[str, Any], n_src: int | None = None, *, X: int = 8,
                      mask_act: str = "relu", sample_rate: int = 8000,
                      what: str = "The torchaudio state dict") -> tuple[ConvTasNetConfig, bool]:
    """(config, last_residual) read off a torchaudio ConvTasNet state dict's shapes.

    What the shapes cannot tell comes from the arguments, with ``conv_tasnet_base``'s
    values: ``X`` layers per stack (the file only holds X * R blocks), ReLU masks, 8 kHz.
    ``n_src``, when given, must agree with the file.
    """
    if not isinstance(state_dict, Mapping):
        raise BadFileError(f"{what} holds a {type(state_dict).__name__}, not a table of tensors.")
    N, _, L = _shape_of(state_dict, "encoder.weight", 3, what)
    B, n_in, _ = _shape_of(state_dict, "mask_generator.input_conv.weight", 3, what)
    H, _, _ = _shape_of(state_dict, "mask_generator.conv_layers.0.conv_layers.0.weight", 3, what)
    _, _, P = _shape_of(state_dict, "mask_generator.conv_layers.0.conv_layers.3.weight", 3, what)
    Sc, _, _ = _shape_of(state_dict, "mask_generator.conv_layers.0.skip_out.weight", 3, what)
    out, _, _ = _shape_of(state_dict, "mask_generator.output_conv.weight", 3, what)
    if n_in != N or out % N:
        raise BadFileError(f"{what}: its mask generator ({n_in} inputs, {out} outputs) does not fit its "
                           f"{N} encoder filters.")
    found_src = out // N
    if n_src is not None and n_src != found_src:
        raise BadFileError(f"{what} separates {found_src} speakers, not {n_src}.")
    if P != 3:
        raise BadFileError(f"{what} has depthwise kernels of {P}; torchaudio's ConvTasNet pads by the dilation, "
                           "which only fits kernels of 3.")
    blocks = _block_count(state_dict, _TORCHAUDIO_BLOCK)
    if X < 1 or blocks % X:
        raise BadFileError(f"{what} holds {blocks} conv blocks, not a whole number of stacks of {X} layers.")
    last_residual = f"mask_generator.conv_layers.{blocks - 1}.res_out.weight" in state_dict
    try:
        config = ConvTasNetConfig(n_src=found_src, N=N, L=L, B=B, H=H, Sc=Sc, P=P, X=X, R=blocks // X,
                                  norm="gLN", causal=False, mask_act=mask_act, encoder_act="linear",
                                  sample_rate=sample_rate)
        config.validate()
    except UserError as exc:
        raise BadFileError(f"{what} has settings this app cannot use: {exc}") from None
    return config, last_residual


def from_torchaudio(state_dict: Mapping[str, Any], n_src: int | None = None, *, X: int = 8, mask_act: str = "relu",
                    sample_rate: int = 8000, what: str = "The torchaudio state dict") -> ConvTasNet:
    """Our ConvTasNet from a torchaudio ``ConvTasNet`` state dict (``conv_tasnet_base``'s by default).

    torchaudio's last block has no residual output, so the model is built with
    ``last_residual=False``. See the module's note on framing (:func:`torchaudio_framing`).
    """
    config, last_residual = torchaudio_config(state_dict, n_src, X=X, mask_act=mask_act, sample_rate=sample_rate,
                                              what=what)
    return _build_and_load(config, state_dict, torchaudio_key, what, last_residual=last_residual)


def to_torchaudio(model: ConvTasNet) -> dict[str, Tensor]:
    """The torchaudio state dict of one of our models (for tests and export)."""
    return {torchaudio_key(k): (v.reshape(-1).clone() if _is_norm_key(k) else v.clone())
            for k, v in model.state_dict().items()}


def torchaudio_framing(model: ConvTasNet, mix: Tensor) -> Tensor:
    """``model(mix)`` framed as torchaudio frames it: one stride of zeros before the input, the end
    padded to a multiple of the stride plus one stride, and that stride cut off again at both
    ends. With weights from :func:`from_torchaudio` this is torchaudio's output exactly."""
    s = model.config.stride
    t = mix.shape[-1]
    aligned = math.ceil(t / s) * s
    out = model(F.pad(mix, (s, aligned - t + s)))
    return out[..., s:s + t]


# -- our own format -------------------------------------------------------------------------------
def save_separator(path: str | os.PathLike, model: ConvTasNet, sidecar_extra: dict | None = None) -> Path:
    """Save ``model`` as ``path`` (.safetensors) plus its JSON (kind, config, last_residual, ``sidecar_extra``)."""
    extra = dict(sidecar_extra or {})
    for key in ("kind", "config", "last_residual"):
        if key in extra:
            raise ValueError(f"The sidecar key {key!r} is written by save_separator itself.")
    last_residual = model.separator.blocks[-1].res_conv is not None
    side = {"kind": KIND, "config": model.config.to_dict(), "last_residual": last_residual, **extra}
    return checkpoints.save_weights(path, dict(model.state_dict()), side)


def read_separator_file(path: str | os.PathLike) -> ConvTasNet:
    """One of our separator files (.safetensors + .json), checked, as a model in eval mode."""
    path = Path(path)
    side_name = checkpoints.sidecar_path(path).name
    side = checkpoints.read_sidecar(path)
    if not side:
        raise BadFileError(f"{_name(path)} has no {side_name} beside it, which says how to build the separator "
                           "its weights are for.")
    if side.get("kind") != KIND:
        raise BadFileError(f"{side_name} does not describe a Conv-TasNet separator (its kind is "
                           f"{side.get('kind')!r}).")
    if not isinstance(side.get("config"), dict):
        raise BadFileError(f"{side_name} does not give the separator's settings (no config).")
    try:
        config = ConvTasNetConfig.from_dict(side["config"])
    except UserError as exc:
        raise BadFileError(f"{side_name}: {exc}") from None
    last_residual = side.get("last_residual", True)
    if not isinstance(last_residual, bool):
        raise BadFileError(f"{side_name}: last_residual is {last_residual!r}, not true or false.")
    tensors, _ = checkpoints.load_weights(path)
    return _build_and_load(config, tensors, lambda k: k, _name(path), last_residual=last_residual)


# -- one entry point for any supported file -------------------------------------------------------
def file_format(path: str | os.PathLike) -> str:
    """"safetensors" or "pytorch", told from the file's first bytes; a clear refusal otherwise."""
    path = Path(path)
    name = _name(path)
    head = checkpoints.read_file_head(path, 14, "a separator file")
    if len(head) >= 9 and head[8:9] == b"{":  # an 8-byte header length, then safetensors' JSON header
        return FORMAT_OURS
    if head.startswith(_TORCH_MAGICS[0]) or head == _TORCH_MAGICS[1]:
        return "pytorch"
    if head.startswith(_HDF5_MAGIC):
        raise BadFileError(f"{name} is an HDF5 file (Keras / TensorFlow), not a PyTorch Conv-TasNet.")
    raise BadFileError(f"{name} is neither a PyTorch checkpoint (.pth, .pt, .bin) nor a .safetensors separator "
                       "file; TensorFlow checkpoints and other formats cannot be read.")


def read_model(path: str | os.PathLike) -> tuple[ConvTasNet, str]:
    """(model, format name) from any supported file, told apart by content, not by name."""
    path = checkpoints.weights_path(Path(path))
    name = _name(path)
    if file_format(path) == FORMAT_OURS:
        return read_separator_file(path), FORMAT_OURS
    obj = checkpoints.torch_load(path)
    if isinstance(obj, Mapping) and "model_name" in obj:
        return from_asteroid(obj, name), FORMAT_ASTEROID
    if isinstance(obj, Mapping) and "mask_generator.input_conv.weight" in obj:
        return from_torchaudio(obj, what=name), FORMAT_TORCHAUDIO
    if isinstance(obj, Mapping) and "masker.bottleneck.1.weight" in obj:
        raise BadFileError(f"{name} holds asteroid weights without their model_args; save the model with "
                           "asteroid's serialize() (or use its pytorch_model.bin) so that its settings come along.")
    if isinstance(obj, Mapping) and "state_dict" in obj:
        raise BadFileError(f"{name} is a training checkpoint (a state_dict without model_name and model_args), "
                           "not a Conv-TasNet model file.")
    if isinstance(obj, Mapping):
        first = next((repr(k) for k in obj), "nothing")
        raise BadFileError(f"{name} is not a Conv-TasNet checkpoint (asteroid or torchaudio): its first entry is "
                           f"{first[:80]}.")
    raise BadFileError(f"{name} holds a {type(obj).__name__}, not a Conv-TasNet checkpoint.")


def describe(model: ConvTasNet, source: str = "", format: str = "") -> LoadedModel:  # noqa: A002 - picker's name
    """A separator as the model picker shows it."""
    cfg = model.config
    details = {
        "Sample rate": f"{cfg.sample_rate} Hz",
        "Speakers": str(cfg.n_src),
        "Causal": "yes (cumulative layer norm)" if cfg.causal else "no (global layer norm)",
        "Receptive field": f"{cfg.receptive_field_s():.2f} s",
        "Masks": cfg.mask_act,
    }
    name = Path(source).stem if source else "Conv-TasNet"
    return LoadedModel(model=model, name=name, source=source, format=format, parameters=parameter_count(model),
                       details=details)


def load_separator(path: str | os.PathLike) -> LoadedModel:
    """Any supported separator file (ours, asteroid's, torchaudio's) as a :class:`LoadedModel`."""
    path = checkpoints.weights_path(Path(path))
    model, fmt = read_model(path)
    return describe(model, source=str(path), format=fmt)


def load_for_picker(path: str) -> Generator[Progress, None, LoadedModel]:
    """The separation tab's loader for a file the user chose, as a job: one progress report, then the model."""
    yield Progress(None, f"Reading {Path(path).name}")
    return load_separator(path)


#: The embedded defaults in ``resources/`` (trained by :mod:`.train`; the command is in their JSON).
DEFAULT_MODEL = "convtasnet-tts-8k.safetensors"
DEFAULT_CAUSAL_MODEL = "convtasnet-tts-8k-causal.safetensors"


def _load_embedded(file_name: str, title: str) -> Generator[Progress, None, LoadedModel]:
    from ...paths import RESOURCES

    path = RESOURCES / file_name
    if not path.exists():
        raise BadFileError(f"The embedded {title} ({file_name}) is missing from {RESOURCES}; "
                           "open a Conv-TasNet file instead.")
    yield Progress(None, f"Reading the embedded {title}")
    loaded = load_separator(path)
    return LoadedModel(model=loaded.model, name=title[0].upper() + title[1:], source=str(path), format=loaded.format,
                       parameters=loaded.parameters, details=loaded.details)


def load_default() -> Generator[Progress, None, LoadedModel]:
    """The Separation tab's embedded default: a small non-causal Conv-TasNet trained on TTS mixtures."""
    return (yield from _load_embedded(DEFAULT_MODEL, "TTS voices model (embedded)"))


def load_default_causal() -> Generator[Progress, None, LoadedModel]:
    """The embedded causal model (cumulative layer norm), for live separation while recording."""
    return (yield from _load_embedded(DEFAULT_CAUSAL_MODEL, "causal TTS voices model (embedded, live)"))
