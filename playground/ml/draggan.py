"""Drag points of a StyleGAN2 image: DragGAN and FreeDrag, optimising the latent w.

A *drag* moves handle points p_i of a generated image to target points t_i by changing
the image's latent code, never its pixels: the generator keeps the picture plausible.
Both methods optimise the first 6 of the ``num_ws`` style vectors (the coarse layers,
which decide shape and pose) with Adam and keep the others at their start w0:

* ``space="w+"`` optimises the 6 vectors separately (a ``[1, 6, w_dim]`` parameter);
* ``space="w"`` optimises one vector repeated over the 6 (a ``[1, 1, w_dim]`` parameter).

Both read the feature map F of one synthesis block (b128 by default: the paper's "6th
block", counting b4 as the first; models under 128 px use their highest block), asked of
the generator with ``G.synthesis(ws, feature_block=R, stop_at_feature=True)`` so that the
blocks above R are not computed when no image is needed.

DragGAN (Pan et al., SIGGRAPH 2023, arXiv 2305.10973; the official ``viz/renderer.py``)
------------------------------------------------------------------------------------
F is resized to the image size (bilinear, ``align_corners=False``), so distances are in
image pixels. Radii are given for a 512 px image and scaled with it:
``r = round(r / 512 * size)``, never below 1 pixel (at 64 px the official rounding gives
a radius of 0 and the drag does nothing). One step:

1. **Point tracking** (no gradient). Each handle moves to the pixel, within a square of
   half-size r2 around it, whose feature is nearest to the handle's *initial* feature
   f_i (L2 over channels as the official code; the paper writes L1: ``tracking_norm``).
2. **Stop** when every handle is within ``stop_distance`` of its target
   (``max(2 / 512 * size, 2)`` px: 2 px up to 512, 4 px at 1024).
3. **Motion supervision.** For each handle with ``|t_i - p_i| > 1``, d_i is the unit
   vector toward t_i and Omega_i the pixels q with ``|q - p_i| < r1``::

       L = sum_i mean_{q in Omega_i} |F(q).detach() - F(q + d_i)|
           + lambda * mean |(F - F0) * M|

   F(q + d_i) is sampled bilinearly (``grid_sample``, ``align_corners=True`` as the
   official code). The feature at q + d_i is pulled toward the (fixed) feature at q, so
   the content moves one pixel along d_i. This is the paper's equation; the official
   code writes the same pull the other way round (F(q) toward F(q - d_i).detach()). M is
   1 on the *fixed* area, F0 the features when the run started; the term counts only
   when M has both zeros and ones (as the official code), lambda = 20. (The official
   latent regularisation ``reg * |ws - w0|`` is left out: its weight is 0 and its
   control hidden in the official GUI.)
4. One Adam step on the latent (lr 1e-3; the paper uses 2e-3 for faces: ``FACE_LR``).

FreeDrag (Ling et al., CVPR 2024, arXiv 2307.04684; its official ``functions.py``)
----------------------------------------------------------------------------------
No point tracking: each handle keeps an adaptive feature *template* and a *localised
point* that walks toward the target, in the block's own feature map (b128 pixels; one
image pixel is s = R / size feature pixels). Per handle:

* **Fuzzy localisation.** A feature "at" a point is the 3x3 grid of bilinear samples at
  offsets ``{-3s, 0, +3s}^2`` around it (+-3 image pixels), so it tolerates small errors.
* **Sub-motions.** The localised point moves by at most ``d_max`` = 3 feature pixels at
  a time. At most ``sub_steps`` = 5 Adam steps (lr 2e-3) then pull the features at the
  localised point toward the template (L1), plus ``10 * mean |F - F0|`` over the fixed
  area; a sub-motion ends early once every template loss is below ``l_expected / 4``.
* **Line search** (before each sub-motion, on the features of the previous one), with
  ``l`` = ``l_expected`` (0.3 for faces, cats, horses; 0.4 for lions and elephants in
  the official demo) and the loss L_end measured after the previous sub-motion:

  - L_end < l / 2 (the template was reached): 10 evenly spaced candidates on the way to
    ``min(d_max, remaining)`` further; take the one whose template loss is *closest to l*,
    so that each sub-motion starts with about the same, manageable loss;
  - else, L_end lower than at the start of the sub-motion: stay and keep optimising;
  - else (it got worse): roll back by up to d_max, search twice the range, take the
    candidate with the *lowest* loss.
* **Adaptive template.** After each sub-motion ``T = a * f(localised point) + (1 - a) * T``
  with ``a = 1 / (1 + exp(k (L_end - 0.2 l)))``, ``k = ln 9 / (0.6 l)`` (a = 0.9 at
  L_end = -0.4 l, 0.1 at 0.8 l): a good match refreshes the template, a bad one barely.
* **Stop** for a handle when its localised point is within 1 image pixel of the target
  *and* L_end < l / 4.

The official FreeDrag demo stops after 2000 steps; here both methods share ``max_steps``
(300). Its thresholds are in the units of the model's features: ``l_expected`` is tuned
per model in the official demo. ``l_expected=None`` measures it on the image being
edited instead (:func:`calibrated_l_expected`): a quarter of the mean template loss
between points ``d_max`` apart, which is what a model trained here needs (its features
are about ten times smaller than FFHQ's; 0.3 would end every drag at once).

Choices of ours (documented differences)
----------------------------------------
* Sampling beyond the border repeats the edge feature (``padding_mode="border"``); the
  official code reads zeros there, which pulls a handle at the edge toward zero features.
* The disk Omega uses exact pixel coordinates (the official grid ``linspace(0, h, h)``
  stretches coordinates by h / (h - 1)).
* Reference features (DragGAN's f_i, FreeDrag's templates) are taken when a run starts and
  again for a handle that is added or moved; F0 (the mask's reference) is taken when the
  run starts and when the mask is set (the official code also retakes every reference when
  the number of points changes). The Adam state persists across runs of one session, as in
  the official renderer; :meth:`DragSession.reset` goes back to w0.

Running it
----------
:meth:`DragSession.run` is a generator for the app's job pool: it yields a
:class:`DragStep` after every optimisation step and returns a :class:`DragResult`. The
value of each ``yield`` is ``None`` or a list of commands sent with ``Job.send`` (see
:mod:`playground.jobs`): :class:`MovePoint`, :class:`AddPair`, :class:`RemovePair`,
:class:`SetMask`, :class:`Stop`, :class:`RequestFrame`; they take effect at the next step.
Points are ``(x, y)`` in image pixels (the official code keeps ``[y, x]``).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadFileError, UserError
from .checkpoints import load_weights, save_weights, torch_load

DRAGGAN_LR = 1e-3
FACE_LR = 2e-3  # the paper's Adam rate for FFHQ, AFHQ cats and LSUN cars
FREEDRAG_LR = 2e-3
DRAGGAN_LAMBDA_MASK = 20.0
FREEDRAG_LAMBDA_MASK = 10.0
OPTIMISED_WS = 6  # the first 6 style vectors are optimised, the rest stay at w0
REFERENCE_SIZE = 512  # radii and the stop distance are given for an image of this size
DEFAULT_FEATURE_BLOCK = 128
FREEDRAG_CANDIDATES = 10  # points tried along a sub-motion by the line search
FREEDRAG_WINDOW = 3.0  # image pixels from the centre to the edge of the 3x3 fuzzy window
LATENT_KIND = "drag-latent"  # the "kind" in a saved latent's JSON sidecar

Point = tuple[float, float]


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class DragConfig:
    """Every setting of a drag; the defaults are the official ones.

    ``lr`` and ``lambda_mask`` left at None take the method's own value (DragGAN 1e-3 and
    20, FreeDrag 2e-3 and 10). ``feature_block`` None means 128, or the highest block of a
    model under 128 px; ``stop_distance`` None means ``max(2 / 512 * size, 2)`` pixels.
    ``render_every``: 1 renders the image at every step (it comes out of the same forward
    pass, so it costs only the blocks above the feature block), k > 1 at every k-th step,
    0 only at the end and on :class:`RequestFrame`. ``frame_interval`` > 0 (seconds) replaces
    it with a clock: a picture whenever the last one is that old (the editor asks for 0.1 s,
    ten pictures a second, whatever the speed of the model).
    ``windowed``: on the steps that draw no picture and have no mask, DragGAN computes the
    top blocks' features only in windows around the handles (:func:`window_features`);
    the numbers are the same, the work much less. False always runs the whole network.
    """

    method: Literal["draggan", "freedrag"] = "draggan"
    space: Literal["w+", "w"] = "w+"
    lr: float | None = None
    r1: float = 3.0
    r2: float = 12.0
    lambda_mask: float | None = None
    feature_block: int | None = None
    stop_distance: float | None = None
    max_steps: int = 300
    seed: int = 0
    truncation_psi: float = 0.7
    noise_mode: Literal["const", "random", "none"] = "const"
    tracking_norm: Literal["l2", "l1"] = "l2"
    render_every: int = 1
    frame_interval: float = 0.0
    windowed: bool = True
    # FreeDrag only
    l_expected: float | None = 0.3  # None: calibrated on the image (see the module doc)
    d_max: float = 3.0
    sub_steps: int = 5

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first setting that cannot work."""
        choices = {"method": ("draggan", "freedrag"), "space": ("w+", "w"),
                   "noise_mode": ("const", "random", "none"), "tracking_norm": ("l2", "l1")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"Drag setting {name} must be one of {', '.join(allowed)}, not {value!r}.")
        positive = {"r1": self.r1, "r2": self.r2, "l_expected": self.l_expected, "d_max": self.d_max,
                    "lr": self.lr, "stop_distance": self.stop_distance}
        for name, value in positive.items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"Drag setting {name} must be a positive number, not {value!r}.")
        if self.lambda_mask is not None and not (math.isfinite(self.lambda_mask) and self.lambda_mask >= 0):
            raise UserError(f"The mask weight must be zero or more, not {self.lambda_mask!r}.")
        if self.max_steps < 1 or self.sub_steps < 1 or self.render_every < 0 or not self.frame_interval >= 0:
            raise UserError("Drag steps must be at least 1 and render_every at least 0.")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return FREEDRAG_LR if self.method == "freedrag" else DRAGGAN_LR

    @property
    def mask_weight(self) -> float:
        if self.lambda_mask is not None:
            return self.lambda_mask
        return FREEDRAG_LAMBDA_MASK if self.method == "freedrag" else DRAGGAN_LAMBDA_MASK


