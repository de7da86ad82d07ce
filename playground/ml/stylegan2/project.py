"""Project a picture into a StyleGAN2's W+: find the latent whose image looks like it, so it can be dragged.

As in StyleGAN2's projector (Karras et al. 2020, §5), by optimisation from the average
latent: Adam on ws (here all of W+, one w per layer, as PTI-style editors do), a learning
rate ramped up over the first 5% of the steps and down with a cosine over the last 25%,
and noise added to the latent early on (decaying to zero over the first 75%) so the
search does not settle in the first basin it finds. The loss compares the generated
image with the picture:

    L = || G(w) - x ||^2  (mean over pixels, at every scale of a 3-level image pyramid)
        + beta * || phi(G(w)) - phi(x) ||^2

where phi is the project's own face-feature network (the one the quality figure uses,
trained on the renderer's faces: :mod:`playground.ml.stylegan2.quality`), shipped in
``resources/face-features.safetensors``. Where that file is absent, or the model is not
of that size, only the pyramid term is used (the report says so). The official projector
uses VGG16 perceptual features, which cannot be had offline.

:func:`project` is a generator: it yields :class:`ProjectionStep` (the step, the loss
terms and, every ``preview_every`` steps, the current reconstruction) and returns the
final ws [1, num_ws, w_dim].
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UserError
from ...paths import RESOURCES
from ...progress import Progress

FEATURES_FILE = RESOURCES / "face-features.safetensors"


@dataclass(frozen=True)
class ProjectionStep:
    step: int
    steps: int
    pixel_loss: float
    feature_loss: float  # NaN when no feature network is used
    image: np.ndarray | None  # uint8 (H, W, 3): the current reconstruction, now and then


def picture_to_tensor(picture: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (H, W, 3 or 4 or 1) -> (1, 3, R, R) in [-1, 1]: centre-cropped to a square, resized."""
    from PIL import Image

    arr = np.asarray(picture)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.dtype != np.uint8:
        raise UserError("The picture must be an RGB (or grey) image of 8-bit values.")
    arr = arr[:, :, :3] if arr.shape[2] >= 3 else np.repeat(arr, 3, axis=2)
    h, w = arr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(np.ascontiguousarray(arr[top:top + side, left:left + side]))
    square = square.resize((resolution, resolution), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(square, np.float32)).permute(2, 0, 1)[None]
    return x / 127.5 - 1


def load_picture(path: str | Path, max_pixels: int = 40_000_000) -> np.ndarray:
    """A picture file as uint8 (H, W, 3), refusing one too large to decode (from its header)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > max_pixels:
                raise UserError(f"{Path(path).name} is {im.size[0]}x{im.size[1]} pixels: more than "
                                f"{max_pixels:,}, too large to open here.")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise UserError(f"{Path(path).name} is not a picture that can be read ({exc}).") from None


def load_feature_net(resolution: int):
    """The shipped face-feature network, if there is one for this resolution (else None)."""
    if not FEATURES_FILE.exists():
        return None
    from .. import checkpoints
    from .quality import FaceFeatures

    tensors, side = checkpoints.load_weights(FEATURES_FILE)
    if side.get("resolution") != resolution:
        return None
    net = FaceFeatures(int(side["n_params"]), resolution, int(side.get("width", 32)), int(side.get("n_features", 128)))
    checkpoints.load_state_dict_strict(net, tensors, what="the face-feature network")
    return net.eval().requires_grad_(False)


def _pyramid_loss(a: torch.Tensor, b: torch.Tensor, levels: int = 3) -> torch.Tensor:
    loss = a.new_zeros(())
    for _ in range(levels):
        loss = loss + F.mse_loss(a, b)
        if min(a.shape[-2:]) < 8:
            break
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return loss


def project(G, picture: np.ndarray, steps: int = 300, lr: float = 0.1, feature_weight: float = 1.0,
            noise_ramp: float = 0.75, initial_noise: float = 0.05, preview_every: int = 10, seed: int = 0,
            device: str | torch.device = "cpu", feature_net=None) -> Generator[object, None, torch.Tensor]:
    """Optimise W+ so that G's image matches ``picture`` (uint8 HWC); returns ws [1, num_ws, w_dim] (CPU)."""
    from .train import to_uint8

    if not 1 <= steps <= 100_000:
        raise UserError("The number of projection steps must be from 1 to 100000.")
    device = torch.device(device)
    G = G.to(device).eval().requires_grad_(False)
    yield Progress(0.0, "Preparing the picture")
    target = picture_to_tensor(picture, G.img_resolution).to(device)
    net = feature_net if feature_net is not None else load_feature_net(G.img_resolution)
    target_features = net.features(target) if net is not None else None
    gen = torch.Generator().manual_seed(seed)
    # The average latent, and how far latents spread around it (the scale of the latent noise).
    with torch.no_grad():
        z = torch.randn(2000, G.z_dim, generator=gen).to(device)
        w_samples = G.mapping(z, None)[:, :1]  # [N, 1, w_dim]
    w_avg = w_samples.mean(0, keepdim=True)
    w_std = float(((w_samples - w_avg) ** 2).sum(dim=-1).mean().sqrt())
    ws = w_avg.repeat(1, G.num_ws, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=lr, betas=(0.9, 0.999))
    for step in range(1, steps + 1):
        t = (step - 1) / max(1, steps - 1)
        ramp = min(1.0, (1 - t) / 0.25)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp *= min(1.0, max(t, 1 / steps) / 0.05)  # ramp up over the first 5%
        for group in opt.param_groups:
            group["lr"] = lr * ramp
        noise_scale = w_std * initial_noise * max(0.0, 1 - t / noise_ramp) ** 2
        noisy = ws + torch.randn(ws.shape, generator=gen).to(device) * noise_scale
        img = G.synthesis(noisy, noise_mode="const")
        pixel = _pyramid_loss(img, target)
        loss = pixel
        feature = float("nan")
        if net is not None:
            f = F.mse_loss(net.features(img), target_features)
            loss = loss + feature_weight * f
            feature = float(f.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        preview = None
        if preview_every and (step % preview_every == 0 or step == steps):
            with torch.no_grad():
                preview = to_uint8(G.synthesis(ws, noise_mode="const"))[0]
        yield ProjectionStep(step, steps, float(pixel.detach()), feature, preview)
        yield Progress(step / steps, f"Projecting: step {step}/{steps}, pixel loss {float(pixel.detach()):.4f}")
    return ws.detach().cpu()
