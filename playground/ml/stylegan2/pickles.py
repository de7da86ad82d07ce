"""Open StyleGAN2 generators: NVIDIA's official network pickles, safely, and our own files.

NVIDIA's pickles (``stylegan2-ffhq-512x512.pkl``, the AFHQ ones, DragGAN's
``*_pytorch.pkl``) are a dict ``{"G", "D", "G_ema", "training_set_kwargs",
"augment_pipe"}`` in which every network is a "persistent" object: it unpickles by calling
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, and that function *executes*
``meta["module_src"]`` (the whole Python source of the network) to rebuild the class. A
file can put anything in that source. So here nothing is executed: the file is read by
:func:`playground.ml.checkpoints.restricted_load` with an allow-list in which
``_reconstruct_persistent_obj`` only keeps ``meta`` (:class:`PersistentRecord`), and the
weights are taken from the records' ``_parameters`` and ``_buffers`` into a state dict
with the official key names, which loads (strictly) into our own
:class:`~playground.ml.stylegan2.model.Generator`.

Tensors in these pickles are stored the way ``pickle.dumps(tensor)`` stores them: each
storage as the bytes of a legacy ``torch.save``. Decoding them is deferred
(:class:`_StorageBytes`) so that only ``G_ema``'s are decoded, one at a time with progress,
and ``G`` and ``D`` (two thirds of the file) never become tensors.

Our own format is the project's usual one (:func:`playground.ml.checkpoints.save_weights`):
``name.safetensors`` plus ``name.json`` holding ``{"kind": "stylegan2-generator",
"init_kwargs": {...}}``, written by :func:`save_generator`.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Generator as Steps
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import BadFileError
from ...progress import Progress, finish
from .. import checkpoints
from ..checkpoints import LoadedModel

KIND = "stylegan2-generator"  # the "kind" in our generator files' JSON sidecar
FORMAT_PICKLE = "StyleGAN2 pickle"
FORMAT_SAFETENSORS = "safetensors"
DEFAULT_MODEL = "stylegan2-faces-64.safetensors"  # the Drag tab's embedded default, in resources/

READ_CHUNK = 16 * 2**20  # bytes read between two progress reports (well under 0.1 s from disk)
MAX_DEPTH = 16  # official generators nest 4 deep; more is a damaged or crafted file

# The official classes a StyleGAN2 G_ema is made of (stylegan2-ada-pytorch ``training/networks.py``
# and stylegan3 ``training/networks_stylegan2.py`` use the same names).
STYLEGAN2_CLASSES = frozenset({"Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock",
                               "SynthesisLayer", "ToRGBLayer", "FullyConnectedLayer", "Conv2dLayer"})
# What only the alias-free generator (stylegan3 ``training/networks_stylegan3.py``) has.
STYLEGAN3_CLASSES = frozenset({"SynthesisInput"})
STYLEGAN3_ARGS = frozenset({"magnitude_ema_beta", "conv_kernel", "use_radial_filters", "channel_base_rgb",
                            "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel",
                            "margin_size", "output_scale", "filter_size", "lrelu_upsampling"})
STYLEGAN3_MESSAGE = ("StyleGAN3 generators are not supported (only StyleGAN2): {name} holds an alias-free "
                     "StyleGAN3 generator.")

# The official Generator's arguments, in the order of its signature (``_init_args`` are mapped by it).
GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                  "synthesis_kwargs")
MAPPING_ARGS = frozenset({"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
                          "w_avg_beta"})
# SynthesisNetwork's arguments and what it passes on to its blocks and layers.
SYNTHESIS_ARGS = frozenset({"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter",
                            "conv_clamp", "use_noise", "activation", "kernel_size"})
# Official arguments that change only speed or memory layout, never the numbers: dropped.
SPEED_ONLY_ARGS = frozenset({"fused_modconv_default", "fp16_channels_last"})

TF_MESSAGE = ("{name} is a TensorFlow-era StyleGAN2 pickle (dnnlib.tflib), which this app cannot read "
              "directly. Convert it to a PyTorch pickle with NVIDIA's stylegan2-ada-pytorch: "
              "python legacy.py --source={name} --dest=converted.pkl, then open converted.pkl.")


# -- what the restricted unpickler builds instead of running code ----------------------------
@dataclass
class PersistentRecord:
    """A persistent network object as the pickle describes it, never rebuilt as a class.

    ``state`` is the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``,
    ``_init_kwargs``, plain attributes); ``module_src`` is kept as text only.
    """

    class_name: str
    state: dict
    module_src: str = field(repr=False)
    version: Any = None


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: keeps ``meta``, runs nothing."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise ValueError("a persistent object in it is not described the way StyleGAN2's code writes them")
    class_name, state, source = meta.get("class_name"), meta.get("state"), meta.get("module_src")
    if not isinstance(class_name, str) or not isinstance(state, dict) or not isinstance(source, str):
        raise ValueError("a persistent object in it has no class name, state or source")
    return PersistentRecord(class_name, state, source, meta.get("version"))


class _StorageBytes:
    """What ``torch.storage._load_from_bytes(data)`` gives here: the bytes, decoded on first use.

    Decoding goes through the weights-only path in :mod:`~playground.ml.checkpoints`; the
    decoded storage is kept so that tensors sharing it share it again.
    """

    __slots__ = ("data", "_storage")

    def __init__(self, data: Any):
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError("a tensor's storage in it is not bytes")
        self.data = bytes(data)
        self._storage = None

    def storage(self) -> Any:
        if self._storage is None:
            self._storage = checkpoints.TORCH_TENSORS[("torch.storage", "_load_from_bytes")](self.data)
            self.data = b""
        return self._storage


class _TensorRecipe:
    """The arguments of ``torch._utils._rebuild_tensor_v2``, kept until the tensor is wanted."""

    __slots__ = ("args", "_tensor")

    def __init__(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                 metadata=None):
        if not isinstance(storage, _StorageBytes):
            raise ValueError(f"a tensor in it has a {type(storage).__name__} for its storage")
        self.args = (storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata)
        self._tensor: torch.Tensor | None = None

    def tensor(self) -> torch.Tensor:
        """The tensor, checked by checkpoints' ``_rebuild_tensor_v2`` (a view must fit its storage)."""
        if self._tensor is None:
            storage, *rest = self.args
            rebuilt = checkpoints.TORCH_TENSORS[("torch._utils", "_rebuild_tensor_v2")](storage.storage(), *rest)
            self._tensor = rebuilt.detach()
        return self._tensor


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> _TensorRecipe:
    """Stand-in for ``_rebuild_parameter`` (and ``_rebuild_parameter_with_state``): its tensor.

    A state dict holds plain tensors, so the Parameter wrapper and any Python attributes it
    carried (the ``state`` newer torch writes) are left out.
    """
    if not isinstance(data, _TensorRecipe):
        raise ValueError(f"a parameter in it holds a {type(data).__name__}, not a tensor")
    if backward_hooks:
        raise ValueError("a parameter in it carries backward hooks (code), which are not allowed")
    return data


