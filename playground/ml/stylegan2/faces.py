"""Procedural cartoon faces: the training set of the default StyleGAN2 that the Drag tab ships.

Nothing is downloaded: every face is drawn from a short vector of parameters (head shape and
pose, skin tone, eyes, brows, nose, mouth, hair, glasses, ears, background, clothes). The
drawing is vectorised numpy: every shape is a field over the pixel grid of a whole batch of
faces at once, and its edge is anti-aliased analytically (the coverage of a pixel is read off
the field's value divided by its gradient), so faces are smooth at 64 and 128 pixels without
rendering larger first. Rendering is deterministic: the same parameters always give the same
image, so a data set is fully defined by its seed.

Coordinates: the image spans [-1, 1] on both axes, y pointing down. Each face has its own
*local* frame (the head centred at the origin, before its tilt, scale and offset), in which all
features are laid out; a pixel is mapped into that frame by the inverse of the face's
similarity transform. Because the transform is a similarity, a pixel has the same size
everywhere in the local frame, which keeps the anti-aliasing exact for distance fields.

Parameters are all normalised to [0, 1]; a categorical one (hair style, hair colour, iris
colour, glasses, frame shape) stores ``index / (count - 1)``, read back by rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from playground.progress import Progress

PARAM_NAMES: list[str] = [
    # head shape and pose
    "head_width",
    "head_height",
    "jaw",  # 0: round, broad jaw; 1: narrow, pointed chin
    "head_x",
    "head_y",
    "tilt",
    "scale",
    # skin and light
    "skin_tone",  # 0: lightest, 1: darkest
    "light_x",  # where the light comes from, left to right
    "ear_size",
    # eyes
    "eye_size",
    "eye_spacing",
    "eye_height",
    "gaze_x",
    "gaze_y",
    "iris_color",  # categorical, see _IRIS_COLORS
    # eyebrows
    "brow_thickness",
    "brow_angle",  # 0: inner ends down (cross), 1: inner ends up (worried)
    "brow_height",
    # nose
    "nose_length",
    "nose_width",
    # mouth
    "mouth_width",
    "smile",  # 0: frown, 0.5: straight, 1: broad smile
    "mouth_open",  # below ~0.35 closed; above, opens showing the inside and teeth
    # hair
    "hair_style",  # categorical, see HAIR_STYLES
    "hair_color",  # categorical, see _HAIR_COLORS
    "hair_volume",
    # glasses
    "glasses",  # categorical: 0 none, 1 on
    "glasses_shape",  # categorical: 0 round, 1 square
    # surroundings
    "bg_hue",
    "bg_light",
    "bg_gradient",
    "shirt_hue",
]
"""The meaning of each column of a parameter array, in order."""

NUM_PARAMS = len(PARAM_NAMES)
_P = {name: i for i, name in enumerate(PARAM_NAMES)}

HAIR_STYLES: list[str] = ["bald", "short", "long", "fringe"]

# Colours are sRGB in [0, 1]. Skin tones run from very light to very dark and are interpolated.
_SKIN_TONES = np.array(
    [
        [0.99, 0.87, 0.78],
        [0.95, 0.78, 0.66],
        [0.87, 0.65, 0.51],
        [0.74, 0.52, 0.37],
        [0.56, 0.37, 0.25],
        [0.37, 0.24, 0.16],
    ],
    dtype=np.float32,
)
_HAIR_COLORS = np.array(
    [
        [0.07, 0.06, 0.06],  # black
        [0.22, 0.14, 0.09],  # dark brown
        [0.43, 0.28, 0.16],  # brown
        [0.62, 0.27, 0.12],  # auburn
        [0.86, 0.71, 0.43],  # blond
        [0.68, 0.67, 0.67],  # grey
    ],
    dtype=np.float32,
)
_IRIS_COLORS = np.array(
    [
        [0.40, 0.24, 0.11],  # brown
        [0.20, 0.12, 0.06],  # dark brown
        [0.50, 0.42, 0.18],  # hazel
        [0.28, 0.50, 0.30],  # green
        [0.28, 0.50, 0.78],  # blue
        [0.50, 0.57, 0.62],  # grey
    ],
    dtype=np.float32,
)
_CATEGORIES: dict[str, int] = {
    "hair_style": len(HAIR_STYLES),
    "hair_color": len(_HAIR_COLORS),
    "iris_color": len(_IRIS_COLORS),
    "glasses": 2,
    "glasses_shape": 2,
}
# How often each category comes up in random_params (the rest are uniform).
_CATEGORY_WEIGHTS: dict[str, list[float]] = {
    "hair_style": [0.12, 0.34, 0.30, 0.24],
    "glasses": [0.72, 0.28],
}

_SCLERA = np.array([0.96, 0.95, 0.93], dtype=np.float32)
_PUPIL = np.array([0.04, 0.03, 0.03], dtype=np.float32)
_MOUTH_INSIDE = np.array([0.30, 0.07, 0.08], dtype=np.float32)
_TEETH = np.array([0.97, 0.95, 0.90], dtype=np.float32)
_FRAME = np.array([0.09, 0.08, 0.08], dtype=np.float32)
_LENS = np.array([0.80, 0.90, 1.00], dtype=np.float32)


# --------------------------------------------------------------------------- parameters


def random_params(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random faces as a float32 array (n, NUM_PARAMS), every value in [0, 1].

    Continuous parameters are uniform; categories are drawn with the weights above so that,
    for instance, about a quarter of the faces wear glasses. Only ``rng`` is used, so the same
    generator state always gives the same faces.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    params = rng.random((n, NUM_PARAMS), dtype=np.float64).astype(np.float32)
    for name, count in _CATEGORIES.items():
        weights = _CATEGORY_WEIGHTS.get(name)
        p = None if weights is None else np.asarray(weights) / np.sum(weights)
        index = rng.choice(count, size=n, p=p)
        params[:, _P[name]] = index / (count - 1)
    return params


def category(params: np.ndarray, name: str) -> np.ndarray:
    """The integer category index of parameter ``name`` for each row of ``params`` (n, P)."""
    count = _CATEGORIES[name]
    values = np.clip(np.asarray(params, dtype=np.float32)[..., _P[name]], 0.0, 1.0)
    return np.rint(values * (count - 1)).astype(np.int64)


def _lerp(lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    return (lo + (hi - lo) * t).astype(np.float32)


def _palette(colors: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Colours (n, 3) interpolated along ``colors`` (k, 3) at positions ``t`` in [0, 1]."""
    pos = t * (len(colors) - 1)
    i = np.clip(np.floor(pos).astype(np.int64), 0, len(colors) - 2)
    f = (pos - i)[:, None]
    return (colors[i] * (1 - f) + colors[i + 1] * f).astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) hue, saturation, value in [0, 1] to (n, 3) RGB."""
    k = np.array([5.0, 3.0, 1.0], dtype=np.float32)
    kk = (k[None, :] + h[:, None] * 6.0) % 6.0
    c = np.clip(np.minimum(kk, 4.0 - kk), 0.0, 1.0)
    return (v[:, None] - v[:, None] * s[:, None] * c).astype(np.float32)


def _decode(params: np.ndarray) -> dict[str, np.ndarray]:
    """Turn normalised parameters into geometry (local units) and colours, one entry per face.

    Both the renderer and :func:`landmarks` read positions from here, so the landmarks are
    exactly where the features are drawn.
    """
    p = np.clip(np.asarray(params, dtype=np.float32), 0.0, 1.0)
    if p.ndim != 2 or p.shape[1] != NUM_PARAMS:
        raise ValueError(f"face parameters must have shape (n, {NUM_PARAMS}), got {p.shape}")

    def col(name: str) -> np.ndarray:
        return p[:, _P[name]]

    d: dict[str, np.ndarray] = {}
    # Pose: the face's similarity transform from the local frame to the image.
    d["cx"] = _lerp(-0.09, 0.09, col("head_x"))
    d["cy"] = _lerp(0.02, 0.14, col("head_y"))
    d["angle"] = _lerp(-0.22, 0.22, col("tilt"))
    d["scale"] = _lerp(0.98, 1.16, col("scale"))
    # Head: an egg whose lower half narrows towards the chin.
    d["a"] = _lerp(0.40, 0.50, col("head_width"))
    d["b"] = _lerp(0.54, 0.64, col("head_height"))
    d["jaw_taper"] = _lerp(0.05, 0.32, col("jaw"))
    d["jaw_power"] = _lerp(2.9, 2.0, col("jaw"))
    d["skin"] = _palette(_SKIN_TONES, col("skin_tone"))
    d["light"] = _lerp(-1.0, 1.0, col("light_x"))
    d["ear"] = _lerp(0.8, 1.25, col("ear_size"))
    # Eyes: centres at (+-ex, ey), almond-ish ellipses with semi-axes (erx, ery).
    d["erx"] = _lerp(0.065, 0.100, col("eye_size"))
    d["ery"] = d["erx"] * 0.62
    d["ex"] = d["a"] * _lerp(0.34, 0.46, col("eye_spacing"))
    d["ey"] = _lerp(-0.10, 0.02, col("eye_height"))
    d["gx"] = _lerp(-1.0, 1.0, col("gaze_x"))
    d["gy"] = _lerp(-1.0, 1.0, col("gaze_y"))
    d["iris"] = _IRIS_COLORS[category(p, "iris_color")]
    # Brows: a slightly arched stroke above each eye.
    d["brow_t"] = _lerp(0.012, 0.040, col("brow_thickness"))
    d["brow_slope"] = _lerp(-0.45, 0.45, col("brow_angle"))
    d["brow_y"] = d["ey"] - _lerp(0.085, 0.16, col("brow_height"))
    # Nose: the tip below the eyes, nostrils either side of it.
    d["nose_y"] = d["ey"] + _lerp(0.15, 0.26, col("nose_length"))
    d["nose_w"] = _lerp(0.035, 0.075, col("nose_width"))
    # Mouth: between the nose tip and the chin.
    d["mouth_y"] = d["nose_y"] + 0.42 * (d["b"] * (1 - 0.5 * d["jaw_taper"]) - d["nose_y"])
    d["mouth_w"] = _lerp(0.10, 0.24, col("mouth_width"))
    d["smile"] = _lerp(-0.045, 0.075, col("smile"))
    d["mouth_open"] = np.clip((col("mouth_open") - 0.35) / 0.65, 0.0, 1.0) * 0.11
    # Hair.
    d["hair_style"] = category(p, "hair_style")
    d["hair"] = _HAIR_COLORS[category(p, "hair_color")]
    d["hair_vol"] = _lerp(0.03, 0.11, col("hair_volume"))
    # Glasses.
    d["glasses"] = category(p, "glasses").astype(np.float32)
    d["square"] = category(p, "glasses_shape").astype(np.float32)
    # Background and clothes.
    d["bg"] = _hsv_to_rgb(col("bg_hue"), np.full_like(col("bg_hue"), 0.35), _lerp(0.45, 0.92, col("bg_light")))
    d["bg_grad"] = _lerp(-0.35, 0.35, col("bg_gradient"))
    d["shirt"] = _hsv_to_rgb(col("shirt_hue"), np.full_like(col("shirt_hue"), 0.55), _lerp(0.35, 0.75, col("bg_light")))
    return d


# --------------------------------------------------------------------------- drawing helpers


def _cover_field(field: np.ndarray) -> np.ndarray:
    """Pixel coverage of ``field < 0`` for any smooth implicit field (not a distance).

    The distance to the edge in pixels is estimated as the field divided by its gradient
    measured on the pixel grid itself, which needs no analytic derivative.
    """
    gy, gx = np.gradient(field, axis=(1, 2))
    grad = np.sqrt(gx * gx + gy * gy)
    grad += 1e-6
    return np.clip(0.5 - field / grad, 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an ellipse centred at the origin (exact on circles)."""
    qx = x / rx
    qy = y / ry
    k0 = np.sqrt(qx * qx + qy * qy)
    k1 = np.sqrt((qx / rx) ** 2 + (qy / ry) ** 2)
    k1 += 1e-6
    return k0 * (k0 - 1.0) / k1


