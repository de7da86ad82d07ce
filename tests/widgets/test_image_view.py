"""The image view reports the right image coordinates at any zoom and pan, paints and erases
its mask where the brush went, reports grid cells, and draws the image where it says."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from playground.widgets.image_view import ImageView, Point, clip_segment

W, H = 64, 48
LEFT, RIGHT, MIDDLE = Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton


def pattern(w: int = W, h: int = H) -> np.ndarray:
    """Every pixel tells where it is: red from the column, green from the row, blue a checkerboard."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), ((x + y) % 2) * 255], -1).astype(np.uint8)


def screen_pixel(at: QPointF) -> QPoint:
    """The widget pixel a position falls in (a mouse over that pixel reports its integer corner)."""
    return QPoint(math.floor(at.x()), math.floor(at.y()))


def grab_array(view: ImageView) -> np.ndarray:
    image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def mouse(view: ImageView, kind: str, pos: QPointF, button=LEFT, modifiers=Qt.KeyboardModifier.NoModifier,
          held=None) -> None:
    """Send a mouse event at a (fractional) widget position."""
    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    if kind == "move":
        buttons, button = (held if held is not None else Qt.MouseButton.NoButton), Qt.MouseButton.NoButton
    else:
        buttons = button if kind == "press" else Qt.MouseButton.NoButton
    event = QMouseEvent(types[kind], QPointF(pos), QPointF(view.mapToGlobal(QPointF(pos))), button, buttons, modifiers)
    QApplication.sendEvent(view, event)