class _AllowList(dict):
    """The globals an official pickle needs, and a tailored refusal for two kinds of file it is not.

    ``find_class`` looks names up here; a TensorFlow-era name gets the conversion hint and
    any other missing name the restricted unpickler's own refusal, which names it.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def __missing__(self, key: tuple[str, str]) -> Any:
        module = key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else ""
        if module == "dnnlib.tflib" or module.startswith("dnnlib.tflib."):
            raise BadFileError(TF_MESSAGE.format(name=self.name))
        raise KeyError(key)


def _official_globals(name: str) -> _AllowList:
    allowed = _AllowList(name)
    allowed.update(checkpoints.NUMPY_ARRAYS)  # numpy scalars (act_gain, ...) and dtypes
    allowed.update({
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _TensorRecipe,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _StorageBytes,
        ("dnnlib.util", "EasyDict"): dict,  # a dict with attribute access; its items are all we need
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,  # protocol 2 writes Python 2's name
    })
    return allowed


# -- reading an official pickle ---------------------------------------------------------------
def _name(path: str | os.PathLike) -> str:
    return Path(path).name or str(path)


def _warm_read(path: Path) -> Steps[Progress, None, None]:
    """Read the whole file once, in chunks, reporting progress (and stoppable between chunks).

    The unpickler then reads it again in one call that cannot yield; after this pass the
    file comes from the operating system's cache, so that call is quick. Reading into a
    reused buffer keeps memory flat, however big the file.
    """
    size = path.stat().st_size
    buffer = bytearray(min(READ_CHUNK, max(size, 1)))
    done = 0
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            done += n
            yield Progress(0.5 * done / max(size, 1), f"Reading {_name(path)}: {done / 2**20:.0f} of "
                                                      f"{size / 2**20:.0f} MB")


def _ends_like_a_pickle(path: Path) -> bool:
    """Whether the last byte is pickle's STOP opcode: a download cut short almost never is, and
    the unpickler would otherwise say only that a frame ran out."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"."


