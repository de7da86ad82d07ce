"""The safe reader of official StyleGAN2 pickles, and our own generator files.

No NVIDIA file is used: the fixtures are written here in the same persistence format, with
the official global names (``torch_utils.persistence._reconstruct_persistent_obj``,
``dnnlib.util.EasyDict``, ...) and a placeholder where the official files keep the network's
source. The stand-ins that make pickle write those names exist only while a fixture is
written (fake modules in ``sys.modules``, removed afterwards), so the loader under test
can never find them.
"""

from __future__ import annotations

import collections
import copy
import math
import os
import pickle
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from playground.errors import BadFileError
from playground.ml import checkpoints as ck
from playground.ml.checkpoints import LoadedModel
from playground.ml.stylegan2 import pickles
from playground.ml.stylegan2.model import Discriminator, Generator
from playground.progress import Progress

PLACEHOLDER_SRC = "# placeholder: the official files keep the network's Python source here\n"
HOOK_DICTS = ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
              "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
              "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
TINY = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)
TINY_SYNTHESIS = dict(channel_base=64, channel_max=16, num_fp16_res=0, conv_clamp=256)
TINY_MAPPING = dict(num_layers=2)


# -- writing fixtures with the official global names -------------------------------------------
def _named(obj, module: str, name: str):
    obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
    return obj


def _reconstruct_stand_in(meta):  # what pickle names torch_utils.persistence._reconstruct_persistent_obj
    raise AssertionError("the loader must never call the persistence code")


_reconstruct_stand_in = _named(_reconstruct_stand_in, "torch_utils.persistence", "_reconstruct_persistent_obj")


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access)."""


_named(EasyDict, "dnnlib.util", "EasyDict")


class Network:
    """Stand-in for the TensorFlow-era dnnlib.tflib.network.Network (pickled through its state)."""

    def __init__(self, name: str):
        self.name = name

    def __getstate__(self):
        return {"version": 4, "name": self.name, "static_kwargs": {}, "components": {},
                "build_module_src": PLACEHOLDER_SRC, "build_func_name": "G_main",
                "variables": [("dense/weight", np.ones((2, 2), np.float32))]}

    def __setstate__(self, state):
        self.__dict__.update(state)


_named(Network, "dnnlib.tflib.network", "Network")


class PlainGenerator:
    """Stand-in for training.networks.Generator pickled as a plain class: not persistent, to be refused."""


_named(PlainGenerator, "training.networks", "Generator")


class Persistent:
    """Pickles exactly as an official @persistent_class object: REDUCE(_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, class_name: str, state: dict, module_src: str = PLACEHOLDER_SRC):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return (_reconstruct_stand_in, (self.meta,))


@contextmanager
def official_names() -> Iterator[None]:
    """Fake ``torch_utils.persistence``, ``dnnlib.util``, ... modules while pickling, so pickle writes those names."""
    modules = {
        "torch_utils": {}, "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_stand_in},
        "dnnlib": {}, "dnnlib.util": {"EasyDict": EasyDict}, "dnnlib.tflib": {},
        "dnnlib.tflib.network": {"Network": Network}, "training": {},
        "training.networks": {"Generator": PlainGenerator},
    }
    saved = {name: sys.modules.get(name) for name in modules}
    try:
        for name, attrs in modules.items():
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def dumps(obj, protocol: int = 4) -> bytes:
    with official_names():
        return pickle.dumps(obj, protocol=protocol)


def record(module: torch.nn.Module, init_kwargs: dict | None = None, module_src: str = PLACEHOLDER_SRC,
           class_names: dict[str, str] | None = None, prefix: str = "") -> Persistent:
    """``module`` as an official pickle keeps it: its ``__dict__`` with every submodule a persistent record."""
    class_names = class_names or {}
    children = collections.OrderedDict(
        (name, record(child, {}, module_src, class_names, f"{prefix}{name}."))
        for name, child in module._modules.items())
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_modules": children,
        **{key: collections.OrderedDict() for key in HOOK_DICTS},
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
        "act_gain": np.float64(math.sqrt(2)),  # plain attributes as the official modules keep them
        "conv_clamp": 256,
    }
    return Persistent(class_names.get(prefix.rstrip("."), type(module).__name__), state, module_src)


def ada_kwargs() -> dict:
    """stylegan2-ada-pytorch's nested form, as its train.py builds it."""
    return EasyDict(z_dim=TINY["z_dim"], w_dim=TINY["w_dim"], mapping_kwargs=EasyDict(TINY_MAPPING),
                    synthesis_kwargs=EasyDict(TINY_SYNTHESIS), c_dim=0, img_resolution=TINY["img_resolution"],
                    img_channels=TINY["img_channels"])


