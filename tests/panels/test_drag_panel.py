"""The Drag tab, driven with clicks: add points, start, watch the picture change, undo, save."""

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt

from playground.app import AppContext, MainWindow
from playground.jobs import JobState
from playground.ml.checkpoints import LoadedModel
from playground.ml.stylegan2 import pickles
from playground.ml.stylegan2.model import Generator
from playground.settings import Settings


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, channel_base=256,
                     channel_max=16, mapping_kwargs={"num_layers": 2}).eval()


@pytest.fixture
def panel(qtbot, tmp_path, monkeypatch):
    G = tiny_generator()
    monkeypatch.setattr(pickles, "load_default", lambda: LoadedModel(G, "tiny", "", "test", 1, {}))
    win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
    qtbot.addWidget(win)
    win.show()
    from playground.panels.drag import DragPanel

    p = win.panel(DragPanel)
    win.tabs.setCurrentWidget(p)
    qtbot.waitUntil(lambda: p.current is not None, timeout=20000)
    yield p
    win.close()


def click(qtbot, view, x: float, y: float, button=Qt.MouseButton.LeftButton) -> None:
    at = view.image_to_widget(x, y)
    qtbot.mouseClick(view, button, pos=QPoint(round(at.x()), round(at.y())))


def test_a_seed_gives_a_picture_and_clicks_make_a_pair(qtbot, panel):
    assert panel.current.image.shape == (32, 32, 3) and panel.current.image.dtype == np.uint8
    click(qtbot, panel.view, 10, 12)
    assert panel.pending is not None and not panel.handles
    click(qtbot, panel.view, 16, 12)
    assert len(panel.handles) == 1 and abs(panel.targets[0][0] - 16) < 1 and abs(panel.handles[0][1] - 12) < 1
    assert "distance to target 1: 6" in panel.info.text()
    # A right click on a point removes its pair.
    click(qtbot, panel.view, 16, 12, Qt.MouseButton.RightButton)
    assert panel.handles == [] and panel.targets == []


def test_start_drags_changes_the_picture_and_undo_brings_it_back(qtbot, panel):
    before = panel.current.image.copy()
    panel.max_steps.setValue(6)
    click(qtbot, panel.view, 10, 12)
    click(qtbot, panel.view, 18, 12)
    panel.start()
    assert panel.running
    qtbot.waitUntil(lambda: not panel.running, timeout=60000)
    assert panel.job.state == JobState.FINISHED, panel.controls.status.text()
    assert not np.array_equal(panel.current.image, before)  # the latent moved, the picture with it
    assert "Done after" in panel.controls.status.text()
    assert len(panel.undo_stack) == 1
    panel.undo()
    assert np.array_equal(panel.current.image, before)
    assert np.allclose(panel.handles, [(10, 12)], atol=0.6)  # the points as they were before the drag
    panel.redo()
    assert not np.array_equal(panel.current.image, before)


def test_start_without_points_says_what_to_do(qtbot, panel):
    panel.start()
    assert not panel.running and "Add a handle" in panel.controls.form_error.text()


def test_stop_ends_a_long_drag_quickly(qtbot, panel):
    panel.max_steps.setValue(100000)
    click(qtbot, panel.view, 4, 4)
    click(qtbot, panel.view, 28, 28)
    panel.start()
    qtbot.waitUntil(lambda: panel.job is not None and panel.job.state == JobState.RUNNING, timeout=20000)
    qtbot.wait(300)
    panel.stop()
    qtbot.waitUntil(lambda: not panel.running, timeout=5000)
    assert panel.job.state in (JobState.CANCELLED, JobState.FINISHED)


def test_save_the_picture_and_the_latent_then_load_it_back(qtbot, panel, tmp_path):
    png = panel.save_image(str(tmp_path / "face.png"))
    assert png and (tmp_path / "face.png").stat().st_size > 0
    saved = panel.save_latent(str(tmp_path / "face.safetensors"))
    assert saved
    image = panel.current.image.copy()
    panel.seed.setValue(5)  # another face
    qtbot.waitUntil(lambda: not np.array_equal(panel.current.image, image), timeout=20000)
    job = panel.load_latent(saved)
    qtbot.waitUntil(lambda: job.is_done, timeout=20000)
    assert np.array_equal(panel.current.image, image)


def test_open_your_picture_projects_it_and_it_can_be_undone(qtbot, panel, tmp_path):
    from PIL import Image

    before = panel.current.image.copy()
    pic = tmp_path / "me.png"
    Image.fromarray(np.full((40, 60, 3), (200, 120, 90), np.uint8)).save(pic)
    panel.project_steps.setValue(20)
    job = panel.open_picture(str(pic))
    assert job is not None
    qtbot.waitUntil(lambda: not panel.running, timeout=60000)
    assert job.state == JobState.FINISHED, panel.controls.status.text()
    assert "Projected" in panel.controls.status.text() and not np.array_equal(panel.current.image, before)
    panel.undo()
    assert np.array_equal(panel.current.image, before)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    job = panel.open_picture(str(bad))
    qtbot.waitUntil(lambda: not panel.running, timeout=20000)
    assert job.state == JobState.FAILED and "not a picture" in panel.controls.status.text()