def read_official_pickle(path: str | os.PathLike) -> Steps[Progress, None, tuple[dict, dict[str, torch.Tensor]]]:
    """:func:`load_official_pickle` as a job: yields :class:`Progress`, returns ``(init_kwargs, state_dict)``."""
    path = Path(path)
    name = _name(path)
    if file_format(path) != FORMAT_PICKLE:
        raise BadFileError(f"{name} is not a StyleGAN2 network pickle.")
    if not _ends_like_a_pickle(path):
        raise BadFileError(f"{name} is truncated (it stops before the end of the pickle).")
    yield from _warm_read(path)
    yield Progress(0.5, f"Unpickling {name} (no code is run)")
    data = checkpoints.restricted_load(path, _official_globals(name), what=name)
    record = _generator_record(data, name)
    init_kwargs = normalize_init_kwargs(_init_kwargs_of(record, name), name)
    recipes = _flatten(record, "", name)
    del data  # G, D and their undecoded bytes can go
    state_dict: dict[str, torch.Tensor] = {}
    for i, (key, recipe) in enumerate(recipes.items()):
        state_dict[key] = _decode(recipe, key, name)
        yield Progress(0.55 + 0.4 * (i + 1) / len(recipes), f"Reading the weights of {name}")
    return init_kwargs, state_dict