def scaled_radius(radius: float, size: int) -> int:
    """A radius given for a 512 px image, for an image of ``size`` px (at least 1 px)."""
    return max(1, round(radius / REFERENCE_SIZE * size))


def default_stop_distance(size: int) -> float:
    """The official stop distance: 2 px up to 512 px images, growing with the size above."""
    return max(2.0 / REFERENCE_SIZE * size, 2.0)


def default_feature_block(G: Any) -> int:
    """b128 (the paper's 6th block), or the highest block of a model under 128 px."""
    resolutions = [int(r) for r in G.synthesis.block_resolutions]
    if DEFAULT_FEATURE_BLOCK in resolutions:
        return DEFAULT_FEATURE_BLOCK
    return max(r for r in resolutions if r < DEFAULT_FEATURE_BLOCK)


# -- commands sent into a running drag ---------------------------------------------------


@dataclass(frozen=True)
class MovePoint:
    """Move handle or target ``index`` to (x, y). A moved handle gets a new reference feature."""

    index: int
    kind: Literal["handle", "target"]
    x: float
    y: float


@dataclass(frozen=True)
class AddPair:
    """Add a handle at (hx, hy) with its target at (tx, ty)."""

    hx: float
    hy: float
    tx: float
    ty: float


@dataclass(frozen=True)
class RemovePair:
    index: int