def drag(view: ImageView, points: list[QPointF], button=LEFT, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    mouse(view, "press", points[0], button, modifiers)
    for p in points[1:]:
        mouse(view, "move", p, modifiers=modifiers, held=button)
    mouse(view, "release", points[-1], button, modifiers)


def wheel(view: ImageView, pos: QPointF, notches: float) -> None:
    event = QWheelEvent(QPointF(pos), QPointF(view.mapToGlobal(QPointF(pos))), QPoint(0, 0),
                        QPoint(0, int(120 * notches)), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view, event)


class Recorder:
    """Collects a signal's emissions."""

    def __init__(self, signal) -> None:
        self.calls: list[tuple] = []
        signal.connect(lambda *args: self.calls.append(args))


@pytest.fixture
def view(qtbot) -> ImageView:
    v = ImageView()
    qtbot.addWidget(v)
    v.resize(400, 300)
    v.show()
    qtbot.waitExposed(v)
    v.set_image(pattern())
    return v


def _set_view(view: ImageView, state: str) -> None:
    if state == "actual":
        view.actual_size()
    elif state in ("wheel", "panned"):
        view.actual_size()
        wheel(view, QPointF(150, 120), 5)  # 1.25 ** 5 ~ 3x, about a point off centre
        if state == "panned":
            drag(view, [QPointF(200, 150), QPointF(260, 120), QPointF(300, 110)], MIDDLE)


def test_fit_is_the_default_and_centres_the_image(view):
    expected = min((400 - 2 * view.FIT_MARGIN) / W, (300 - 2 * view.FIT_MARGIN) / H)
    assert view.fit_mode and view.zoom == pytest.approx(expected)
    centre = view.image_to_widget(W / 2, H / 2)
    assert (centre.x(), centre.y()) == pytest.approx((200, 150))
    x, y = view.widget_to_image(QPointF(123.4, 56.7))
    back = view.image_to_widget(x, y)
    assert (back.x(), back.y()) == pytest.approx((123.4, 56.7))


@pytest.mark.parametrize("state", ["fit", "actual", "wheel", "panned"])
def test_clicks_report_image_coordinates_at_any_zoom_and_pan(view, state):
    _set_view(view, state)
    if state == "wheel":
        assert view.zoom == pytest.approx(1.25**5)
    pressed, released = Recorder(view.pressed), Recorder(view.released)
    targets = [(0.5, 0.5), (W - 0.5, H - 0.5), (20.5, 30.5), (33.5, 7.5), (47.5, 40.5)]
    tried = 0
    for tx, ty in targets:
        at = view.image_to_widget(tx, ty)
        if not view.rect().contains(screen_pixel(at)):
            continue  # panned off screen
        tried += 1
        QTest.mouseClick(view, LEFT, Qt.KeyboardModifier.NoModifier, screen_pixel(at))  # whole widget pixels
        x, y, button = pressed.calls[-1]
        assert abs(x - tx) <= 0.5 and abs(y - ty) <= 0.5
        assert button == LEFT.value
        assert view.contains(x, y)
        assert released.calls[-1] == pytest.approx((x, y))
    assert tried >= 2


def test_clicks_outside_the_image_are_reported_but_not_contained(view):
    pressed = Recorder(view.pressed)
    QTest.mouseClick(view, RIGHT, Qt.KeyboardModifier.NoModifier, QPoint(2, 2))
    x, y, button = pressed.calls[-1]
    assert x < 0 and y < 0 and button == RIGHT.value
    assert not view.contains(x, y)
    assert not view.contains(W, 10) and view.contains(W - 0.01, 10)


def test_moves_and_hover_are_reported_in_image_coordinates(view):
    view.zoom_by(2.0, QPointF(100, 100))
    moved, hovered = Recorder(view.moved), Recorder(view.hovered)
    mouse(view, "move", view.image_to_widget(5.25, 6.75))
    assert hovered.calls[-1] == pytest.approx((5.25, 6.75)) and not moved.calls
    drag(view, [view.image_to_widget(10, 10), view.image_to_widget(12.5, 14.5)])
    assert moved.calls == [pytest.approx((12.5, 14.5))]


def test_wheel_zoom_keeps_the_pixel_under_the_cursor(view):
    for pos, notches in [(QPointF(130.5, 77.25), 2), (QPointF(310, 250), 3), (QPointF(20, 280), -4)]:
        before = view.widget_to_image(pos)
        zoom = view.zoom
        wheel(view, pos, notches)
        assert view.zoom == pytest.approx(zoom * 1.25**notches)
        assert view.widget_to_image(pos) == pytest.approx(before, abs=1e-9)
    assert not view.fit_mode


def test_zoom_is_clamped(view):
    view.zoom = 1e6
    assert view.zoom == view.MAX_ZOOM
    view.zoom = 1e-9
    assert view.zoom == view.MIN_ZOOM


def test_keys_zoom_fit_and_resize_the_brush(view):
    fitted = view.zoom
    QTest.keyClick(view, Qt.Key.Key_Plus)
    assert view.zoom == pytest.approx(fitted * 1.25)
    QTest.keyClick(view, Qt.Key.Key_Minus)
    QTest.keyClick(view, Qt.Key.Key_Minus)
    assert view.zoom == pytest.approx(fitted / 1.25)
    QTest.keyClick(view, Qt.Key.Key_1)
    assert view.zoom == 1.0 and not view.fit_mode
    QTest.keyClick(view, Qt.Key.Key_0)
    assert view.fit_mode and view.zoom == pytest.approx(fitted)
    radius = view.brush_radius
    QTest.keyClick(view, Qt.Key.Key_BracketRight)
    assert view.brush_radius > radius
    QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    assert view.brush_radius < radius


def _origin(view: ImageView) -> tuple[float, float]:
    p = view.image_to_widget(0, 0)
    return p.x(), p.y()


@pytest.mark.parametrize("how", ["middle", "space", "tool"])
def test_panning_moves_the_image_and_reports_no_press(view, qtbot, how):
    pressed = Recorder(view.pressed)
    x0, y0 = _origin(view)
    path = [QPointF(200, 150), QPointF(215, 160), QPointF(230, 170)]
    if how == "middle":
        drag(view, path, MIDDLE)
    elif how == "space":
        view.setFocus()
        QTest.keyPress(view, Qt.Key.Key_Space)
        drag(view, path, LEFT)
        QTest.keyRelease(view, Qt.Key.Key_Space)
    else:
        view.tool = "pan"
        drag(view, path, LEFT)
    assert _origin(view) == pytest.approx((x0 + 30, y0 + 20))
    assert not pressed.calls and not view.fit_mode
    # Once Space is up (or the tool is back) the left button is reported again, not panned.
    view.tool = "point"
    drag(view, [QPointF(100, 100), QPointF(140, 100)], LEFT)
    assert len(pressed.calls) == 1 and _origin(view) == pytest.approx((x0 + 30, y0 + 20))


def test_fit_follows_resizes_until_the_user_zooms(view, qtbot):
    view.resize(200, 300)
    assert view.zoom == pytest.approx((200 - 2 * view.FIT_MARGIN) / W)
    view.zoom_by(1.5)
    zoom = view.zoom
    centre = view.widget_to_image(QPointF(100, 150))
    view.resize(500, 400)
    assert view.zoom == zoom
    assert view.widget_to_image(QPointF(250, 200)) == pytest.approx(centre)  # the centre stays the centre


def test_a_new_image_of_the_same_size_keeps_the_view_and_another_size_fits(view):
    _set_view(view, "panned")
    zoom, origin = view.zoom, _origin(view)
    frame = pattern()[::-1].copy()
    view.set_image(frame)
    assert view.zoom == zoom and _origin(view) == origin
    assert view._array is frame  # wrapped, not copied
    view.set_image(pattern(100, 30))
    assert view.fit_mode and view.zoom == pytest.approx((400 - 2 * view.FIT_MARGIN) / 100)


def _capsule(a, b, r, w=W, h=H) -> np.ndarray:
    """Pixels whose centres lie within r of segment a-b, computed pixel by pixel."""
    out = np.zeros((h, w), bool)
    ax, ay = a
    bx, by = b
    for i in range(h):
        for j in range(w):
            px, py = j + 0.5, i + 0.5
            seg2 = (bx - ax) ** 2 + (by - ay) ** 2
            t = 0.0 if seg2 == 0 else min(1.0, max(0.0, ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / seg2))
            out[i, j] = math.hypot(px - ax - t * (bx - ax), py - ay - t * (by - ay)) <= r
    return out


@pytest.mark.parametrize("state", ["fit", "wheel"])
def test_brush_paints_and_erases_the_pixels_within_its_radius(view, state):
    _set_view(view, state)
    changed, pressed = Recorder(view.maskChanged), Recorder(view.pressed)
    view.set_mask_editing(True)
    view.brush_radius = 4.3
    stroke = [(10.5, 10.5), (20.5, 10.5), (30.5, 20.5)]
    drag(view, [view.image_to_widget(*p) for p in stroke])
    expected = _capsule(stroke[0], stroke[1], 4.3) | _capsule(stroke[1], stroke[2], 4.3)
    mask = view.mask()
    assert mask.dtype == bool and mask.shape == (H, W)
    assert np.array_equal(mask, expected)
    assert changed.calls and not pressed.calls  # a brush stroke is not a press to report

    view.brush_radius = 2.3
    erase = [(15.5, 10.5), (25.5, 10.5)]
    drag(view, [view.image_to_widget(*p) for p in erase], RIGHT)
    expected &= ~_capsule(erase[0], erase[1], 2.3)
    assert np.array_equal(view.mask(), expected)
    drag(view, [view.image_to_widget(30.5, 20.5)], LEFT, Qt.KeyboardModifier.ShiftModifier)  # Shift erases too
    expected &= ~_capsule((30.5, 20.5), (30.5, 20.5), 2.3)
    assert np.array_equal(view.mask(), expected)

    view.set_mask_editing(False)
    drag(view, [view.image_to_widget(40.5, 40.5), view.image_to_widget(50.5, 40.5)])
    assert np.array_equal(view.mask(), expected) and len(pressed.calls) == 1


def test_set_mask_clear_mask_and_the_mask_is_drawn_semi_transparent(view):
    view.actual_size()
    view.zoom_by(4)
    mask = np.zeros((H, W), bool)
    mask[20:30, 25:40] = True
    changed = Recorder(view.maskChanged)
    view.set_mask(mask)
    assert np.array_equal(view.mask(), mask) and len(changed.calls) == 1
    with pytest.raises(ValueError):
        view.set_mask(np.zeros((H, W + 1), bool))
    shown = grab_array(view)
    img = pattern()
    color = view.mask_color
    alpha = color.alpha() / 255
    rgb = np.array([color.red(), color.green(), color.blue()])
    for i, j in [(20, 25), (25, 30), (29, 39)]:
        at = view.image_to_widget(j + 0.5, i + 0.5)
        got = shown[int(at.y()), int(at.x())].astype(float)
        assert got == pytest.approx(img[i, j] * (1 - alpha) + rgb * alpha, abs=3)
    at = view.image_to_widget(24.5, 20.5)  # just outside: the image as it is
    assert np.array_equal(shown[int(at.y()), int(at.x())], img[20, 24])
    view.clear_mask()
    assert not view.mask().any() and len(changed.calls) == 2
    shown = grab_array(view)
    at = view.image_to_widget(30.5, 25.5)
    assert np.array_equal(shown[int(at.y()), int(at.x())], img[25, 30])


def test_the_mask_survives_frames_of_the_same_size_only(view):
    mask = np.zeros((H, W), bool)
    mask[5:9, 5:9] = True
    view.set_mask(mask)
    view.set_image(pattern())
    assert np.array_equal(view.mask(), mask)
    changed = Recorder(view.maskChanged)
    view.set_image(pattern(32, 32))
    assert view.mask().shape == (32, 32) and not view.mask().any() and changed.calls


@pytest.mark.parametrize("state", ["fit", "actual", "wheel", "panned"])
def test_the_image_is_drawn_where_the_coordinates_say(view, state):
    _set_view(view, state)
    shown = grab_array(view)
    img = pattern()
    checked = 0
    for i in range(0, H, 5):
        for j in range(0, W, 7):
            at = view.image_to_widget(j + 0.5, i + 0.5)
            if 0 <= at.x() < 400 and 0 <= at.y() < 300:
                assert np.array_equal(shown[int(at.y()), int(at.x())], img[i, j]), (i, j)
                checked += 1
    assert checked > 10
    far = view.image_to_widget(-3, -3)  # the background, not the image
    if 0 <= far.x() < 400 and 0 <= far.y() < 300:
        assert np.array_equal(shown[int(far.y()), int(far.x())], [44, 44, 44])


def test_zoomed_in_pixels_are_sharp_blocks(view):
    view.actual_size()
    view.zoom = 6.0
    shown = grab_array(view)
    corner = view.image_to_widget(20, 20)
    block = shown[round(corner.y()) + 1: round(corner.y()) + 5, round(corner.x()) + 1: round(corner.x()) + 5]
    assert (block == pattern()[20, 20]).all()  # nearest neighbour: one colour, no blending with neighbours


def test_zoomed_out_images_are_smoothed(qtbot):
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(200, 150)
    view.show()
    qtbot.waitExposed(view)
    checker = (np.indices((300, 400)).sum(0) % 2 * 255).astype(np.uint8)  # one-pixel checkerboard
    view.set_image(checker)
    view.zoom = 0.5
    shown = grab_array(view)[40:110, 50:150, 0].astype(int)
    assert ((shown > 60) & (shown < 195)).mean() > 0.9  # blended greys, not black and white


@pytest.mark.parametrize("kind", ["grey", "rgba", "qimage", "bool"])
def test_other_image_kinds_are_drawn(view, kind):
    img = pattern()
    if kind == "grey":
        data, want = img[..., 0].copy(), np.repeat(img[..., :1], 3, -1)
    elif kind == "rgba":
        data, want = np.concatenate([img, np.full((H, W, 1), 255, np.uint8)], -1), img
    elif kind == "qimage":
        data = QImage(img.data, W, H, 3 * W, QImage.Format.Format_RGB888).copy()
        want = img
    else:
        data = img[..., 2] > 0
        want = np.repeat(img[..., 2:3], 3, -1)
    view.set_image(data)
    view.actual_size()
    view.zoom = 3
    shown = grab_array(view)
    for i, j in [(0, 0), (10, 33), (47, 63), (25, 2)]:
        at = view.image_to_widget(j + 0.5, i + 0.5)
        assert np.array_equal(shown[int(at.y()), int(at.x())], want[i, j])


def test_bad_images_points_and_arrows_are_refused(view):
    with pytest.raises(TypeError):
        view.set_image(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        view.set_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError):
        view.set_image(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError):
        view.set_points([Point(1, 2, "red", "", "star")])
    with pytest.raises(ValueError):
        view.set_points([Point(1, 2, "not-a-colour")])
    with pytest.raises(ValueError):
        view.set_arrows([(1, 2, 3)])


def test_points_are_drawn_at_their_place_with_a_constant_size(view):
    shown_sizes = []
    for zoom in (2.0, 12.0):
        view.zoom = zoom
        view.set_points([Point(20.5, 20.5, (255, 0, 0), "handle", "handle"),
                         Point(40.5, 30.5, "#0000ff", "target", "target")])
        shown = grab_array(view)
        at = view.image_to_widget(20.5, 20.5)
        assert np.array_equal(shown[int(at.y()), int(at.x())], [255, 0, 0])
        at = view.image_to_widget(40.5, 30.5)
        ring = shown[int(at.y()), int(at.x() + view.POINT_RADIUS)]
        assert ring[2] > 200 and ring[0] < 80  # the blue ring, POINT_RADIUS screen pixels out
        # the red disc is as wide on screen at both zooms
        at = view.image_to_widget(20.5, 20.5)
        row = shown[int(at.y()), int(at.x()) - 20: int(at.x()) + 20]
        shown_sizes.append(int(((row[:, 0] > 200) & (row[:, 1] < 60) & (row[:, 2] < 60)).sum()))
    assert abs(shown_sizes[0] - shown_sizes[1]) <= 1 and shown_sizes[0] >= 8


def test_overlays_survive_extreme_zooms_and_pans(view, caplog):
    view.set_points([Point(1, 1, "red", "handle 1"), Point(60, 40, "blue", "target 1", "target"),
                     Point(30, 20, "lime", "x", "cross"), Point(10, 40, "yellow", "s", "square")])
    view.set_arrows([(1, 1, 60, 40, "red"), (30, 20, 30.01, 20.01), (-1000, -1000, 5000, 3000, "white")])
    view.set_mask_editing(True)
    view.brush_radius = 500
    mask = np.zeros((H, W), bool)
    mask[::3, ::2] = True
    view.set_mask(mask)
    mouse(view, "move", QPointF(200, 150))  # the brush outline is drawn at the cursor
    with caplog.at_level(logging.ERROR):
        for zoom, anchor in [(view.MAX_ZOOM, QPointF(200, 150)), (view.MAX_ZOOM, QPointF(0, 0)),
                             (view.MIN_ZOOM, QPointF(200, 150))]:
            view.zoom_by(zoom / view.zoom, anchor)
            assert view.zoom == zoom
            view.grab()
            view.pan_by(1e7, -1e7)
            view.grab()
        view.fit()
        view.grab()
    assert not [r for r in caplog.records if "failed" in r.getMessage()]


def test_clip_segment_keeps_the_part_inside():
    from PySide6.QtCore import QRectF

    rect = QRectF(0, 0, 10, 10)
    assert clip_segment(-10, 5, 20, 5, rect) == pytest.approx((0, 5, 10, 5))
    assert clip_segment(2, 2, 3, 3, rect) == pytest.approx((2, 2, 3, 3))
    assert clip_segment(-5, -5, -1, 20, rect) is None


def _grid_images(n: int) -> list[np.ndarray]:
    return [np.full((12, 16, 3), (30 * k, 255 - 30 * k, 100), np.uint8) for k in range(n)]


def test_grid_reports_the_cell_clicked_and_draws_each_image_in_its_cell(view):
    clicked, pressed = Recorder(view.cellClicked), Recorder(view.pressed)
    images = _grid_images(7)
    view.set_images(images, [f"t={k}" for k in range(7)], columns=3)
    assert view.is_grid
    for state in ("fit", "zoomed"):
        if state == "zoomed":
            view.zoom_by(1.7, view.image_to_widget(*view.cell_rect(4).center().toTuple()))
        shown = grab_array(view)
        for k in range(7):
            rect = view.cell_rect(k)
            pitch_x, pitch_y = view.cell_rect(1).x(), view.cell_rect(3).y()
            assert (rect.x(), rect.y()) == ((k % 3) * pitch_x, (k // 3) * pitch_y)  # row by row, 3 a row
            at = view.image_to_widget(rect.x() + 3.5, rect.y() + 5.5)
            if not view.rect().contains(screen_pixel(at)):
                continue
            assert np.array_equal(shown[int(at.y()), int(at.x())], images[k][0, 0])
            QTest.mouseClick(view, LEFT, Qt.KeyboardModifier.NoModifier, screen_pixel(at))
            assert clicked.calls[-1] == (k,)
            cell, lx, ly = view.to_cell(*pressed.calls[-1][:2])
            assert cell == k and abs(lx - 3.5) <= 0.5 and abs(ly - 5.5) <= 0.5
            assert view.contains(*pressed.calls[-1][:2])
    n = len(clicked.calls)
    gap = view.image_to_widget(view.cell_rect(0).right() + 0.5, 3)  # between two cells
    QTest.mouseClick(view, LEFT, Qt.KeyboardModifier.NoModifier, screen_pixel(gap))
    assert len(clicked.calls) == n and view.to_cell(*pressed.calls[-1][:2])[0] == -1
    # A drag from one cell to another is no click.
    drag(view, [view.image_to_widget(*view.cell_rect(0).center().toTuple()),
                view.image_to_widget(*view.cell_rect(1).center().toTuple())])
    assert len(clicked.calls) == n


def test_grid_hover_zoom_and_back_to_one_image(view):
    hovered = Recorder(view.cellHovered)
    view.set_images(_grid_images(6), ["a", "b", "c", "d", "e", "f"], columns=2)
    mouse(view, "move", view.image_to_widget(*view.cell_rect(5).center().toTuple()))
    assert hovered.calls[-1] == (5,)
    pos = QPointF(170, 90)
    before = view.widget_to_image(pos)
    wheel(view, pos, 2)
    assert view.widget_to_image(pos) == pytest.approx(before)
    zoom = view.zoom
    view.set_images(_grid_images(6)[::-1], ["a", "b", "c", "d", "e", "f"], columns=2)  # the same layout
    assert view.zoom == zoom
    view.set_image(pattern())
    assert not view.is_grid and view.fit_mode and view.content_size == (W, H)


def test_grid_columns_suit_the_widget_shape(view):
    view.resize(600, 150)
    view.set_images(_grid_images(6))
    assert view.cell_rect(1).y() == view.cell_rect(0).y()  # side by side in a wide widget
    view.resize(150, 600)
    view.set_images(_grid_images(6))
    assert view.cell_rect(1).x() == view.cell_rect(0).x()  # one above the other in a tall one


def test_grid_captions_are_drawn_under_their_images(view):
    view.set_images(_grid_images(4), ["sample 0", "", "sample 2", ""], columns=2)
    shown = grab_array(view).astype(int)

    def band_is_written(k: int) -> bool:
        rect = view.cell_rect(k)
        top_left = view.image_to_widget(rect.left(), rect.bottom())
        below = view.image_to_widget(rect.right(), view.cell_rect(k + 2).top() if k < 2 else view.content_size[1])
        band = shown[int(top_left.y()) + 1: int(below.y()), int(top_left.x()) + 1: int(below.x())]
        return bool((band.min(-1) > 150).any())  # light text on the dark background

    assert band_is_written(0) and band_is_written(2)
    assert not band_is_written(1) and not band_is_written(3)


def test_a_drag_whose_release_was_lost_does_not_block_new_presses(view):
    pressed = Recorder(view.pressed)
    mouse(view, "press", QPointF(100, 100), MIDDLE)  # its release goes elsewhere
    event = QMouseEvent(QEvent.Type.MouseButtonPress, QPointF(120, 100), QPointF(view.mapToGlobal(QPointF(120, 100))),
                        LEFT, LEFT, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view, event)
    assert len(pressed.calls) == 1
