"""Safe loading: our weights format, torch.load weights-only, state dicts, the restricted unpickler.

Every loading entry point gets a pickle whose ``__reduce__`` would run a shell command
creating a marker file; the tests check that the payload is live (plain pickle runs it)
and that each loader refuses it without the marker ever appearing.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from playground.errors import BadFileError
from playground.ml import checkpoints as ck


class _Payload:
    """Unpickling this runs ``touch <marker>``: what an attacker's file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "marker"


@pytest.fixture
def evil(marker) -> bytes:
    """The malicious pickle, checked to be live: a plain unpickle does create the marker."""
    data = pickle.dumps({"weights": _Payload(marker)}, protocol=2)
    pickle.loads(data)
    assert marker.exists(), "the payload must really run, or the tests below prove nothing"
    marker.unlink()
    return data


def _safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# -- our format ------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # not contiguous
    tensors = {"w": w, "ids": torch.tensor([1, 2, 3], dtype=torch.int64), "h": torch.ones(2, dtype=torch.float16)}
    path = ck.save_weights(tmp_path / "m.safetensors", tensors, {"command": "train", "seed": 7, "config": {"lr": 0.1}})
    assert path == tmp_path / "m.safetensors"
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["format"] == "playground-weights" and side["version"] == 1
    assert side["tensors"] == {"w": [4, 3], "ids": [3], "h": [2]}
    assert side["seed"] == 7 and side["config"] == {"lr": 0.1}
    back, back_side = ck.load_weights(path)
    assert back_side == side
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)
    assert ck.read_sidecar(path) == side == ck.read_sidecar(tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temporary files left


def test_tied_weights_are_saved_as_copies(tmp_path):
    shared = torch.randn(3, 2)
    path = ck.save_weights(tmp_path / "tied.safetensors", {"embed": shared, "head": shared, "row": shared[1]})
    back, _ = ck.load_weights(path)
    assert torch.equal(back["embed"], shared) and torch.equal(back["head"], shared)
    assert torch.equal(back["row"], shared[1])


def test_a_sidecar_that_is_not_json_able_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        ck.save_weights(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_saving_into_a_missing_folder_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        ck.save_weights(tmp_path / "no" / "m.safetensors", {"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_weights_without_a_sidecar_load_with_an_empty_one(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(3)}, str(tmp_path / "plain.safetensors"))
    tensors, side = ck.load_weights(tmp_path / "plain.safetensors")
    assert side == {} and torch.equal(tensors["a"], torch.ones(3))
    assert ck.read_sidecar(tmp_path / "plain.safetensors") == {}


def test_a_truncated_file_is_refused(tmp_path):
    path = ck.save_weights(tmp_path / "m.safetensors", {"w": torch.randn(100, 10)})
    raw = path.read_bytes()
    path.write_bytes(raw[:-8])
    with pytest.raises(BadFileError, match=r"m\.safetensors is truncated"):
        ck.load_weights(path)
    path.write_bytes(raw[:5])
    with pytest.raises(BadFileError, match="truncated"):
        ck.load_weights(path)
    path.write_bytes(raw[:20])  # the length is there, the header is not
    with pytest.raises(BadFileError, match="truncated"):
        ck.load_weights(path)


def test_a_header_that_is_absurd_or_not_json_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(BadFileError, match="x.safetensors is not a safetensors file"):
        ck.load_weights(path)
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(BadFileError, match="header is not JSON"):
        ck.load_weights(path)
    path.write_bytes(_safetensors_bytes([1, 2]))
    with pytest.raises(BadFileError, match="not a JSON object"):
        ck.load_weights(path)
    path.write_bytes(_safetensors_bytes({"w": {"dtype": "PY_OBJECT", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8))
    with pytest.raises(BadFileError, match="'PY_OBJECT'"):
        ck.load_weights(path)


def test_a_header_claiming_a_huge_tensor_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.safetensors"
    # Claims a 4 TB tensor whose offsets span only 16 bytes ...
    path.write_bytes(_safetensors_bytes({"w": {"dtype": "F32", "shape": [1_000_000, 1_000_000],
                                               "data_offsets": [0, 16]}}, b"\0" * 16))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(BadFileError, match=r"needs 4,000,000,000,000 bytes but its offsets span 16"):
            ck.load_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 10 * 2**20
    # ... and one whose offsets agree with its shape, but run past the end of the file.
    path.write_bytes(_safetensors_bytes({"w": {"dtype": "F64", "shape": [2**27],
                                               "data_offsets": [0, 2**30]}}, b"\0" * 64))
    with pytest.raises(BadFileError, match=r"truncated: tensor 'w' ends at byte 1,073,741,824"):
        ck.load_weights(path)


def test_pickle_bytes_in_place_of_the_weights_or_the_sidecar_are_refused(tmp_path, evil, marker):
    path = tmp_path / "m.safetensors"
    path.write_bytes(evil)
    with pytest.raises(BadFileError, match="m.safetensors"):
        ck.load_weights(path)
    ck.save_weights(path, {"w": torch.zeros(2)})
    (tmp_path / "m.json").write_bytes(evil)
    with pytest.raises(BadFileError, match="m.json is not valid JSON"):
        ck.read_sidecar(path)
    with pytest.raises(BadFileError, match="m.json is not valid JSON"):
        ck.load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("change, words", [
    (lambda s: s["tensors"].pop("b"), "the weights hold a tensor 'b' that the JSON does not list"),
    (lambda s: s["tensors"].update(c=[1]), "it lists a tensor 'c' that the weights file does not hold"),
    (lambda s: s["tensors"].update(a=[3, 2]), "tensor 'a' is 3x2 in the JSON but 2x3 in the weights"),
    (lambda s: s.update(tensors=[1, 2]), "'tensors' entry is not an object"),
])
def test_a_sidecar_that_disagrees_with_the_weights_is_refused(tmp_path, change, words):
    path = ck.save_weights(tmp_path / "m.safetensors", {"a": torch.zeros(2, 3), "b": torch.zeros(4)})
    side = json.loads((tmp_path / "m.json").read_text())
    change(side)
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(BadFileError, match=words):
        ck.load_weights(path)


@pytest.mark.parametrize("text, words", [("[1, 2]", "not an object"), ("{'a': 1}", "not valid JSON"),
                                         ("\xff\xfe", "not valid JSON")])
def test_a_sidecar_that_is_not_a_json_object_is_refused(tmp_path, text, words):
    (tmp_path / "m.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(BadFileError, match=f"m.json .*{words}"):
        ck.read_sidecar(tmp_path / "m.safetensors")


def test_missing_weights_file(tmp_path):
    with pytest.raises(BadFileError, match="gone.safetensors does not exist"):
        ck.load_weights(tmp_path / "gone.safetensors")


# -- torch.load ------------------------------------------------------------------------------
def test_torch_load_reads_tensors_in_both_formats(tmp_path):
    state = {"w": torch.randn(3, 2), "step": 5, "nested": [torch.ones(1)]}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        back = ck.torch_load(tmp_path / name)
        assert torch.equal(back["w"], state["w"]) and back["step"] == 5


class Bar:
    """A class that a weights-only load must not rebuild."""


def test_torch_load_refuses_code_and_names_the_class(tmp_path, evil, marker):
    torch.save({"model": Bar()}, tmp_path / "bar.pt")
    with pytest.raises(BadFileError, match=rf"bar.pt needs the class {__name__}.Bar to rebuild, which is not allowed"):
        ck.torch_load(tmp_path / "bar.pt")
    for legacy in (False, True):
        torch.save({"weights": _Payload(marker)}, tmp_path / "evil.pt", _use_new_zipfile_serialization=not legacy)
        with pytest.raises(BadFileError, match="evil.pt needs the class .*system to rebuild"):
            ck.torch_load(tmp_path / "evil.pt")
    (tmp_path / "raw.pt").write_bytes(evil)  # a bare pickle is not a torch file at all
    with pytest.raises(BadFileError, match="raw.pt is not a PyTorch file"):
        ck.torch_load(tmp_path / "raw.pt")
    assert not marker.exists()


def test_torch_load_gives_readable_errors(tmp_path):
    with pytest.raises(BadFileError, match="nothing.pt does not exist"):
        ck.torch_load(tmp_path / "nothing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BadFileError, match="empty.pt is empty"):
        ck.torch_load(tmp_path / "empty.pt")
    torch.save({"w": torch.randn(100)}, tmp_path / "cut.pt")
    raw = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BadFileError, match="cut.pt is truncated"):
        ck.torch_load(tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes(raw[:2])
    with pytest.raises(BadFileError, match="cut.pt is truncated"):
        ck.torch_load(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello, I am not a checkpoint")
    with pytest.raises(BadFileError, match="text.pt is not a PyTorch file"):
        ck.torch_load(tmp_path / "text.pt")


# -- state dicts -----------------------------------------------------------------------------
def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_state_dict_shape_mismatch_names_the_key_and_both_shapes():
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)).state_dict()
    with pytest.raises(BadFileError) as info:
        ck.load_state_dict_strict(_net(), other, what="the MLP")
    message = str(info.value)
    assert message == "The weights do not fit the MLP: '0.weight' is 5x4 in the file but 3x4 in the model."
    assert "\n" not in message


def test_state_dict_missing_and_unexpected_keys_are_counted():
    state = _net().state_dict()
    del state["2.bias"], state["2.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(BadFileError, match=r"2 missing \(first '2.weight'\) and 1 unexpected \(first 'extra.weight'\)"):
        ck.load_state_dict_strict(_net(), state)


def test_state_dict_that_fits_is_loaded():
    source, target = _net(), _net()
    ck.load_state_dict_strict(target, source.state_dict())
    for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(BadFileError, match="not a table"):
        ck.load_state_dict_strict(target, [1, 2])


# -- restricted unpickling -------------------------------------------------------------------
def test_numpy_arrays_load_through_the_allow_list():
    d = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "x": np.float64(1.5),
         "names": np.array(["a", "bc"]), b"raw": np.zeros(2, dtype="<f2")}
    back = ck.restricted_load(pickle.dumps(d, protocol=2), ck.NUMPY_ARRAYS, what="the test file")
    assert np.array_equal(back["data"], d["data"]) and back["data"].dtype == np.uint8
    assert back["labels"] == [1, 2, 3] and back["x"] == 1.5 and isinstance(back["x"], np.float64)
    assert back["names"].tolist() == ["a", "bc"] and back[b"raw"].dtype == np.float16


def test_restricted_load_refuses_anything_else(tmp_path, evil, marker):
    with pytest.raises(BadFileError, match=r"Could not open the test file: the safe loader refuses (posix|nt)\.system"):
        ck.restricted_load(evil, ck.NUMPY_ARRAYS, what="the test file")
    with open(tmp_path / "evil.pkl", "wb") as f:
        f.write(evil)
    for source in (tmp_path / "evil.pkl", str(tmp_path / "evil.pkl"), io.BytesIO(evil)):
        with pytest.raises(BadFileError, match="refuses"):
            ck.restricted_load(source, ck.NUMPY_ARRAYS, what="the test file")
    with pytest.raises(BadFileError, match=r"refuses builtins\.eval"):
        ck.restricted_load(b"cbuiltins\neval\n(S'1'\ntR.", ck.NUMPY_ARRAYS, what="x")
    with pytest.raises(BadFileError, match="only latin-1"):  # numpy's encode helper cannot pick a codec
        ck.restricted_load(b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.", ck.NUMPY_ARRAYS, what="x")
    assert not marker.exists()


def test_restricted_load_never_imports_what_the_file_names(tmp_path, monkeypatch):
    # A module of our own, importable from tmp_path, that nothing else can have imported.
    name = f"pg_canary_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text("def f(*a):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BadFileError, match=rf"refuses {name}\.f"):
        ck.restricted_load(f"c{name}\nf\n(I1\ntR.".encode(), ck.NUMPY_ARRAYS, what="x")
    assert name not in sys.modules


def test_restricted_load_damaged_pickles():
    good = pickle.dumps({"a": np.arange(100)}, protocol=2)
    with pytest.raises(BadFileError, match="Could not open the batch: it is truncated"):
        ck.restricted_load(good[: len(good) // 2], ck.NUMPY_ARRAYS, what="the batch")
    with pytest.raises(BadFileError, match="damaged"):
        ck.restricted_load(b"\x80\x02\xff\xff", ck.NUMPY_ARRAYS, what="the batch")
    with pytest.raises(BadFileError, match="does not exist"):
        ck.restricted_load(Path("/nonexistent/batch"), ck.NUMPY_ARRAYS, what="the batch")


def test_persistent_ids_need_a_persistent_load():
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return ("blob", obj.decode()) if isinstance(obj, bytes) else None

    buf = io.BytesIO()
    WithIds(buf, protocol=2).dump({"w": b"key0"})
    with pytest.raises(BadFileError, match="damaged"):
        ck.restricted_load(buf.getvalue(), {}, what="x")
    back = ck.restricted_load(buf.getvalue(), {}, what="x", persistent_load=lambda pid: f"loaded {pid[1]}")
    assert back == {"w": "loaded key0"}


def test_pickled_tensors_load_through_the_torch_allow_list(marker, evil):
    state = collections.OrderedDict(w=torch.arange(6.0).reshape(2, 3), half=torch.ones(2, dtype=torch.float16),
                                    view=torch.arange(10)[2:8:2], p=torch.nn.Parameter(torch.full((2,), 3.0)))
    back = ck.restricted_load(pickle.dumps(state, protocol=2), ck.TORCH_TENSORS, what="the network pickle")
    assert isinstance(back, collections.OrderedDict) and list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t.detach())
    assert isinstance(back["p"], torch.nn.Parameter) and back["p"].requires_grad
    # A tensor whose storage bytes hide a payload: the storage is read weights-only.
    hidden = io.BytesIO()
    torch.save(_Payload(marker), hidden)
    crafted = (b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00"
               + pickle.dumps(hidden.getvalue(), protocol=2)[2:-1] + b"\x85R.")
    with pytest.raises(BadFileError, match="Could not open the network pickle: a tensor's storage in it needs "
                                           r"(posix|nt)\.system to rebuild, which is not allowed\.$"):
        ck.restricted_load(crafted, ck.TORCH_TENSORS, what="the network pickle")
    with pytest.raises(BadFileError, match="refuses"):
        ck.restricted_load(evil, ck.TORCH_TENSORS, what="the network pickle")
    assert not marker.exists()


# -- from a review: what the allow-listed callables must not be made to do ---------------------
def test_build_cannot_change_an_allowed_function():
    before = (ck._latin1_encode.__defaults__, ck._latin1_encode.__doc__)
    # GLOBAL _codecs.encode, then BUILD with a (None, {slots}) state: setattr on the function.
    payload = b"c_codecs\nencode\nN}(V__defaults__\n(Vlatin1\nVignore\ntV__doc__\nVpwned\nu\x86b."
    with pytest.raises(BadFileError, match="sets the state of a function"):
        ck.restricted_load(payload, ck.NUMPY_ARRAYS, what="x")
    assert (ck._latin1_encode.__defaults__, ck._latin1_encode.__doc__) == before


def test_numpy_ndarray_cannot_be_called_to_make_a_huge_array():
    # ndarray((10**9, 3072), 'u1', b'x', 0, (0, 0)): 2.8 TiB from a few bytes, if it were callable.
    payload = (b"cnumpy\nndarray\n((I1000000000\nI3072\ntVu1\nC\x01xI0\n(I0\nI0\nttR.")
    with pytest.raises(BadFileError, match="numpy.ndarray directly"):
        ck.restricted_load(payload, ck.NUMPY_ARRAYS, what="x")


def test_a_tensor_view_larger_than_its_storage_is_refused():
    storage = torch.ones(1).untyped_storage()
    with pytest.raises(ck._Refused, match="more elements than its storage"):
        ck._rebuild_tensor_v2(storage, 0, (10**6, 10**6), (0, 0))
    with pytest.raises(ck._Refused):
        ck._rebuild_tensor_v2(storage, 0, (2,), (-1,))
    ck._check_view(torch.arange(6.0).untyped_storage(), 0, (2, 3), (3, 1))  # a plain view is fine
    with pytest.raises(ck._Refused):
        ck._check_view(torch.arange(6.0).untyped_storage(), 30, (2, 3), (3, 1))  # past the end


@pytest.mark.parametrize("shape", [["x", 4], [[8], 4], [8, 4, None], [8.5, 4], [True, 4], "8x4"])
def test_a_sidecar_shape_that_is_not_whole_numbers_is_a_bad_file(tmp_path, shape):
    path = ck.save_weights(tmp_path / "w.safetensors", {"w": torch.zeros(8, 4)})
    side = json.loads(ck.sidecar_path(path).read_text())
    side["tensors"]["w"] = shape
    ck.sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(BadFileError):
        ck.load_weights(path)


def test_a_sidecar_that_is_not_a_regular_file_is_refused(tmp_path):
    path = ck.save_weights(tmp_path / "w.safetensors", {"w": torch.zeros(2)})
    ck.sidecar_path(path).unlink()
    ck.sidecar_path(path).symlink_to("/dev/zero")
    with pytest.raises(BadFileError, match="not a regular file"):
        ck.load_weights(path)