@dataclass(frozen=True, eq=False)
class SetMask:
    """Replace the mask (both None: no mask). Give the area that may change, or the one that must not.

    Either is a boolean (H, W) array in image pixels; the fixed area keeps the features it
    has when this command is taken.
    """

    mask_flexible: np.ndarray | None = None
    mask_fixed: np.ndarray | None = None


@dataclass(frozen=True)
class Stop:
    """End the run after the current step (reason "stopped")."""


@dataclass(frozen=True)
class RequestFrame:
    """Render the image at the next step (when ``render_every`` skips it), and/or attach a CPU copy of ws."""

    image: bool = True
    ws: bool = False


Command = MovePoint | AddPair | RemovePair | SetMask | Stop | RequestFrame


# -- what a run yields and returns -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DragStep:
    """One optimisation step, as measured on the latent *before* this step's update.

    ``handles`` are the tracked handles (DragGAN) or the localised points (FreeDrag) on
    that latent, ``image`` its picture (uint8 HWC, read-only) when rendered, ``ws`` a CPU
    copy of that latent when asked for with :class:`RequestFrame`. ``mask_loss`` is
    unweighted: ``loss = motion_loss + weight * mask_loss``. ``seconds``: the step's wall
    time. ``r1``, ``r2`` and ``stop_distance`` are the session's, in image pixels.
    """

    step: int
    handles: tuple[Point, ...]
    targets: tuple[Point, ...]
    distances: tuple[float, ...]
    reached: tuple[bool, ...]
    motion_loss: float
    mask_loss: float
    loss: float
    image: np.ndarray | None
    ws: torch.Tensor | None
    seconds: float
    r1: int
    r2: int
    stop_distance: float


@dataclass(frozen=True, eq=False)
class DragResult:
    """The end of a run: the final latent (CPU, [1, num_ws, w_dim]), its image and its handles."""

    ws: torch.Tensor
    image: np.ndarray
    handles: tuple[Point, ...]
    targets: tuple[Point, ...]
    distances: tuple[float, ...]
    steps: int
    reason: Literal["reached", "max_steps", "stopped"]


# -- the pieces of the method, as plain functions (tested one by one) ----------------------------


def initial_ws(G: Any, seed: int, truncation_psi: float = 0.7, device: str | torch.device | None = None
               ) -> torch.Tensor:
    """The start latent of the official code: z from ``RandomState(seed).randn(1, z_dim)``, mapped."""
    device = torch.device(device) if device is not None else _model_device(G)
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float().to(device)
    c = torch.zeros([1, G.c_dim], device=device)
    with torch.no_grad():
        return G.mapping(z, c, truncation_psi=truncation_psi).detach()


def render(G: Any, ws: torch.Tensor, noise_mode: str = "const") -> np.ndarray:
    """The image of latent ``ws`` ([1, num_ws, w_dim], moved to G's device), uint8 (H, W, C), read-only."""
    with torch.no_grad():
        img = G.synthesis(torch.as_tensor(ws, dtype=torch.float32).to(_model_device(G)), noise_mode=noise_mode)
    return to_uint8(img)


def save_latent(path: str | Path, ws: torch.Tensor, sidecar: dict | None = None) -> Path:
    """Save a latent as ``path`` (safetensors, tensor "ws") with a JSON sidecar (seed, model, ...)."""
    tensor = torch.as_tensor(ws).detach().cpu().float()
    return save_weights(path, {"ws": tensor}, {"kind": LATENT_KIND, **(sidecar or {})})


def load_latent(path: str | Path, G: Any | None = None) -> torch.Tensor:
    """A latent ws [1, num_ws, w_dim] (CPU) from our ``.safetensors``, the official GUI's ``.npy``, or a ``.pt``.

    The ``.pt`` form is a PTI latent (a tensor saved by ``torch.save``), read weights-only.
    With ``G`` the shape is checked against the model.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            ws = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        except (ValueError, OSError) as exc:
            raise BadFileError(f"{path.name} is not a readable NumPy latent ({exc}).") from None
    elif suffix in (".pt", ".pth"):
        ws = torch_load(path)
        if not isinstance(ws, torch.Tensor):
            raise BadFileError(f"{path.name} holds a {type(ws).__name__}, not a latent tensor.")
    else:
        tensors, _ = load_weights(path)
        if "ws" not in tensors:
            raise BadFileError(f"{path.name} has no latent (no tensor named ws).")
        ws = tensors["ws"]
    ws = ws.detach().float().cpu()
    if ws.dim() == 2:
        ws = ws.unsqueeze(0)
    expected = None if G is None else (1, int(G.num_ws), int(G.w_dim))
    if ws.dim() != 3 or ws.shape[0] != 1 or (expected is not None and tuple(ws.shape) != expected):
        want = f"; this model needs {expected}" if expected else ""
        raise BadFileError(f"{path.name} holds a latent of shape {tuple(ws.shape)}{want}.")
    return ws


def load_latent_and_render(path: str | Path, G: Any, device: str | torch.device | None = None
                           ) -> tuple[torch.Tensor, np.ndarray]:
    """A job: read a latent for ``G`` and render it; returns (ws on the CPU, uint8 image)."""
    ws = load_latent(path, G)
    return ws, render(G, ws if device is None else ws.to(device))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """A generator image in [-1, 1], (1, C, H, W), as read-only uint8 (H, W, C), rounded as the official code."""
    arr = (img[0].detach() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    arr.setflags(write=False)
    return arr


def upsample_features(feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Features resized to the image's (H, W), bilinear with ``align_corners=False`` as the official code."""
    if tuple(feat.shape[-2:]) == tuple(size):
        return feat
    return F.interpolate(feat, size=size, mode="bilinear", align_corners=False)


