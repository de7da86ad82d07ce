"""A zoomable, pannable image view shared by panels that show pictures a person works on.

:class:`ImageView` shows one image (a numpy array or a QImage) or a grid of them with
captions. The drag editor clicks handle and target points on it and paints a mask of the
region that must stay fixed; the diffusion scrubber shows a batch of samples in its grid.

Image coordinates
    Every position the view reports or accepts is in *image coordinates*: continuous
    floats in the image's pixel units, with (0, 0) the top-left corner of the top-left
    pixel. The pixel in row ``i`` and column ``j`` covers ``j <= x < j + 1`` and
    ``i <= y < i + 1``, so its centre is ``(j + 0.5, i + 0.5)`` and the pixel under a point
    is ``(floor(x), floor(y))``. This is QPainter's own convention, so the numbers need no
    shifting when they are drawn. Mouse positions are mapped as Qt gives them: a mouse over
    screen pixel ``p`` is at ``p`` (that pixel's corner), so at 1:1 a click reads up to half
    a pixel from the centre of the pixel it shows. In grid mode the same holds for the
    whole grid seen as one canvas; :meth:`ImageView.to_cell` turns a canvas position into a
    cell and a position in that cell's image.

Drawing is kept cheap because the drag editor sends a new frame every optimisation step:
a numpy array is wrapped as a QImage without a copy (the view keeps the array alive), a new
image of the same size keeps the zoom and pan, and the paint event does no numpy work, only
draws the part of the image that is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .pictures import guarded

ColorLike = QColor | str | tuple | list

POINT_KINDS = ("dot", "ring", "cross", "square", "handle", "target")
"""How a :class:`Point` is drawn: ``dot``/``handle`` a filled disc, ``ring``/``target`` a
circle with a small centre dot, ``cross`` an x, ``square`` a filled square."""


@dataclass(frozen=True)
class Point:
    """A marker drawn over the image at image coordinates (x, y), with an optional label."""

    x: float
    y: float
    color: ColorLike = "red"
    label: str = ""
    kind: str = "dot"


def to_qcolor(color: ColorLike) -> QColor:
    """A colour given as a QColor, a name or '#rrggbb' string, or an (r, g, b[, a]) tuple."""
    if isinstance(color, QColor):
        return QColor(color)
    if isinstance(color, str):
        q = QColor(color)
        if not q.isValid():
            raise ValueError(f"Unknown colour {color!r}")
        return q
    values = [int(v) for v in color]
    if len(values) not in (3, 4):
        raise ValueError(f"A colour tuple has 3 or 4 values, not {len(values)}")
    return QColor(*values)


def wrap_image(image) -> tuple[QImage, np.ndarray | None]:
    """A QImage showing ``image`` without copying its pixels, and the array it reads.

    ``image`` is a QImage (returned as is: QImages share their data) or a uint8 (or bool)
    numpy array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA. The returned array must be
    kept alive as long as the QImage is used, since the QImage reads its memory.
    """
    if isinstance(image, QImage):
        if image.isNull():
            raise ValueError("The image is empty")
        return image, None
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise TypeError(f"Images are uint8 arrays (got {arr.dtype}); scale them to 0..255 first")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    formats = {1: QImage.Format.Format_Grayscale8, 3: QImage.Format.Format_RGB888, 4: QImage.Format.Format_RGBA8888}
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else 0)
    if channels not in formats:
        raise ValueError(f"Images are (H, W), (H, W, 3) or (H, W, 4) arrays, not {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("The image is empty")
    arr = np.ascontiguousarray(arr)  # no copy when it already is
    h, w = arr.shape[:2]
    return QImage(arr.data, w, h, arr.strides[0], formats[channels]), arr


def _premultiplied_argb(color: QColor) -> np.uint32:
    """``color`` as one pixel of a Format_ARGB32_Premultiplied image."""
    a = color.alpha()
    r, g, b = (c * a // 255 for c in (color.red(), color.green(), color.blue()))
    return np.uint32((a << 24) | (r << 16) | (g << 8) | b)


def clip_segment(x0: float, y0: float, x1: float, y1: float, rect: QRectF) -> tuple[float, float, float, float] | None:
    """The part of a segment inside ``rect`` (Liang-Barsky), or None when none is.

    Overlays are clipped before drawing because at high zoom their ends can lie millions
    of pixels off screen, where QPainter's fixed-point rasteriser misbehaves.
    """
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 - rect.left()), (dx, rect.right() - x0), (-dy, y0 - rect.top()), (dy, rect.bottom() - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy


@dataclass
class _Cell:
    """One image of the grid: where it lies on the grid canvas (centred in its box)."""

    image: QImage
    array: np.ndarray | None  # kept alive for the QImage
    caption: str
    x: float
    y: float


@dataclass
class _Grid:
    """The layout of grid mode: equal boxes in rows, a caption band under each image."""

    columns: int
    rows: int
    box_w: int  # the widest and tallest image
    box_h: int
    band: int  # caption band height, in canvas pixels
    gap: int
    cells: list[_Cell]

    @property
    def pitch(self) -> tuple[int, int]:
        return self.box_w + self.gap, self.box_h + self.band + self.gap

    @property
    def size(self) -> tuple[int, int]:
        px, py = self.pitch
        return self.columns * px - self.gap, self.rows * py - self.gap

    @staticmethod
    def spacing(box_w: int, box_h: int, captions: bool) -> tuple[int, int]:
        """Caption band and gap in canvas pixels: proportional to the boxes, so that they
        keep their share of the screen whatever the images' size (a 512 px sample and a
        28 px digit both get readable captions when the grid fits the window)."""
        band = max(4, round(0.2 * box_h)) if captions else 0
        return band, max(2, round(0.06 * max(box_w, box_h)))


class ImageView(QWidget):
    """One image (or a grid of images) with zoom, pan, point and arrow overlays and a mask.

    Mouse: the wheel zooms about the cursor; the middle button, or the left button while
    Space is held or while :attr:`tool` is ``"pan"``, pans. With mask editing on, the left
    button paints the mask and the right button (or Shift + left) erases it. Other presses
    are reported by :attr:`pressed`, :attr:`moved` (while held) and :attr:`released`, in
    image coordinates (see the module's docstring), also outside the image
    (:meth:`contains` tells); presses used to pan or paint are not reported.
    Keys: ``+``/``-`` zoom, ``0`` fit, ``1`` actual size, ``[``/``]`` brush size.
    """

    pressed = Signal(float, float, int)  # x, y, the Qt.MouseButton's value
    moved = Signal(float, float)  # while a reported press is held
    released = Signal(float, float)
    hovered = Signal(float, float)  # every mouse move over the widget
    maskChanged = Signal()  # noqa: N815 - Qt naming; by the brush, set_mask or clear_mask
    cellClicked = Signal(int)  # noqa: N815 - grid mode: a left click (press and release) on a cell
    cellHovered = Signal(int)  # noqa: N815 - grid mode: the cell under the mouse, -1 for none
    zoomChanged = Signal(float)  # noqa: N815

    MIN_ZOOM = 1 / 64
    MAX_ZOOM = 256.0
    FIT_MARGIN = 4  # screen pixels around the image when it is fitted
    WHEEL_STEP = 1.25  # zoom factor per wheel notch and per +/- key
    POINT_RADIUS = 6.0  # screen pixels, whatever the zoom
    CLICK_SLOP = 4  # screen pixels a click may move and still count as a click

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.background = QColor(44, 44, 44)
        self.placeholder = "No image"
        self._image: QImage | None = None
        self._array: np.ndarray | None = None
        self._grid: _Grid | None = None
        self._content = (0, 0)  # width and height in image pixels (the canvas in grid mode)
        self._scale = 1.0  # screen pixels per image pixel
        self._offset = QPointF(0, 0)  # where image coordinate (0, 0) lies on the widget
        self._fit_mode = True
        self._points: list[tuple[Point, QColor]] = []
        self._arrows: list[tuple[float, float, float, float, QColor]] = []
        self._mask: np.ndarray | None = None  # bool (H, W)
        self._mask_argb: np.ndarray | None = None  # uint32 (H, W) drawn over the image
        self._mask_image: QImage | None = None
        self._mask_color = QColor(255, 40, 160, 110)
        self._mask_editing = False
        self._brush_radius = 8.0
        self.mask_visible = True
        self._tool = "point"
        self._drag: str | None = None  # "pan", "paint", "erase" or "report" while a button is held
        self._drag_button = Qt.MouseButton.NoButton
        self._last = QPointF()  # the previous mouse position of a pan (widget coordinates)
        self._last_image = (0.0, 0.0)  # the previous point of a brush stroke (image coordinates)
        self._press_at = QPointF()
        self._press_cell = -1
        self._hover_cell = -1
        self._space_held = False
        self._cursor: QPointF | None = None  # for the brush outline
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(120, 90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    # -- contents ----------------------------------------------------------------------
    def set_image(self, image) -> None:
        """Show one image (see :func:`wrap_image` for what it may be); leaves grid mode.

        An image of the same size as the one shown keeps the zoom, pan and mask, and costs
        no more than wrapping it: this is how live frames are shown. Another size fits the
        new image to the window and starts an empty mask.
        """
        qimage, array = wrap_image(image)
        w, h = qimage.width(), qimage.height()
        keep_view = self._grid is None and self._image is not None and self._content == (w, h)
        self._grid = None
        self._image, self._array = qimage, array
        self._content = (w, h)
        if self._mask is None or self._mask.shape != (h, w):
            had_mask = self._mask is not None and bool(self._mask.any())
            self._mask = np.zeros((h, w), bool)
            self._mask_argb = self._mask_image = None
            if had_mask:
                self.maskChanged.emit()
        if not keep_view:
            self.fit()
        self._update_cursor()
        self.update()

    def set_images(self, images: list, captions: list[str] | None = None, columns: int | None = None) -> None:
        """Show several images in a grid, a caption under each (grid mode).

        ``columns`` defaults to the number that shows the images largest in the widget as
        it is now. Images of different sizes are centred in boxes of the largest size. A
        grid laid out like the one shown keeps the zoom and pan. :meth:`set_image` goes
        back to one image.
        """
        wrapped = [wrap_image(im) for im in images]
        if not wrapped:
            self.clear()
            return
        n = len(wrapped)
        captions = list(captions or [])
        if len(captions) > n:
            raise ValueError(f"{len(captions)} captions for {n} images")
        captions += [""] * (n - len(captions))
        box_w = max(q.width() for q, _ in wrapped)
        box_h = max(q.height() for q, _ in wrapped)
        band, gap = _Grid.spacing(box_w, box_h, any(captions))
        if columns is None:
            columns = self._best_columns(n, box_w, box_h, band, gap)
        columns = max(1, min(int(columns), n))
        grid = _Grid(columns, math.ceil(n / columns), box_w, box_h, band, gap, [])
        px, py = grid.pitch
        for k, ((q, arr), caption) in enumerate(zip(wrapped, captions)):
            r, c = divmod(k, columns)
            grid.cells.append(_Cell(q, arr, caption, c * px + (box_w - q.width()) // 2,
                                    r * py + (box_h - q.height()) // 2))
        old = self._grid
        keep_view = old is not None and (old.columns, old.rows, old.box_w, old.box_h, old.band) == (
            grid.columns, grid.rows, grid.box_w, grid.box_h, grid.band)
        self._grid = grid
        self._image = self._array = None
        self._content = grid.size
        if not keep_view:
            self.fit()
        self._update_cursor()
        self.update()

    def _best_columns(self, n: int, box_w: int, box_h: int, band: int, gap: int) -> int:
        aw, ah = self._available()
        best, best_scale = 1, -1.0
        for c in range(1, n + 1):
            rows = math.ceil(n / c)
            scale = min(aw / (c * (box_w + gap) - gap), ah / (rows * (box_h + band + gap) - gap))
            if scale > best_scale + 1e-9:
                best, best_scale = c, scale
        return best

    def clear(self) -> None:
        """Show nothing (the placeholder text)."""
        self._image = self._array = self._grid = None
        self._content = (0, 0)
        self._fit_mode = True
        self.update()

    @property
    def is_grid(self) -> bool:
        return self._grid is not None

    @property
    def content_size(self) -> tuple[int, int]:
        """Width and height in image pixels of what is shown (the whole grid in grid mode)."""
        return self._content

    # -- view: zoom and pan --------------------------------------------------------------
    @property
    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        return self._scale

    @zoom.setter
    def zoom(self, value: float) -> None:
        self._set_scale(float(value), self._center())

    @property
    def fit_mode(self) -> bool:
        """True while the view follows the window's size (until the user zooms or pans)."""
        return self._fit_mode

    def fit(self) -> None:
        """Fit the whole image (or grid) to the window, and keep it fitted on resize."""
        self._fit_mode = True
        self._apply_fit()
        self.update()

    def actual_size(self) -> None:
        """One image pixel per screen pixel, about the widget's centre."""
        self._set_scale(1.0, self._center())

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by ``factor`` keeping the image point under ``anchor`` (widget coordinates,
        default the centre) where it is."""
        self._set_scale(self._scale * factor, self._center() if anchor is None else QPointF(anchor))

    def pan_by(self, dx: float, dy: float) -> None:
        """Move the image by (dx, dy) screen pixels."""
        self._offset += QPointF(dx, dy)
        self._fit_mode = False
        self.update()

    def _center(self) -> QPointF:
        return QPointF(self.width() / 2, self.height() / 2)

    def _available(self) -> tuple[float, float]:
        return max(1.0, self.width() - 2 * self.FIT_MARGIN), max(1.0, self.height() - 2 * self.FIT_MARGIN)

    def _fit_scale(self) -> float:
        w, h = self._content
        if not w or not h:
            return 1.0
        aw, ah = self._available()
        return min(self.MAX_ZOOM, aw / w, ah / h)

    def _apply_fit(self) -> None:
        old = self._scale
        w, h = self._content
        self._scale = self._fit_scale()
        self._offset = QPointF((self.width() - w * self._scale) / 2, (self.height() - h * self._scale) / 2)
        if self._scale != old:
            self.zoomChanged.emit(self._scale)

    def _set_scale(self, scale: float, anchor: QPointF) -> None:
        if not self._content[0]:
            return
        lowest = min(self.MIN_ZOOM, self._fit_scale())
        scale = min(self.MAX_ZOOM, max(lowest, scale))
        x, y = self.widget_to_image(anchor)
        changed = scale != self._scale
        self._scale = scale
        self._offset = QPointF(anchor.x() - x * scale, anchor.y() - y * scale)
        self._fit_mode = False
        if changed:
            self.zoomChanged.emit(scale)
        self.update()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._fit_mode:
            self._apply_fit()
        else:  # keep what was at the centre at the centre
            old = event.oldSize()
            if old.width() > 0 and old.height() > 0:
                self._offset += QPointF((self.width() - old.width()) / 2, (self.height() - old.height()) / 2)
        super().resizeEvent(event)

    # -- coordinates ---------------------------------------------------------------------
    def widget_to_image(self, pos: QPointF) -> tuple[float, float]:
        """Image coordinates (see the module's docstring) of a widget position."""
        return (pos.x() - self._offset.x()) / self._scale, (pos.y() - self._offset.y()) / self._scale

    def image_to_widget(self, x: float, y: float) -> QPointF:
        """The widget position of image coordinates (x, y)."""
        return QPointF(self._offset.x() + x * self._scale, self._offset.y() + y * self._scale)

    def contains(self, x: float, y: float) -> bool:
        """Whether image coordinates (x, y) lie on the image (in grid mode: on one of the images)."""
        if self._grid is not None:
            k, lx, ly = self.to_cell(x, y)
            if k < 0:
                return False
            image = self._grid.cells[k].image
            return 0 <= lx < image.width() and 0 <= ly < image.height()
        w, h = self._content
        return 0 <= x < w and 0 <= y < h

    def cell_at(self, x: float, y: float) -> int:
        """Grid mode: the cell whose box (image and caption) holds canvas point (x, y), else -1."""
        grid = self._grid
        if grid is None or x < 0 or y < 0:
            return -1
        px, py = grid.pitch
        c, r = int(x // px), int(y // py)
        if c >= grid.columns or x - c * px >= grid.box_w or y - r * py >= grid.box_h + grid.band:
            return -1  # in a gap
        k = r * grid.columns + c
        return k if k < len(grid.cells) else -1

    def cell_rect(self, k: int) -> QRectF:
        """Grid mode: where cell ``k``'s image lies on the canvas (image coordinates)."""
        if self._grid is None or not 0 <= k < len(self._grid.cells):
            raise IndexError(f"No cell {k}")
        cell = self._grid.cells[k]
        return QRectF(cell.x, cell.y, cell.image.width(), cell.image.height())

    def to_cell(self, x: float, y: float) -> tuple[int, float, float]:
        """Grid mode: the cell at canvas point (x, y) and the point in that cell's image's
        own coordinates; (-1, x, y) when no cell is there."""
        k = self.cell_at(x, y)
        if k < 0:
            return -1, x, y
        cell = self._grid.cells[k]
        return k, x - cell.x, y - cell.y

    # -- overlays ------------------------------------------------------------------------
    def set_points(self, points: list[Point]) -> None:
        """Markers over the image; they keep their screen size at any zoom."""
        checked = []
        for pt in points:
            if pt.kind not in POINT_KINDS:
                raise ValueError(f"Unknown point kind {pt.kind!r}; one of {', '.join(POINT_KINDS)}")
            checked.append((pt, to_qcolor(pt.color)))
        self._points = checked
        self.update()

    def set_arrows(self, arrows: list[tuple]) -> None:
        """Arrows ``(x0, y0, x1, y1[, color])`` in image coordinates, pointing at (x1, y1)."""
        checked = []
        for arrow in arrows:
            if len(arrow) not in (4, 5):
                raise ValueError(f"An arrow is (x0, y0, x1, y1[, color]), not {arrow!r}")
            color = to_qcolor(arrow[4]) if len(arrow) == 5 else QColor(255, 220, 0)
            checked.append((*(float(v) for v in arrow[:4]), color))
        self._arrows = checked
        self.update()

    # -- mask ----------------------------------------------------------------------------
    def set_mask_editing(self, on: bool) -> None:
        """Let the left button paint the mask and the right button (or Shift) erase it."""
        self._mask_editing = bool(on)
        self._update_cursor()
        self.update()

    @property
    def mask_editing(self) -> bool:
        return self._mask_editing

    @property
    def brush_radius(self) -> float:
        """The brush's radius in image pixels: it covers the pixels whose centres lie within it."""
        return self._brush_radius

    @brush_radius.setter
    def brush_radius(self, value: float) -> None:
        self._brush_radius = min(1000.0, max(0.5, float(value)))
        self.update()

    @property
    def mask_color(self) -> QColor:
        return QColor(self._mask_color)

    @mask_color.setter
    def mask_color(self, color: ColorLike) -> None:
        self._mask_color = to_qcolor(color)
        if self._mask_argb is not None:
            self._refresh_mask(0, self._mask.shape[0], 0, self._mask.shape[1])
        self.update()

    def mask(self) -> np.ndarray:
        """A copy of the mask: bool (H, W), True where painted ((0, 0) with no image)."""
        return np.zeros((0, 0), bool) if self._mask is None else self._mask.copy()

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the mask with a bool (H, W) array the image's size."""
        arr = np.asarray(mask).astype(bool)
        if self._mask is None or arr.shape != self._mask.shape:
            want = None if self._mask is None else self._mask.shape
            raise ValueError(f"The mask must have the image's shape {want}, not {arr.shape}")
        self._mask = arr.copy()
        self._refresh_mask(0, arr.shape[0], 0, arr.shape[1])
        self.maskChanged.emit()
        self.update()

    def clear_mask(self) -> None:
        if self._mask is None:
            return
        self._mask[:] = False
        self._mask_argb = self._mask_image = None
        self.maskChanged.emit()
        self.update()

    def _refresh_mask(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Bring the drawn mask up to date in rows y0:y1, columns x0:x1."""
        h, w = self._mask.shape
        if self._mask_argb is None:
            self._mask_argb = np.zeros((h, w), np.uint32)
            y0, y1, x0, x1 = 0, h, 0, w
        self._mask_argb[y0:y1, x0:x1] = np.where(self._mask[y0:y1, x0:x1], _premultiplied_argb(self._mask_color), 0)
        # A fresh wrap (no copy) gives Qt a new cache key for the changed pixels.
        self._mask_image = QImage(self._mask_argb.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)

    def _stroke(self, a: tuple[float, float], b: tuple[float, float], value: bool) -> None:
        """Paint (or erase) the pixels whose centres lie within the brush radius of segment a-b."""
        h, w = self._mask.shape
        r = self._brush_radius
        x0, x1 = max(0, math.floor(min(a[0], b[0]) - r)), min(w, math.ceil(max(a[0], b[0]) + r))
        y0, y1 = max(0, math.floor(min(a[1], b[1]) - r)), min(h, math.ceil(max(a[1], b[1]) + r))
        if x0 >= x1 or y0 >= y1:
            return
        px = np.arange(x0, x1) + 0.5 - a[0]
        py = (np.arange(y0, y1) + 0.5 - a[1])[:, None]
        dx, dy = b[0] - a[0], b[1] - a[1]
        length2 = dx * dx + dy * dy
        t = np.clip((px * dx + py * dy) / length2, 0, 1) if length2 > 0 else 0.0
        inside = (px - t * dx) ** 2 + (py - t * dy) ** 2 <= r * r
        region = self._mask[y0:y1, x0:x1]
        if not np.any(region[inside] != value):
            return
        region[inside] = value
        self._refresh_mask(y0, y1, x0, x1)
        self.maskChanged.emit()
        self.update()

    # -- tools ---------------------------------------------------------------------------
    @property
    def tool(self) -> str:
        """``"point"`` (presses are reported) or ``"pan"`` (the left button pans)."""
        return self._tool

    @tool.setter
    def tool(self, value: str) -> None:
        if value not in ("point", "pan"):
            raise ValueError(f"Unknown tool {value!r}; 'point' or 'pan'")
        self._tool = value
        self._update_cursor()

    def _update_cursor(self) -> None:
        if self._drag == "pan":
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._space_held or self._tool == "pan":
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        elif self._mask_editing and self._grid is None:
            self.setCursor(Qt.CursorShape.CrossCursor)
        else:
            self.unsetCursor()

    # -- mouse and keys ------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        self._end_lost_drag(event)
        if self._drag is not None or not self._content[0]:
            return
        pos, button = event.position(), event.button()
        self._last = self._press_at = QPointF(pos)
        x, y = self.widget_to_image(pos)
        left = button == Qt.MouseButton.LeftButton
        if button == Qt.MouseButton.MiddleButton or (left and (self._space_held or self._tool == "pan")):
            self._drag = "pan"
        elif self._mask_editing and self._grid is None and button in (Qt.MouseButton.LeftButton,
                                                                       Qt.MouseButton.RightButton):
            erase = button == Qt.MouseButton.RightButton or bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            self._drag = "erase" if erase else "paint"
            self._stroke((x, y), (x, y), not erase)
            self._last_image = (x, y)
        else:
            self._drag = "report"
            self._press_cell = self.cell_at(x, y)
            self.pressed.emit(x, y, button.value)
        self._drag_button = button
        self._update_cursor()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._end_lost_drag(event)
        pos = event.position()
        if self._drag == "pan":
            self.pan_by(pos.x() - self._last.x(), pos.y() - self._last.y())
        x, y = self.widget_to_image(pos)
        if self._drag in ("paint", "erase"):
            self._stroke(self._last_image, (x, y), self._drag == "paint")
            self._last_image = (x, y)
        elif self._drag == "report":
            self.moved.emit(x, y)
        self._last = QPointF(pos)
        self._cursor = QPointF(pos)
        if self._mask_editing:
            self.update()  # the brush outline follows the cursor
        self.hovered.emit(x, y)
        self._hover(self.cell_at(x, y))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._drag is None or event.button() != self._drag_button:
            return
        pos = event.position()
        x, y = self.widget_to_image(pos)
        drag, self._drag = self._drag, None
        if drag in ("paint", "erase"):
            self._stroke(self._last_image, (x, y), drag == "paint")
        elif drag == "report":
            self.released.emit(x, y)
            still = (pos - self._press_at).manhattanLength() <= self.CLICK_SLOP
            cell = self.cell_at(x, y)
            if still and cell >= 0 and cell == self._press_cell and event.button() == Qt.MouseButton.LeftButton:
                self.cellClicked.emit(cell)
        self._update_cursor()

    def _end_lost_drag(self, event) -> None:
        """Forget a drag whose button is no longer down: its release went elsewhere (a popup
        grabbed the mouse), and waiting for it would leave the view deaf to new presses."""
        if self._drag is not None and not (event.buttons() & self._drag_button):
            self._drag = None
            self._update_cursor()

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._cursor = None
        self._hover(-1)
        self.update()
        super().leaveEvent(event)

    def _hover(self, cell: int) -> None:
        if cell != self._hover_cell:
            self._hover_cell = cell
            self.cellHovered.emit(cell)

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt API
        delta = event.angleDelta().y() or event.pixelDelta().y()
        if not delta or not self._content[0]:
            event.ignore()
            return
        self.zoom_by(self.WHEEL_STEP ** (delta / 120), event.position())
        event.accept()

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        key = event.key()
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(self.WHEEL_STEP)
        elif key in (Qt.Key.Key_Minus, Qt.Key.Key_Underscore):
            self.zoom_by(1 / self.WHEEL_STEP)
        elif key == Qt.Key.Key_0:
            self.fit()
        elif key == Qt.Key.Key_1:
            self.actual_size()
        elif key == Qt.Key.Key_BracketLeft:
            self.brush_radius = self._brush_radius / 1.2
        elif key == Qt.Key.Key_BracketRight:
            self.brush_radius = self._brush_radius * 1.2
        elif key == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space_held = True
                self._update_cursor()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = False
            self._update_cursor()
        else:
            super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._space_held = False  # its release goes elsewhere
        self._update_cursor()
        super().focusOutEvent(event)

    # -- painting ------------------------------------------------------------------------
    @guarded
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        try:
            self._paint(p)
        finally:
            p.end()

    def _paint(self, p: QPainter) -> None:
        p.fillRect(self.rect(), self.background)
        if not self._content[0]:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        # Nearest-neighbour when zoomed in, so that pixels show; smooth when zoomed out.
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._scale < 1)
        if self._grid is None:
            self._draw_image(p, self._image, 0, 0)
            if self.mask_visible and self._mask_image is not None:
                self._draw_image(p, self._mask_image, 0, 0)
        else:
            self._draw_grid(p)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        bounds = QRectF(self.rect()).adjusted(-50, -50, 50, 50)  # overlays are clipped to it
        for x0, y0, x1, y1, color in self._arrows:
            self._draw_arrow(p, self.image_to_widget(x0, y0), self.image_to_widget(x1, y1), color, bounds)
        for pt, color in self._points:
            at = self.image_to_widget(pt.x, pt.y)
            if bounds.contains(at):
                self._draw_point(p, at, color, pt)
        if self._mask_editing and self._grid is None and self._cursor is not None and self._drag != "pan":
            radius = self._brush_radius * self._scale
            if radius < 1e5:
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.setPen(QPen(QColor(0, 0, 0, 160), 3))
                p.drawEllipse(self._cursor, radius, radius)
                p.setPen(QPen(QColor(255, 255, 255), 1))
                p.drawEllipse(self._cursor, radius, radius)

    def _draw_image(self, p: QPainter, image: QImage, x0: float, y0: float) -> None:
        """Draw ``image`` with its top-left at canvas point (x0, y0): only its visible pixels,
        so that a 256x zoom draws a few hundred pixels, not a 16384-pixel-wide picture."""
        s, off = self._scale, self._offset
        w, h = image.width(), image.height()
        left = max(0, math.floor(-off.x() / s - x0))
        top = max(0, math.floor(-off.y() / s - y0))
        right = min(w, math.ceil((self.width() - off.x()) / s - x0))
        bottom = min(h, math.ceil((self.height() - off.y()) / s - y0))
        if left >= right or top >= bottom:
            return
        target = QRectF(off.x() + (x0 + left) * s, off.y() + (y0 + top) * s, (right - left) * s, (bottom - top) * s)
        p.drawImage(target, image, QRectF(left, top, right - left, bottom - top))

    def _draw_grid(self, p: QPainter) -> None:
        grid = self._grid
        font = QFont(p.font())
        font.setPointSizeF(8.5)
        p.setFont(font)
        metrics = QFontMetricsF(font)
        band_px = grid.band * self._scale
        for cell in grid.cells:
            self._draw_image(p, cell.image, cell.x, cell.y)
        if not grid.band or band_px < metrics.height() * 0.7:
            return  # too small to read
        px, py = grid.pitch
        p.setPen(QColor(225, 225, 225))
        view = QRectF(self.rect())
        for k, cell in enumerate(grid.cells):
            if not cell.caption:
                continue
            r, c = divmod(k, grid.columns)
            top_left = self.image_to_widget(c * px, r * py + grid.box_h)
            box = QRectF(top_left.x(), top_left.y(), grid.box_w * self._scale, band_px)
            if not box.intersects(view):
                continue
            box = box.intersected(view.adjusted(-2, -2, 2, 2))  # huge boxes at high zoom stay small
            text = metrics.elidedText(cell.caption, Qt.TextElideMode.ElideRight, box.width())
            p.drawText(box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, text)

    def _draw_arrow(self, p: QPainter, a: QPointF, b: QPointF, color: QColor, bounds: QRectF) -> None:
        clipped = clip_segment(a.x(), a.y(), b.x(), b.y(), bounds)
        if clipped is None:
            return
        ax, ay, bx, by = clipped
        p.setPen(QPen(QColor(0, 0, 0, 140), 4, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        p.drawLine(QPointF(ax, ay), QPointF(bx, by))
        p.setPen(QPen(color, 2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        p.drawLine(QPointF(ax, ay), QPointF(bx, by))
        length = math.hypot(b.x() - a.x(), b.y() - a.y())
        if length < 1 or not bounds.contains(b):
            return  # no head when the tip is off screen
        ux, uy = (b.x() - a.x()) / length, (b.y() - a.y()) / length
        head = min(12.0, length * 0.6)
        for side in (1, -1):  # two strokes at +-28 degrees from the shaft, back from the tip
            cos, sin = math.cos(math.radians(28)), side * math.sin(math.radians(28))
            dx, dy = -(ux * cos - uy * sin) * head, -(uy * cos + ux * sin) * head
            p.drawLine(b, QPointF(b.x() + dx, b.y() + dy))

    def _draw_point(self, p: QPainter, at: QPointF, color: QColor, pt: Point) -> None:
        r = self.POINT_RADIUS
        if pt.kind in ("ring", "target"):
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor(0, 0, 0, 160), 4.5))
            p.drawEllipse(at, r, r)
            p.setPen(QPen(color, 2.5))
            p.drawEllipse(at, r, r)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(color)
            p.drawEllipse(at, 1.5, 1.5)
        elif pt.kind == "cross":
            for pen in (QPen(QColor(0, 0, 0, 160), 4.5), QPen(color, 2.5)):
                p.setPen(pen)
                p.drawLine(at + QPointF(-r, -r), at + QPointF(r, r))
                p.drawLine(at + QPointF(-r, r), at + QPointF(r, -r))
        else:
            p.setPen(QPen(QColor(255, 255, 255), 1.5))
            p.setBrush(color)
            if pt.kind == "square":
                p.drawRect(QRectF(at.x() - r, at.y() - r, 2 * r, 2 * r))
            else:
                p.drawEllipse(at, r, r)
        if pt.label:
            metrics = QFontMetricsF(p.font())
            box = QRectF(at.x() + r + 3, at.y() - r - metrics.height(), metrics.horizontalAdvance(pt.label) + 6,
                         metrics.height())
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(0, 0, 0, 150))
            p.drawRoundedRect(box, 3, 3)
            p.setPen(QColor(255, 255, 255))
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, pt.label)