# --------------------------------------------------------------------------- rendering


def render_faces(params: np.ndarray | Sequence[int], size: int = 64) -> np.ndarray:
    """Draw faces: uint8 (n, size, size, 3).

    ``params`` is a float array (n, NUM_PARAMS) from :func:`random_params`, or a 1-D sequence of
    integer seeds (seed ``s`` gives the face ``random_params(np.random.default_rng(s), 1)``).
    Faces are drawn a few at a time so that the working arrays stay small enough for the cache;
    each face's pixels depend on its own parameters only, whatever else is in the batch.
    """
    if size < 8:
        raise ValueError(f"faces need at least 8x8 pixels, got {size}")
    array = np.asarray(params)
    if array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
        rows = [random_params(np.random.default_rng(int(seed)), 1) for seed in array]
        array = np.concatenate(rows) if rows else np.zeros((0, NUM_PARAMS), np.float32)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != NUM_PARAMS:
        raise ValueError(f"face parameters must have shape (n, {NUM_PARAMS}), got {array.shape}")
    out = np.empty((len(array), size, size, 3), dtype=np.uint8)
    chunk = max(1, (1 << 16) // (size * size))  # about 64k pixels per pass
    for start in range(0, len(array), chunk):
        out[start : start + chunk] = _render_chunk(array[start : start + chunk], size)
    return out


def render_face(params_row: np.ndarray, size: int = 64) -> np.ndarray:
    """One face, uint8 (size, size, 3), from a parameter row (NUM_PARAMS,)."""
    row = np.asarray(params_row, dtype=np.float32).reshape(1, -1)
    return render_faces(row, size)[0]


@dataclass
class _Canvas:
    """What every drawing step needs: the colour planes, the faces' geometry and the pixel grid.

    ``x``, ``y`` are each pixel's position in its face's local frame (n, H, W); ``px`` is the
    size of one pixel in that frame (n, 1, 1); per-face values are shaped (n, 1, 1) by ``g``.
    """

    img: np.ndarray  # (3, n, H, W) float32 colour planes, painted back to front
    d: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    px: np.ndarray

    def __post_init__(self) -> None:
        self.ax = np.abs(self.x)  # features come in mirrored pairs
        self.n = self.img.shape[1]

    def g(self, name: str) -> np.ndarray:
        """Per-face value ``name`` shaped (n, 1, 1) to broadcast over the grid."""
        return self.d[name][:, None, None]

    def flat(self, rgb: np.ndarray) -> np.ndarray:
        """One colour (3,) for every face: (n, 3)."""
        return np.repeat(np.asarray(rgb, dtype=np.float32)[None], self.n, axis=0)

    def shaded(self, name: str, shade: np.ndarray | float) -> list[np.ndarray]:
        """Per-face colour ``name`` (n, 3) times a per-pixel ``shade``: three planes."""
        return [self.d[name][:, c, None, None] * shade for c in range(3)]

    def paint(self, alpha: np.ndarray, color: np.ndarray | Sequence[np.ndarray]) -> None:
        """Blend ``color`` over the picture with coverage ``alpha`` (n, H, W).

        ``color`` is (n, 3), a flat colour per face, or three per-pixel planes.
        """
        for c in range(3):
            cc = color[:, c, None, None] if isinstance(color, np.ndarray) else color[c]
            self.img[c] += alpha * (cc - self.img[c])

    @cached_property
    def hair(self) -> list[np.ndarray]:
        """The hair colour with a faint texture of streaks fanning out from the crown.

        The streaks are coarse enough (about 3 pixels apart at 64 px) not to alias.
        """
        streak = 1.0 + 0.06 * np.sin(np.arctan2(self.x, self.y + self.g("b") * 1.2) * 26.0)
        return self.shaded("hair", streak)

    def cover(self, dist: np.ndarray, soft: float = 1.0) -> np.ndarray:
        """Coverage of ``dist < 0`` for a signed distance in local units; ``soft`` widens the edge."""
        return np.clip(0.5 - dist / (self.px * soft), 0.0, 1.0)


def _render_chunk(params: np.ndarray, size: int) -> np.ndarray:
    """Draw a few faces at once, back to front, and quantise to uint8 (n, size, size, 3)."""
    d = _decode(params)
    n = len(params)
    axis = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    u = axis[None, None, :]
    v = axis[None, :, None]
    # Each pixel in its face's local frame: undo the offset, then the tilt and scale.
    angle, scale = d["angle"][:, None, None], d["scale"][:, None, None]
    du = u - d["cx"][:, None, None]
    dv = v - d["cy"][:, None, None]
    cos, sin = np.cos(angle), np.sin(angle)
    x = (cos * du + sin * dv) / scale
    y = (cos * dv - sin * du) / scale
    cv = _Canvas(np.empty((3, n, size, size), dtype=np.float32), d, x, y, np.float32(2.0 / size) / scale)

    # Background: a flat colour with a vertical gradient and a soft vignette.
    shade_bg = 1.0 + cv.g("bg_grad") * v - 0.12 * (u * u + v * v)
    for c in range(3):
        cv.img[c] = d["bg"][:, c, None, None] * shade_bg

    # Shoulders stay level whatever the tilt (a frame without the rotation).
    x0, y0 = du / scale, dv / scale
    cv.paint(cv.cover(_ellipse(x0, y0 - (cv.g("b") + 0.56), np.float32(1.0), np.float32(0.50))), d["shirt"])
    _draw_back_hair(cv)
    # The neck turns half as much as the head.
    half_cos, half_sin = np.cos(angle * 0.5), np.sin(angle * 0.5)
    xn = half_cos * x0 + half_sin * y0
    yn = half_cos * y0 - half_sin * x0
    neck_w = cv.g("a") * 0.46
    neck = np.maximum(np.abs(xn) - neck_w, np.maximum(0.1 - yn, yn - (cv.g("b") + 0.45)))
    cv.paint(cv.cover(neck), cv.shaded("skin", 0.80 - 0.1 * (xn / neck_w) * cv.g("light")))

    _draw_ears(cv)
    head_cov = _draw_head(cv)
    _draw_front_hair(cv)
    _draw_brows(cv)
    _draw_eyes(cv)
    _draw_nose(cv)
    _draw_mouth(cv, head_cov)
    _draw_glasses(cv)

    rgb = np.clip(cv.img, 0.0, 1.0)
    rgb *= 255.0
    rgb += 0.5
    return np.moveaxis(rgb.astype(np.uint8), 0, -1)


def _style(cv: _Canvas, name: str) -> np.ndarray:
    """1.0 for the faces whose hair style is ``name``, else 0.0, shaped (n, 1, 1)."""
    return (cv.g("hair_style") == HAIR_STYLES.index(name)).astype(np.float32)


def _draw_back_hair(cv: _Canvas) -> None:
    """Long hair behind the head, falling onto the shoulders (cut straight at the bottom)."""
    a, b, vol = cv.g("a"), cv.g("b"), cv.g("hair_vol")
    back = np.maximum(_ellipse(cv.x, cv.y + 0.05, a + vol + 0.05, b + vol + 0.10), cv.y - (b + 0.35))
    cv.paint(cv.cover(back) * _style(cv, "long"), cv.hair)


def _draw_ears(cv: _Canvas) -> None:
    """Ears at eye level on both sides, half hidden by the head, with a darker hollow."""
    size = cv.g("ear")
    ear_x = cv.g("a") * 0.97 + 0.02 * size
    ear_y = cv.g("ey") + 0.07
    ear = _ellipse(cv.ax - ear_x, cv.y - ear_y, 0.06 * size, 0.10 * size)
    cv.paint(cv.cover(ear), cv.shaded("skin", 0.86 + 0.10 * np.sign(cv.x) * cv.g("light")))
    hollow = _ellipse(cv.ax - ear_x - 0.012, cv.y - ear_y, 0.025 * size, 0.06 * size)
    cv.paint(cv.cover(hollow) * 0.35, cv.shaded("skin", 0.55))


def _draw_head(cv: _Canvas) -> np.ndarray:
    """The face: an egg whose lower half is a superellipse narrowing to the chin, softly shaded.

    Returns the head's coverage, for the features that must stay on the skin.
    """
    a, b, light = cv.g("a"), cv.g("b"), cv.g("light")
    yb = cv.y / b
    lower = np.clip(yb, 0.0, 1.0)
    half_w = a * (1.0 - cv.g("jaw_taper") * lower * lower)
    power = np.where(cv.y > 0, cv.g("jaw_power"), np.float32(2.0))
    field = (np.abs(cv.x / half_w) ** power + np.abs(yb) ** power) ** (1.0 / power) - 1.0
    cover = _cover_field(field)
    # Radial shading: lit from the light's side, darker towards the rim and the chin.
    rim = np.clip(field + 1.0, 0.0, 1.0)
    shade = 1.08 - 0.28 * rim * rim * rim + 0.10 * light * cv.x / a - 0.06 * lower
    cv.paint(cover, cv.shaded("skin", shade))
    # A faint warm blush on the cheeks.
    cheek = _ellipse(cv.ax - a * 0.55, cv.y - (cv.g("ey") + 0.17), np.float32(0.09), np.float32(0.06))
    cv.paint(np.clip(-cheek / 0.06, 0.0, 1.0) * 0.18 * cover, cv.flat([0.85, 0.35, 0.35]))
    return cover


def _draw_front_hair(cv: _Canvas) -> None:
    """Hair over the head: a cap above a hairline whose shape depends on the style.

    Short hair leaves the forehead bare with the temples coming down; a fringe comes low and
    straight (a little wavy) over the forehead; long hair parts in the middle and also falls in
    front of the ears.
    """
    a, b, vol, ey = cv.g("a"), cv.g("b"), cv.g("hair_vol"), cv.g("ey")
    short, fringe, long_ = _style(cv, "short"), _style(cv, "fringe"), _style(cv, "long")
    x, y = cv.x, cv.y
    xa = np.abs(x / a)
    line_short = -0.70 * b + 0.65 * b * xa**4
    line_fringe = -0.30 * b + 0.012 * np.sin(x * 55.0) + 1.5 * b * np.clip(xa - 0.55, 0.0, 1.0)
    line_long = -0.58 * b + 0.22 * b * xa + 3.6 * b * np.clip(xa - 0.72, 0.0, 1.0)
    hairline = short * line_short + fringe * line_fringe + long_ * line_long
    hairline = np.minimum(hairline, ey + 0.08 - 0.12 * short)  # short hair stays above the ears
    cap = _ellipse(x, y + 0.02, a + vol, b + vol * 0.8)
    cover = cv.cover(np.maximum(cap, (y - hairline) * 0.5)) * (1.0 - _style(cv, "bald"))
    crown = 1.0 + 0.12 * np.clip(-(y + b * 0.6) * 2.0, 0.0, 1.0)  # light falls on the crown
    cv.paint(cover, [plane * crown for plane in cv.hair])
    side = _ellipse(cv.ax - (a + vol * 0.3), y - (ey + 0.12), 0.10 + vol * 0.5, np.float32(0.36))
    cv.paint(cv.cover(side) * long_, cv.hair)


def _draw_brows(cv: _Canvas) -> None:
    """Eyebrows: an arched stroke per eye whose inner end is lifted or lowered by the angle,
    thinning towards the outer end."""
    half = cv.g("erx") * 1.15
    along = cv.ax - cv.g("ex")  # from the eye's centre outwards, for both brows at once
    q = along / half  # -1 at the inner end, 1 at the outer end
    centre = cv.g("brow_y") + cv.g("brow_slope") * q * half * 0.6 - 0.035 * (1.0 - q * q)
    thickness = cv.g("brow_t") * (1.0 - 0.35 * np.clip(q, 0.0, 1.0))
    dist = np.maximum(np.abs(cv.y - centre) - thickness, np.abs(along) - half)
    cv.paint(cv.cover(dist) * 0.95, (cv.d["hair"] * 0.85 + 0.03).astype(np.float32))


def _draw_eyes(cv: _Canvas) -> None:
    """Eyes: the white, the iris (moved by the gaze, clipped by the white), the pupil, a glint
    and a dark upper lid."""
    rx, ry = cv.g("erx"), cv.g("ery")
    lx = cv.ax - cv.g("ex")  # both eyes in one mirrored field
    ly = cv.y - cv.g("ey")
    white = _ellipse(lx, ly, rx, ry)
    white_cov = cv.cover(white)
    cv.paint(white_cov, cv.flat(_SCLERA))
    iris_r = ry * 0.98
    # The gaze moves both irises the same way in the image, so mirror it for the mirrored field.
    ix = lx - cv.g("gx") * (rx - iris_r) * 0.9 * np.sign(cv.x)
    iy = ly - cv.g("gy") * ry * 0.30
    r = np.sqrt(ix * ix + iy * iy)
    iris_cov = cv.cover(r - iris_r) * white_cov
    cv.paint(iris_cov, cv.d["iris"])
    cv.paint(cv.cover(r - iris_r * 0.72) * iris_cov * 0.25, cv.flat(_PUPIL))  # darker inner ring
    cv.paint(cv.cover(r - iris_r * 0.45) * white_cov, cv.flat(_PUPIL))
    gx, gy = ix - iris_r * 0.35, iy + iris_r * 0.35
    cv.paint(cv.cover(np.sqrt(gx * gx + gy * gy) - iris_r * 0.22) * white_cov * 0.9, cv.flat(_SCLERA))
    lid = np.maximum(np.abs(white) - 0.010, ly * 0.5 - 0.004)
    cv.paint(cv.cover(lid) * 0.9, cv.flat(_PUPIL + 0.08))


def _draw_nose(cv: _Canvas) -> None:
    """Nose: a soft shadow down the side away from the light, the shaded tip and two nostrils."""
    ny, nw, light = cv.g("nose_y"), cv.g("nose_w"), cv.g("light")
    dark = (cv.d["skin"] * 0.62).astype(np.float32)
    side = -np.sign(light) * nw * 0.8
    band = np.maximum(np.abs(cv.x - side) - 0.010, np.maximum(cv.g("ey") + 0.04 - cv.y, cv.y - ny))
    cv.paint(cv.cover(band, soft=3.0) * 0.35 * np.abs(light), dark)
    tip = _ellipse(cv.x, cv.y - ny + 0.01, nw * 1.05, nw * 0.75)
    underside = np.clip((cv.y - ny + 0.01) / (nw * 0.75), 0.0, 1.0)  # only the tip's lower half
    cv.paint(cv.cover(tip, soft=2.0) * underside * 0.4, dark)
    nostril = _ellipse(cv.ax - nw * 0.62, cv.y - ny, nw * 0.42, nw * 0.28)
    cv.paint(cv.cover(nostril) * 0.75, (cv.d["skin"] * 0.40).astype(np.float32))


def _draw_mouth(cv: _Canvas, head_cov: np.ndarray) -> None:
    """Mouth: lips around a curved line; opened, a dark inside showing the upper teeth.

    The curve is a parabola whose corners rise with the smile; opening lowers the lower lip
    most in the middle.
    """
    w, smile, opening = cv.g("mouth_w"), cv.g("smile"), cv.g("mouth_open")
    q = np.clip(cv.x / w, -1.0, 1.0)
    bulge = 1.0 - q * q
    centre = cv.g("mouth_y") + smile * (bulge - 0.5)
    upper = centre - opening * 0.25 * bulge
    lower = centre + opening * bulge
    ends = cv.ax - w
    lip_col = (cv.d["skin"] * np.array([0.82, 0.55, 0.55], dtype=np.float32)).astype(np.float32)
    lips = np.maximum(np.maximum(upper - 0.018 - cv.y, cv.y - lower - 0.030 * bulge - 0.006), ends)
    cv.paint(cv.cover(lips) * 0.85 * head_cov, lip_col)
    inside_cov = cv.cover(np.maximum(np.maximum(upper - cv.y, cv.y - lower), ends)) * head_cov
    cv.paint(inside_cov, cv.flat(_MOUTH_INSIDE))
    teeth = np.maximum(cv.y - (upper + 0.40 * (lower - upper)), cv.ax - w * 0.78)
    cv.paint(cv.cover(teeth) * inside_cov, cv.flat(_TEETH))
    line = np.maximum(np.abs(cv.y - upper) - 0.007, ends)
    cv.paint(cv.cover(line) * 0.9 * head_cov, (lip_col * 0.45).astype(np.float32))


def _draw_glasses(cv: _Canvas) -> None:
    """Glasses: round or square rims around the eyes, a bridge, the arms and a faint lens tint."""
    if not np.any(cv.d["glasses"]):
        return
    on, square = cv.g("glasses"), cv.g("square")
    ex, radius = cv.g("ex"), cv.g("erx") * 1.55
    lx, ly = cv.ax - ex, cv.y - cv.g("ey") + 0.005
    circle = np.sqrt(lx * lx + ly * ly) - radius
    qx, qy = np.abs(lx) - radius, np.abs(ly) - radius * 0.78
    box = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2) + np.minimum(np.maximum(qx, qy), 0.0)
    lens = circle + square * (box - circle)
    cv.paint(cv.cover(lens) * on * 0.18, cv.flat(_LENS))
    rim = np.abs(lens) - 0.011
    bridge = np.maximum(np.abs(ly + radius * 0.25) - 0.010, cv.ax - (ex - radius * 0.9))
    arm_span = np.maximum(ex + radius * 0.9 - cv.ax, cv.ax - cv.g("a") * 1.02)  # from the rim to the head's side
    arm = np.maximum(np.abs(ly + radius * 0.35) - 0.009, arm_span)
    cv.paint(cv.cover(np.minimum(np.minimum(rim, bridge), arm)) * on, cv.flat(_FRAME))


