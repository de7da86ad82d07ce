"""Conv-TasNet's encoder -> masks -> decoder as a painted diagram over the model's live insides.

Top to bottom, as the signal flows: the mixture x, the encoder (N filters of L samples,
stride L/2), its output w (N basis signals x K frames, drawn like a spectrogram), the
separator (TCN) giving one mask m_c per voice, and the decoder turning each w * m_c back
into a voice s_c. The pictures are what the model computed on the last separated audio;
the numbers (N, L, K, mask means) are that model's. Made for the Learn panel's narrow column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

from .pictures import guarded, metered

WAVE_COLOR = QColor(40, 90, 170)
BOX_COLOR = QColor(236, 240, 246)
ARROW_COLOR = QColor(90, 90, 90)


def viridis_image(picture: np.ndarray) -> QImage:
    """A [rows, cols] array in [0, 1] as an RGB image, row 0 at the bottom (low basis index low)."""
    import pyqtgraph as pg

    values = np.clip(np.nan_to_num(np.asarray(picture, dtype=np.float32)), 0.0, 1.0)[::-1]
    rgba = pg.colormap.get("viridis").map(values.reshape(-1), mode="byte").reshape(*values.shape, -1)
    rgb = np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


@dataclass(frozen=True)
class DiagramState:
    """What the diagram shows: the model's sizes and its insides on one stretch of audio."""

    N: int
    L: int
    K: int                         # frames of the stretch shown
    seconds: float                 # its length
    mixture: np.ndarray            # [T] the stretch of the mixture
    w: np.ndarray                  # [N, K'] in [0, 1]
    masks: np.ndarray              # [C, N, K'] in [0, 1]
    mask_means: tuple[float, ...]
    voices: tuple[np.ndarray, ...] = ()  # [T] each, the separated stretch (may be empty)
    live: bool = False             # from live mode (the last seconds), else the first seconds


class SeparationDiagram(QWidget):
    """Painted: x -> Encoder -> w -> TCN -> m_c -> w * m_c -> Decoder -> s_c, with the live pictures."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state: DiagramState | None = None
        self._images: tuple[QImage | None, list[QImage]] = (None, [])
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(200)
        self.setMaximumWidth(300)  # the Learn column is narrow (its formulas may scroll sideways)
        self.setFixedHeight(470)
        self.setToolTip("Conv-TasNet on the audio just separated: the encoder output w, each voice's mask m_c "
                        "and the voices the decoder makes of w ⊙ m_c")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(280, 470)

    def set_state(self, state: DiagramState | None) -> None:
        self.state = state
        if state is None:
            self._images = (None, [])
        else:
            self._images = (viridis_image(state.w), [viridis_image(m) for m in state.masks])
        self.update()

    def captions(self) -> list[str]:
        """The text of every step, top to bottom (what the tests and screen readers read)."""
        s = self.state
        if s is None:
            return ["x: the mixture", "Encoder", "w", "Separator (TCN)", "masks m_c", "Decoder", "voices s_c"]
        c = len(s.masks)
        where = "last" if s.live else "first"
        return [f"x: the mixture ({where} {s.seconds:.1f} s)",
                f"Encoder U: {s.N} filters × {s.L} samples, stride {s.L // 2}",
                f"w: {s.N} basis signals × {s.K} frames",
                f"Separator (TCN) → {c} masks",
                "   ".join(f"m{k + 1}: mean {v:.2f}" for k, v in enumerate(s.mask_means)),
                "Decoder V: ŝ_c = V(w ⊙ m_c)",
                "   ".join(f"ŝ{k + 1}" for k in range(c))]

    @guarded
    @metered
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            self._paint(p)
        finally:
            p.end()

    def _paint(self, p: QPainter) -> None:
        s = self.state
        width = self.width() - 8
        left = 4.0
        line = p.fontMetrics().height()
        text = self.captions()
        y = 2.0
        c = len(s.masks) if s is not None else 2

        def caption(t: str, bold: bool = False) -> None:
            nonlocal y
            font = p.font()
            font.setBold(bold)
            p.setFont(font)
            p.setPen(self.palette().windowText().color())
            p.drawText(QRectF(left, y, width, line), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, t)
            y += line

        def arrow(label: str) -> None:
            nonlocal y
            x = left + 10
            font = p.font()
            font.setBold(False)
            p.setFont(font)
            lines = 1 if p.fontMetrics().horizontalAdvance(label) <= width - 30 else 2
            h = lines * line + 10
            p.setPen(QPen(ARROW_COLOR, 1.5))
            p.drawLine(QPointF(x, y + 2), QPointF(x, y + h - 4))
            p.setBrush(ARROW_COLOR)
            p.drawPolygon(QPolygonF([QPointF(x - 4, y + h - 9), QPointF(x + 4, y + h - 9), QPointF(x, y + h - 2)]))
            p.setBrush(Qt.BrushStyle.NoBrush)
            box = QRectF(x + 10, y + 2, width - 22, h - 6)
            p.fillRect(box, BOX_COLOR)
            p.setPen(self.palette().windowText().color())
            p.drawText(box.adjusted(4, 0, -2, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
                       | Qt.TextFlag.TextWordWrap, label)
            y += h

        def waves(tracks: list[np.ndarray], height: float) -> None:
            nonlocal y
            cell = (width - 6 * (len(tracks) - 1)) / max(1, len(tracks))
            for k, track in enumerate(tracks):
                rect = QRectF(left + k * (cell + 6), y, cell, height)
                p.setPen(QPen(QColor(200, 200, 200), 1))
                p.drawRect(rect)
                self._draw_wave(p, rect, track)
            y += height + 2

        def images(pictures: list[QImage | None], height: float) -> None:
            nonlocal y
            cell = (width - 6 * (len(pictures) - 1)) / max(1, len(pictures))
            for k, image in enumerate(pictures):
                rect = QRectF(left + k * (cell + 6), y, cell, height)
                if image is None:
                    p.fillRect(rect, QColor(225, 225, 225))
                else:
                    p.drawImage(rect, image)
            y += height + 2

        w_image, mask_images = self._images
        caption(text[0], bold=True)
        waves([s.mixture] if s is not None else [np.zeros(0)], 34)
        arrow(text[1])
        caption(text[2], bold=True)
        images([w_image], 70)
        arrow(text[3])
        caption(text[4], bold=True)
        images(list(mask_images) if mask_images else [None] * c, 60)
        arrow(text[5])
        caption(text[6], bold=True)
        voices = list(s.voices) if s is not None and s.voices else [np.zeros(0)] * c
        waves(voices, 34)
        if s is None:
            caption("Separate something to see it here.")

    @staticmethod
    def _draw_wave(p: QPainter, rect: QRectF, track: np.ndarray) -> None:
        track = np.asarray(track, dtype=np.float32).reshape(-1)
        if track.size < 2:
            return
        columns = max(2, int(rect.width()))
        step = max(1, track.size // columns)
        m = track.size // step
        bins = track[:m * step].reshape(m, step)
        lo, hi = bins.min(axis=1), bins.max(axis=1)
        scale = max(float(np.abs(track).max()), 1e-6)
        mid, half = rect.center().y(), rect.height() / 2 - 2
        path = QPainterPath()
        for i in range(m):
            x = rect.left() + i * rect.width() / m
            path.moveTo(x, mid - hi[i] / scale * half)
            path.lineTo(x, mid - lo[i] / scale * half + 0.5)
        p.setPen(QPen(WAVE_COLOR, 1))
        p.drawPath(path)
