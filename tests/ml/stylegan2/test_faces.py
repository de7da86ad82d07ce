"""The procedural faces: shapes, reproducibility, and that every parameter shows in the picture."""

from __future__ import annotations

import time

import numpy as np
import pytest

from playground.ml.stylegan2 import faces
from playground.ml.stylegan2.faces import (
    LANDMARK_NAMES,
    NUM_PARAMS,
    PARAM_NAMES,
    FaceDataset,
    landmarks,
    preview_grid,
    random_params,
    render_face,
    render_faces,
)
from playground.progress import Progress


def _face(**values: float) -> np.ndarray:
    """A fixed, ordinary face (short hair, glasses on, mouth open) with some values changed."""
    row = np.full(NUM_PARAMS, 0.5, dtype=np.float32)
    defaults = {"hair_style": 1 / 3, "glasses": 1.0, "mouth_open": 0.8, "light_x": 0.8}
    for name, value in {**defaults, **values}.items():
        row[PARAM_NAMES.index(name)] = value
    return row


def _dark(img: np.ndarray, level: int = 70) -> np.ndarray:
    return img.astype(int).sum(axis=-1) < 3 * level


def test_random_params_are_normalised_reproducible_and_categorical():
    p = random_params(np.random.default_rng(5), 500)
    assert p.shape == (500, NUM_PARAMS) and p.dtype == np.float32
    assert len(PARAM_NAMES) == NUM_PARAMS == len(set(PARAM_NAMES))
    assert p.min() >= 0.0 and p.max() <= 1.0
    np.testing.assert_array_equal(p, random_params(np.random.default_rng(5), 500))
    assert not np.array_equal(p, random_params(np.random.default_rng(6), 500))
    styles = p[:, PARAM_NAMES.index("hair_style")]
    assert set(np.round(styles * 3, 5)) == {0, 1, 2, 3}  # every style, stored as index / 3
    glasses = p[:, PARAM_NAMES.index("glasses")]
    assert set(glasses) == {0.0, 1.0} and 0.1 < glasses.mean() < 0.5
    assert np.ptp(p[:, PARAM_NAMES.index("skin_tone")]) > 0.9  # continuous ones cover the range


def test_render_shapes_dtypes_and_ranges():
    p = random_params(np.random.default_rng(0), 5)
    for size in (64, 128):
        imgs = render_faces(p, size)
        assert imgs.shape == (5, size, size, 3) and imgs.dtype == np.uint8
        assert imgs.std() > 20  # a picture, not a flat colour
    one = render_face(p[2], 64)
    assert one.shape == (64, 64, 3) and one.dtype == np.uint8
    assert render_faces(np.zeros((0, NUM_PARAMS), np.float32), 32).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError):
        render_faces(np.zeros((2, NUM_PARAMS + 1), np.float32), 64)
    with pytest.raises(ValueError):
        render_faces(p, 4)


def test_a_face_does_not_depend_on_the_rest_of_its_batch():
    p = random_params(np.random.default_rng(1), 40)
    batch = render_faces(p, 64)
    np.testing.assert_array_equal(batch[17], render_face(p[17], 64))
    np.testing.assert_array_equal(batch[3:9], render_faces(p[3:9], 64))


def test_seeds_instead_of_parameters():
    from_seeds = render_faces([3, 11], 32)
    rows = np.concatenate([random_params(np.random.default_rng(s), 1) for s in (3, 11)])
    np.testing.assert_array_equal(from_seeds, render_faces(rows, 32))
    assert not np.array_equal(from_seeds[0], from_seeds[1])


def test_a_256_face_batch_renders_and_reports_its_rate():
    p = random_params(np.random.default_rng(2), 256)
    start = time.perf_counter()
    imgs = render_faces(p, 64)
    rate = len(p) / (time.perf_counter() - start)
    print(f"\nrendered {len(p)} faces at 64 px: {rate:.0f} faces/s")
    assert imgs.shape == (256, 64, 64, 3)
    # Nearly all the random faces differ from each other.
    flat = imgs.reshape(256, -1)
    assert len(np.unique(flat, axis=0)) == 256


@pytest.mark.parametrize("name", PARAM_NAMES)
def test_every_parameter_changes_the_picture(name):
    low, high = render_face(_face(**{name: 0.1}), 64), render_face(_face(**{name: 0.9}), 64)
    changed = (np.abs(low.astype(int) - high.astype(int)).max(axis=-1) > 12).sum()
    assert changed >= 4, f"{name} moved only {changed} pixels"


def test_skin_tone_changes_the_face_colour():
    def cheek_mean(tone: float) -> float:
        row = _face(skin_tone=tone, glasses=0.0)
        img = render_face(row, 128)
        marks = landmarks(row, 128)
        x, y = np.rint((marks["left_eye"][0] + marks["mouth_left"][0]) / 2).astype(int)
        return float(img[y - 2 : y + 3, x - 2 : x + 3].mean())

    assert cheek_mean(0.1) > cheek_mean(0.9) + 60


def test_glasses_add_dark_pixels_around_the_eyes():
    def dark_around_eyes(glasses: float) -> int:
        row = _face(glasses=glasses)
        img = render_face(row, 128)
        x, y = np.rint(landmarks(row, 128)["left_eye"][0]).astype(int)
        return int(_dark(img[y - 14 : y + 15, x - 16 : x + 17]).sum())

    assert dark_around_eyes(1.0) > dark_around_eyes(0.0) + 40


