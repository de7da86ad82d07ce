"""Painted views of a self-organizing map, with true square or hexagonal cells.

:class:`MapView` draws one map: a value per node through a colour map (U-matrix, hits,
one component plane), a category per node (label map), a colour per node (RGB data), or
a small picture per node (prototype images or curves). :class:`PlanesView` draws many
small maps side by side (component planes). Hovering reports the node under the mouse.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

from .pictures import array_to_qimage, guarded

SQRT3 = math.sqrt(3.0)
_VIRIDIS = pg.colormap.get("viridis").getLookupTable(nPts=256)


def cell_centers(rows: int, cols: int, hexagonal: bool) -> np.ndarray:
    """Centres (rows*cols, 2) in cell units: hex maps shift odd rows by half a cell."""
    i, j = np.divmod(np.arange(rows * cols), cols)
    if hexagonal:
        return np.stack([j + 0.5 * (i % 2), i * SQRT3 / 2], 1).astype(float)
    return np.stack([j, i], 1).astype(float)


def cell_shape(hexagonal: bool, size: float) -> QPolygonF:
    """One cell around (0, 0): a unit square, or a pointy-top hexagon of width 1, times ``size``."""
    if not hexagonal:
        h = size / 2
        return QPolygonF([QPointF(-h, -h), QPointF(h, -h), QPointF(h, h), QPointF(-h, h)])
    r = size / SQRT3
    return QPolygonF([QPointF(r * math.cos(math.radians(30 + 60 * k)), r * math.sin(math.radians(30 + 60 * k)))
                      for k in range(6)])


def viridis_rgb(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Values (any shape) through the viridis colour map, from ``lo`` to ``hi`` (default: their
    finite range), as (n, 3) uint8; NaN and infinities take the lowest colour."""
    v = np.asarray(values, float).ravel()
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if lo is None and finite.size else (lo or 0.0)
    hi = float(finite.max()) if hi is None and finite.size else (hi or 1.0)
    idx = np.clip((v - lo) / (hi - lo + 1e-12) * 255, 0, 255)
    idx = np.where(np.isfinite(idx), idx, 0).astype(int)
    return _VIRIDIS[idx, :3].astype(np.uint8)


