"""The denoising networks: our small ``UNet2DModel`` configs, and the safe loader for diffusers UNet folders.

The network is diffusers' ``UNet2DModel`` (the DDPM UNet of Ho et al. 2020: residual blocks
with a sinusoidal time embedding added in each, self-attention at the coarser
resolutions, skip connections from each down block to its up block). It takes
``(x_t, t)`` (and, for a class-conditional model, ``class_labels``) and returns
``.sample``, a prediction of the kind its scheduler config names (``prediction_type``).

**Class-conditional models.** ``num_class_embeds = classes + 1``: the last embedding,
``num_class_embeds - 1`` (:func:`null_label`), is the *null class* that classifier-free
guidance trains with (labels dropped) and samples against. Our training script uses this
convention; a conditional UNet2DModel from elsewhere is read the same way.

**Our defaults** (untrained, from :func:`digits_unet` and :func:`faces_unet`; the training
script trains them): 16x16 handwritten digits, one channel, 10 classes plus the null
class; 32x32 RGB faces, unconditional. Both with the cosine schedule
(:data:`DEFAULT_SCHEDULER_CONFIG`) and epsilon prediction.

**External models.** :func:`load_unet_folder` opens a folder as diffusers saves one
(``save_pretrained``, or a hub repository such as google/ddpm-cifar10-32): ``config.json``
plus ``diffusion_pytorch_model.safetensors`` (or only a ``.bin``), flat or under ``unet/``,
with ``scheduler_config.json`` beside it or under ``scheduler/``. diffusers itself never
opens the weights (its ``from_pretrained`` may unpickle a ``.bin``): the model is built
from its config on the "meta" device (no memory), the weights are read through
:mod:`playground.ml.checkpoints` (safetensors, or ``torch.load(weights_only=True)``),
checked key by key and shape by shape, and only then loaded. A folder that brings its own
code (Python files, a custom pipeline or component, ``auto_map`` / ``trust_remote_code``),
a model that is not a ``UNet2DModel`` or a scheduler that is not a DDPM-family one is
refused with one :class:`~playground.errors.BadFileError` sentence.
:func:`fetch_hub_model` downloads such a folder from the Hugging Face hub by its id (only
the files listed above, with progress) and opens it the same way.
"""

from __future__ import annotations

import inspect
import os
import re
import urllib.error
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import BadFileError, OfflineError, UserError
from ...progress import Progress
from .. import checkpoints
from ..download import NETWORK_ERRORS, download
from ..checkpoints import LoadedModel
from .schedules import SCHEDULE_LABELS

KIND = "diffusion-unet"  # the "kind" in our own UNet files' JSON sidecar
FORMAT_FOLDER = "diffusers UNet folder"
FORMAT_OURS = "safetensors"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
BIN_FILES = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")

DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "clip_sample_range": 1.0,
}
"""The scheduler our own models train and sample with: cosine schedule (Nichol & Dhariwal), T = 1000."""

# Schedulers of the discrete DDPM family: a model trained with one samples with any of ours.
COMPATIBLE_SCHEDULERS = (
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
)
_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipeline")


# -- conventions -------------------------------------------------------------------------------------
def num_classes(unet) -> int:
    """The classes a model can be asked for (0: unconditional); the null class is not counted."""
    n = unet.config.get("num_class_embeds") if hasattr(unet.config, "get") else None
    return max(0, int(n) - 1) if n else 0


def null_label(unet) -> int:
    """The class-free-guidance null class: the last class embedding."""
    n = unet.config.get("num_class_embeds")
    if not n:
        raise ValueError("An unconditional model has no null class.")
    return int(n) - 1


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- our defaults --------------------------------------------------------------------------------------
def digits_unet_config(**overrides: Any) -> dict[str, Any]:
    """16x16 one-channel digits, 10 classes + the null class: 1.7 M parameters."""
    config = {
        "sample_size": 16, "in_channels": 1, "out_channels": 1,
        "block_out_channels": (32, 64, 64), "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8, "attention_head_dim": 16, "num_class_embeds": 11,
    }
    config.update(overrides)
    return config


