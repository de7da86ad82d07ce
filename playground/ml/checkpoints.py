"""The one place that opens weight files and pickles users give us, and writes our own weights.

Opening someone else's file is where a desktop ML app is most easily attacked: a pickle
runs whatever code its ``__reduce__`` names, and a crafted header can ask for terabytes
of memory. So everything that reads such files goes through this module:

* :func:`save_weights` / :func:`load_weights` / :func:`read_sidecar`: the project's own
  format, ``name.safetensors`` (tensors only, no code) plus ``name.json`` (what made it).
  The safetensors header is parsed and checked here, against the file's real size,
  before a single tensor is read.
* :func:`torch_load`: ``torch.load`` with ``weights_only=True`` and readable errors
  (never a fallback to a full unpickle).
* :func:`restricted_load`: an unpickler that resolves only the (module, name) pairs it
  is given, each to a callable chosen by *us*; it never imports what the file names.
  :data:`NUMPY_ARRAYS` and :data:`TORCH_TENSORS` are ready-made allow-lists.
* :func:`load_state_dict_strict`: one readable line for weights that do not fit a model.

Every refusal is a :class:`~playground.errors.BadFileError` with one sentence naming the
file and the problem. ``tests/test_source_safety.py`` checks that no other module
unpickles or calls ``torch.load`` without ``weights_only=True``.
"""

from __future__ import annotations

import codecs
import collections
import io
import json
import math
import os
import pickle
import re
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch

from ..errors import BadFileError

FORMAT = "playground-weights"
VERSION = 1
MAX_HEADER_BYTES = 100 * 2**20  # a real safetensors header is kilobytes; more is an attack or damage
MAX_SIDECAR_BYTES = 64 * 2**20
RESERVED_SIDECAR_KEYS = ("tensors",)