def load_official_pickle(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(init_kwargs, state_dict)`` of the ``G_ema`` in an official StyleGAN2 pickle, without running it.

    ``init_kwargs`` are normalised for ``Generator(**init_kwargs)`` (see
    :func:`normalize_init_kwargs`); ``state_dict`` has the official key names.
    Raises :class:`BadFileError` for anything else: a StyleGAN3 generator, a file
    without ``G_ema``, a TensorFlow-era pickle (with how to convert it), a global or
    class this format has no need of (named), a damaged or truncated file.
    """
    return finish(read_official_pickle(path))


def _generator_record(data: Any, name: str) -> PersistentRecord:
    """The ``G_ema`` record of an unpickled network file (or the file's only record, a lone G)."""
    if isinstance(data, PersistentRecord):
        record = data
    elif isinstance(data, dict):
        if "G_ema" not in data:
            present = ", ".join(sorted(str(k) for k in data)[:6]) or "nothing"
            raise BadFileError(f"{name} has no G_ema (the generator to use); it holds {present}.")
        record = data["G_ema"]
        if not isinstance(record, PersistentRecord):
            raise BadFileError(f"{name}: its G_ema is a {type(record).__name__}, not a StyleGAN network.")
    else:
        raise BadFileError(f"{name} is not a StyleGAN2 network pickle (it holds a {type(data).__name__}).")
    _refuse_stylegan3(record, name)
    if record.class_name != "Generator":
        raise BadFileError(f"{name}: its G_ema is a {record.class_name}, not a StyleGAN2 Generator.")
    return record


def _records(record: PersistentRecord, depth: int = 0) -> Iterable[tuple[str, PersistentRecord]]:
    """``(path, record)`` for a record and every persistent submodule below it."""
    yield "", record
    if depth > MAX_DEPTH:
        return
    modules = record.state.get("_modules")
    if isinstance(modules, Mapping):
        for key, child in modules.items():
            if isinstance(child, PersistentRecord):
                for sub, rec in _records(child, depth + 1):
                    yield f"{key}.{sub}" if sub else str(key), rec


def _refuse_stylegan3(record: PersistentRecord, name: str) -> None:
    """Refuse an alias-free (StyleGAN3) generator, told by its classes, arguments or source text.

    Its root class is also called ``Generator``, so the name alone does not tell.
    """
    kwargs = record.state.get("_init_kwargs")
    sg3_args = isinstance(kwargs, Mapping) and any(k in STYLEGAN3_ARGS for k in kwargs)
    sg3_class = any(rec.class_name in STYLEGAN3_CLASSES for _, rec in _records(record))
    sg3_source = "class SynthesisInput" in record.module_src  # reading the text runs nothing
    if sg3_args or sg3_class or sg3_source:
        raise BadFileError(STYLEGAN3_MESSAGE.format(name=name))


def _flatten(record: PersistentRecord, prefix: str, name: str, depth: int = 0) -> dict[str, _TensorRecipe]:
    """The official state dict of a record: its parameters, persistent buffers and submodules', in order.

    The same walk as ``torch.nn.Module.state_dict``: a module's own parameters, then its
    buffers (leaving out ``_non_persistent_buffers_set``), then each submodule under
    ``prefix + name + "."``.
    """
    where = prefix.rstrip(".") or "G_ema"
    if depth > MAX_DEPTH:
        raise BadFileError(f"{name}: its G_ema nests modules deeper than any StyleGAN2 ({where}).")
    if record.class_name not in STYLEGAN2_CLASSES:
        raise BadFileError(f"{name}: its G_ema contains the class {record.class_name} ({where}), which is "
                           "not part of a StyleGAN2 generator.")
    state = record.state
    skip = state.get("_non_persistent_buffers_set") or set()
    if not isinstance(skip, (set, frozenset)):
        raise BadFileError(f"{name}: the module {where} in its G_ema is damaged (its buffer list).")
    out: dict[str, _TensorRecipe] = {}
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, Mapping):
            raise BadFileError(f"{name}: the module {where} in its G_ema is damaged (its {group[1:]}).")
        for key, value in entries.items():
            if value is None or (group == "_buffers" and key in skip):
                continue
            if not isinstance(value, _TensorRecipe):
                raise BadFileError(f"{name}: {prefix}{key} in its G_ema is a {type(value).__name__}, "
                                   "not a tensor.")
            out[f"{prefix}{key}"] = value
    modules = state.get("_modules") or {}
    if not isinstance(modules, Mapping):
        raise BadFileError(f"{name}: the module {where} in its G_ema is damaged (its submodules).")
    for key, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise BadFileError(f"{name}: {prefix}{key} in its G_ema is a {type(child).__name__}, "
                               "not a StyleGAN2 module.")
        out.update(_flatten(child, f"{prefix}{key}.", name, depth + 1))
    return out


def _decode(recipe: _TensorRecipe, key: str, name: str) -> torch.Tensor:
    """One tensor of G_ema, decoded; a refusal from the tensor checks names the file and the key."""
    try:
        return recipe.tensor()
    except (BadFileError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - checkpoints' checks raise their own error type, with a clause
        raise BadFileError(f"Could not open {name}: {exc} ({key}).") from None


# -- the generator's arguments -------------------------------------------------------------------
def _init_kwargs_of(record: PersistentRecord, name: str) -> dict:
    """The arguments the generator was built with: ``_init_kwargs``, plus ``_init_args`` by position."""
    kwargs = record.state.get("_init_kwargs")
    args = record.state.get("_init_args") or ()
    if not isinstance(kwargs, Mapping) or not isinstance(args, (tuple, list)):
        raise BadFileError(f"{name}: its G_ema does not record the arguments it was built with.")
    kwargs = dict(kwargs)
    if len(args) > len(GENERATOR_ARGS):
        raise BadFileError(f"{name}: its G_ema was built with {len(args)} positional arguments; "
                           f"a StyleGAN2 Generator takes at most {len(GENERATOR_ARGS)}.")
    for key, value in zip(GENERATOR_ARGS, args):
        if key in kwargs:
            raise BadFileError(f"{name}: its G_ema was given {key} twice.")
        kwargs[key] = value
    return kwargs


def _plain(value: Any, where: str, name: str) -> Any:
    """``value`` as JSON-able Python: numpy scalars to numbers, tuples to lists, EasyDicts to dicts."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadFileError(f"{name}: the generator argument {where} is {value}.")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, name) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}", name) for k, v in value.items()}
    raise BadFileError(f"{name}: the generator argument {where} is a {type(value).__name__}.")


def _dimension(kwargs: dict, key: str, name: str, low: int) -> int:
    value = kwargs.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise BadFileError(f"{name}: the generator's {key} is {value!r}, not a whole number of at least {low}.")
    return value


def normalize_init_kwargs(init_kwargs: Mapping, name: str = "the file") -> dict:
    """Official generator arguments as ``Generator(**kwargs)`` of our model takes them (JSON-able).

    Accepts the nested stylegan2-ada-pytorch form (``synthesis_kwargs={...}``) and the flat
    stylegan3 form (synthesis arguments at the top), drops the arguments that only affect
    speed (``fused_modconv_default``, ``fp16_channels_last``) and returns
    ``{z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, **synthesis_kwargs}``.
    Refuses StyleGAN3 arguments and any argument a StyleGAN2 generator does not have,
    by name. Used for our own sidecars too, so a JSON cannot ask for more.
    """
    if not isinstance(init_kwargs, Mapping):
        raise BadFileError(f"{name}: the generator's arguments are a {type(init_kwargs).__name__}, not a table.")
    kwargs = {str(k): _plain(v, str(k), name) for k, v in init_kwargs.items()}
    sg3 = sorted(STYLEGAN3_ARGS.intersection(kwargs))
    if sg3:
        raise BadFileError(STYLEGAN3_MESSAGE.format(name=name) + f" (it has {sg3[0]}).")
    mapping = kwargs.pop("mapping_kwargs", None) or {}
    nested = kwargs.pop("synthesis_kwargs", None) or {}
    if not isinstance(mapping, dict) or not isinstance(nested, dict):
        raise BadFileError(f"{name}: the generator's mapping_kwargs or synthesis_kwargs is not a table.")
    out: dict[str, Any] = {}
    for key, low in (("z_dim", 1), ("c_dim", 0), ("w_dim", 1), ("img_resolution", 4), ("img_channels", 1)):
        out[key] = _dimension(kwargs, key, name, low)
        kwargs.pop(key)
    resolution = out["img_resolution"]
    if resolution & (resolution - 1):
        raise BadFileError(f"{name}: the generator's resolution {resolution} is not a power of two.")
    for key in mapping:
        if key not in MAPPING_ARGS:
            raise BadFileError(f"{name}: the generator's mapping network has the argument {key}, which a "
                               "StyleGAN2 mapping network does not take.")
    out["mapping_kwargs"] = mapping
    for key, value in [*nested.items(), *kwargs.items()]:
        if key in SPEED_ONLY_ARGS:
            continue
        if key not in SYNTHESIS_ARGS:
            raise BadFileError(f"{name}: the generator has the argument {key}, which a StyleGAN2 "
                               "generator does not take.")
        if key in out:
            raise BadFileError(f"{name}: the generator was given {key} twice.")
        out[key] = value
    return out


# -- building our Generator ----------------------------------------------------------------------
def _model_class() -> type:
    from .model import Generator

    return Generator


def build_generator(init_kwargs: dict, state_dict: Mapping[str, torch.Tensor], name: str = "the file",
                    device: str | torch.device = "cpu") -> torch.nn.Module:
    """Our Generator made from ``init_kwargs`` and loaded strictly with ``state_dict``, in eval mode.

    The architecture is first built on the "meta" device (no memory), so that weights that
    do not fit it (or arguments asking for a giant network) are refused before any
    allocation. Its parameters do not require gradients (DragGAN optimises the latent).
    """
    generator_class = _model_class()
    what = f"the StyleGAN2 generator of {name}"
    try:
        with torch.device("meta"):
            skeleton = generator_class(**init_kwargs)
    except TypeError as exc:
        raise BadFileError(f"{name}: this app's StyleGAN2 cannot be built with its arguments ({exc}).") from None
    except (ValueError, AssertionError) as exc:
        raise BadFileError(f"{name}: its generator arguments are not valid ({exc}).") from None
    _check_fits(skeleton, state_dict, what)
    del skeleton
    G = generator_class(**init_kwargs)
    checkpoints.load_state_dict_strict(G, state_dict, what=what)
    return G.eval().requires_grad_(False).to(device)


def _check_fits(skeleton: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """load_state_dict_strict's checks of keys and shapes, against a skeleton that has no memory
    (loading into it would only warn about every key that copying to "meta" does nothing)."""
    checkpoints.check_state_dict(skeleton, state_dict, what=what)


def _shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


# -- our own format ------------------------------------------------------------------------------
def save_generator(G: torch.nn.Module, path: str | os.PathLike, sidecar: dict | None = None) -> Path:
    """Save ``G`` as ``path`` (.safetensors) plus its JSON (``kind``, ``init_kwargs`` and ``sidecar``)."""
    extra = dict(sidecar or {})
    for key in ("kind", "init_kwargs"):
        if key in extra:
            raise ValueError(f"The sidecar key {key!r} is written by save_generator itself.")
    init_kwargs = normalize_init_kwargs(G.init_kwargs, "the generator")
    return checkpoints.save_weights(path, dict(G.state_dict()), {"kind": KIND, "init_kwargs": init_kwargs, **extra})


def read_generator_file(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """``(init_kwargs, state_dict, sidecar)`` of one of our generator files, checked before use."""
    path = Path(path)
    name = path.name
    side = checkpoints.read_sidecar(path)
    if not side:
        raise BadFileError(f"{name} has no {checkpoints.sidecar_path(path).name} beside it, which says how "
                           "to build the generator its weights are for.")
    if side.get("kind") != KIND:
        raise BadFileError(f"{checkpoints.sidecar_path(path).name} does not describe a StyleGAN2 generator "
                           f"(its kind is {side.get('kind')!r}).")
    if "init_kwargs" not in side:
        raise BadFileError(f"{checkpoints.sidecar_path(path).name} does not say how to build the generator "
                           "(it has no init_kwargs).")
    init_kwargs = normalize_init_kwargs(side["init_kwargs"], name)
    tensors, side = checkpoints.load_weights(path)
    return init_kwargs, tensors, side


# -- one entry point for any supported file ---------------------------------------------------
def file_format(path: str | os.PathLike) -> str:
    """:data:`FORMAT_PICKLE` or :data:`FORMAT_SAFETENSORS`, told from the file's first bytes (not its name)."""
    path = Path(path)
    name = _name(path)
    head = checkpoints.read_file_head(path, 9, "a generator file")
    # The safetensors test first: its 8-byte little-endian header length may well start
    # with 0x80 (a 128-byte header, say), which is also pickle's protocol opcode.
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header
        return FORMAT_SAFETENSORS
    if head[0] == 0x80:
        return FORMAT_PICKLE
    if head.startswith(b"PK"):
        raise BadFileError(f"{name} is a PyTorch checkpoint (torch.save), not a StyleGAN2 network pickle "
                           "or generator file.")
    raise BadFileError(f"{name} is neither a StyleGAN2 network pickle nor a .safetensors generator file.")


def read_generator(path: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> Steps[Progress, None, torch.nn.Module]:
    """:func:`load_generator` as a job: yields :class:`Progress`, returns the generator."""
    path = checkpoints.weights_path(Path(path))
    kind = file_format(path)
    if kind == FORMAT_PICKLE:
        init_kwargs, state_dict = yield from read_official_pickle(path)
    else:
        yield Progress(None, f"Reading {path.name}")
        init_kwargs, state_dict, _ = read_generator_file(path)
    yield Progress(0.99, f"Building the generator of {path.name}")
    return build_generator(init_kwargs, state_dict, path.name, device)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Our Generator from any supported file: an official pickle, or our .safetensors + JSON."""
    return finish(read_generator(path, device))


def describe(model_or_path: torch.nn.Module | str | os.PathLike, *, source: str = "",
             format: str = "") -> LoadedModel:  # noqa: A002 - the picker's field is called format
    """A generator (or the file at a path, loaded) as the model picker shows it."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = checkpoints.weights_path(Path(model_or_path))
        return describe(load_generator(path), source=str(path), format=format or file_format(path))
    G = model_or_path
    res = int(G.img_resolution)
    details = {"Resolution": f"{res}x{res}", "Latent": f"z {G.z_dim}, w {G.w_dim} x {G.num_ws}"}
    if getattr(G, "c_dim", 0):
        details["Classes"] = str(G.c_dim)
    name = Path(source).stem if source else "StyleGAN2 generator"
    return LoadedModel(model=G, name=name, source=source, format=format,
                       parameters=sum(p.numel() for p in G.parameters()), details=details)


def load_for_picker(path: str) -> Steps[Progress, None, LoadedModel]:
    """The Drag tab's loader for a file the user chose: progress while reading, then the model."""
    weights = checkpoints.weights_path(Path(path))
    kind = file_format(weights)
    G = yield from read_generator(weights)
    return describe(G, source=str(weights), format=kind)


def load_default() -> Steps[Progress, None, LoadedModel]:
    """The Drag tab's embedded default: the small face generator shipped in ``resources/``."""
    from ...paths import RESOURCES

    path = RESOURCES / DEFAULT_MODEL
    if not path.exists():
        raise BadFileError(f"The embedded face model ({DEFAULT_MODEL}) is missing from {RESOURCES}; "
                           "open a StyleGAN2 pickle instead.")
    loaded = yield from load_for_picker(str(path))
    loaded.name = "Procedural faces (embedded)"
    loaded.source = ""
    return loaded