def faces_unet_config(**overrides: Any) -> dict[str, Any]:
    """32x32 RGB faces, unconditional: 6.3 M parameters."""
    config = {
        "sample_size": 32, "in_channels": 3, "out_channels": 3,
        "block_out_channels": (32, 64, 128, 128), "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8, "attention_head_dim": 32,
    }
    config.update(overrides)
    return config


def build_unet(config: Mapping[str, Any], seed: int | None = 0):
    """A fresh ``UNet2DModel`` for ``config`` (initialised from ``seed``, when given)."""
    from diffusers import UNet2DModel

    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return UNet2DModel.from_config(dict(config))
    return UNet2DModel.from_config(dict(config))


def digits_unet(seed: int | None = 0, **overrides: Any):
    return build_unet(digits_unet_config(**overrides), seed)


def faces_unet(seed: int | None = 0, **overrides: Any):
    return build_unet(faces_unet_config(**overrides), seed)


# -- a loaded model -------------------------------------------------------------------------------------
@dataclass
class DiffusionModel:
    """A UNet with the scheduler config it was trained with: what the Diffusion tab samples from."""

    unet: Any
    scheduler_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULER_CONFIG))

    @property
    def resolution(self) -> tuple[int, int]:
        size = self.unet.config.sample_size
        return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def num_classes(self) -> int:
        return num_classes(self.unet)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def schedule_text(self) -> str:
        c = self.scheduler_config
        if c.get("trained_betas") is not None:
            name = "trained betas"
        else:
            name = SCHEDULE_LABELS.get(c.get("beta_schedule", "linear"), str(c.get("beta_schedule")))
        return f"{name}, T = {int(c.get('num_train_timesteps', 1000))}"


def describe(model: DiffusionModel, name: str, source: str = "", format: str = "") -> LoadedModel:  # noqa: A002
    """A diffusion model as the model picker shows it."""
    h, w = model.resolution
    channels = {1: "1 (grey)", 3: "3 (RGB)"}.get(model.channels, str(model.channels))
    details = {
        "Resolution": f"{w}x{h}",
        "Channels": channels,
        "Classes": (f"{model.num_classes} (classifier-free guidance)" if model.conditional else "unconditional"),
        "Prediction": model.prediction_type,
        "Schedule": model.schedule_text,
        "Trained with": str(model.scheduler_config.get("_class_name", "DDPMScheduler")),
    }
    return LoadedModel(model=model, name=name, source=source, format=format,
                       parameters=parameter_count(model.unet), details=details)


# -- building from a config and a state dict, safely ---------------------------------------------------
def _unet_init_keys() -> set[str]:
    from diffusers import UNet2DModel

    return {p for p in inspect.signature(UNet2DModel.__init__).parameters if p != "self"}


def check_unet_config(config: Any, what: str) -> dict[str, Any]:
    """The keys of a UNet2DModel config that the model takes, after the refusals (see the module's notes)."""
    if not isinstance(config, Mapping) or not config:
        raise BadFileError(f"{what} has no model config (config.json).")
    for key in _CODE_KEYS:
        if key in config:
            raise BadFileError(f"{what} needs its own code ({key} in its config), which this app does not run.")
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise BadFileError(f"{what} holds a {cls}, not a UNet2DModel; the Diffusion tab opens UNet2DModel "
                           "(pixel-space) models only.")
    if config.get("class_embed_type") is not None:
        raise BadFileError(f"{what} has class embeddings of the type {config['class_embed_type']!r}; only "
                           "label embeddings (num_class_embeds) can be sampled here.")
    keys = _unet_init_keys()
    return {k: v for k, v in config.items() if k in keys}