def sg3_kwargs() -> dict:
    """stylegan3's flat form for its StyleGAN2 config (synthesis arguments at the top level)."""
    return EasyDict(z_dim=TINY["z_dim"], w_dim=TINY["w_dim"], mapping_kwargs=EasyDict(TINY_MAPPING),
                    **TINY_SYNTHESIS, fused_modconv_default="inference_only", c_dim=0,
                    img_resolution=TINY["img_resolution"], img_channels=TINY["img_channels"])


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**TINY, mapping_kwargs=TINY_MAPPING, **TINY_SYNTHESIS).eval()
    with torch.no_grad():  # non-zero noise strengths and w_avg, so that every tensor matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping.w_avg.normal_()
    return G


def network_pickle(G: Generator, init_kwargs: dict | None = None, protocol: int = 4,
                   module_src: str = PLACEHOLDER_SRC, **extra) -> bytes:
    """The top-level dict of an official training snapshot, with ``G`` as G_ema (and a copy of it as G)."""
    D = Discriminator(c_dim=0, img_resolution=G.img_resolution, img_channels=3, channel_base=64, channel_max=16)
    kwargs = ada_kwargs() if init_kwargs is None else init_kwargs
    data = {"G": record(copy.deepcopy(G), kwargs, module_src), "D": record(D, D.init_kwargs, module_src),
            "G_ema": record(G, kwargs, module_src),
            "training_set_kwargs": EasyDict(class_name="training.dataset.ImageFolderDataset", path="faces.zip"),
            "augment_pipe": None, **extra}
    return dumps(data, protocol)


