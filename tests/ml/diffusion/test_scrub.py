"""The Diffusion tab's ML core: trajectories as images, the forward process, the embedded loaders and exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from playground.errors import BadFileError, UserError
from playground.ml.diffusion import models, sampling, scrub, schedules
from playground.progress import Progress


def run(gen):
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as done:
            return items, done.value


def model_of(unet):
    return models.DiffusionModel(unet, dict(models.DEFAULT_SCHEDULER_CONFIG))


def test_to_uint8_maps_the_range_and_the_channels():
    grey = scrub.to_uint8(np.array([[[[-1.0, 0.0], [1.0, 5.0]]]]))
    assert grey[0].dtype == np.uint8 and grey[0].tolist() == [[0, 128], [255, 255]]
    rgb = scrub.to_uint8(np.zeros((2, 3, 4, 5)))
    assert len(rgb) == 2 and rgb[0].shape == (4, 5, 3)


def test_grid_and_stacks_lay_images_out():
    ims = [np.full((4, 5), k * 40, np.uint8) for k in range(5)]
    g = scrub.grid(ims, columns=3, pad=1)
    assert g.shape == (4 * 2 + 1, 5 * 3 + 2, 3)
    assert g[0, 6, 0] == 40 and g[5, 0, 0] == 120 and g[5, 12, 0] == 255  # the empty cell stays white
    assert scrub.hstack([g, g], pad=2).shape == (9, 36, 3)
    assert scrub.vstack([g, g], pad=2).shape == (20, 17, 3)


def test_sample_frames_records_every_step_as_images(tiny_unet):
    items, finals = run(scrub.sample_frames(model_of(tiny_unet), ["ddim"], steps=5, batch=3, seed=1))
    starts = [i for i in items if isinstance(i, scrub.LaneStart)]
    frames = [i for i in items if isinstance(i, scrub.Frame)]
    assert len(starts) == 1 and starts[0].plan.message == ""
    assert [f.index for f in frames] == list(range(5)) and all(f.lane == 0 for f in frames)
    assert len(frames[0].x_t) == 3 and frames[0].x0[0].shape == (8, 8) and frames[0].eps[0].dtype == np.uint8
    assert frames[0].alpha_bar < frames[-1].alpha_bar and frames[0].t > frames[-1].t
    assert len(finals) == 1 and finals[0].shape == (3, 1, 8, 8)
    progress = [i.fraction for i in items if isinstance(i, Progress)]
    assert progress[-1] == pytest.approx(1.0)


def test_sample_frames_matches_the_recording_loop(tiny_unet):
    model = model_of(tiny_unet)
    items, _ = run(scrub.sample_frames(model, ["ddpm"], steps=4, batch=2, seed=3))
    frames = [i for i in items if isinstance(i, scrub.Frame)]
    from playground.ml.diffusion.samplers import make_scheduler

    raw, _ = run(sampling.sample(tiny_unet, make_scheduler("ddpm", model.scheduler_config), steps=4, batch=2, seed=3))
    records = [r for r in raw if isinstance(r, sampling.StepRecord)]
    for f, r in zip(frames, records, strict=True):
        assert np.array_equal(f.x_t_values, r.x_t.numpy())


def test_two_samplers_start_from_the_same_noise(conditional_unet):
    items, finals = run(scrub.sample_frames(model_of(conditional_unet), ["ddim", "ddpm"], steps=4, batch=2, seed=0,
                                            class_label=1, guidance_scale=2.0))
    lanes = [[f for f in items if isinstance(f, scrub.Frame) and f.lane == k] for k in (0, 1)]
    assert len(lanes[0]) == len(lanes[1]) == 4
    assert np.array_equal(lanes[0][0].x_t_values, lanes[1][0].x_t_values)
    assert not np.allclose(finals[0], finals[1])
    fractions = [i.fraction for i in items if isinstance(i, Progress)]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    picture = scrub.composite([lanes[0][0], lanes[1][0]], columns=2)
    assert picture.ndim == 3 and picture.shape[0] > 2 * 8


def test_a_tight_memory_bound_keeps_fewer_steps_with_a_message(tiny_unet):
    items, _ = run(scrub.sample_frames(model_of(tiny_unet), ["ddim"], steps=30, batch=1, max_record_bytes=3 * 64 * 5))
    start = next(i for i in items if isinstance(i, scrub.LaneStart))
    frames = [i for i in items if isinstance(i, scrub.Frame)]
    assert "bound" in start.plan.message and len(frames) < 30 and frames[-1].index == 29


def test_learn_values():
    v = scrub.learn_values(0.25, 0.5, 700.0, 3)
    assert v["alpha_t"] == pytest.approx(0.5) and v["alpha_bar_t"] == pytest.approx(0.25)
    assert v["snr"] == pytest.approx(1 / 3) and v["sigma_t"] == pytest.approx(np.sqrt(3))
    assert v["t"] == 700 and v["step"] == 3


def test_schedule_curves_are_the_schedule():
    t, ab, log_snr = scrub.schedule_curves(models.DEFAULT_SCHEDULER_CONFIG)
    sched = schedules.Schedule.from_config(models.DEFAULT_SCHEDULER_CONFIG)
    assert len(t) == 1000 and np.allclose(ab, sched.alpha_bar) and np.allclose(log_snr, sched.log_snr)


def test_the_forward_process_dissolves_an_image_with_one_fixed_noise():
    x0 = scrub.digit_image(3, 16, 1)
    assert x0.shape == (1, 16, 16) and x0.min() >= -1 and x0.max() <= 1
    _, fw = run(scrub.forward_frames(x0, models.DEFAULT_SCHEDULER_CONFIG, seed=0))
    assert fw.ts.size == 1000 and fw.x_t.shape == (1000, 1, 16, 16) and len(fw.images) == 1000
    ab = schedules.Schedule.from_config(models.DEFAULT_SCHEDULER_CONFIG).alpha_bar
    k = 400
    expected = np.sqrt(ab[k]) * x0 + np.sqrt(1 - ab[k]) * fw.noise
    assert np.allclose(fw.x_t[k], expected, atol=1e-5)
    residual = [np.var(fw.x_t[j] - np.sqrt(fw.alpha_bar[j]) * x0) for j in (0, 300, 600, 999)]
    assert residual == sorted(residual)
    assert fw.nearest(401) == 401
    _, again = run(scrub.forward_frames(x0, models.DEFAULT_SCHEDULER_CONFIG, seed=0))
    assert np.array_equal(again.x_t, fw.x_t)


def test_a_big_forward_process_keeps_every_kth_t():
    _, fw = run(scrub.forward_frames(np.zeros((3, 32, 32), np.float32), models.DEFAULT_SCHEDULER_CONFIG,
                                     max_bytes=3 * 32 * 32 * 5 * 100))
    assert fw.ts.size == 100 and fw.ts[0] == 0 and fw.ts[-1] == 999


def test_images_from_files(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(path)
    a = scrub.file_image(path, 8, 3)
    assert a.shape == (3, 8, 8) and np.allclose(a, 1.0)
    assert scrub.file_image(path, (8, 4), 1).shape == (1, 8, 4)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(BadFileError, match="not an image"):
        scrub.file_image(bad, 8, 1)
    with pytest.raises(UserError):
        scrub.digit_image(5000)


def test_gif_and_film_strip(tmp_path):
    pictures = [np.full((10, 24, 3), k * 20, np.uint8) for k in range(12)]
    gif = scrub.save_gif(pictures, tmp_path / "t.gif", frame_ms=50)
    with Image.open(gif) as im:
        assert im.n_frames == 12 and im.info.get("loop") == 0
    png = scrub.save_film_strip(pictures, tmp_path / "t.png", count=5)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.height > im.width  # wide pictures stack in a column
    assert scrub.pick(12, 5) == [0, 3, 6, 8, 11]
    assert scrub.pick(12, 5)[-1] == 11 and scrub.pick(3, 5) == [0, 1, 2]
    with pytest.raises(UserError):
        scrub.save_gif([], tmp_path / "e.gif")


def test_the_embedded_loaders_read_our_files_or_say_what_to_do(tmp_path, monkeypatch, tiny_unet):
    monkeypatch.setattr("playground.paths.RESOURCES", tmp_path)
    with pytest.raises(BadFileError, match="open a diffusers UNet folder instead"):
        run(scrub.load_default())
    with pytest.raises(BadFileError, match="missing"):
        run(scrub.load_default_faces())
    models.save_unet(tmp_path / scrub.DEFAULT_DIGITS, model_of(tiny_unet), {"seed": 0})
    _, loaded = run(scrub.load_default())
    assert loaded.name.startswith("Digits DDPM") and isinstance(loaded.model, models.DiffusionModel)
    x = torch.zeros(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model.unet(x, 10).sample, tiny_unet(x, 10).sample)
    _, picked = run(scrub.load_for_picker(str(tmp_path / scrub.DEFAULT_DIGITS)))
    assert picked.parameters == models.parameter_count(tiny_unet)


def test_the_picker_loader_opens_a_diffusers_folder(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path / "m")
    _, loaded = run(scrub.load_for_picker(str(tmp_path / "m")))
    assert loaded.format == models.FORMAT_FOLDER


def test_the_picker_loader_refuses_truncated_and_wrong_files(tmp_path, tiny_unet):
    path = models.save_unet(tmp_path / "m.safetensors", model_of(tiny_unet))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(BadFileError):
        run(scrub.load_for_picker(str(path)))
    wrong = tmp_path / "w.safetensors"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(wrong, format="PNG")
    (tmp_path / "w.json").write_text('{"kind": "diffusion-unet"}')
    with pytest.raises(BadFileError):
        run(scrub.load_for_picker(str(wrong)))
