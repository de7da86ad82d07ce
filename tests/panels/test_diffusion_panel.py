"""The Diffusion tab, offscreen, with tiny random UNets standing in for the embedded models."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from playground.app import AppContext, MainWindow
from playground.jobs import JobState
from playground.ml.diffusion import models, scrub
from playground.panels import diffusion as panel_module
from playground.panels.diffusion import DiffusionPanel
from playground.settings import Settings

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
            norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"))


def tiny(seed=0, **overrides):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY, **overrides}).eval()


def _loaded(unet, name):
    return models.describe(models.DiffusionModel(unet, dict(models.DEFAULT_SCHEDULER_CONFIG)), name, "test")


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    conditional = tiny(1, num_class_embeds=4)
    faces = tiny(2, in_channels=3, out_channels=3)
    monkeypatch.setattr(scrub, "load_default", lambda: _loaded(conditional, "tiny digits"))
    monkeypatch.setattr(scrub, "load_default_faces", lambda: _loaded(faces, "tiny faces"))
    windows = []

    def make():
        win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
        qtbot.addWidget(win)
        win.show()
        p = win.panel(DiffusionPanel)
        win.tabs.setCurrentWidget(p)
        qtbot.waitUntil(lambda: p.model is not None, timeout=20000)
        windows.append(win)
        return win, p

    yield make
    for win in windows:
        win.close()


@pytest.fixture
def panel(make_window):
    return make_window()[1]


def sample(qtbot, p, steps=6, batch=2, sampler="ddim"):
    p.steps.setValue(steps)
    p.batch.setValue(batch)
    p.sampler.setCurrentIndex(p.sampler.findData(sampler))
    p.start()
    assert p.running
    qtbot.waitUntil(lambda: not p.running, timeout=30000)
    assert p.job.state == JobState.FINISHED, p.controls.status.text()


def test_sample_fills_the_slider_and_moving_it_changes_the_images_and_the_marker(qtbot, panel):
    p = panel
    assert p.label.isVisibleTo(p) and p.guidance.isVisibleTo(p)  # the digits model is conditional
    sample(qtbot, p)
    assert len(p.lanes[0]) == 6 and p.slider.maximum() == 5 and p.slider.isEnabled()
    p.slider.setValue(0)
    first = [p.views[k]._grid.cells[0].array.copy() for k in ("x_t", "x0", "eps")]
    line = p.marker.value()
    assert len(p.views["x_t"]._grid.cells) == 2  # one per sample
    p.step_by(1)
    p.step_by(1)
    assert p.slider.value() == 2
    later = [p.views[k]._grid.cells[0].array for k in ("x_t", "x0", "eps")]
    assert not np.array_equal(first[0], later[0]) and not np.array_equal(first[1], later[1])
    assert p.marker.value() < line  # t falls as the sampling goes on
    assert p.learn.value_labels("alpha_bar_t")[0].text() not in ("", "–")


def test_an_unconditional_model_hides_class_and_guidance(qtbot, panel):
    p = panel
    p.builtin.setCurrentIndex(p.builtin.findData("faces"))
    p.picker.load_default()
    qtbot.waitUntil(lambda: p.model is not None and p.model.channels == 3, timeout=10000)
    assert not p.label.isVisibleTo(p) and not p.guidance.isVisibleTo(p)
    sample(qtbot, p, steps=3, batch=1, sampler="euler")
    assert p.views["x0"]._grid.cells[0].array.shape == (8, 8, 3)


def test_eta_shows_only_for_ddim(panel):
    p = panel
    p.sampler.setCurrentIndex(p.sampler.findData("ddim"))
    assert p.eta.isVisibleTo(p)
    p.sampler.setCurrentIndex(p.sampler.findData("ddpm"))
    assert not p.eta.isVisibleTo(p)


def test_compare_shows_two_trajectories_from_the_same_noise(qtbot, panel):
    p = panel
    p.compare.setChecked(True)
    p.compare_sampler.setCurrentIndex(p.compare_sampler.findData("ddpm"))
    sample(qtbot, p, steps=4, batch=2, sampler="ddim")
    a, b = p.lanes
    assert len(a) == 4 and len(b) == 4
    assert np.array_equal(a[0].x_t_values, b[0].x_t_values)
    assert not np.array_equal(a[-1].x_t_values, b[-1].x_t_values)
    p.slider.setValue(3)
    cells = p.views["x_t"]._grid.cells  # one grid of both samples per sampler
    assert [c.caption for c in cells] == ["DDIM", "DDPM (ancestral)"]
    assert np.array_equal(cells[0].array, a[3].grid("x_t")) and np.array_equal(cells[1].array, b[3].grid("x_t"))


def test_forward_mode_dissolves_a_digit(qtbot, panel):
    p = panel
    p.forward_mode.setChecked(True)
    qtbot.waitUntil(lambda: p.forward is not None, timeout=20000)
    fw = p.forward
    assert p.slider.maximum() == fw.ts.size - 1
    residual = [np.var(fw.x_t[k] - np.sqrt(fw.alpha_bar[k]) * fw.x0) for k in (0, fw.ts.size // 2, fw.ts.size - 1)]
    assert residual[0] < residual[1] < residual[2]
    p.slider.setValue(0)
    early = p.views["x0"]._array.copy()
    p.slider.setValue(p.slider.maximum())
    assert not np.array_equal(early, p.views["x0"]._array)
    assert p.marker.value() == float(fw.ts[-1])


def test_gif_and_film_strip_exports_open_in_pil(qtbot, panel, tmp_path, monkeypatch):
    p = panel
    sample(qtbot, p, steps=4, batch=2)
    targets = iter([str(tmp_path / "t.gif"), str(tmp_path / "t.png")])
    monkeypatch.setattr(panel_module.QFileDialog, "getSaveFileName", lambda *a, **k: (next(targets), ""))
    gif = p.export_gif()
    png = p.export_strip()
    with Image.open(gif) as im:
        assert im.n_frames == 4
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > im.height


def test_stop_stops_quickly(qtbot, panel):
    p = panel
    p.steps.setValue(1000)
    p.batch.setValue(4)
    p.start()
    qtbot.waitUntil(lambda: len(p.lanes[0]) >= 2, timeout=20000)
    t0 = time.perf_counter()
    p.stop()
    qtbot.waitUntil(lambda: not p.running, timeout=5000)
    assert time.perf_counter() - t0 < 2.0
    assert p.job.state == JobState.CANCELLED
    assert len(p.lanes[0]) < 1000


def test_settings_are_remembered(qtbot, make_window):
    win, p = make_window()
    p.sampler.setCurrentIndex(p.sampler.findData("euler-a"))
    p.steps.setValue(17)
    p.seed.setValue(5)
    p.batch.setValue(9)
    p.compare.setChecked(True)
    p.guidance.setValue(2.5)
    p.save_settings()
    win.close()
    _, q = make_window()
    s = q.settings_state()
    assert (s.sampler, s.steps, s.seed, s.batch, s.compare, s.guidance) == ("euler-a", 17, 5, 9, True, 2.5)


def test_a_missing_embedded_model_says_what_to_do(qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr("playground.paths.RESOURCES", tmp_path)
    with pytest.raises(Exception, match="open a diffusers UNet folder instead"):
        list(scrub._load_embedded("nothing.safetensors", "digits DDPM (embedded)"))


def test_a_long_run_over_the_memory_bound_says_so(qtbot, panel, monkeypatch):
    monkeypatch.setattr(panel_module, "MAX_RECORD_BYTES", 3 * 64 * 10)  # 10 steps of one 8x8 sample, 8-bit
    sample(qtbot, panel, steps=40, batch=1)
    assert "bound" in panel.plan_label.text() and panel.plan_label.text() == panel.plan_message
    assert len(panel.lanes[0]) < 40


def test_fetch_by_hub_id_opens_the_downloaded_folder(qtbot, panel, tmp_path, monkeypatch):
    folder = tmp_path / "hub" / "owner--tiny"
    tiny(4, in_channels=3, out_channels=3).save_pretrained(folder)

    def fake_fetch(repo_id):
        from playground.progress import Progress

        yield Progress(0.5, f"Downloading {repo_id}")
        return models.load_unet_folder(folder)

    monkeypatch.setattr(models, "fetch_hub_model", fake_fetch)
    panel.hub_id.setText("owner/tiny")
    panel.fetch_hub()
    qtbot.waitUntil(lambda: panel.model is not None and panel.model.channels == 3, timeout=10000)
    assert not panel.label.isVisibleTo(panel) and panel.fetch_button.isEnabled()


def test_fetch_offline_says_so(qtbot, panel, monkeypatch):
    from playground.errors import OfflineError

    def offline(repo_id):
        raise OfflineError("Could not download owner/x from the Hugging Face hub. Are you offline?")
        yield

    monkeypatch.setattr(models, "fetch_hub_model", offline)
    panel.fetch_hub("owner/x")
    qtbot.waitUntil(lambda: "offline" in panel.controls.status.text(), timeout=10000)
    assert panel.fetch_button.isEnabled()


def test_left_and_right_keys_move_the_slider(qtbot, panel):
    from PySide6.QtCore import Qt

    sample(qtbot, panel, steps=4, batch=1)
    panel.slider.setValue(1)
    panel.views["x0"].setFocus()
    qtbot.keyClick(panel.views["x0"], Qt.Key.Key_Right)
    assert panel.slider.value() == 2
    qtbot.keyClick(panel.views["x0"], Qt.Key.Key_Left)
    qtbot.keyClick(panel.views["x0"], Qt.Key.Key_Left)
    assert panel.slider.value() == 0


def test_play_animates_to_the_end(qtbot, panel):
    sample(qtbot, panel, steps=5, batch=1)
    panel.slider.setValue(0)
    panel.toggle_play()
    assert panel.play_button.text() == "Pause"
    qtbot.waitUntil(lambda: panel.slider.value() == 4 and panel.play_button.text() == "Play", timeout=5000)


def test_forward_mode_from_an_image_file(qtbot, panel, tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))).save(path)
    monkeypatch.setattr(panel_module.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    panel.open_image()
    qtbot.waitUntil(lambda: panel.forward is not None, timeout=20000)
    assert panel.forward_mode.isChecked() and panel.forward.x0.shape == (1, 8, 8)
    assert panel.forward.x0[0, 0, 0] < panel.forward.x0[0, 0, -1]  # the ramp, resized


def test_moving_the_slider_over_a_4x4_grid_redraws_fast(qtbot, panel):
    p = panel
    sample(qtbot, p, steps=20, batch=16)
    times = []
    for k in range(20):
        t0 = time.perf_counter()
        p.slider.setValue(k)
        for view in p.views.values():
            view.repaint()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    print(f"median redraw {median * 1000:.2f} ms")
    assert median < 0.016, f"a redraw took {median * 1000:.1f} ms"


def test_a_bad_file_shows_an_error_and_keeps_the_model(qtbot, panel, tmp_path):
    before = panel.model
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    panel.picker.open_path(str(bad))
    qtbot.waitUntil(lambda: panel.picker.error_message != "", timeout=10000)
    assert panel.model is before


def test_forward_mode_exports_the_image_dissolving(qtbot, panel, tmp_path, monkeypatch):
    panel.forward_mode.setChecked(True)
    qtbot.waitUntil(lambda: panel.forward is not None, timeout=20000)
    monkeypatch.setattr(panel_module.QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "f.gif"), ""))
    with Image.open(panel.export_gif()) as im:
        assert im.n_frames == 100


def test_export_before_sampling_says_so(panel, monkeypatch):
    monkeypatch.setattr(panel_module.QFileDialog, "getSaveFileName", lambda *a, **k: pytest.fail("no dialog"))
    assert panel.export_strip() is None and "sample first" in panel.controls.status.text()


def test_another_digit_and_forward_mode_are_remembered(qtbot, make_window):
    win, p = make_window()
    p.forward_mode.setChecked(True)
    qtbot.waitUntil(lambda: p.forward is not None, timeout=20000)
    first = p.forward.x0.copy()
    p.digit.setValue(7)
    qtbot.waitUntil(lambda: not np.array_equal(p.forward.x0, first), timeout=20000)
    p.save_settings()
    win.close()
    _, q = make_window()
    assert q.forward_mode.isChecked() and q.digit.value() == 7
    qtbot.waitUntil(lambda: q.forward is not None, timeout=20000)
    assert np.array_equal(q.forward.x0, p.forward.x0)