def write(tmp_path: Path, data: bytes, name: str = "net.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- reading official pickles ---------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_an_official_style_pickle_gives_the_official_state_dict(tmp_path, protocol):
    G = tiny_generator()
    data = network_pickle(G, protocol=protocol)
    # the fixture stores tensors as the official files do: storages as legacy torch.save bytes
    assert b"_load_from_bytes" in data and b"_reconstruct_persistent_obj" in data and b"EasyDict" in data
    init_kwargs, state_dict = pickles.load_official_pickle(write(tmp_path, data))
    expected = G.state_dict()
    assert list(state_dict) == list(expected)  # same keys, same order as torch's state_dict
    for key in ("mapping.fc0.weight", "mapping.w_avg", "synthesis.b4.const", "synthesis.b4.conv1.affine.weight",
                "synthesis.b8.conv0.noise_const", "synthesis.b8.resample_filter", "synthesis.b16.torgb.bias"):
        assert key in state_dict
    assert not any(key.endswith("taps") for key in state_dict)  # non-persistent buffers are left out
    for key, value in expected.items():
        assert torch.equal(state_dict[key], value), key
    assert init_kwargs == {**TINY, "mapping_kwargs": TINY_MAPPING, **TINY_SYNTHESIS}


@pytest.mark.parametrize("kwargs", [ada_kwargs, sg3_kwargs], ids=["ada-nested", "sg3-flat"])
def test_the_loaded_generator_draws_what_the_original_drew(tmp_path, kwargs):
    G = tiny_generator(seed=1)
    loaded = pickles.load_generator(write(tmp_path, network_pickle(G, kwargs())))
    assert isinstance(loaded, Generator) and not loaded.training
    z = torch.randn(2, TINY["z_dim"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = G(z, None, truncation_psi=0.7)
        got = loaded(z, None, truncation_psi=0.7)
    assert got.shape == (2, 3, 16, 16)
    assert torch.equal(got, want)
    # a differently seeded generator draws something else: the comparison can fail
    with torch.no_grad():
        assert not torch.allclose(tiny_generator(seed=2)(z, None, truncation_psi=0.7), want)


def test_a_parameter_with_python_attributes_uses_rebuild_parameter_with_state(tmp_path):
    G = tiny_generator()
    G.mapping.fc0.weight.note = "an attribute"  # torch then pickles it with _rebuild_parameter_with_state
    data = network_pickle(G)
    assert b"_rebuild_parameter_with_state" in data
    _, state_dict = pickles.load_official_pickle(write(tmp_path, data))
    assert torch.equal(state_dict["mapping.fc0.weight"], G.mapping.fc0.weight)


def test_only_g_ema_is_decoded(tmp_path, monkeypatch):
    """G and D (two thirds of a real file) stay undecoded bytes: one storage decoded per G_ema tensor."""
    decode = ck.TORCH_TENSORS[("torch.storage", "_load_from_bytes")]
    calls = []
    monkeypatch.setitem(ck.TORCH_TENSORS, ("torch.storage", "_load_from_bytes"),
                        lambda data: calls.append(len(data)) or decode(data))
    data = network_pickle(tiny_generator())
    assert data.count(b"_load_from_bytes") >= 1
    _, state_dict = pickles.load_official_pickle(write(tmp_path, data))
    assert len(calls) == len(state_dict)


def test_a_lone_generator_record_is_read_as_g_ema(tmp_path):
    G = tiny_generator()
    _, state_dict = pickles.load_official_pickle(write(tmp_path, dumps(record(G, ada_kwargs()))))
    assert torch.equal(state_dict["synthesis.b4.const"], G.synthesis.b4.const)


def test_init_args_are_mapped_by_position(tmp_path):
    G = tiny_generator()
    rec = record(G, {"mapping_kwargs": TINY_MAPPING, "synthesis_kwargs": TINY_SYNTHESIS})
    rec.meta["state"]["_init_args"] = (8, 0, 8, 16, 3)
    init_kwargs, _ = pickles.load_official_pickle(write(tmp_path, dumps({"G_ema": rec})))
    assert init_kwargs["img_resolution"] == 16 and init_kwargs["channel_base"] == 64

    rec.meta["state"]["_init_kwargs"] = EasyDict(z_dim=8)
    with pytest.raises(BadFileError, match="z_dim twice"):
        pickles.load_official_pickle(write(tmp_path, dumps({"G_ema": rec})))


def test_load_for_picker_reports_progress_and_describes_the_model(tmp_path):
    path = write(tmp_path, network_pickle(tiny_generator()), "lions.pkl")
    steps = pickles.load_for_picker(str(path))
    reports = []
    while True:
        try:
            reports.append(next(steps))
        except StopIteration as stop:
            loaded = stop.value
            break
    assert reports and all(isinstance(r, Progress) for r in reports)
    fractions = [r.fraction for r in reports if r.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.99
    assert isinstance(loaded, LoadedModel) and isinstance(loaded.model, Generator)
    assert loaded.format == pickles.FORMAT_PICKLE and loaded.name == "lions" and loaded.source == str(path)
    assert loaded.details["Resolution"] == "16x16"
    assert loaded.parameters == sum(p.numel() for p in tiny_generator().parameters())


def test_closing_the_load_stops_it(tmp_path):
    path = write(tmp_path, network_pickle(tiny_generator()))
    steps = pickles.load_for_picker(str(path))
    assert isinstance(next(steps), Progress)
    steps.close()  # what the pool does on cancel; nothing must be left open or raised
    with pytest.raises(StopIteration):
        next(steps)


# -- refusals ----------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs ``touch <marker>``: what an attacker's file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_a_pickle_that_runs_a_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps({"G_ema": _Payload(marker)})
    pickle.loads(payload)  # the payload is live: a plain unpickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(BadFileError, match=r"refuses (posix|os|nt)\.system"):
        pickles.load_generator(write(tmp_path, payload))
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path):
    marker = tmp_path / "marker"
    evil_src = f"import os; os.system(\"touch '{marker}'\")\n"
    exec(compile(evil_src, "<evil>", "exec"), {})  # noqa: S102 - proves the source is live (it makes the marker)
    assert marker.exists()
    marker.unlink()
    G = tiny_generator()
    loaded = pickles.load_generator(write(tmp_path, network_pickle(G, module_src=evil_src)))
    assert isinstance(loaded, Generator)
    assert not marker.exists()


def test_a_payload_hidden_in_a_module_state_is_refused(tmp_path):
    marker = tmp_path / "marker"
    rec = record(tiny_generator(), ada_kwargs())
    rec.meta["state"]["act_gain"] = _Payload(marker)
    with pytest.raises(BadFileError, match="system"):
        pickles.load_official_pickle(write(tmp_path, dumps({"G_ema": rec})))
    assert not marker.exists()


def test_a_tensorflow_era_pickle_is_refused_with_the_conversion_command(tmp_path):
    data = dumps((Network("G"), Network("D"), Network("Gs")), protocol=3)
    assert b"dnnlib.tflib.network" in data
    with pytest.raises(BadFileError) as err:
        pickles.load_generator(write(tmp_path, data, "stylegan2-cat-config-f.pkl"))
    text = str(err.value)
    assert "TensorFlow" in text and "legacy.py --source=stylegan2-cat-config-f.pkl" in text


def test_a_stylegan3_generator_is_refused_by_its_arguments(tmp_path):
    kwargs = sg3_kwargs()
    kwargs["magnitude_ema_beta"] = 0.999
    with pytest.raises(BadFileError, match=r"StyleGAN3 generators are not supported \(only StyleGAN2\)"):
        pickles.load_official_pickle(write(tmp_path, network_pickle(tiny_generator(), kwargs)))


def test_a_stylegan3_generator_is_refused_by_its_classes(tmp_path):
    G = tiny_generator()
    rec = record(G, sg3_kwargs(), class_names={"synthesis.b4": "SynthesisInput"})
    with pytest.raises(BadFileError, match=r"StyleGAN3 generators are not supported"):
        pickles.load_official_pickle(write(tmp_path, dumps({"G_ema": rec})))


def test_a_file_without_g_ema_is_refused(tmp_path):
    G = tiny_generator()
    data = dumps({"G": record(G, ada_kwargs()), "D": None})
    with pytest.raises(BadFileError, match="has no G_ema"):
        pickles.load_official_pickle(write(tmp_path, data))


def test_an_unknown_global_class_is_refused_by_name(tmp_path):
    with pytest.raises(BadFileError, match=r"training\.networks\.Generator"):
        pickles.load_official_pickle(write(tmp_path, dumps({"G_ema": PlainGenerator()})))


def test_an_unknown_persistent_class_is_refused_by_name(tmp_path):
    rec = record(tiny_generator(), ada_kwargs(), class_names={"synthesis.b8.conv0": "EvilLayer"})
    with pytest.raises(BadFileError, match=r"the class EvilLayer \(synthesis\.b8\.conv0\)"):
        pickles.load_official_pickle(write(tmp_path, dumps({"G_ema": rec})))


def test_an_unknown_generator_argument_is_refused_by_name(tmp_path):
    kwargs = ada_kwargs()
    kwargs["synthesis_kwargs"]["warp_factor"] = 9
    with pytest.raises(BadFileError, match="warp_factor"):
        pickles.load_official_pickle(write(tmp_path, network_pickle(tiny_generator(), kwargs)))


def test_weights_that_do_not_fit_the_arguments_are_refused_before_building(tmp_path):
    kwargs = ada_kwargs()
    kwargs["img_resolution"] = 32  # the weights are those of a 16 px generator
    with pytest.raises(BadFileError, match="do not fit.*missing.*synthesis.b32"):
        pickles.load_generator(write(tmp_path, network_pickle(tiny_generator(), kwargs)))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_a_truncated_file_is_refused(tmp_path, fraction):
    data = network_pickle(tiny_generator())
    cut = int(len(data) * fraction)
    while data[cut - 1:cut] == b".":  # a cut just after a "." byte looks complete: the unpickler tells then
        cut -= 1
    with pytest.raises(BadFileError, match="is truncated"):
        pickles.load_generator(write(tmp_path, data[:cut]))


def test_a_cut_that_ends_on_a_stop_byte_is_still_refused(tmp_path):
    data = network_pickle(tiny_generator())
    cut = data.index(b".", len(data) // 2) + 1
    with pytest.raises(BadFileError, match="truncated|damaged"):
        pickles.load_generator(write(tmp_path, data[:cut]))


def test_files_that_are_not_generators_are_refused(tmp_path):
    with pytest.raises(BadFileError, match="neither a StyleGAN2 network pickle"):
        pickles.load_generator(write(tmp_path, b"GIF89a not a network", "x.pkl"))
    with pytest.raises(BadFileError, match="empty"):
        pickles.load_generator(write(tmp_path, b"", "empty.pkl"))
    with pytest.raises(BadFileError, match="does not exist"):
        pickles.load_generator(tmp_path / "missing.pkl")
    with pytest.raises(BadFileError, match="folder"):
        pickles.load_generator(tmp_path)
    with pytest.raises(BadFileError, match="not a StyleGAN2 network pickle"):
        pickles.load_official_pickle(write(tmp_path, pickle.dumps([1, 2, 3]), "list.pkl"))


# -- the arguments -----------------------------------------------------------------------------------
def test_nested_and_flat_arguments_normalise_to_the_same_dict():
    want = {**TINY, "mapping_kwargs": TINY_MAPPING, **TINY_SYNTHESIS}
    assert pickles.normalize_init_kwargs(ada_kwargs()) == want
    assert pickles.normalize_init_kwargs(sg3_kwargs()) == want  # fused_modconv_default dropped
    numpy_kwargs = {**sg3_kwargs(), "img_resolution": np.int64(16), "resample_filter": (1, 3, 3, 1)}
    normalised = pickles.normalize_init_kwargs(numpy_kwargs)
    assert type(normalised["img_resolution"]) is int and normalised["resample_filter"] == [1, 3, 3, 1]


@pytest.mark.parametrize("change, words", [
    ({"img_resolution": 24}, "not a power of two"),
    ({"z_dim": "512"}, "z_dim is '512'"),
    ({"c_dim": -1}, "c_dim is -1"),
    ({"mapping_kwargs": {"num_layers": 2, "depth": 3}}, "mapping network has the argument depth"),
    ({"channel_base": 64}, "channel_base twice"),
    ({"conv_kernel": 1}, "StyleGAN3"),
])
def test_bad_arguments_are_refused_with_a_reason(change, words):
    with pytest.raises(BadFileError, match=words):
        pickles.normalize_init_kwargs({**ada_kwargs(), **change})


# -- our own format ----------------------------------------------------------------------------------
def test_save_and_load_our_format_round_trip(tmp_path):
    G = tiny_generator(seed=4)
    path = pickles.save_generator(G, tmp_path / "faces.safetensors", {"command": "train --kimg 1"})
    side = (tmp_path / "faces.json").read_text()
    assert '"kind": "stylegan2-generator"' in side and "train --kimg 1" in side
    loaded = pickles.load_generator(path)
    z = torch.randn(1, TINY["z_dim"])
    with torch.no_grad():
        assert torch.equal(loaded(z, None), G(z, None))
    assert pickles.load_generator(tmp_path / "faces.json").img_resolution == 16  # the sidecar's path works too
    described = pickles.describe(path)
    assert described.format == pickles.FORMAT_SAFETENSORS and described.details["Resolution"] == "16x16"
    with pytest.raises(ValueError, match="kind"):
        pickles.save_generator(G, tmp_path / "x.safetensors", {"kind": "other"})


def test_an_official_pickle_converts_to_our_format(tmp_path):
    G = tiny_generator(seed=5)
    loaded = pickles.load_generator(write(tmp_path, network_pickle(G)))
    path = pickles.save_generator(loaded, tmp_path / "converted.safetensors")
    again = pickles.load_generator(path)
    assert list(again.state_dict()) == list(G.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), G.state_dict().values()))


def test_content_not_the_name_decides_the_format(tmp_path):
    misnamed = write(tmp_path, network_pickle(tiny_generator()), "really-a-pickle.safetensors")
    assert pickles.file_format(misnamed) == pickles.FORMAT_PICKLE
    assert isinstance(pickles.load_generator(misnamed), Generator)


def test_our_format_needs_a_sidecar_of_the_right_kind(tmp_path):
    path = pickles.save_generator(tiny_generator(), tmp_path / "g.safetensors")
    side = tmp_path / "g.json"
    text = side.read_text()
    side.write_text(text.replace('"stylegan2-generator"', '"som-map"'))
    with pytest.raises(BadFileError, match="does not describe a StyleGAN2 generator"):
        pickles.load_generator(path)
    side.write_text(text.replace('"channel_base": 64', '"channel_base": 64, "evil": 1'))
    with pytest.raises(BadFileError, match="argument evil"):
        pickles.load_generator(path)
    side.write_text(text.replace('"init_kwargs"', '"made_by"'))
    with pytest.raises(BadFileError, match="no init_kwargs"):
        pickles.load_generator(path)
    side.unlink()
    with pytest.raises(BadFileError, match="no g.json"):
        pickles.load_generator(path)


def test_the_embedded_default_loads_from_resources(tmp_path, monkeypatch):
    import playground.paths

    monkeypatch.setattr(playground.paths, "RESOURCES", tmp_path)
    with pytest.raises(BadFileError, match="missing"):
        next(pickles.load_default())
    pickles.save_generator(tiny_generator(), tmp_path / pickles.DEFAULT_MODEL)
    steps = pickles.load_default()
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            loaded = stop.value
            break
    assert isinstance(loaded.model, Generator) and loaded.source == ""
    assert loaded.name == "Procedural faces (embedded)" and loaded.format == pickles.FORMAT_SAFETENSORS


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_is_safetensors(tmp_path):
    # A 128-byte header: its length's first byte is 0x80, pickle's protocol opcode.
    path = tmp_path / "g.safetensors"
    path.write_bytes((128).to_bytes(8, "little") + b"{" + b" " * 127)
    assert pickles.file_format(path) == pickles.FORMAT_SAFETENSORS
