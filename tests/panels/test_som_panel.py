"""The SOM tab, driven with clicks: train a small map, watch it redraw, switch views, replay, export."""

import time

import numpy as np
import pytest
from PySide6.QtCore import Qt

from playground.jobs import JobState
from playground.panels.som import VIEWS, SOMPanel


def load_sample(qtbot, panel, path: str) -> int:
    """Load samples as the button does (in a job) and wait: how many were added."""
    job = panel.load_sample(path)
    if job is None:
        return 0
    qtbot.waitUntil(lambda: job.is_done, timeout=10000)
    return panel.loaded_samples


@pytest.fixture
def panel(window):
    window.tabs.setCurrentWidget(window.panel(SOMPanel))
    return window.panel(SOMPanel)


def choose(combo, key):
    idx = combo.findData(key)
    assert idx >= 0, key
    combo.setCurrentIndex(idx)


def non_background_pixels(widget) -> int:
    img = widget.grab().toImage()
    base = img.pixelColor(1, img.height() - 2)
    step = 4
    return sum(img.pixelColor(x, y) != base for x in range(0, img.width(), step) for y in range(0, img.height(), step))


def train_small(qtbot, panel, source="iris", topology="hexagonal", mode="batch", rows=6, cols=8):
    choose(panel.source, source)
    choose(panel.topology, topology)
    choose(panel.mode, mode)
    panel.rows.setValue(rows)
    panel.cols.setValue(cols)
    panel.epochs.setValue(5)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=60000)
    assert panel.job.state == JobState.FINISHED, panel.status.text()


def test_train_a_map_and_switch_views(qtbot, panel):
    train_small(qtbot, panel)
    assert len(panel.snapshots) >= 2
    qe = [s.qe for s in panel.snapshots]
    assert qe[-1] <= qe[0]
    assert len(panel.qe_curve.getData()[0]) == len(panel.snapshots)
    for key in VIEWS:
        choose(panel.view_choice, key)
        widget = panel.stack.currentWidget()
        assert non_background_pixels(widget) > 100, f"nothing drawn in the {key} view"
        if widget is panel.map_view:
            # The cells themselves are painted: colour at every cell centre, not all the same.
            img = widget.grab().toImage()
            background = img.pixelColor(1, img.height() - 2)
            above = widget._layout.size * 0.3  # just above the centre, clear of any text
            centres = [img.pixelColor(int(x), int(y - above)) for x, y in widget._layout.points]
            assert len(centres) == 6 * 8
            assert all(c != background for c in centres), key
            if key in ("umatrix", "labels"):
                assert len({c.name() for c in centres}) > 2, key
    choose(panel.view_choice, "umatrix")
    assert panel.map_view.rows == 6 and panel.map_view.cols == 8 and panel.map_view.hexagonal


def test_history_slider_replays_the_map(qtbot, panel):
    train_small(qtbot, panel, source="rgb", topology="rectangular", mode="online")
    assert panel.history.maximum() == len(panel.snapshots) - 1 >= 2
    choose(panel.view_choice, "prototypes")
    last = panel.viewer.weights_grid().copy()
    panel.history.setValue(0)
    first = panel.viewer.weights_grid().copy()
    assert not np.allclose(first, last)
    assert panel.history_label.text().startswith("1/")


def test_hover_and_sample_click_light_up_nodes(qtbot, panel):
    train_small(qtbot, panel)
    choose(panel.view_choice, "umatrix")
    panel.map_view.grab()  # lay the cells out
    lay = panel.map_view._layout
    x, y = lay.points[7]
    assert panel.map_view.node_at(x, y) == 7
    panel._on_hover(7)
    assert "Node (0, 7)" in panel.hover_info.text() and "hits" in panel.hover_info.text()
    panel.sample_list.setCurrentRow(3)
    assert panel.map_view.highlight == int(panel.bmus()[3])


def test_a_loaded_sample_lights_up_its_unit(qtbot, panel, tmp_path):
    from sklearn.datasets import load_iris

    train_small(qtbot, panel)
    rows = panel.sample_list.count()
    raw = load_iris().data
    path = tmp_path / "two.txt"
    path.write_text(" ".join(str(float(v)) for v in raw[120]) + "\n" + " ".join(str(float(v)) for v in raw[5]) + "\n")
    assert load_sample(qtbot, panel, str(path)) == 2
    assert panel.sample_list.count() == rows + 2
    assert panel.sample_list.currentRow() == 0 and panel.sample_list.item(0).text().startswith("★")
    # The same flower, loaded in its original units, lands where the standardised sample does.
    assert panel.map_view.highlight == int(panel.bmus()[120])
    panel.sample_list.setCurrentRow(1)
    assert panel.map_view.highlight == int(panel.bmus()[5])
    assert "distance" in panel.hover_info.text()
    # The data's own samples still map to theirs, two rows further down.
    panel.sample_list.setCurrentRow(2 + 9)
    assert panel.map_view.highlight == int(panel.bmus()[9])
    # A wrong file is a message, not a crash, and the list stays as it was.
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n")
    assert load_sample(qtbot, panel, str(bad)) == 0
    assert "exactly 4 numbers" in panel.controls.status.text()
    assert panel.sample_list.count() == rows + 2


