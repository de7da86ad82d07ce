"""The fast raster drawing of many small maps agrees with drawing each cell as a polygon."""

import numpy as np
import pytest
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath

from playground.widgets.som_view import _Layout, rasterize


def qimage_to_array(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def _painted(colors: np.ndarray, lay: _Layout, w: int, h: int) -> np.ndarray:
    image = QImage(w, h, QImage.Format.Format_RGB32)
    image.fill(QColor(255, 255, 255))
    p = QPainter(image)
    p.setPen(Qt.PenStyle.NoPen)
    path = QPainterPath()
    path.addPolygon(lay.shape)
    for k, (x, y) in enumerate(lay.points):
        p.save()
        p.translate(x, y)
        p.setBrush(QColor(*map(int, colors[k])))
        p.drawPath(path)
        p.restore()
    p.end()
    return qimage_to_array(image)[..., :3]


@pytest.mark.parametrize("hexagonal", [True, False])
@pytest.mark.parametrize("rows,cols", [(5, 7), (12, 9)])
def test_raster_matches_polygons(qapp, hexagonal, rows, cols):
    w, h = 230, 170
    rect = QRectF(0, 0, w, h)
    lay = _Layout(rows, cols, hexagonal, rect)
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (rows * cols, 3)).astype(np.uint8)
    fast = qimage_to_array(rasterize(colors, lay, rect))[..., :3]
    slow = _painted(colors, lay, w, h)
    assert fast.shape == slow.shape
    same = np.all(np.abs(fast.astype(int) - slow.astype(int)) <= 2, axis=-1)
    # Only pixels on cell edges may differ (anti-aliasing and rounding).
    assert same.mean() > 0.97
    # Every cell's centre pixel has that cell's colour.
    for k, (x, y) in enumerate(lay.points):
        assert np.array_equal(fast[int(y), int(x)], colors[k])


@pytest.mark.parametrize("hexagonal", [True, False])
def test_big_maps_are_drawn_as_one_raster_with_the_right_cells(qtbot, hexagonal):
    from playground.widgets.som_view import MapView, colorize

    view = MapView()
    qtbot.addWidget(view)
    view.resize(640, 560)
    view.set_grid(80, 90, hexagonal)
    values = np.random.default_rng(3).random((80, 90))
    view.show_values(values, "U-matrix")
    view.set_highlight(None)
    image = qimage_to_array(view.grab().toImage())
    lay = view._layout
    assert lay.size < 12 and view._rgb is not None  # the raster path was taken
    colors = colorize(values)
    wrong = 0
    for k in range(0, 80 * 90, 37):
        x, y = lay.points[k]
        got = image[int(y), int(x)]
        wrong += not np.array_equal(got, colors[k].getRgb()[:3])
    assert wrong == 0