def colorize(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> list[QColor]:
    return [QColor(*map(int, c)) for c in viridis_rgb(values, lo, hi)]


def category_color(k: int, n: int) -> QColor:
    return pg.intColor(k, hues=max(n, 1), values=1, maxValue=230, minValue=150)


class _Layout:
    """Where each cell of a rows x cols map goes inside a rectangle."""

    def __init__(self, rows: int, cols: int, hexagonal: bool, rect: QRectF) -> None:
        self.centers = cell_centers(rows, cols, hexagonal)
        span_x = cols - 1 + (0.5 if hexagonal and rows > 1 else 0) + 1
        span_y = (rows - 1) * (SQRT3 / 2 if hexagonal else 1) + (2 / SQRT3 if hexagonal else 1)
        self.span = (span_x, span_y)  # the map's width and height in cells
        self.size = min(rect.width() / span_x, rect.height() / span_y)
        ox = rect.left() + (rect.width() - span_x * self.size) / 2 + self.size / 2
        oy = rect.top() + (rect.height() - span_y * self.size) / 2 + (self.size / SQRT3 if hexagonal else self.size / 2)
        self.points = self.centers * self.size + np.array([ox, oy])
        # The rectangle the cells fill (inside ``rect``, centred).
        self.extent = QRectF(ox - self.size / 2, oy - (self.size / SQRT3 if hexagonal else self.size / 2),
                             span_x * self.size, span_y * self.size)
        self.shape = cell_shape(hexagonal, self.size)
        self.hexagonal = hexagonal
        self.rows, self.cols = rows, cols

    def node_at(self, x: float, y: float) -> int | None:
        d = np.hypot(self.points[:, 0] - x, self.points[:, 1] - y)
        k = int(np.argmin(d))
        return k if d[k] <= self.size * (0.58 if self.hexagonal else 0.71) else None


@functools.lru_cache(maxsize=8)
def _raster_index(rows: int, cols: int, hexagonal: bool, width: float, height: float) -> np.ndarray:
    """For each pixel of a width x height map rectangle, the cell it shows (-1: none).

    A pixel belongs to the cell whose centre is nearest (for a hexagonal lattice those
    regions are exactly the hexagons), if it lies inside that cell's shape. Depends only
    on the grid and the rectangle's size, so it is computed once and reused per paint.
    """
    lay = _Layout(rows, cols, hexagonal, QRectF(0, 0, width, height))
    w, h = max(1, int(width)), max(1, int(height))
    s = lay.size
    ox, oy = lay.points[0]
    px, py = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    u, v = (px - ox) / s, (py - oy) / s  # in cell units, cell (0, 0) at the origin
    if hexagonal:
        step = SQRT3 / 2
        best_i = best_j = None
        best_d = np.full(u.shape, np.inf)
        base = np.floor(v / step)
        for r in (base, base + 1):
            shift = 0.5 * (r % 2)
            j = np.round(u - shift)
            d = (u - j - shift) ** 2 + (v - r * step) ** 2
            take = d < best_d
            best_d = np.where(take, d, best_d)
            best_i = np.where(take, r, r if best_i is None else best_i)
            best_j = np.where(take, j, j if best_j is None else best_j)
        i, j = best_i.astype(int), best_j.astype(int)
        dx = np.abs(u - j - 0.5 * (i % 2))
        dy = np.abs(v - i * step)
        inside = (dx <= 0.5) & (dy + dx / SQRT3 <= 1 / SQRT3)
    else:
        i, j = np.round(v).astype(int), np.round(u).astype(int)
        inside = np.ones(u.shape, bool)
    inside &= (i >= 0) & (i < rows) & (j >= 0) & (j < cols)
    index = np.where(inside, i * cols + j, -1).astype(np.int32)
    index.flags.writeable = False
    return index


def rasterize(colors: np.ndarray, lay: _Layout, rect: QRectF, background=(255, 255, 255)) -> QImage:
    """Paint a map's cells into an image (to be drawn at ``rect.topLeft()``) in one go.

    ``colors`` is (rows*cols, 3) uint8. Used where thousands of cells are drawn at once.
    """
    index = _raster_index(lay.rows, lay.cols, lay.hexagonal, rect.width(), rect.height())
    palette = np.vstack([np.asarray(colors, np.uint8).reshape(-1, 3), np.asarray(background, np.uint8)])
    return array_to_qimage(palette[index])  # index -1 picks the last row: the background


RASTER_CELL_PX = 12  # a big map's raster has cells this wide, whatever the window's size


def raster_map(colors: np.ndarray, lay: _Layout, background=(255, 255, 255)) -> tuple[QImage, QRectF]:
    """A whole map as one image with RASTER_CELL_PX-wide cells, and where to draw it.

    Its pixel-to-cell index depends only on the grid, so it is computed once per grid
    (~0.1 s for 100x100) and not again when the window is resized; Qt scales the image.
    """
    size = QRectF(0, 0, round(lay.span[0] * RASTER_CELL_PX), round(lay.span[1] * RASTER_CELL_PX))
    return rasterize(colors, _Layout(lay.rows, lay.cols, lay.hexagonal, size), size, background), lay.extent


class MapView(QWidget):
    """One map, drawn cell by cell. Set exactly one of the ``show_*`` contents."""

    hovered = Signal(int)  # node index, -1 when the mouse leaves the map

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows = self.cols = 0
        self.hexagonal = False
        self.title = ""
        self._colors: list[QColor] = []
        self._rgb: np.ndarray | None = None
        self._images: list = []
        self._curves: np.ndarray | None = None
        self._texts: list[str] = []
        self._legend: list[tuple[str, QColor]] = []
        self._range = (0.0, 1.0)
        self.highlight: int | None = None
        self._layout: _Layout | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    # -- contents ----------------------------------------------------------------------
    def set_grid(self, rows: int, cols: int, hexagonal: bool) -> None:
        """A new grid; what was shown for another grid is dropped (it no longer fits)."""
        if (rows, cols) != (self.rows, self.cols):
            self._clear()
            self.title, self.highlight = "", None
        self.rows, self.cols, self.hexagonal = rows, cols, hexagonal
        self.update()

    def _clear(self) -> None:
        self._colors, self._images, self._curves, self._texts, self._legend = [], [], None, [], []
        self._rgb = None  # self._colors as a (n, 3) uint8 array, made when first needed

    def show_values(self, values: np.ndarray, title: str = "", texts: bool = False) -> None:
        """A number per node (rows, cols) through the viridis colour map."""
        self._clear()
        v = np.asarray(values, float)
        self._rgb = viridis_rgb(v)
        self._colors = [QColor(*map(int, c)) for c in self._rgb]
        finite = v[np.isfinite(v)]
        self._range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if texts:
            self._texts = [("" if not np.isfinite(x) or x == 0 else f"{x:g}") for x in v.ravel()]
        self.title = title
        self.update()

    def show_categories(self, categories: np.ndarray, names: list[str], title: str = "") -> None:
        """A category per node (-1: none) with a legend."""
        self._clear()
        cats = np.asarray(categories).ravel()
        n = len(names)
        self._colors = [QColor(235, 235, 235) if c < 0 else category_color(int(c), n) for c in cats]
        self._texts = ["" if c < 0 else names[int(c)][:3] for c in cats]
        self._legend = [(name, category_color(k, n)) for k, name in enumerate(names)]
        self.title = title
        self.update()

    def show_rgb(self, rgb: np.ndarray, title: str = "") -> None:
        """A colour per node from (rows, cols, 3) values in [0, 1]."""
        self._clear()
        c = (np.clip(np.asarray(rgb, float), 0, 1) * 255).astype(int).reshape(-1, 3)
        self._colors = [QColor(*map(int, x)) for x in c]
        self.title = title
        self.update()

    def show_images(self, images: np.ndarray, title: str = "") -> None:
        """A little picture per node from (rows, cols, h, w) values (each scaled on its own range)."""
        self._clear()
        imgs = np.asarray(images, np.float32).reshape(self.rows * self.cols, *images.shape[2:])
        lo, hi = float(imgs.min()), float(imgs.max())
        self._images = [array_to_qimage(((im - lo) / (hi - lo + 1e-9) * 255).astype(np.uint8)) for im in imgs]
        self.title = title
        self.update()

    def show_curves(self, curves: np.ndarray, title: str = "") -> None:
        """A little curve per node from (rows, cols, L) prototypes (1-D data such as MNIST-1D)."""
        self._clear()
        self._curves = np.asarray(curves, float).reshape(self.rows * self.cols, -1)
        self._curve_range = (float(self._curves.min()), float(self._curves.max()))
        self.title = title
        self.update()

    def set_highlight(self, node: int | None) -> None:
        self.highlight = node
        self.update()

    # -- painting ------------------------------------------------------------------------
    def _map_rect(self) -> QRectF:
        right = 90 if (self._legend or (self._colors and not self._images and self._curves is None
                                         and not self._legend and self._range != (0.0, 1.0))) else 8
        return QRectF(8, 22, self.width() - 8 - right, self.height() - 30)

    @guarded
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().base())
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(0, 2, self.width(), 18), Qt.AlignmentFlag.AlignCenter, self.title)
        if not self.rows:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Train a map to see it here")
            return
        lay = _Layout(self.rows, self.cols, self.hexagonal, self._map_rect())
        self._layout = lay
        p.setRenderHint(QPainter.RenderHint.Antialiasing, self.hexagonal)
        # (QPen(Qt.PenStyle.NoPen, width) is no constructor: PySide6 crashes on it.)
        outline = QPen(QColor(255, 255, 255, 90), 0.6) if lay.size > 6 else QPen(Qt.PenStyle.NoPen)
        path = QPainterPath()
        path.addPolygon(lay.shape)
        path.closeSubpath()
        n = self.rows * self.cols
        if self._colors and lay.size < 12 and len(self._colors) == n:
            # Small cells (big maps): one raster for the whole map instead of n polygons;
            # at this size cells get no outlines or numbers anyway.
            if self._rgb is None:
                self._rgb = np.array([c.getRgb()[:3] for c in self._colors], np.uint8)
            base = self.palette().base().color()
            image, target = raster_map(self._rgb, lay, (base.red(), base.green(), base.blue()))
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(target, image)
        cell_by_cell = range(0) if self._rgb is not None and lay.size < 12 else range(n)
        font = QFont(p.font())
        font.setPointSizeF(max(5.0, min(9.0, lay.size / 3.5)))
        p.setFont(font)
        for k in cell_by_cell:
            x, y = lay.points[k]
            p.save()
            p.translate(x, y)
            if self._colors:
                p.setPen(outline)
                p.setBrush(QBrush(self._colors[k]))
                p.drawPath(path)
                if self._texts and lay.size >= 18 and self._texts[k]:
                    c = self._colors[k]
                    p.setPen(Qt.GlobalColor.black if c.lightness() > 120 else Qt.GlobalColor.white)
                    p.drawText(QRectF(-lay.size / 2, -lay.size / 2, lay.size, lay.size),
                               Qt.AlignmentFlag.AlignCenter, self._texts[k])
            elif self._images:
                p.setPen(QPen(QColor(200, 200, 200), 0.5))
                p.setBrush(QBrush(QColor(20, 20, 20)))
                p.drawPath(path)
                s = lay.size * (0.8 if self.hexagonal else 0.96)
                p.drawImage(QRectF(-s / 2, -s / 2, s, s), self._images[k])
            elif self._curves is not None:
                p.setPen(QPen(QColor(210, 210, 210), 0.5))
                p.setBrush(QBrush(QColor(250, 250, 250)))
                p.drawPath(path)
                self._draw_curve(p, self._curves[k], lay.size * 0.8)
            p.restore()
        if self.highlight is not None and 0 <= self.highlight < n:
            x, y = lay.points[self.highlight]
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor(255, 40, 40), max(2.0, lay.size / 8)))
            p.drawEllipse(QPointF(x, y), lay.size * 0.42, lay.size * 0.42)
        self._draw_legend(p)
        p.end()

    def _draw_curve(self, p: QPainter, seq: np.ndarray, s: float) -> None:
        lo, hi = self._curve_range
        pts = QPolygonF([QPointF(-s / 2 + i / max(1, len(seq) - 1) * s, s / 2 - (v - lo) / (hi - lo + 1e-9) * s)
                         for i, v in enumerate(seq)])
        p.setPen(QPen(QColor(30, 80, 160), 0.8))
        p.drawPolyline(pts)

    def _draw_legend(self, p: QPainter) -> None:
        x0 = self.width() - 84
        p.setPen(self.palette().text().color())
        if self._legend:
            for k, (name, color) in enumerate(self._legend[:24]):
                y = 26 + k * 15
                p.fillRect(QRectF(x0, y, 11, 11), color)
                p.drawText(QRectF(x0 + 15, y - 2, 70, 15), Qt.AlignmentFlag.AlignLeft, name[:12])
        elif self._colors and self._range != (0.0, 1.0):
            top, height = 28.0, max(40.0, self.height() - 60.0)
            for k in range(64):
                c = _VIRIDIS[int(255 * (1 - k / 63))]
                p.fillRect(QRectF(x0, top + k * height / 64, 14, height / 64 + 1), QColor(*map(int, c)))
            p.drawText(QRectF(x0 + 18, top - 6, 66, 14), Qt.AlignmentFlag.AlignLeft, f"{self._range[1]:.3g}")
            p.drawText(QRectF(x0 + 18, top + height - 8, 66, 14), Qt.AlignmentFlag.AlignLeft, f"{self._range[0]:.3g}")

    # -- mouse ---------------------------------------------------------------------------
    def node_at(self, x: float, y: float) -> int | None:
        return None if self._layout is None else self._layout.node_at(x, y)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        node = self.node_at(event.position().x(), event.position().y())
        self.hovered.emit(-1 if node is None else node)

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.hovered.emit(-1)