# Bytes per element of every safetensors dtype we read (sub-byte float formats are refused).
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON next to a weights file: the same path with a ``.json`` suffix."""
    return Path(path).with_suffix(".json")


def _name(path: Path) -> str:
    return path.name or str(path)


# -- writing ---------------------------------------------------------------------------------
def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Write ``target`` through a temporary file in its folder, then rename it into place.

    A crash or a full disk leaves the old file (or none), never half a file. The folder
    must exist: saving into a folder that is not there is the caller's error to report.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], sidecar: dict | None = None) -> Path:
    """Save ``tensors`` as ``path`` (safetensors) and a JSON sidecar next to it; return ``path``.

    The sidecar records what made the weights (command, config, seed, ... as the caller
    passes them) and the name and shape of every tensor, which :func:`load_weights`
    checks against the file so that a weights file and a JSON from different saves are
    not mixed up.
    """
    from safetensors.torch import save_file

    path = Path(path)
    extra = dict(sidecar or {})
    for key in RESERVED_SIDECAR_KEYS:
        if key in extra:
            raise ValueError(f"The sidecar key {key!r} is written by save_weights itself.")
    cpu: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(t).__name__}, not a tensor.")
        t = t.detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in storages:  # tied weights: safetensors refuses shared memory
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        cpu[str(name)] = t
    side = {"format": FORMAT, "version": VERSION, **extra,
            "tensors": {name: list(t.shape) for name, t in cpu.items()}}
    text = json.dumps(side, indent=2)  # fails here, before anything is written, if not JSON-able
    _atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata={"format": FORMAT, "version": str(VERSION)}))
    _atomic_write(sidecar_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# -- reading our format ----------------------------------------------------------------------
def read_safetensors_header(path: str | os.PathLike) -> dict[str, dict]:
    """Parse and check a safetensors header without reading any tensor data.

    Returns ``{name: {"dtype", "shape", "data_offsets"}}`` (the ``__metadata__`` entry left
    out). Refuses a file that is too short, a header length beyond the file or above
    :data:`MAX_HEADER_BYTES`, a header that is not a JSON object, and any tensor whose
    dtype and shape need a different number of bytes than its offsets span, or whose
    offsets run past the end of the file; so a header that claims a huge tensor is refused
    before any memory is set aside for it.
    """
    path = Path(path)
    name = _name(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise BadFileError(f"{name} is truncated: it is too short to be a safetensors file.")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise BadFileError(f"{name} is not a safetensors file (its header claims {n:,} bytes).")
            if 8 + n > size:
                raise BadFileError(f"{name} is truncated or not a safetensors file: its header claims "
                                   f"{n:,} bytes but the file holds {size - 8:,} after the length.")
            raw = f.read(n)
    except FileNotFoundError:
        raise BadFileError(f"{name} does not exist.") from None
    except IsADirectoryError:
        raise BadFileError(f"{name} is a folder, not a weights file.") from None
    except PermissionError:
        raise BadFileError(f"{name} cannot be read (permission denied).") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadFileError(f"{name} is not a safetensors file: its header is not JSON.") from None
    if not isinstance(header, dict):
        raise BadFileError(f"{name} is not a safetensors file: its header is not a JSON object.")
    data_size = size - 8 - n
    entries: dict[str, dict] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        entries[key] = _check_entry(name, key, entry, data_size)
    return entries


def _check_entry(name: str, key: str, entry: Any, data_size: int) -> dict:
    """One header entry, checked: known dtype, a shape of whole numbers, offsets that fit."""
    if not isinstance(entry, dict):
        raise BadFileError(f"{name} has a damaged header: the entry for {key!r} is not an object.")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise BadFileError(f"{name}: tensor {key!r} has the type {dtype!r}, which this app does not read.")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                            for d in shape)):
        raise BadFileError(f"{name} has a damaged header: the shape of {key!r} is {shape!r}.")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise BadFileError(f"{name} has a damaged header: the data offsets of {key!r} are {offsets!r}.")
    need = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
    have = offsets[1] - offsets[0]
    if need != have:
        raise BadFileError(f"{name} has a damaged header: tensor {key!r} ({dtype}, shape "
                           f"{_shape_text(shape)}) needs {need:,} bytes but its offsets span {have:,}.")
    if offsets[1] > data_size:
        raise BadFileError(f"{name} is truncated: tensor {key!r} ends at byte {offsets[1]:,} of the data "
                           f"but the file holds only {data_size:,}.")
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar of a weights file (pass either file's path); ``{}`` when there is none."""
    path = Path(path)
    side = path if path.suffix.lower() == ".json" else sidecar_path(path)
    name = _name(side)
    try:
        if not stat.S_ISREG(side.stat().st_mode):  # a FIFO would block, /dev/zero never end
            raise BadFileError(f"{name} is not a regular file.")
        with open(side, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
        if len(raw) > MAX_SIDECAR_BYTES:
            raise BadFileError(f"{name} is too large to be the description of a weights file.")
    except FileNotFoundError:
        return {}
    except (IsADirectoryError, PermissionError) as exc:
        raise BadFileError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadFileError(f"{name} is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadFileError(f"{name} does not describe weights: it holds a JSON {type(data).__name__}, "
                           "not an object.")
    return data


def _check_sidecar_tensors(side_name: str, side: dict, header: dict[str, dict]) -> None:
    """Refuse a sidecar whose list of tensors disagrees with the weights file (first difference)."""
    if "tensors" not in side:
        return  # written before sidecars listed their tensors: nothing to compare
    listed = side["tensors"]
    if not isinstance(listed, dict):
        raise BadFileError(f"{side_name} is damaged: its 'tensors' entry is not an object.")
    for key, shape in listed.items():
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise BadFileError(f"{side_name} is damaged: the shape it gives for {key!r} ({json.dumps(shape)[:60]}) "
                               "is not a list of whole numbers.")
        if key not in header:
            raise BadFileError(f"{side_name} does not match its weights file: it lists a tensor {key!r} "
                               "that the weights file does not hold.")
        if shape != header[key]["shape"]:
            shown = _shape_text(shape)
            raise BadFileError(f"{side_name} does not match its weights file: tensor {key!r} is {shown} in the "
                               f"JSON but {_shape_text(header[key]['shape'])} in the weights.")
    for key in header:
        if key not in listed:
            raise BadFileError(f"{side_name} does not match its weights file: the weights hold a tensor "
                               f"{key!r} that the JSON does not list.")


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a weights file and its sidecar: ``(tensors, sidecar)``; the sidecar is ``{}`` when absent.

    The header is checked (:func:`read_safetensors_header`) and compared with the sidecar
    before any tensor is read.
    """
    from safetensors.torch import load_file

    path = Path(path)
    header = read_safetensors_header(path)
    side = read_sidecar(path)
    _check_sidecar_tensors(_name(sidecar_path(path)), side, header)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadFileError(f"{_name(path)} is not a readable safetensors file ({first}).") from exc
    if torch.device(device).type != "cpu":
        tensors = {k: t.to(device) for k, t in tensors.items()}
    return tensors, side


# -- torch.load, weights only ----------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format starts with the pickle (protocol 2) of a magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL\s+([A-Za-z_][\w.]*)")


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with one readable sentence when it cannot be used.

    Tensors, plain containers and numbers load; an object that needs code to rebuild is
    refused with the name of the class it asked for. There is deliberately no way to
    load it anyway.
    """
    path = Path(path)
    name = _name(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except FileNotFoundError:
        raise BadFileError(f"{name} does not exist.") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise BadFileError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    if not head:
        raise BadFileError(f"{name} is empty.")
    if not (head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC):
        if _ZIP_MAGIC.startswith(head) or _LEGACY_MAGIC.startswith(head):
            raise BadFileError(f"{name} is truncated.")
        raise BadFileError(f"{name} is not a PyTorch file (.pt / .pth).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_IN_MESSAGE.search(str(exc))
        if found:
            raise BadFileError(f"{name} needs the class {found.group(1)} to rebuild, which is not allowed "
                               "(only tensors and plain data are loaded, never code).") from None
        raise BadFileError(f"{name} uses pickle features that the safe loader does not allow, "
                           "or it is damaged.") from None
    except EOFError:
        raise BadFileError(f"{name} is truncated.") from None
    except RuntimeError as exc:
        text = str(exc)
        if "out of memory" in text.lower():
            raise
        if "zip archive" in text or "central directory" in text or "file not found" in text.lower():
            raise BadFileError(f"{name} is truncated or damaged (not a complete PyTorch file).") from None
        first = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadFileError(f"{name} could not be read: {first}") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file can make torch's unpickler fail in any way
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadFileError(f"{name} could not be read as a PyTorch file ({first}).") from None


# -- state dicts -----------------------------------------------------------------------------
def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, Any], *, what: str = "the model") -> None:
    """Load ``state_dict`` into ``module`` (strict), refusing first with one readable line.

    torch's own message lists every mismatch over many lines; this names the first
    missing and first unexpected key (with counts), or the first key whose shape differs
    (both shapes), which is what a person needs to see which model the file was for.
    """
    check_state_dict(module, state_dict, what=what)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise BadFileError(f"The weights do not fit {what}: {first}") from None


def read_file_head(path: str | os.PathLike, size: int, kind: str) -> bytes:
    """The first ``size`` bytes of a file a user picked, after the checks every loader makes:
    it exists, it is a regular file (a FIFO would block, /dev/zero never end), it can be
    read, it is not empty. ``kind`` names what it should be ("a generator file")."""
    path = Path(path)
    name = path.name or str(path)
    try:
        if path.is_dir():
            raise BadFileError(f"{name} is a folder, not {kind}.")
        if not stat.S_ISREG(path.stat().st_mode):
            raise BadFileError(f"{name} is not a regular file.")
        with open(path, "rb") as f:
            head = f.read(size)
    except FileNotFoundError:
        raise BadFileError(f"{name} does not exist.") from None
    except PermissionError:
        raise BadFileError(f"{name} cannot be read (permission denied).") from None
    if not head:
        raise BadFileError(f"{name} is empty.")
    return head


def weights_path(path: str | os.PathLike) -> Path:
    """The weights of one of our files when the user picked its ``.json`` sidecar."""
    path = Path(path)
    if path.suffix.lower() == ".json" and path.with_suffix(".safetensors").exists():
        return path.with_suffix(".safetensors")
    return path


def key_mismatch(missing: list[str], unexpected: list[str]) -> str:
    """ "2 missing (first 'a') and 1 unexpected (first 'b')": the one-line summary of a key mismatch."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
    return " and ".join(parts)


def check_state_dict(module: torch.nn.Module, state_dict: Mapping[str, Any], *, what: str = "the model") -> None:
    """The keys and shapes of :func:`load_state_dict_strict`, without loading (a skeleton on "meta" will do)."""
    if not isinstance(state_dict, Mapping):
        raise BadFileError(f"The weights for {what} are a {type(state_dict).__name__}, not a table of tensors.")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise BadFileError(f"The weights do not fit {what}: {key_mismatch(missing, unexpected)} of "
                           f"{len(expected)} expected.")
    for key, want in expected.items():
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise BadFileError(f"The weights do not fit {what}: {key!r} is a {type(got).__name__}, not a tensor.")
        if tuple(got.shape) != tuple(want.shape):
            raise BadFileError(f"The weights do not fit {what}: {key!r} is {_shape_text(got.shape)} in the file "
                               f"but {_shape_text(want.shape)} in the model.")


# -- restricted unpickling -------------------------------------------------------------------
class _Refused(Exception):
    """Raised by an allow-listed callable: a clause saying what it refused, completed with the file's name."""


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves a global only through the allow-list: never imports what the file names.

    Built on pickle's pure-Python unpickler so that BUILD (set an object's state) can be
    restricted too: the C unpickler would call ``__setstate__`` or ``setattr`` on whatever
    is on the stack, an allow-listed function included (a file could rewrite its
    ``__defaults__`` for every later load). Here BUILD applies only to numpy arrays and
    dtypes (whose ``__setstate__`` checks the data against the shape) and plain attributes
    of an OrderedDict (a state dict's ``_metadata``).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], allowed: Mapping[tuple[str, str], Callable], what: str,
                 persistent_load: Callable[[Any], Any] | None, encoding: str):
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._what = what
        if persistent_load is not None:
            self.persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise BadFileError(f"Could not open {self._what}: the safe loader refuses {module}.{name}, "
                               "which this kind of file has no need of (it could run code).") from None

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray or isinstance(inst, np.dtype):
            inst.__setstate__(state)
        elif type(inst) is collections.OrderedDict and isinstance(state, dict) and \
                all(isinstance(k, str) and not k.startswith("__") for k in state):
            inst.__dict__.update(state)
        else:
            raise _Refused(f"it sets the state of a {type(inst).__name__}, which is not allowed")

    dispatch[pickle.BUILD[0]] = _load_build