def _rename_deprecated_attention(state_dict: dict, expected: Mapping[str, Any]) -> dict:
    """Old diffusers attention names (query, key, value, proj_attn) to today's (to_q, to_k, to_v, to_out.0)."""
    renames = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."))
    out = {}
    for k, v in state_dict.items():
        new = k
        if k not in expected:
            for old, replacement in renames:
                candidate = k.replace(old, replacement)
                if candidate != k and candidate in expected:
                    new = candidate
                    break
        out[new] = v
    return out


def unet_from_state_dict(config: Mapping[str, Any], state_dict: Mapping[str, Any], what: str):
    """A ``UNet2DModel`` built from ``config`` with ``state_dict`` loaded strictly (float32, eval mode).

    The model is built on the "meta" device first, so a config that claims a huge network
    costs nothing before the weights are checked against it.
    """
    from diffusers import UNet2DModel

    config = check_unet_config(config, what)
    try:
        with torch.device("meta"):
            skeleton = UNet2DModel.from_config(config)
    except Exception as exc:  # noqa: BLE001 - a damaged config can fail inside diffusers in many ways
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadFileError(f"{what} has a model config this app cannot build ({first}).") from None
    if not isinstance(state_dict, Mapping):
        raise BadFileError(f"The weights of {what} are a {type(state_dict).__name__}, not a table of tensors.")
    expected = skeleton.state_dict()
    tensors = _rename_deprecated_attention(dict(state_dict), expected)
    checkpoints.check_state_dict(skeleton, tensors, what=what)
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise BadFileError(f"{what}: {key!r} holds {str(value.dtype).replace('torch.', '')} numbers, "
                               "not floating point weights.")
    tensors = {k: v.to(torch.float32) for k, v in tensors.items()}
    model = skeleton.to_empty(device="cpu")
    checkpoints.load_state_dict_strict(model, tensors, what=what)
    return model.eval()


# -- diffusers folders ----------------------------------------------------------------------------------
def _json(path: Path) -> dict:
    """A JSON object from a folder the user gave (size-bounded, through checkpoints); {} when absent."""
    if not path.is_file():
        return {}
    return checkpoints.read_sidecar(path)


def _refuse_code(root: Path, folders: list[Path], what: str) -> None:
    for folder in folders:
        if folder.is_dir():
            code = sorted(p.name for p in folder.iterdir() if p.suffix == ".py")
            if code:
                raise BadFileError(f"{what} brings its own code ({code[0]}), which this app does not run; "
                                   "only plain diffusers UNet2DModel folders can be opened.")
    index = _json(root / "model_index.json")
    for key in _CODE_KEYS:
        if key in index:
            raise BadFileError(f"{what} needs its own code ({key} in model_index.json), which this app does not run.")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library = entry[0]
        if library not in (None, "diffusers", "transformers"):
            raise BadFileError(f"{what} needs its own code (its {name} comes from {library!r}, not diffusers), "
                               "which this app does not run.")


def check_scheduler_config(config: Any, what: str) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise BadFileError(f"The scheduler config of {what} is not a JSON object.")
    for key in _CODE_KEYS:
        if key in config:
            raise BadFileError(f"{what} needs its own code ({key} in its scheduler config), which this app "
                               "does not run.")
    cls = config.get("_class_name", "DDPMScheduler")
    if cls not in COMPATIBLE_SCHEDULERS:
        raise BadFileError(f"{what} was made for the {cls}, which the samplers here (DDPM-family schedules "
                           "of betas) cannot stand in for.")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "sample"):
        raise BadFileError(f"{what} predicts {prediction!r}; only epsilon, v_prediction and sample are known.")
    return dict(config)


def _model_dir(root: Path, what: str) -> Path:
    if (root / "config.json").is_file():
        return root
    if (root / "unet" / "config.json").is_file():
        return root / "unet"
    raise BadFileError(f"{what} is not a diffusers model folder: it has no config.json (nor unet/config.json).")