def sample_features(feat: torch.Tensor, points_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear features (N, C) of a (1, C, H, W) map at N float (x, y) pixel positions.

    Pixel i sits at ``i`` exactly (``align_corners=True``); beyond the border the edge
    value repeats. Differentiable in ``feat``.
    """
    h, w = feat.shape[-2:]
    gx = points_xy[:, 0] / max(w - 1, 1) * 2 - 1
    gy = points_xy[:, 1] / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).to(feat.dtype).view(1, 1, -1, 2)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0, :].transpose(0, 1)


def pixel_feature(feat: torch.Tensor, point: Point) -> torch.Tensor:
    """The feature (C,) of the pixel nearest to ``point`` (the official reference feature)."""
    h, w = feat.shape[-2:]
    x = min(max(round(point[0]), 0), w - 1)
    y = min(max(round(point[1]), 0), h - 1)
    return feat[0, :, y, x]


def track_points(feat: torch.Tensor, references: Sequence[torch.Tensor], points: Sequence[Point], radius: int,
                 norm: Literal["l2", "l1"] = "l2") -> list[Point]:
    """DragGAN's point tracking: for each point, the pixel within +-radius whose feature is nearest to its reference.

    ``feat`` is (1, C, H, W) in image pixels, ``references`` one (C,) per point. The search
    square is centred on the point's nearest pixel and clipped to the image; ties go to the
    first pixel in row order (as ``torch.min`` in the official code).
    """
    h, w = feat.shape[-2:]
    tracked: list[Point] = []
    with torch.no_grad():
        for (x, y), ref in zip(points, references):
            cx, cy = round(x), round(y)
            top, bottom = max(cy - radius, 0), min(cy + radius + 1, h)
            left, right = max(cx - radius, 0), min(cx + radius + 1, w)
            diff = feat[0, :, top:bottom, left:right] - ref.reshape(-1, 1, 1)
            cost = diff.norm(dim=0) if norm == "l2" else diff.abs().sum(dim=0)
            index = int(torch.argmin(cost.reshape(-1)))
            width = right - left
            tracked.append((float(left + index % width), float(top + index // width)))
    return tracked


def motion_loss(feat: torch.Tensor, points: Sequence[Point], targets: Sequence[Point], r1: int) -> torch.Tensor:
    """DragGAN's motion supervision: pull the features around each handle one pixel toward its target.

    ``feat`` is (1, C, H, W) in image pixels (with grad). A pair whose handle is within
    1 px of its target adds nothing.
    """
    h, w = feat.shape[-2:]
    loss = feat.new_zeros(())
    for (px, py), (tx, ty) in zip(points, targets):
        d = torch.tensor([tx - px, ty - py], dtype=feat.dtype, device=feat.device)
        length = float(d.norm())
        if length <= 1:
            continue
        qs = disk_pixels((px, py), r1, (h, w)).to(feat.device)
        if len(qs) == 0:
            continue
        here = feat[0, :, qs[:, 1], qs[:, 0]].transpose(0, 1).detach()
        ahead = sample_features(feat, qs.to(feat.dtype) + d / length)
        loss = loss + F.l1_loss(ahead, here)
    return loss


def disk_pixels(center: Point, radius: int, size: tuple[int, int]) -> torch.Tensor:
    """Integer pixels (x, y) strictly closer than ``radius`` to ``center``, inside an image of (H, W)."""
    h, w = size
    cx, cy = center
    xs = torch.arange(max(math.floor(cx - radius), 0), min(math.ceil(cx + radius) + 1, w))
    ys = torch.arange(max(math.floor(cy - radius), 0), min(math.ceil(cy + radius) + 1, h))
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    inside = (gx - cx) ** 2 + (gy - cy) ** 2 < radius**2
    return torch.stack([gx[inside], gy[inside]], dim=-1)


def window_reach(r1: int, r2: int) -> int:
    """Image pixels around a handle one DragGAN step reads: the tracking square (r2), then the
    pulled disk (r1) around the tracked point, one pixel ahead, and the bilinear neighbour."""
    return r2 + r1 + 2


def window_features(G: Any, ws: torch.Tensor, feature_block: int, size: tuple[int, int],
                    centres: Sequence[Point], reach: int, noise_mode: str = "const",
                    const_ws_from: int | None = None) -> list[tuple[tuple[int, int], torch.Tensor]]:
    """The features resized to image pixels, only in a square of half-size ``reach`` around each centre.

    Returns ``((x0, y0), F_window)`` per centre: F_window (1, C, h, w) equals
    ``upsample_features(F, size)[..., y0:y0 + h, x0:x0 + w]`` (the square clipped to the
    image), computed from the generator's windowed synthesis, so that tracking and motion
    supervision in the window see the numbers the whole map would give them.
    """
    h, w = size
    scale_y, scale_x = feature_block / h, feature_block / w
    boxes, feature_boxes = [], []
    for x, y in centres:
        cx, cy = round(x), round(y)
        x0, x1 = max(cx - reach, 0), min(cx + reach + 1, w)
        y0, y1 = max(cy - reach, 0), min(cy + reach + 1, h)
        boxes.append((x0, y0, x1, y1))
        # The feature pixels bilinear resizing reads for image pixels i in [i0, i1):
        # source (i + 0.5) * scale - 0.5, clamped at 0, and the pixel after its floor.
        fx0 = max(math.floor((x0 + 0.5) * scale_x - 0.5), 0)
        fx1 = min(math.floor((x1 - 0.5) * scale_x - 0.5) + 2, feature_block)
        fy0 = max(math.floor((y0 + 0.5) * scale_y - 0.5), 0)
        fy1 = min(math.floor((y1 - 0.5) * scale_y - 0.5) + 2, feature_block)
        feature_boxes.append((fx0, fy0, fx1, fy1))
    crops = G.synthesis.feature_windows(ws, feature_block, feature_boxes, noise_mode=noise_mode,
                                        const_ws_from=const_ws_from)
    views = []
    for (x0, y0, x1, y1), (fx0, fy0, _fx1, _fy1), crop in zip(boxes, feature_boxes, crops):
        if feature_block == h == w:
            views.append(((x0, y0), crop[:, :, y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0]))
            continue
        xs = ((torch.arange(x0, x1, dtype=crop.dtype, device=crop.device) + 0.5) * scale_x - 0.5).clamp(min=0) - fx0
        ys = ((torch.arange(y0, y1, dtype=crop.dtype, device=crop.device) + 0.5) * scale_y - 0.5).clamp(min=0) - fy0
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        ch, cw = crop.shape[-2:]
        grid = torch.stack([gx / max(cw - 1, 1) * 2 - 1, gy / max(ch - 1, 1) * 2 - 1], dim=-1).unsqueeze(0)
        views.append(((x0, y0), F.grid_sample(crop, grid, mode="bilinear", padding_mode="border",
                                              align_corners=True)))
    return views


def mask_loss(feat: torch.Tensor, feat0: torch.Tensor, mask_fixed: torch.Tensor) -> torch.Tensor:
    """DragGAN's mask term ``mean |(F - F0) * M|`` over the image (M = 1 where the image must stay).

    ``feat`` and ``feat0`` may be at the block's own resolution: their difference is resized
    to the mask's size (resizing is linear, so this equals the official resize-then-subtract
    without keeping a full-size copy of F0).
    """
    diff = upsample_features(feat - feat0, tuple(mask_fixed.shape[-2:]))
    return (diff.abs() * mask_fixed.to(diff.dtype)).mean()


def fuzzy_offsets(scale: float) -> torch.Tensor:
    """FreeDrag's 3x3 window: offsets (9, 2) of -+3 image pixels, in feature pixels (``scale`` per image pixel)."""
    k = torch.linspace(-FREEDRAG_WINDOW * scale, FREEDRAG_WINDOW * scale, 3)
    gy, gx = torch.meshgrid(k, k, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)