def test_a_bigger_map_after_a_small_one_draws_safely(qtbot, panel):
    """Start a 10x10 map after a 2x2 one and repaint before its first snapshot arrives:
    the old map's cells must not be drawn on the new grid (this used to crash the app)."""
    train_small(qtbot, panel, rows=2, cols=2)
    assert len(panel.map_view._colors) == 4
    choose(panel.source, "iris")
    panel.rows.setValue(10)
    panel.cols.setValue(10)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.map_view._colors == []  # the old contents were dropped with the old grid
    panel.map_view.grab()
    qtbot.waitUntil(lambda: not panel.running, timeout=60000)
    assert len(panel.map_view._colors) == 100 and non_background_pixels(panel.map_view) > 50


def test_a_failing_paint_is_logged_not_a_crash(qtbot, caplog):
    from playground.widgets.som_view import MapView

    view = MapView()
    qtbot.addWidget(view)
    view.set_grid(3, 3, False)
    view.show_values(np.arange(9.0).reshape(3, 3))
    view._colors = view._colors[:2]  # contents that do not fit the grid
    view.grab()
    assert "Drawing MapView failed" in caplog.text


def test_saved_map_reopens_as_images_and_bad_saves_are_messages(qtbot, panel, tmp_path):
    train_small(qtbot, panel, source="digits", rows=4, cols=5)
    choose(panel.view_choice, "hits")
    assert panel.save_map(str(tmp_path / "no" / "such" / "dir" / "m.safetensors")) is None
    assert "Could not save" in panel.controls.status.text()
    path = panel.save_map(str(tmp_path / "digits.safetensors"))
    assert path
    assert panel.open_map(path)
    # No data now: the hit map says so instead of keeping the old picture.
    assert "No data" in panel.map_view.title
    choose(panel.view_choice, "prototypes")
    assert len(panel.map_view._images) == 20  # drawn as 8x8 digits, from what was saved with the map
    from PIL import Image

    pic = tmp_path / "seven.png"
    Image.fromarray((np.eye(40)[::-1] * 255).astype(np.uint8)).save(pic)
    assert load_sample(qtbot, panel, str(pic)) == 1
    panel._on_hover(10**6)  # a node that does not exist: ignored
    panel._on_hover(-1)


def test_samples_loaded_into_an_opened_map_are_standardised_like_its_data(qtbot, panel, tmp_path):
    from sklearn.datasets import load_iris

    train_small(qtbot, panel)  # iris, standardised
    units = [int(panel.bmus()[k]) for k in (120, 5, 60)]
    path = panel.save_map(str(tmp_path / "iris.safetensors"))
    assert panel.open_map(path)
    raw = load_iris().data
    rows = tmp_path / "rows.txt"
    rows.write_text("".join(" ".join(str(float(v)) for v in raw[k]) + "\n" for k in (120, 5, 60)))
    assert load_sample(qtbot, panel, str(rows)) == 3
    got = []
    for r in range(3):
        panel.sample_list.setCurrentRow(r)
        got.append(panel.map_view.highlight)
    assert got == units


def test_choosing_the_mexican_hat_lowers_the_learning_rate(qtbot, panel):
    panel.lr0.setValue(0.5)
    idx = panel.neighborhood.findData("mexican_hat")
    panel.neighborhood.setCurrentIndex(idx)
    panel.neighborhood.activated.emit(idx)  # as a user's choice
    assert panel.lr0.value() == pytest.approx(panel.MEXICAN_HAT_LR)
    assert "Mexican hat" in panel.controls.status.text()


def test_export_png(qtbot, panel, tmp_path):
    train_small(qtbot, panel)
    out = panel.export_png(str(tmp_path / "map.png"))
    assert out and (tmp_path / "map.png").stat().st_size > 1000


def test_bad_csv_gives_a_message(qtbot, panel, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,colour\nalpha,red\nbeta,blue\n")
    choose(panel.source, "csv")
    panel.csv_path.setText(str(bad))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=30000)
    assert panel.job.state == JobState.FAILED
    assert "numeric" in panel.status.text().lower()
    assert "Traceback" not in panel.status.text()