# --------------------------------------------------------------------------- landmarks


LANDMARK_NAMES: list[str] = [
    "left_eye", "right_eye", "left_pupil", "right_pupil", "left_brow", "right_brow",
    "nose_tip", "mouth_left", "mouth_right", "mouth_center", "chin",
]  # fmt: skip
"""Landmarks that :func:`landmarks` returns; left and right as seen in the image."""


def landmarks(params: np.ndarray, size: int = 64) -> dict[str, np.ndarray]:
    """Where the features of each face are, in pixels: name -> float32 (n, 2) of (x, y).

    Pixel (0, 0) is the centre of the top-left pixel. These are the ground truth for drag
    edits on the procedural faces (e.g. "move the left mouth corner up by 5 pixels").
    """
    d = _decode(np.atleast_2d(params))
    ex, ey = d["ex"], d["ey"]
    gaze_x = d["gx"] * (d["erx"] - d["ery"] * 0.98) * 0.9
    gaze_y = d["gy"] * d["ery"] * 0.30
    corner_y = d["mouth_y"] - d["smile"] * 0.5
    local = {
        "left_eye": (-ex, ey),
        "right_eye": (ex, ey),
        "left_pupil": (-ex + gaze_x, ey + gaze_y),
        "right_pupil": (ex + gaze_x, ey + gaze_y),
        "left_brow": (-ex, d["brow_y"] - 0.035),
        "right_brow": (ex, d["brow_y"] - 0.035),
        "nose_tip": (np.zeros_like(ex), d["nose_y"]),
        "mouth_left": (-d["mouth_w"], corner_y),
        "mouth_right": (d["mouth_w"], corner_y),
        "mouth_center": (np.zeros_like(ex), d["mouth_y"] + d["smile"] * 0.5 + d["mouth_open"] * 0.375),
        "chin": (np.zeros_like(ex), d["b"]),
    }
    cos, sin, s = np.cos(d["angle"]), np.sin(d["angle"]), d["scale"]
    out = {}
    for name in LANDMARK_NAMES:
        lx, ly = local[name]
        u = d["cx"] + s * (cos * lx - sin * ly)
        v = d["cy"] + s * (sin * lx + cos * ly)
        out[name] = np.stack([(u + 1.0) * 0.5 * size - 0.5, (v + 1.0) * 0.5 * size - 0.5], axis=1).astype(np.float32)
    return out