def fuzzy_feature(feat: torch.Tensor, point: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """FreeDrag's feature of a point: the (9, C) bilinear samples of its window."""
    return sample_features(feat, point.reshape(1, 2) + offsets)


def calibrated_l_expected(feat: torch.Tensor, offsets: torch.Tensor, d_max: float, points: int = 64,
                          seed: int = 0) -> float:
    """FreeDrag's ``l_expected`` for this model: a quarter of the mean template (fuzzy L1) loss
    between a point and one ``d_max`` feature pixels away, over points of the central half of
    the map in random directions (a fixed seed, so a session always gets the same value)."""
    g = torch.Generator().manual_seed(seed)
    h, w = feat.shape[-2:]
    size = torch.tensor([w, h], dtype=torch.float32)
    start = (0.25 + 0.5 * torch.rand(points, 2, generator=g)) * (size - 1)
    angle = 2 * math.pi * torch.rand(points, generator=g)
    end = start + d_max * torch.stack([angle.cos(), angle.sin()], dim=1)
    with torch.no_grad():
        a = sample_features(feat, (start.unsqueeze(1) + offsets.cpu().unsqueeze(0)).reshape(-1, 2).to(feat.device))
        b = sample_features(feat, (end.unsqueeze(1) + offsets.cpu().unsqueeze(0)).reshape(-1, 2).to(feat.device))
    return max(float((a - b).abs().mean()) / 4, 1e-6)


def template_weight(loss_end: float, l_expected: float) -> float:
    """FreeDrag's template update weight: 1 / (1 + exp(k (L - 0.2 l))), k = ln 9 / (0.6 l)."""
    k = math.log(9.0) / (0.6 * l_expected)
    return 1.0 / (1.0 + math.exp(min(k * (loss_end - 0.2 * l_expected), 60.0)))


def line_search(feat: torch.Tensor, current: torch.Tensor, target: torch.Tensor, template: torch.Tensor,
                offsets: torch.Tensor, loss_start: float, loss_end: float, l_expected: float,
                d_max: float) -> torch.Tensor:
    """FreeDrag's next localised point (feature pixels, (2,)) for one handle; see the module doc."""
    remaining = float((target - current).norm())
    if loss_end < 0.5 * l_expected:
        reach = min(d_max / (remaining + 1e-8), 1.0)
        goal_closest_to = l_expected
    elif loss_end < loss_start:
        return current
    else:  # it got worse: step back, then search twice as far
        current = current - min(d_max / (remaining + 1e-8), 1.0) * (target - current)
        remaining = float((target - current).norm())
        reach = min(2 * d_max / (remaining + 1e-8), 1.0)
        goal_closest_to = 0.0
    end = current + reach * (target - current)
    fractions = torch.arange(1, FREEDRAG_CANDIDATES + 1, dtype=current.dtype, device=current.device)
    candidates = current + (fractions / FREEDRAG_CANDIDATES).unsqueeze(1) * (end - current)
    with torch.no_grad():
        windows = (candidates.unsqueeze(1) + offsets.unsqueeze(0)).reshape(-1, 2)
        samples = sample_features(feat, windows).reshape(len(candidates), -1)
        losses = (samples - template.reshape(1, -1)).abs().mean(dim=1)
    return candidates[int(torch.argmin((losses - goal_closest_to).abs()))].clone()


# -- the session ---------------------------------------------------------------------------


class _Pair:
    """One handle and its target, with what each method remembers about it."""

    def __init__(self, handle: Point, target: Point) -> None:
        self.handle = (float(handle[0]), float(handle[1]))  # image px; FreeDrag: the localised point
        self.target = (float(target[0]), float(target[1]))
        self.reference: torch.Tensor | None = None  # DragGAN f_i / FreeDrag template; None = take it now
        self.loss_start = 0.0  # FreeDrag: template loss at the first step of the sub-motion
        self.loss_end = 0.0  # FreeDrag: template loss after the sub-motion
        self.done = False  # FreeDrag: localised at the target with a good match

    def distance(self) -> float:
        return math.hypot(self.target[0] - self.handle[0], self.target[1] - self.handle[1])


class _RunState:
    """The pairs, the mask and the requests of one run, changed by the commands the GUI sends."""

    def __init__(self, size: tuple[int, int], handles: Sequence[Point], targets: Sequence[Point],
                 mask_flexible: np.ndarray | None, mask_fixed: np.ndarray | None) -> None:
        self.size = size
        if len(handles) != len(targets):
            raise UserError(f"Each handle needs a target: {len(handles)} handles, {len(targets)} targets.")
        if not handles:
            raise UserError("Add at least one handle and its target before dragging.")
        self.pairs = [_Pair(self.checked(h), self.checked(t)) for h, t in zip(handles, targets)]
        self.flexible = self.checked_mask(mask_flexible, mask_fixed)
        self.mask_changed = True
        self.stop = False
        self.want_image = False
        self.want_ws = False
        self.last_image_at = time.perf_counter()  # the editor shows the start picture already

    def checked(self, point: Sequence[float]) -> Point:
        h, w = self.size
        x, y = float(point[0]), float(point[1])
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            raise UserError(f"The point ({x:g}, {y:g}) is outside the {w}x{h} image.")
        return x, y

    def checked_mask(self, flexible: np.ndarray | None, fixed: np.ndarray | None) -> np.ndarray | None:
        """The flexible area as a boolean (H, W) array, from whichever of the two was given."""
        if flexible is not None and fixed is not None:
            raise UserError("Give the flexible area or the fixed area of the mask, not both.")
        mask = flexible if flexible is not None else fixed
        if mask is None:
            return None
        mask = np.asarray(mask).astype(bool)
        if mask.shape != self.size:
            raise UserError(f"The mask has shape {mask.shape}; it must be the image's {self.size[0]}x{self.size[1]}.")
        return mask if flexible is not None else ~mask

    def apply(self, commands: list[Any] | None) -> bool:
        """Take the commands sent since the last step. Returns True if the points or the mask changed."""
        changed = False
        for command in commands or ():
            if isinstance(command, MovePoint):
                pair = self.pair(command.index)
                if command.kind == "handle":
                    pair.handle = self.checked((command.x, command.y))
                    pair.reference = None
                elif command.kind == "target":
                    pair.target = self.checked((command.x, command.y))
                else:
                    raise UserError(f"A point is a handle or a target, not {command.kind!r}.")
                pair.done = False
                changed = True
            elif isinstance(command, AddPair):
                self.pairs.append(_Pair(self.checked((command.hx, command.hy)), self.checked((command.tx, command.ty))))
                changed = True
            elif isinstance(command, RemovePair):
                self.pairs.remove(self.pair(command.index))
                changed = True
            elif isinstance(command, SetMask):
                self.flexible = self.checked_mask(command.mask_flexible, command.mask_fixed)
                self.mask_changed = True
                changed = True
            elif isinstance(command, Stop):
                self.stop = True
            elif isinstance(command, RequestFrame):
                self.want_image |= command.image
                self.want_ws |= command.ws
            else:
                raise TypeError(f"Not a drag command: {command!r}")
        return changed

    def pair(self, index: int) -> _Pair:
        if not 0 <= index < len(self.pairs):
            raise UserError(f"There is no point pair {index} (there are {len(self.pairs)}).")
        return self.pairs[index]


def _model_device(G: Any) -> torch.device:
    for tensor in list(G.parameters()) + list(G.buffers()):
        return tensor.device
    return torch.device("cpu")


class DragSession:
    """One image being edited: the generator, the settings, the latent and its optimiser.

    Start from ``ws0`` ([1, num_ws, w_dim], e.g. a saved latent) or, when it is None, from
    ``config.seed`` and ``config.truncation_psi`` (:func:`initial_ws`). The generator must
    already be on ``device`` (default: where its weights are). Its weights are frozen
    (``requires_grad_(False)``): only the latent is optimised, and on a CPU the backward
    pass takes about half as long when it does not compute the weights' gradients too.
    """

    def __init__(self, G: Any, config: DragConfig | None = None, ws0: torch.Tensor | np.ndarray | None = None,
                 device: str | torch.device | None = None) -> None:
        self.G = G
        self.config = config or DragConfig()
        self.config.validate()
        G.requires_grad_(False)
        self.device = torch.device(device) if device is not None else _model_device(G)
        self.image_size = (int(G.img_resolution), int(G.img_resolution))
        size = self.image_size[0]
        if self.config.feature_block is None:
            self.feature_block = default_feature_block(G)
        elif self.config.feature_block in [int(r) for r in G.synthesis.block_resolutions]:
            self.feature_block = int(self.config.feature_block)
        else:
            raise UserError(f"This model has no {self.config.feature_block} px block; its blocks are "
                            f"{', '.join(str(r) for r in G.synthesis.block_resolutions)}.")
        self.r1 = scaled_radius(self.config.r1, size)
        self.r2 = scaled_radius(self.config.r2, size)
        self.stop_distance = self.config.stop_distance or default_stop_distance(size)
        if ws0 is None:
            ws0 = initial_ws(G, self.config.seed, self.config.truncation_psi, self.device)
        ws0 = torch.as_tensor(ws0, dtype=torch.float32).detach().to(self.device)
        if ws0.dim() == 2:
            ws0 = ws0.unsqueeze(0)
        if tuple(ws0.shape) != (1, G.num_ws, G.w_dim):
            raise UserError(f"The latent has shape {tuple(ws0.shape)}; this model needs (1, {G.num_ws}, {G.w_dim}).")
        self.w0 = ws0.clone()
        self.n_optimised = min(OPTIMISED_WS, int(G.num_ws))
        self.reset()

    # -- the latent ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the start latent w0, with a fresh optimiser."""
        start = self.w0[:, : self.n_optimised] if self.config.space == "w+" else self.w0[:, :1]
        self.latent = start.clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.latent], lr=self.config.learning_rate)

    def current_ws(self) -> torch.Tensor:
        """The full [1, num_ws, w_dim] latent the generator sees (with grad to :attr:`latent`)."""
        head = self.latent if self.config.space == "w+" else self.latent.expand(-1, self.n_optimised, -1)
        return torch.cat([head, self.w0[:, self.n_optimised:]], dim=1)

    @property
    def ws(self) -> torch.Tensor:
        """A detached copy of the current latent, on the session's device."""
        return self.current_ws().detach().clone()

    def render(self) -> np.ndarray:
        """The current image, uint8 (H, W, C)."""
        with torch.no_grad():
            img, _ = self._synthesise(self.current_ws(), with_image=True)
        return to_uint8(img)

    def _synthesise(self, ws: torch.Tensor, with_image: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        # Our synthesis network can be told that the ws past the optimised ones are constants
        # (no gradient is kept for them: ~10% less work a step); a stand-in generator need not know.
        extra = {}
        if "const_ws_from" in inspect.signature(self.G.synthesis.forward).parameters:
            extra["const_ws_from"] = self.n_optimised
        return self.G.synthesis(ws, noise_mode=self.config.noise_mode, feature_block=self.feature_block,
                                stop_at_feature=not with_image, **extra)

    def _wants_image(self, state: _RunState, step: int) -> bool:
        if state.want_image:
            return True
        if self.config.frame_interval > 0:
            return time.perf_counter() - state.last_image_at >= self.config.frame_interval
        every = self.config.render_every
        return every > 0 and step % every == 0

    def _can_window(self) -> bool:
        return self.config.windowed and hasattr(self.G.synthesis, "feature_windows")

    def _update(self, state: _RunState, loss: torch.Tensor) -> torch.Tensor | None:
        """One Adam step; returns a CPU copy of the latent from before it when the GUI asked for one."""
        before = self.ws.cpu() if state.want_ws else None
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward(inputs=[self.latent])
            self.optimizer.step()
        return before

    def _drag_step(self, state: _RunState, step: int, points: Sequence[Point], reached: Sequence[bool],
                   losses: tuple[float, float, float], img: torch.Tensor | None, ws: torch.Tensor | None,
                   t0: float) -> DragStep:
        state.want_image = state.want_ws = False
        if img is not None:
            state.last_image_at = time.perf_counter()
        targets = tuple(p.target for p in state.pairs)
        distances = tuple(math.hypot(t[0] - p[0], t[1] - p[1]) for p, t in zip(points, targets))
        return DragStep(step=step, handles=tuple(points), targets=targets, distances=distances,
                        reached=tuple(reached), motion_loss=losses[0], mask_loss=losses[1], loss=losses[2],
                        image=None if img is None else to_uint8(img), ws=ws, seconds=time.perf_counter() - t0,
                        r1=self.r1, r2=self.r2, stop_distance=self.stop_distance)

    def _result(self, state: _RunState, steps: int, reason: str, img: torch.Tensor | None) -> DragResult:
        if img is None:
            with torch.no_grad():
                img, _ = self._synthesise(self.current_ws(), with_image=True)
        points = tuple(p.handle for p in state.pairs)
        targets = tuple(p.target for p in state.pairs)
        return DragResult(ws=self.ws.cpu(), image=to_uint8(img), handles=points, targets=targets,
                          distances=tuple(p.distance() for p in state.pairs), steps=steps, reason=reason)

    # -- a run -------------------------------------------------------------------------------------
    def run(self, handles: Sequence[Point], targets: Sequence[Point], mask_flexible: np.ndarray | None = None, *,
            mask_fixed: np.ndarray | None = None) -> Generator[DragStep, list[Any] | None, DragResult]:
        """Drag ``handles`` to ``targets`` ((x, y) image pixels); yields a :class:`DragStep` per step.

        The mask is optional: the area that may change (``mask_flexible``, the third
        argument: what the editor's brush paints) or, by keyword, the one that must stay
        (``mask_fixed``); a boolean (H, W) array. The value of each yield may be a list of
        commands (see the module doc).
        """
        state = _RunState(self.image_size, handles, targets, mask_flexible, mask_fixed)
        if self.config.method == "freedrag":
            return (yield from self._run_freedrag(state))
        return (yield from self._run_draggan(state))

    def _run_draggan(self, state: _RunState) -> Generator[DragStep, list[Any] | None, DragResult]:
        cfg = self.config
        feat0: torch.Tensor | None = None
        mask_fixed: torch.Tensor | None = None
        state.mask_changed = True  # read the mask (and take F0 if there is one) at the first step
        reach = window_reach(self.r1, self.r2)
        step = 0
        while True:
            t0 = time.perf_counter()
            last = state.stop or step >= cfg.max_steps or not state.pairs
            with torch.set_grad_enabled(not last):
                if state.mask_changed:
                    flexible = state.flexible
                    mask_fixed = None
                    if flexible is not None and flexible.any() and not flexible.all():
                        mask_fixed = torch.from_numpy(~flexible).to(self.device, torch.float32)
                    feat0 = None
                    state.mask_changed = False
                with_image = last or self._wants_image(state, step)
                if mask_fixed is None and not with_image and self._can_window():
                    # Only the windows around the handles: the same features, a fraction of the work.
                    img = None
                    views = window_features(self.G, self.current_ws(), self.feature_block, self.image_size,
                                            [p.handle for p in state.pairs], reach, cfg.noise_mode, self.n_optimised)
                else:
                    img, feat = self._synthesise(self.current_ws(), with_image=with_image)
                    if mask_fixed is not None and feat0 is None:
                        feat0 = feat.detach()
                    views = [((0, 0), upsample_features(feat, self.image_size))] * len(state.pairs)
                # Point tracking on this latent: new handles take their reference here and stay.
                for pair, ((ox, oy), fu) in zip(state.pairs, views):
                    local = (pair.handle[0] - ox, pair.handle[1] - oy)
                    if pair.reference is None:
                        pair.reference = pixel_feature(fu.detach(), local).clone()
                    else:
                        tx, ty = track_points(fu.detach(), [pair.reference], [local], self.r2, cfg.tracking_norm)[0]
                        pair.handle = (tx + ox, ty + oy)
                reached = [p.distance() <= self.stop_distance for p in state.pairs]
                if state.pairs and all(reached):
                    return self._result(state, step, "reached", img)
                if last:
                    return self._result(state, step, "max_steps" if step >= cfg.max_steps else "stopped", img)
                points = [p.handle for p in state.pairs]
                loss_motion = sum((motion_loss(fu, [(p.handle[0] - ox, p.handle[1] - oy)],
                                               [(p.target[0] - ox, p.target[1] - oy)], self.r1)
                                   for p, ((ox, oy), fu) in zip(state.pairs, views)), views[0][1].new_zeros(()))
                loss_mask = mask_loss(feat, feat0, mask_fixed) if mask_fixed is not None else loss_motion.new_zeros(())
                loss = loss_motion + cfg.mask_weight * loss_mask
            ws = self._update(state, loss)
            step += 1
            losses = (float(loss_motion.detach()), float(loss_mask.detach()), float(loss.detach()))
            commands = yield self._drag_step(state, step, points, reached, losses, img, ws, t0)
            state.apply(commands)

    def _run_freedrag(self, state: _RunState) -> Generator[DragStep, list[Any] | None, DragResult]:
        cfg = self.config
        scale = self.feature_block / self.image_size[0]  # feature pixels per image pixel
        offsets = fuzzy_offsets(scale).to(self.device)

        def to_feature(point: Point) -> torch.Tensor:
            return torch.tensor(point, dtype=torch.float32, device=self.device) * scale

        def to_image(point: torch.Tensor) -> Point:
            return float(point[0]) / scale, float(point[1]) / scale

        with torch.no_grad():
            _, feat_map = self._synthesise(self.current_ws(), with_image=False)
        feat0 = feat_map
        l_exp = cfg.l_expected if cfg.l_expected is not None else calibrated_l_expected(feat_map, offsets, cfg.d_max)
        fixed: torch.Tensor | None = None
        step = 0
        while True:
            # New or moved handles take their template from the latest features.
            for pair in state.pairs:
                if pair.reference is None:
                    pair.reference = fuzzy_feature(feat_map, to_feature(pair.handle), offsets)
                    pair.loss_start = pair.loss_end = 0.0
            if state.mask_changed:
                feat0, fixed = feat_map, self._freedrag_fixed(state.flexible)
                state.mask_changed = False
            if not state.pairs or state.stop:
                return self._result(state, step, "stopped", None)
            if all(p.done for p in state.pairs):
                return self._result(state, step, "reached", None)
            if step >= cfg.max_steps:
                return self._result(state, step, "max_steps", None)
            for pair in state.pairs:
                if not pair.done:
                    point = line_search(feat_map, to_feature(pair.handle), to_feature(pair.target), pair.reference,
                                        offsets, pair.loss_start, pair.loss_end, l_exp, cfg.d_max)
                    pair.handle = self._clamped(to_image(point))

            # One sub-motion: a few steps pulling the features at the localised points toward the templates.
            for sub in range(cfg.sub_steps):
                t0 = time.perf_counter()
                img, feat = self._synthesise(self.current_ws(), with_image=self._wants_image(state, step))
                per_point = torch.stack([
                    F.l1_loss(fuzzy_feature(feat, to_feature(p.handle), offsets), p.reference) for p in state.pairs])
                loss_motion = per_point.sum()
                if fixed is not None:
                    loss_mask = (feat - feat0).abs().permute(0, 2, 3, 1)[0][fixed].mean()
                else:
                    loss_mask = feat.new_zeros(())
                loss = loss_motion + cfg.mask_weight * loss_mask
                ws = self._update(state, loss)
                step += 1
                if sub == 0:
                    for pair, value in zip(state.pairs, per_point.tolist()):
                        pair.loss_start = value
                points = [p.handle for p in state.pairs]
                losses = (float(loss_motion.detach()), float(loss_mask.detach()), float(loss.detach()))
                reached = [p.done for p in state.pairs]
                commands = yield self._drag_step(state, step, points, reached, losses, img, ws, t0)
                if state.apply(commands) or state.stop:
                    break
                if float(per_point.detach().max()) < 0.25 * l_exp or step >= cfg.max_steps:
                    break
            if state.stop:
                return self._result(state, step, "stopped", None)

            # Measure the sub-motion, update the templates, and see who has arrived.
            with torch.no_grad():
                _, feat_map = self._synthesise(self.current_ws(), with_image=False)
                for pair in state.pairs:
                    if pair.reference is None:
                        continue  # added or moved during the sub-motion: starts afresh above
                    here = fuzzy_feature(feat_map, to_feature(pair.handle), offsets)
                    pair.loss_end = float(F.l1_loss(here, pair.reference))
                    pair.done = pair.distance() < 1.0 and pair.loss_end < 0.25 * l_exp
                    weight = 1.0 if pair.done else template_weight(pair.loss_end, l_exp)
                    pair.reference = weight * here + (1 - weight) * pair.reference

    def _freedrag_fixed(self, flexible: np.ndarray | None) -> torch.Tensor | None:
        """FreeDrag's fixed area at the feature resolution: pixels the resized flexible area does not touch."""
        if flexible is None or not flexible.any():
            return None
        mask = torch.from_numpy(flexible.astype(np.float32)).to(self.device).view(1, 1, *flexible.shape)
        resized = F.interpolate(mask, size=(self.feature_block, self.feature_block), mode="bilinear",
                                align_corners=False)
        fixed = resized[0, 0] <= 0
        return fixed if bool(fixed.any()) else None

    def _clamped(self, point: Point) -> Point:
        h, w = self.image_size
        return min(max(point[0], 0.0), w - 1.0), min(max(point[1], 0.0), h - 1.0)