def restricted_load(file_or_bytes: bytes | bytearray | memoryview | IO[bytes] | str | os.PathLike,
                    allowed: Mapping[tuple[str, str], Callable], *, what: str,
                    persistent_load: Callable[[Any], Any] | None = None, encoding: str = "ASCII") -> Any:
    """Unpickle with only the globals in ``allowed``: ``{(module, name): the callable to use}``.

    ``what`` names the file in messages ("the CIFAR-10 batch data_batch_1"). Any other
    global, a damaged or truncated pickle, and persistent ids without ``persistent_load``
    raise :class:`BadFileError`. ``encoding`` is pickle's, for Python 2 strings ("latin1"
    for numpy arrays saved by Python 2).
    """
    if isinstance(file_or_bytes, (bytes, bytearray, memoryview)):
        return _restricted_load_file(io.BytesIO(bytes(file_or_bytes)), allowed, what, persistent_load, encoding)
    if isinstance(file_or_bytes, (str, os.PathLike)):
        try:
            with open(file_or_bytes, "rb") as f:
                return _restricted_load_file(f, allowed, what, persistent_load, encoding)
        except FileNotFoundError:
            raise BadFileError(f"Could not open {what}: the file does not exist.") from None
    return _restricted_load_file(file_or_bytes, allowed, what, persistent_load, encoding)