def test_invalid_form_is_refused(qtbot, panel):
    choose(panel.source, "csv")
    panel.csv_path.setText("/no/such/file.csv")
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert "CSV" in panel.form_error.text()
    assert panel.job is None


def test_save_and_open_a_map(qtbot, panel, tmp_path):
    train_small(qtbot, panel)
    weights = panel.viewer.weights_grid().copy()
    saved = panel.save_map(str(tmp_path / "map.safetensors"))
    from playground.ml.som import SOM

    assert saved and SOM.sidecar_path(saved).exists()
    panel.viewer = None
    assert panel.open_map(saved)
    assert np.allclose(panel.viewer.weights_grid(), weights)
    assert (panel.map_view.rows, panel.map_view.cols) == (6, 8)
    # A file that is not a map gives a message, and the map shown stays.
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    assert not panel.open_map(str(junk))
    assert "Could not open junk.safetensors" in panel.status.text()
    assert np.allclose(panel.viewer.weights_grid(), weights)
    # A sidecar with values of the wrong type is refused too, and the map shown stays.
    import json
    import shutil

    for k, (field, value) in enumerate((("rows", "six"), ("topology", 5), ("toroidal", "no"))):
        bad = tmp_path / f"bad{k}.safetensors"
        shutil.copy(saved, bad)
        side = json.loads(SOM.sidecar_path(saved).read_text())
        (side["config"] if "config" in side else side)[field] = value
        SOM.sidecar_path(bad).write_text(json.dumps(side))
        assert not panel.open_map(str(bad)), field
        assert f"Could not open bad{k}.safetensors" in panel.status.text()
        assert np.allclose(panel.viewer.weights_grid(), weights) and panel.config.rows == 6


@pytest.mark.parametrize("text", ["a;b;kind\n1;2;x\n3;4;y\n5;6;x\n7;8;y\n",
                                  "1,2,x\n3,4,y\n5,6,x\n7,8,y\n"])
def test_csv_label_column_by_choice(qtbot, panel, tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    choose(panel.source, "csv")
    panel.csv_path.setText(str(path))
    panel._fill_label_columns()
    panel.label_column.setCurrentIndex(3)  # (none), then the three columns
    panel.rows.setValue(3)
    panel.cols.setValue(3)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=30000)
    assert panel.job.state == JobState.FINISHED, panel.status.text()
    assert panel.data.x.shape == (4, 2)
    assert panel.data.label_names == ["x", "y"]


def _png_claiming(path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr:ihdr + 17])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the point of the test
def test_a_huge_picture_is_refused_with_a_message_and_the_window_stays_live(qtbot, panel, tmp_path):
    train_small(qtbot, panel, source="digits", rows=4, cols=5)
    rows = panel.sample_list.count()
    pic = tmp_path / "bomb.png"
    _png_claiming(pic, 10000, 10000)
    t0 = time.monotonic()
    assert load_sample(qtbot, panel, str(pic)) == 0
    assert time.monotonic() - t0 < 5
    assert "pixels" in panel.controls.status.text() and panel.sample_list.count() == rows


def test_a_map_whose_history_would_not_fit_is_refused_before_training(qtbot, panel, monkeypatch):
    from playground.ml import som_data

    monkeypatch.setattr(som_data, "SNAPSHOT_BUDGET_BYTES", 10_000)
    choose(panel.source, "digits")
    panel.rows.setValue(30)
    panel.cols.setValue(30)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=30000)
    assert panel.job.state == JobState.FAILED and panel.snapshots == []
    assert "snapshot" in panel.controls.status.text().lower()


def test_closing_the_window_while_a_big_csv_is_read_ends_within_a_second(qtbot, window, tmp_path):
    panel = window.panel(SOMPanel)
    big = tmp_path / "big.csv"
    rng = np.random.default_rng(0)
    block = "\n".join(",".join(f"{v:.6f}" for v in row) for row in rng.random((20000, 20))) + "\n"
    with open(big, "w") as f:
        f.write(",".join(f"f{k}" for k in range(20)) + "\n")
        for _ in range(15):  # ~54 MB: about 2 s to parse here
            f.write(block)
    choose(panel.source, "csv")
    panel.csv_path.setText(str(big))
    panel.start()
    qtbot.waitUntil(lambda: panel.running and panel.job.fraction is not None and 0 < panel.job.fraction < 0.5,
                    timeout=20000)
    t0 = time.monotonic()
    window.close()
    assert time.monotonic() - t0 < 1.0
    assert all(not t.isRunning() for t in window.pool._threads)