class PlanesView(QWidget):
    """Component planes: one small map per feature, each on its own colour range."""

    hovered = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.planes: np.ndarray | None = None  # (dim, rows, cols)
        self.names: list[str] = []
        self.hexagonal = False
        self._cells: list[tuple[QRectF, _Layout]] = []
        self.setMouseTracking(True)
        self.setMinimumSize(200, 200)

    def show_planes(self, planes: np.ndarray, names: list[str], hexagonal: bool) -> None:
        self.planes, self.names, self.hexagonal = np.asarray(planes, float), list(names), hexagonal
        self.update()

    @guarded
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().base())
        if self.planes is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Train a map to see its component planes")
            return
        dim, rows, cols = self.planes.shape
        ncols = max(1, int(math.ceil(math.sqrt(dim * self.width() / max(1, self.height())))))
        nrows = int(math.ceil(dim / ncols))
        cw, ch = self.width() / ncols, self.height() / nrows
        font = QFont(p.font())
        font.setPointSizeF(7.5)
        p.setFont(font)
        self._cells = []
        for f in range(dim):
            r, c = divmod(f, ncols)
            box = QRectF(c * cw + 2, r * ch + 13, cw - 4, ch - 15)
            lay = _Layout(rows, cols, self.hexagonal, box)
            self._cells.append((box, lay))
            base = self.palette().base().color()
            p.drawImage(box.topLeft(), rasterize(viridis_rgb(self.planes[f]), lay, box,
                                                 (base.red(), base.green(), base.blue())))
            p.setPen(self.palette().text().color())
            name = self.names[f] if f < len(self.names) else f"x{f}"
            p.drawText(QRectF(c * cw, r * ch, cw, 13), Qt.AlignmentFlag.AlignCenter, name[:16])
        p.end()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        x, y = event.position().x(), event.position().y()
        for box, lay in self._cells:
            if box.contains(x, y):
                node = lay.node_at(x, y)
                self.hovered.emit(-1 if node is None else node)
                return
        self.hovered.emit(-1)
