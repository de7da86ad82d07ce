"""Small painted views shared by panels: arrays as images, a confusion matrix, sample grids."""

from __future__ import annotations

import functools
import logging
import time
import traceback

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget


class PaintMeter:
    """Seconds the GUI thread has spent in the paint events of metered widgets.

    Panels that redraw live read it to keep drawing to a small share of the time (the GUI
    thread shares the GIL with the worker threads, so drawing slows training down).
    """

    total = 0.0


def metered(paint_event):
    """Decorate a ``paintEvent`` so that its time is added to :class:`PaintMeter`."""

    @functools.wraps(paint_event)
    def wrapper(self, event):
        t0 = time.perf_counter()
        try:
            return paint_event(self, event)
        finally:
            PaintMeter.total += time.perf_counter() - t0

    return wrapper


def guarded(paint_event):
    """Decorate a ``paintEvent`` so that no exception leaves it: PySide6 turns one raised
    inside a paint event into a crash of the whole app. The error is logged and the
    widget keeps what it drew before the error."""

    @functools.wraps(paint_event)
    def wrapper(self, event):
        try:
            return paint_event(self, event)
        except Exception:  # noqa: BLE001 - anything, rather than a crash
            # As text: a kept traceback would keep the frame's QPainter alive past the paint.
            logging.getLogger(__name__).error("Drawing %s failed:\n%s", type(self).__name__, traceback.format_exc())

    return wrapper


def array_to_qimage(arr: np.ndarray) -> QImage:
    """uint8 (H, W) grey or (H, W, 3) RGB -> QImage (a copy, so the array may go)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = ((arr - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        return QImage(arr.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def _heat(v: float) -> QColor:
    """0 -> white, 1 -> deep blue."""
    v = min(1.0, max(0.0, v))
    return QColor(int(255 - 225 * v), int(255 - 170 * v), int(255 - 60 * v))


class ConfusionView(QWidget):
    """A confusion matrix: rows are true labels, columns predictions, counts in the cells."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.matrix: np.ndarray | None = None
        self.classes: list[str] = []
        self.title = "Confusion matrix"
        self.setMinimumSize(220, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_matrix(self, matrix: np.ndarray, classes: list[str], title: str = "") -> None:
        self.matrix, self.classes = np.asarray(matrix), list(classes)
        if title:
            self.title = title
        self.update()

    @metered
    @guarded
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().base())
        p.drawText(QRectF(0, 0, self.width(), 18), Qt.AlignmentFlag.AlignCenter, self.title)
        if self.matrix is None or self.matrix.size == 0:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Shown after the first epoch")
            return
        n = len(self.matrix)
        margin = 34
        side = min(self.width() - margin - 6, self.height() - margin - 22)
        if side <= n:
            return
        cell = side / n
        x0, y0 = margin, 20 + 14
        rows = self.matrix.sum(1, keepdims=True).clip(min=1)
        norm = self.matrix / rows
        font = QFont(p.font())
        font.setPointSizeF(max(5.0, min(9.0, cell / 3.2)))
        p.setFont(font)
        for i in range(n):
            for j in range(n):
                r = QRectF(x0 + j * cell, y0 + i * cell, cell, cell)
                p.fillRect(r, _heat(norm[i, j]))
                if cell >= 16 and self.matrix[i, j]:
                    p.setPen(Qt.GlobalColor.white if norm[i, j] > 0.6 else Qt.GlobalColor.black)
                    p.drawText(r, Qt.AlignmentFlag.AlignCenter, str(int(self.matrix[i, j])))
        p.setPen(self.palette().text().color())
        for k, name in enumerate(self.classes[:n]):
            short = name[:4]
            p.drawText(QRectF(0, y0 + k * cell, margin - 3, cell),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, short)
            p.drawText(QRectF(x0 + k * cell, y0 - 14, cell, 14), Qt.AlignmentFlag.AlignCenter, short)
        p.end()