# --------------------------------------------------------------------------- data set


class FaceDataset:
    """``n`` procedural faces of ``size`` pixels, fully determined by ``seed``.

    The parameters are drawn up front (cheap); the images are rendered lazily in fixed chunks
    the first time they are needed, so training can start at once, and the chunks never depend
    on the order of access: the same seed always gives the same images. :meth:`prepare` renders
    what is left while yielding progress, for a job that wants everything up front.

    A chunk holds about 256k pixels (64 faces at 64 px, 16 at 128 px): a few tens of
    milliseconds of drawing, so :meth:`prepare` yields often enough to be cancelled at once.
    """

    def __init__(self, size: int = 64, n: int = 20000, seed: int = 0) -> None:
        if n < 1:
            raise ValueError(f"a face data set needs at least one face, got n={n}")
        self.size = int(size)
        self.seed = int(seed)
        self.params = random_params(np.random.default_rng(self.seed), int(n))
        self.chunk = max(8, (1 << 18) // (self.size * self.size))
        self._images = np.zeros((int(n), self.size, self.size, 3), dtype=np.uint8)  # pages are touched only when drawn
        self._done = np.zeros((int(n) + self.chunk - 1) // self.chunk, dtype=bool)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.params)

    def _ensure(self, chunks: np.ndarray) -> None:
        """Draw the chunks numbered ``chunks`` that are not drawn yet (safe from several threads)."""
        for k in chunks:
            if self._done[k]:
                continue
            with self._lock:
                if self._done[k]:
                    continue
                lo, hi = k * self.chunk, min((k + 1) * self.chunk, len(self))
                self._images[lo:hi] = render_faces(self.params[lo:hi], self.size)
                self._done[k] = True

    def prepare(self) -> Generator[Progress, None, FaceDataset]:
        """Render every face not rendered yet, yielding progress after each chunk; returns self."""
        total = len(self._done)
        for k in range(total):
            self._ensure(np.array([k]))
            yield Progress((k + 1) / total, f"Drawing faces: {min((k + 1) * self.chunk, len(self))}/{len(self)}")
        return self

    @property
    def images(self) -> np.ndarray:
        """All faces, uint8 (n, size, size, 3) (renders what is missing first)."""
        self._ensure(np.flatnonzero(~self._done))
        return self._images

    def batch(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """The faces at ``indices`` as float32 (len, 3, size, size) in [-1, 1], ready for a GAN."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"face index out of range for a data set of {len(self)}")
        idx = idx % len(self)
        self._ensure(np.unique(idx // self.chunk))
        pixels = self._images[idx].transpose(0, 3, 1, 2).astype(np.float32)
        pixels *= 1.0 / 127.5
        pixels -= 1.0
        return pixels


def preview_grid(n: int = 16, size: int = 64, seed: int = 0, gap: int = 2) -> np.ndarray:
    """``n`` random faces side by side in a near-square grid, uint8 (H, W, 3), for docs."""
    faces = render_faces(random_params(np.random.default_rng(seed), n), size)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * size + (rows + 1) * gap, cols * size + (cols + 1) * gap, 3), 255, dtype=np.uint8)
    for i, face in enumerate(faces):
        r, c = divmod(i, cols)
        top, left = gap + r * (size + gap), gap + c * (size + gap)
        grid[top : top + size, left : left + size] = face
    return grid
