"""Our UNet configs, and opening diffusers UNet folders safely (never through diffusers' own loading)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from playground.errors import BadFileError
from playground.ml.checkpoints import LoadedModel
from playground.ml.diffusion import models, samplers
from playground.ml.diffusion.models import DiffusionModel
from playground.progress import Progress

ATTN = dict(down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=8)


def save_folder(unet, folder, scheduler=None):
    """A flat diffusers folder, as google/ddpm-cifar10-32 has it: config.json, weights, scheduler_config.json."""
    from diffusers import DDPMScheduler

    unet.save_pretrained(folder, safe_serialization=True)
    (scheduler or DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")).save_pretrained(
        folder)
    return folder


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_our_default_configs_build():
    with torch.device("meta"):  # the full sizes, without the time to initialise them
        digits, faces = models.digits_unet(), models.faces_unet()
    assert digits.config.sample_size == 16 and digits.config.in_channels == 1
    assert models.num_classes(digits) == 10 and models.null_label(digits) == 10
    assert faces.config.sample_size == 32 and faces.config.in_channels == 3 and models.num_classes(faces) == 0
    small = dict(block_out_channels=(8, 16, 16), norm_num_groups=4, attention_head_dim=8)
    assert same_weights(models.digits_unet(seed=3, **small), models.digits_unet(seed=3, **small))
    assert not same_weights(models.digits_unet(seed=3, **small), models.digits_unet(seed=4, **small))
    with pytest.raises(ValueError):
        models.null_label(faces)


def test_a_flat_folder_loads_with_its_scheduler(tmp_path, tiny_unet):
    folder = save_folder(tiny_unet, tmp_path / "tiny")
    assert (folder / "diffusion_pytorch_model.safetensors").exists()
    loaded = models.load_unet_folder(folder)
    assert isinstance(loaded, LoadedModel) and isinstance(loaded.model, DiffusionModel)
    model = loaded.model
    assert same_weights(model.unet, tiny_unet) and not model.unet.training
    assert model.resolution == (8, 8) and model.channels == 1 and not model.conditional
    assert model.prediction_type == "v_prediction" and model.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert loaded.parameters == models.parameter_count(tiny_unet)
    assert loaded.details["Resolution"] == "8x8" and loaded.details["Classes"] == "unconditional"
    assert loaded.details["Schedule"] == "cosine, T = 1000" and loaded.format == models.FORMAT_FOLDER
    # the sampler follows the model's schedule and prediction type
    sch = samplers.make_scheduler("euler", model.scheduler_config)
    assert sch.config.prediction_type == "v_prediction" and sch.config.beta_schedule == "squaredcos_cap_v2"
    # picking config.json itself opens its folder
    assert same_weights(models.load_unet_folder(folder / "config.json").model.unet, tiny_unet)


def test_a_pipeline_folder_loads(tmp_path, make_unet):
    from diffusers import DDPMPipeline, DDPMScheduler

    unet = make_unet(2, num_class_embeds=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pipe", safe_serialization=True)
    loaded = models.load_unet_folder(tmp_path / "pipe")
    assert same_weights(loaded.model.unet, unet)
    assert loaded.model.num_classes == 3 and "3 (classifier-free guidance)" == loaded.details["Classes"]
    assert loaded.model.scheduler_config["_class_name"] == "DDPMScheduler"


def test_a_bin_only_folder_loads_weights_only(tmp_path, tiny_unet):
    folder = save_folder(tiny_unet, tmp_path / "bin")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(tiny_unet.state_dict(), folder / "diffusion_pytorch_model.bin")
    loaded = models.load_unet_folder(folder)
    assert same_weights(loaded.model.unet, tiny_unet) and loaded.details["Weights"] == "diffusion_pytorch_model.bin"


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_a_malicious_bin_is_refused_and_never_runs(tmp_path, tiny_unet, how):
    folder = save_folder(tiny_unet, tmp_path / "evil")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    payload = {"conv_in.weight": RunsACommand(marker)}
    target = folder / "diffusion_pytorch_model.bin"
    if how == "torch.save":
        torch.save(payload, target)
    else:
        target.write_bytes(pickle.dumps(payload))
    with pytest.raises(BadFileError):
        models.load_unet_folder(folder)
    assert not marker.exists()


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change, words", [
    ("pipeline.py", "brings its own code (pipeline.py)"),
    ("auto_map", "needs its own code (auto_map"),
    ("trust_remote_code", "needs its own code (trust_remote_code"),
    ("class", "holds a UNet2DConditionModel, not a UNet2DModel"),
    ("model_index", "its unet comes from 'my_unets'"),
    ("scheduler", "FlowMatchEulerDiscreteScheduler"),
    ("class_embed_type", "class embeddings of the type 'timestep'"),
])
def test_folders_that_need_their_own_code_or_another_model_are_refused(tmp_path, tiny_unet, change, words):
    folder = save_folder(tiny_unet, tmp_path / "custom")
    if change == "pipeline.py":
        (folder / "pipeline.py").write_text("import os\nos.system('echo hi')\n")
    elif change == "auto_map":
        _edit_json(folder / "config.json", auto_map={"AutoModel": "modeling.MyUNet"})
    elif change == "trust_remote_code":
        _edit_json(folder / "config.json", trust_remote_code=True)
    elif change == "class":
        _edit_json(folder / "config.json", _class_name="UNet2DConditionModel")
    elif change == "model_index":
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "MyPipeline",
                                                             "unet": ["my_unets", "MyUNet"]}))
    elif change == "scheduler":
        _edit_json(folder / "scheduler_config.json", _class_name="FlowMatchEulerDiscreteScheduler")
    else:
        _edit_json(folder / "config.json", class_embed_type="timestep")
    with pytest.raises(BadFileError, match=words.replace("(", r"\(").replace(")", r"\)")):
        models.load_unet_folder(folder)


def test_damaged_and_mismatched_folders_are_refused(tmp_path, tiny_unet, make_unet):
    with pytest.raises(BadFileError, match="not a folder"):
        models.load_unet_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadFileError, match="no config.json"):
        models.load_unet_folder(tmp_path / "empty")
    folder = save_folder(tiny_unet, tmp_path / "a")
    other = save_folder(make_unet(block_out_channels=(8, 24), norm_num_groups=4), tmp_path / "b")
    shutil.copy(other / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(BadFileError, match="do not fit"):
        models.load_unet_folder(folder)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(BadFileError, match="truncated"):
        models.load_unet_folder(folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BadFileError, match="has no weights"):
        models.load_unet_folder(folder)
    _edit_json(other / "config.json", block_out_channels="wide")
    with pytest.raises(BadFileError, match="cannot build"):
        models.load_unet_folder(other)


def test_a_folder_without_a_scheduler_config_gets_ddpms(tmp_path, tiny_unet):
    folder = tmp_path / "bare"
    tiny_unet.save_pretrained(folder, safe_serialization=True)
    loaded = models.load_unet_folder(folder)
    assert loaded.model.scheduler_config["beta_schedule"] == "linear" and "assumed" in loaded.details["Scheduler"]


def test_old_attention_key_names_are_renamed(tmp_path, make_unet):
    from safetensors.torch import load_file, save_file

    unet = make_unet(3, **ATTN)
    folder = save_folder(unet, tmp_path / "old")
    path = folder / "diffusion_pytorch_model.safetensors"
    old = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
           .replace(".to_out.0.", ".proj_attn."): v for k, v in load_file(path).items()}
    assert any(".proj_attn." in k for k in old)
    save_file(old, path)
    assert same_weights(models.load_unet_folder(folder).model.unet, unet)


def test_half_precision_weights_load_as_float32(tmp_path, tiny_unet):
    folder = save_folder(tiny_unet.half(), tmp_path / "half")
    unet = models.load_unet_folder(folder).model.unet
    assert unet.dtype == torch.float32
    tiny_unet.float()


def test_our_own_file_round_trips(tmp_path, conditional_unet):
    model = DiffusionModel(conditional_unet, dict(models.DEFAULT_SCHEDULER_CONFIG))
    path = models.save_unet(tmp_path / "digits.safetensors", model, {"seed": 3})
    back = models.read_unet_file(path)
    assert same_weights(back.unet, conditional_unet) and back.num_classes == 3
    assert back.scheduler_config == models.DEFAULT_SCHEDULER_CONFIG
    assert json.loads((tmp_path / "digits.json").read_text())["seed"] == 3


def test_the_picker_loader_is_a_job(tmp_path, tiny_unet):
    folder = save_folder(tiny_unet, tmp_path / "job")
    gen = models.load_folder_for_picker(str(folder))
    assert isinstance(next(gen), Progress)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert isinstance(stop.value.value, LoadedModel)


# -- the hub, served from a local folder ---------------------------------------------------------------------
@pytest.fixture
def hub(tmp_path):
    """A local web server that answers like the hub: /<owner>/<name>/resolve/main/<file>, 404 when absent."""
    import functools
    import http.server
    import threading

    root = tmp_path / "hub"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            parts = path.split("/")  # '', owner, name, 'resolve', 'main', file...
            return str(root / parts[1] / parts[2] / "/".join(parts[5:])) if len(parts) > 5 else str(root / "none")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _drain(gen):
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def test_a_hub_model_is_fetched_with_progress_flat_or_as_a_pipeline(tmp_path, hub, tiny_unet, make_unet):
    from diffusers import DDPMPipeline, DDPMScheduler

    root, url = hub
    save_folder(tiny_unet, root / "google" / "ddpm-tiny")
    items, loaded = _drain(models.fetch_hub_model("google/ddpm-tiny", tmp_path / "got", base_url=url))
    assert same_weights(loaded.model.unet, tiny_unet) and loaded.name == "google/ddpm-tiny"
    assert any(isinstance(p, Progress) and "Downloading" in p.text for p in items)
    assert (tmp_path / "got" / "scheduler_config.json").exists()
    cond = make_unet(4, num_class_embeds=4)
    DDPMPipeline(unet=cond, scheduler=DDPMScheduler()).save_pretrained(root / "me" / "pipe")
    _, loaded = _drain(models.fetch_hub_model("me/pipe", tmp_path / "pipe", base_url=url))
    assert same_weights(loaded.model.unet, cond) and loaded.model.num_classes == 3


def test_the_hub_refuses_what_the_folder_loader_refuses_before_the_weights(tmp_path, hub, tiny_unet):
    root, url = hub
    folder = save_folder(tiny_unet, root / "x" / "custom")
    _edit_json(folder / "config.json", _class_name="UNet2DConditionModel")
    with pytest.raises(BadFileError, match="not a UNet2DModel"):
        _drain(models.fetch_hub_model("x/custom", tmp_path / "c", base_url=url))
    assert not (tmp_path / "c" / "diffusion_pytorch_model.safetensors").exists()
    (root / "x" / "empty").mkdir()
    with pytest.raises(BadFileError, match="no config.json"):
        _drain(models.fetch_hub_model("x/empty", tmp_path / "e", base_url=url))


def test_offline_says_so_and_bad_ids_are_refused(tmp_path):
    from playground.errors import OfflineError, UserError

    with pytest.raises(OfflineError, match="Are you offline"):
        _drain(models.fetch_hub_model("google/ddpm-cifar10-32", tmp_path / "o", base_url="http://127.0.0.1:9",
                                      timeout=2))
    for bad in ("../etc", "google", "a/b/c", "a/.."):
        with pytest.raises(UserError, match="not a hub model id"):
            _drain(models.fetch_hub_model(bad, tmp_path / "o"))