def test_a_wider_mouth_widens_the_dark_mouth_region():
    def mouth_width(width: float) -> int:
        row = _face(mouth_width=width, mouth_open=1.0, smile=0.5)
        img = render_face(row, 128)
        centre = landmarks(row, 128)["mouth_center"][0]
        y = int(np.rint(centre[1]))
        band = img[y - 3 : y + 4].astype(int)
        inside = (band[..., 0] > band[..., 1] + 25) & (band.sum(axis=-1) < 3 * 110)  # dark red
        return int(inside.any(axis=0).sum())

    assert mouth_width(0.9) > mouth_width(0.1) + 10


def test_gaze_moves_the_pupils_and_bald_has_no_hair():
    def pupil_x(gaze: float) -> float:
        row = _face(gaze_x=gaze, glasses=0.0)
        img = render_face(row, 128)
        x, y = np.rint(landmarks(row, 128)["right_eye"][0]).astype(int)
        patch = img[y - 6 : y + 7, x - 12 : x + 13].astype(int).sum(axis=-1)
        return float(np.argwhere(patch < 60)[:, 1].mean())

    assert pupil_x(0.9) > pupil_x(0.1) + 2

    hair = np.array([0.43, 0.28, 0.16]) * 255  # "brown" (hair_color 0.4 -> index 2)
    for style, expect in ((0.0, False), (1 / 3, True)):
        row = _face(hair_style=style, hair_color=0.4, glasses=0.0)
        img = render_face(row, 64).astype(float)
        marks = landmarks(row, 64)
        x, y = int(marks["nose_tip"][0, 0]), int(marks["left_brow"][0, 1])
        crown = img[y - 13 : y - 9, x - 5 : x + 6]  # high on the forehead, where short hair starts
        near_hair = (np.abs(crown - hair).max(axis=-1) < 30).mean()
        assert (near_hair > 0.5) == expect, (style, near_hair)


def test_landmarks_follow_the_pose_and_sit_on_the_features():
    p = random_params(np.random.default_rng(3), 12)
    p[:, PARAM_NAMES.index("glasses")] = 0.0
    marks = landmarks(p, 128)
    assert list(marks) == LANDMARK_NAMES
    assert all(m.shape == (12, 2) and m.dtype == np.float32 for m in marks.values())
    imgs = render_faces(p, 128)
    for i, img in enumerate(imgs):
        for eye in ("left_pupil", "right_pupil"):
            x, y = np.rint(marks[eye][i]).astype(int)
            assert img[y, x].astype(int).sum() < 3 * 60, (i, eye, img[y, x])  # the pupil is dark
        assert marks["left_eye"][i, 0] < marks["right_eye"][i, 0]
        assert marks["nose_tip"][i, 1] < marks["mouth_center"][i, 1] < marks["chin"][i, 1]
    moved = p.copy()
    moved[:, PARAM_NAMES.index("head_x")] = np.minimum(p[:, PARAM_NAMES.index("head_x")] + 0.5, 1.0)
    shift = landmarks(moved, 128)["nose_tip"][:, 0] - marks["nose_tip"][:, 0]
    assert np.all(shift >= 0) and shift.max() > 5


def test_dataset_is_reproducible_lazy_and_ready_for_a_gan():
    a = FaceDataset(size=32, n=600, seed=4)
    assert len(a) == 600 and a.params.shape == (600, NUM_PARAMS)
    first = a.batch([599, 0, 20])  # renders only the chunks these live in, out of order
    assert a.chunk == 256 and a._done.tolist() == [True, False, True]
    assert first.shape == (3, 3, 32, 32) and first.dtype == np.float32
    assert first.min() >= -1.0 and first.max() <= 1.0 and first.std() > 0.1
    b = FaceDataset(size=32, n=600, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (600, 32, 32, 3) and a.images.dtype == np.uint8
    expected = b.images[[599, 0, 20]].transpose(0, 3, 1, 2) / 127.5 - 1.0
    np.testing.assert_allclose(first, expected, atol=1e-6)
    c = FaceDataset(size=32, n=600, seed=5)
    assert not np.array_equal(c.images, a.images)
    with pytest.raises(IndexError):
        a.batch([600])


def test_dataset_prepare_reports_progress_and_renders_everything():
    ds = FaceDataset(size=64, n=64 * 2 + 10, seed=0)
    assert ds.chunk == 64
    gen = ds.prepare()
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            assert stop.value is ds
            break
    assert all(isinstance(s, Progress) for s in steps) and len(steps) == 3
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert ds._done.all()
    np.testing.assert_array_equal(ds.images[-10:], render_faces(ds.params[-10:], 64))


def test_preview_grid():
    grid = preview_grid(n=16, size=32, seed=0, gap=2)
    assert grid.shape == (4 * 32 + 5 * 2, 4 * 32 + 5 * 2, 3) and grid.dtype == np.uint8
    first = render_face(random_params(np.random.default_rng(0), 16)[0], 32)
    np.testing.assert_array_equal(grid[2:34, 2:34], first)


def test_categories_round_trip():
    p = random_params(np.random.default_rng(9), 50)
    idx = faces.category(p, "hair_color")
    assert idx.min() >= 0 and idx.max() <= 5
    np.testing.assert_allclose(idx / 5, p[:, PARAM_NAMES.index("hair_color")], atol=1e-6)