def _restricted_load_file(f: IO[bytes], allowed, what, persistent_load, encoding) -> Any:
    try:
        return _RestrictedUnpickler(f, allowed, what, persistent_load, encoding).load()
    except BadFileError:
        raise
    except _Refused as exc:
        raise BadFileError(f"Could not open {what}: {exc}.") from None
    except EOFError:
        raise BadFileError(f"Could not open {what}: it is truncated.") from None
    except MemoryError:
        raise BadFileError(f"Could not open {what}: it asks for more memory than there is.") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            UnicodeDecodeError, RecursionError, OverflowError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if "truncated" in first:
            raise BadFileError(f"Could not open {what}: it is truncated.") from None
        raise BadFileError(f"Could not open {what}: it is damaged or not what it should be ({first}).") from None


def _numpy_reconstructors() -> tuple[Callable, Callable]:
    """numpy's array and scalar rebuilders, from where this numpy keeps them (2.x: numpy._core)."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


class _NdarrayToken:
    """What ``numpy.ndarray`` means in a restricted pickle: the argument ``_reconstruct`` expects.

    Mapping the name to ``np.ndarray`` itself would let a file call it
    (``ndarray((10**9, 3072), 'u1', buffer, 0, (0, 0))``: a huge array from a few bytes).
    """

    def __new__(cls, *args, **kwargs):
        raise _Refused("it calls numpy.ndarray directly, which is not allowed")


def _reconstruct_array(subtype, shape, dtype) -> np.ndarray:
    """numpy's ``_reconstruct`` as its pickles use it: an empty array, filled by BUILD
    (whose ``__setstate__`` checks the data's length against the shape)."""
    if subtype is not _NdarrayToken or tuple(shape) != (0,):
        raise _Refused("it rebuilds a numpy array in a way numpy's own pickles never do")
    return _reconstruct(np.ndarray, (0,), dtype)


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as numpy pickles use it (bytes stored as latin-1 text), and nothing more.

    The real ``codecs.encode`` looks codecs up by name, which imports modules; a file
    has no business choosing one.
    """
    if encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused(f"it asks for the text encoding {encoding!r}, and only latin-1 is allowed")
    return codecs.encode(text, "latin-1", errors)


_reconstruct, _scalar = _numpy_reconstructors()

NUMPY_ARRAYS: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
"""What rebuilding numpy arrays, dtypes and scalars needs (pickles by numpy 1.x and 2.x)."""


def _storage_from_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``, which calls ``torch.load(weights_only=False)``.

    A plainly pickled tensor keeps its storage as the bytes of a ``torch.save``; those are
    read here with ``weights_only=True``.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("a tensor's storage in it is not bytes")
    try:
        return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_IN_MESSAGE.search(str(exc))
        raise _Refused(f"a tensor's storage in it needs {found.group(1) if found else 'code'} to rebuild, "
                       "which is not allowed") from None
    except (RuntimeError, EOFError) as exc:
        raise _Refused(f"a tensor's storage in it is damaged ({str(exc).strip()[:100]})") from None


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> torch.Tensor:
    """torch's ``_rebuild_tensor_v2`` for tensors, refusing anything but a storage (and no hooks)."""
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise _Refused(f"a tensor in it has a {type(storage).__name__} for its storage")
    if backward_hooks:
        raise _Refused("a tensor in it carries backward hooks (code), which are not allowed")
    _check_view(storage, storage_offset, size, stride)
    from torch._utils import _rebuild_tensor_v2 as rebuild

    return rebuild(storage, storage_offset, size, stride, requires_grad, collections.OrderedDict(), metadata)


def _check_view(storage, offset, size, stride) -> None:
    """Refuse a tensor view that reaches past its storage or has more elements than it
    (a stride-0 view of one number, 10**6 x 10**6 in size, costs nothing to unpickle and
    terabytes to use)."""
    ints = lambda xs: isinstance(xs, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in xs)
    if not (isinstance(offset, int) and offset >= 0 and ints(size) and ints(stride) and len(size) == len(stride)):
        raise _Refused("a tensor in it has a malformed shape")
    if any(v < 0 for v in size) or any(v < 0 for v in stride):
        raise _Refused("a tensor in it has a negative size or stride")
    elements = storage._size() if isinstance(storage, torch.TypedStorage) else storage.nbytes()
    numel = math.prod(size)
    if numel == 0:
        return
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= elements or numel > elements:
        raise _Refused(f"a tensor in it ({_shape_text(size)}) claims more elements than its storage holds")


def _rebuild_parameter(data, requires_grad, backward_hooks) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor):
        raise _Refused(f"a parameter in it holds a {type(data).__name__}, not a tensor")
    if backward_hooks:
        raise _Refused("a parameter in it carries backward hooks (code), which are not allowed")
    return torch.nn.Parameter(data, bool(requires_grad))


TORCH_TENSORS: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("_codecs", "encode"): _latin1_encode,
}
"""What plainly pickled tensors and parameters need (``pickle.dumps(tensor)``, as in
network pickles such as StyleGAN2's). A loader for a format whose storages come by
persistent id (``torch.save``'s zip) adds the storage classes it expects and passes its
own ``persistent_load``."""


# -- what a loader hands to the model picker ----------------------------------------------
@dataclass
class LoadedModel:
    """A model a loader produced, with what the picker shows about it.

    ``source`` is the path it came from, or "" for the tab's embedded default; ``format``
    names the file format (e.g. "StyleGAN2 pickle", "safetensors"); ``details`` holds a few
    more facts worth showing, e.g. ``{"Resolution": "512x512"}`` or ``{"Sample rate": "8000 Hz"}``.
    """

    model: Any
    name: str
    source: str = ""
    format: str = ""
    parameters: int | None = None
    details: dict[str, str] = field(default_factory=dict)