class SampleGrid(QWidget):
    """Validation samples with their predictions; mistakes get a red frame and label.

    Images are (n, H, W) or (n, H, W, 3) uint8; sequences (n, L) are drawn as little curves.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.samples: np.ndarray | None = None
        self.labels = self.preds = np.zeros(0, int)
        self.classes: list[str] = []
        self._images: list[QImage] = []
        self.setMinimumSize(240, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_samples(self, samples: np.ndarray, labels, preds, classes: list[str]) -> None:
        self.samples = samples
        self.labels, self.preds = np.asarray(labels), np.asarray(preds)
        self.classes = list(classes)
        self._images = [array_to_qimage(s) for s in samples] if samples.ndim >= 3 else []
        self.update()

    @property
    def mistakes(self) -> int:
        return int((self.labels != self.preds).sum())

    @metered
    @guarded
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().base())
        if self.samples is None or len(self.samples) == 0:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Validation samples appear after the first epoch")
            return
        n = len(self.samples)
        cols = max(1, int(np.ceil(np.sqrt(n * self.width() / max(1, self.height())))))
        rows = int(np.ceil(n / cols))
        cw, ch = self.width() / cols, self.height() / rows
        label_h = 13
        font = QFont(p.font())
        font.setPointSizeF(7.5)
        p.setFont(font)
        for k in range(n):
            r, c = divmod(k, cols)
            box = QRectF(c * cw + 2, r * ch + 2, cw - 4, ch - 4 - label_h)
            wrong = self.labels[k] != self.preds[k]
            if self._images:
                img = self._images[k]
                s = min(box.width() / img.width(), box.height() / img.height())
                target = QRectF(box.center().x() - img.width() * s / 2, box.center().y() - img.height() * s / 2,
                                img.width() * s, img.height() * s)
                p.drawImage(target, img)
                frame = target
            else:
                seq = np.asarray(self.samples[k], float)
                lo, hi = seq.min(), seq.max()
                pts = QPolygonF([QPointF(box.left() + i / max(1, len(seq) - 1) * box.width(),
                                         box.bottom() - (v - lo) / (hi - lo + 1e-9) * box.height())
                                 for i, v in enumerate(seq)])
                p.setPen(QPen(QColor(40, 90, 170), 1.2))
                p.drawPolyline(pts)
                frame = box
            if wrong:
                p.setPen(QPen(QColor(220, 30, 30), 2))
                p.drawRect(frame)
            p.setPen(QColor(200, 20, 20) if wrong else self.palette().text().color())
            name = lambda i: self.classes[i] if 0 <= i < len(self.classes) else str(i)  # noqa: E731
            pred = name(int(self.preds[k]))
            text = pred if not wrong else f"{pred} ≠ {name(int(self.labels[k]))}"
            p.drawText(QRectF(c * cw, r * ch + ch - label_h - 2, cw, label_h),
                       Qt.AlignmentFlag.AlignCenter, text[:18])
        p.end()


class FilterGrid(QWidget):
    """First-layer filters: (n, h, w) grey, (n, h, w, 3) colour, or (n, 1, k) 1-D kernels."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._images: list[QImage] = []
        self.note = "First-layer filters appear for convolutional nets"
        self.setMinimumSize(160, 120)

    def set_filters(self, filters: np.ndarray | None) -> None:
        self._images = []
        if filters is not None and len(filters):
            f = np.asarray(filters, np.float32)
            for w in f:
                w = (w - w.min()) / (w.max() - w.min() + 1e-9)
                self._images.append(array_to_qimage((w * 255).astype(np.uint8)))
        self.update()

    @metered
    @guarded
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().base())
        if not self._images:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.note)
            return
        n = len(self._images)
        cols = max(1, int(np.ceil(np.sqrt(n * self.width() / max(1, self.height())))))
        rows = int(np.ceil(n / cols))
        cw, ch = self.width() / cols, self.height() / rows
        for k, img in enumerate(self._images):
            r, c = divmod(k, cols)
            s = min((cw - 3) / img.width(), (ch - 3) / img.height())
            p.drawImage(QRectF(c * cw + 1, r * ch + 1, img.width() * s, img.height() * s), img)
        p.end()