def _scheduler_config(root: Path, model_dir: Path, what: str) -> tuple[dict[str, Any], bool]:
    """(config, found): the folder's scheduler config, or DDPM's defaults when it has none."""
    for candidate in (model_dir / "scheduler_config.json", root / "scheduler" / "scheduler_config.json",
                      root / "scheduler_config.json"):
        if candidate.is_file():
            return check_scheduler_config(_json(candidate), what), True
    from .samplers import DEFAULT_CONFIG

    return {"_class_name": "DDPMScheduler", **DEFAULT_CONFIG}, False


def _read_folder_weights(model_dir: Path, what: str) -> tuple[dict[str, torch.Tensor], str]:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            tensors, _ = checkpoints.load_weights(model_dir / name)
            return tensors, name
    for name in BIN_FILES:
        if (model_dir / name).is_file():
            return checkpoints.torch_load(model_dir / name), name
    raise BadFileError(f"{what} has no weights: no {WEIGHT_FILES[0]} (nor {BIN_FILES[0]}) beside its config.json.")


def load_unet_folder(path: str | os.PathLike) -> LoadedModel:
    """A diffusers ``UNet2DModel`` folder (see the module's notes), as a :class:`LoadedModel`
    whose model is a :class:`DiffusionModel`."""
    root = Path(path)
    if root.is_file() and root.name in ("config.json", "model_index.json", *WEIGHT_FILES, *BIN_FILES):
        root = root.parent
        if root.name in ("unet", "scheduler") and (root.parent / "model_index.json").is_file():
            root = root.parent
    what = f"The folder {root.name or root}"
    if not root.is_dir():
        raise BadFileError(f"{root.name or root} is not a folder; a diffusers model is a folder with config.json "
                           "and its weights.")
    model_dir = _model_dir(root, what)
    _refuse_code(root, [root, model_dir, root / "scheduler"], what)
    config = _json(model_dir / "config.json")
    check_unet_config(config, what)  # refuse before reading any weights
    scheduler_config, found = _scheduler_config(root, model_dir, what)
    tensors, file_name = _read_folder_weights(model_dir, what)
    unet = unet_from_state_dict(config, tensors, what)
    loaded = describe(DiffusionModel(unet, scheduler_config), name=root.name or str(root), source=str(root),
                      format=FORMAT_FOLDER)
    loaded.details["Weights"] = file_name
    if not found:
        loaded.details["Scheduler"] = "none in the folder: DDPM's linear schedule assumed"
    return loaded


def load_folder_for_picker(path: str) -> Generator[Progress, None, LoadedModel]:
    """The Diffusion tab's loader for a folder the user chose, as a job."""
    yield Progress(None, f"Reading {Path(path).name}")
    return load_unet_folder(path)


# -- our own files ----------------------------------------------------------------------------------------
def save_unet(path: str | os.PathLike, model: DiffusionModel, sidecar_extra: dict | None = None) -> Path:
    """Save ``model`` as ``path`` (.safetensors) plus its JSON: kind, the UNet and scheduler configs,
    and ``sidecar_extra`` (command, seed, ...)."""
    extra = dict(sidecar_extra or {})
    for key in ("kind", "unet_config", "scheduler_config"):
        if key in extra:
            raise ValueError(f"The sidecar key {key!r} is written by save_unet itself.")
    unet_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.unet.config.items()
                   if not k.startswith("_")}
    side = {"kind": KIND, "unet_config": unet_config, "scheduler_config": dict(model.scheduler_config), **extra}
    return checkpoints.save_weights(path, dict(model.unet.state_dict()), side)


def read_unet_file(path: str | os.PathLike) -> DiffusionModel:
    """One of our UNet files (.safetensors + .json from :func:`save_unet`), checked."""
    path = checkpoints.weights_path(Path(path))
    side_name = checkpoints.sidecar_path(path).name
    side = checkpoints.read_sidecar(path)
    if side.get("kind") != KIND:
        raise BadFileError(f"{side_name} does not describe a diffusion UNet (its kind is {side.get('kind')!r}).")
    what = path.name
    scheduler_config = check_scheduler_config(side.get("scheduler_config", {}), what)
    tensors, _ = checkpoints.load_weights(path)
    return DiffusionModel(unet_from_state_dict(side.get("unet_config"), tensors, what), scheduler_config)


# -- the Hugging Face hub ----------------------------------------------------------------------------------
HUB_URL = "https://huggingface.co"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def hub_folder(repo_id: str) -> Path:
    """Where a hub model is kept once downloaded: the app's data folder, ``diffusion-models/owner--name``."""
    from ...paths import data_dir

    return data_dir() / "diffusion-models" / repo_id.replace("/", "--")


def _hub_file(repo_id: str, rel: str, dest: Path, base_url: str, timeout: float):
    """Download one file of a hub repository to ``dest / rel`` (kept when already there); False when absent."""
    target = dest / rel
    if target.is_file() and target.stat().st_size > 0:
        return True
    url = f"{base_url.rstrip('/')}/{repo_id}/resolve/main/{rel}"
    try:
        yield from download(url, target, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        if exc.code in (401, 403):
            raise OfflineError(f"The hub refused {repo_id} (HTTP {exc.code}): the model is private, gated or "
                               "does not exist.") from None
        raise OfflineError(f"Could not download {rel} of {repo_id}: the hub answered HTTP {exc.code}.") from None
    except NETWORK_ERRORS as exc:
        reason = str(getattr(exc, "reason", None) or exc).strip() or type(exc).__name__
        raise OfflineError(f"Could not download {repo_id} from the Hugging Face hub. Are you offline? "
                           f"({reason})") from None
    return True


def fetch_hub_model(repo_id: str, dest: str | os.PathLike | None = None, *, base_url: str = HUB_URL,
                    timeout: float = 20) -> Generator[Progress, None, LoadedModel]:
    """Download a ``UNet2DModel`` from the hub by id (e.g. ``google/ddpm-cifar10-32``) and open it, as a job.

    Only the config, the weights (safetensors; a ``.bin`` only when there is none, read
    weights-only), the scheduler config and ``model_index.json`` are fetched, flat or in the
    pipeline layout (``unet/``, ``scheduler/``); the config is checked before the weights
    are downloaded. Files already downloaded are kept. No network: :class:`OfflineError`.
    """
    repo_id = repo_id.strip()
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UserError(f"{repo_id!r} is not a hub model id (owner/name, e.g. google/ddpm-cifar10-32).")
    dest = Path(dest) if dest is not None else hub_folder(repo_id)
    what = f"The hub model {repo_id}"
    yield Progress(None, f"Looking up {repo_id} on the hub")
    yield from _hub_file(repo_id, "model_index.json", dest, base_url, timeout)
    prefix = ""
    if not (yield from _hub_file(repo_id, "config.json", dest, base_url, timeout)):
        prefix = "unet/"
        if not (yield from _hub_file(repo_id, "unet/config.json", dest, base_url, timeout)):
            raise BadFileError(f"{what} has no config.json (nor unet/config.json): it is not a diffusers UNet.")
    _refuse_code(dest, [dest, dest / "unet"], what)
    check_unet_config(_json(dest / prefix / "config.json"), what)
    scheduler = "scheduler/scheduler_config.json" if prefix else "scheduler_config.json"
    yield from _hub_file(repo_id, scheduler, dest, base_url, timeout)
    if not (yield from _hub_file(repo_id, prefix + WEIGHT_FILES[0], dest, base_url, timeout)):
        if not (yield from _hub_file(repo_id, prefix + BIN_FILES[0], dest, base_url, timeout)):
            raise BadFileError(f"{what} has no {WEIGHT_FILES[0]} (nor {BIN_FILES[0]}).")
    yield Progress(None, f"Reading {repo_id}")
    loaded = load_unet_folder(dest)
    loaded.name = repo_id
    return loaded
