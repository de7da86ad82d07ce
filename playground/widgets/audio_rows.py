"""Rows of audio for the Separation tab: per track a waveform and a spectrogram, a shared playhead,
and play / solo / mute / save buttons; and the "inside the model" strip of small pictures.

Drawing only: the numbers come ready. :func:`envelope` (a min/max outline of a long signal,
a few thousand points however long it is) and :func:`spectrogram` (a numpy STFT as a
[0, 1] picture) are plain numpy, cheap, and meant to run in a job; the widgets just show
their output.

Pictures are given as ``[rows, columns]`` = ``[frequency or filter, time]``, row 0 at the
bottom (pyqtgraph's y axis points up); the widgets transpose them for ``ImageItem``.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

ROW_HEIGHT = 96
WAVE_PEN = pg.mkPen((40, 90, 170), width=1)
PLAYHEAD_PEN = pg.mkPen((220, 40, 40), width=1)


# -- numpy helpers (run them in a job) ------------------------------------------------------------
def envelope(audio: np.ndarray, rate: int, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(x seconds, y)`` to draw ``audio`` [T] with at most ``max_points`` points: the signal
    itself when short, else the minimum and maximum of each of ``max_points / 2`` bins."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = audio.size
    if n <= max_points:
        return np.arange(n, dtype=np.float64) / rate, audio
    step = math.ceil(n / max(1, max_points // 2))
    m = n // step
    bins = audio[:m * step].reshape(m, step)
    y = np.empty(2 * m, dtype=np.float32)
    y[0::2], y[1::2] = bins.min(axis=1), bins.max(axis=1)
    x = np.empty(2 * m, dtype=np.float64)
    starts = np.arange(m, dtype=np.float64) * step
    x[0::2], x[1::2] = starts, starts + step / 2
    return x / rate, y


def spectrogram(audio: np.ndarray, rate: int, max_frames: int = 800, floor_db: float = 80.0) -> np.ndarray:
    """A log-magnitude STFT of ``audio`` [T] as float32 [F, K] in [0, 1] (0 = ``floor_db`` below the
    loudest bin), frequencies 0 .. rate/2 from row 0 up, at most ``max_frames`` frames (the hop
    grows for long audio: it is a picture, not an analysis)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_fft = int(2 ** round(math.log2(max(64, 0.032 * rate))))
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    hop = max(n_fft // 4, math.ceil((audio.size - n_fft) / max(1, max_frames - 1)))
    frames = 1 + (audio.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft).astype(np.float32)
    mag = np.abs(np.fft.rfft(audio[index] * window, axis=1))                   # [K, F]
    db = 20 * np.log10(mag + 1e-9)
    if db.max() < -150:  # silence: a dark picture, not one of rounding noise
        return np.zeros((mag.shape[1], mag.shape[0]), dtype=np.float32)
    db -= db.max()
    return np.ascontiguousarray(((np.clip(db, -floor_db, 0) + floor_db) / floor_db).T, dtype=np.float32)


def _plot(height: int) -> pg.PlotWidget:
    plot = pg.PlotWidget()
    plot.setMenuEnabled(False)
    plot.setMouseEnabled(x=True, y=False)
    plot.hideButtons()
    plot.setMinimumHeight(height)
    plot.setMaximumHeight(height + 40)
    plot.getPlotItem().hideAxis("left")
    plot.getPlotItem().getAxis("bottom").setHeight(18)
    plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return plot


def _image_item() -> pg.ImageItem:
    item = pg.ImageItem()
    item.setColorMap(pg.colormap.get("viridis"))
    return item


class AudioRow(QWidget):
    """One track: its name and score, play / solo / mute / save, a waveform and a spectrogram."""

    playClicked = Signal()
    soloMuteChanged = Signal()
    saveClicked = Signal()
    seekRequested = Signal(float)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.duration_s = 0.0
        self.name_label = QLabel(f"<b>{name}</b>")
        self.score_label = QLabel("")
        self.score_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.play_button = QPushButton("▶")
        self.play_button.setToolTip("Play this row alone (solos it)")
        self.solo_button = QPushButton("S")
        self.solo_button.setToolTip("Solo: when any row is soloed, only soloed rows play")
        self.mute_button = QPushButton("M")
        self.mute_button.setToolTip("Mute this row")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save this row as WAV, FLAC or OGG")
        for b in (self.solo_button, self.mute_button):
            b.setCheckable(True)
            b.toggled.connect(lambda _on: self.soloMuteChanged.emit())
        for b in (self.play_button, self.solo_button, self.mute_button):
            b.setFixedWidth(30)
        self.play_button.clicked.connect(self.playClicked.emit)
        self.save_button.clicked.connect(self.saveClicked.emit)

        side = QGridLayout()
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(self.name_label, 0, 0, 1, 3)
        side.addWidget(self.score_label, 1, 0, 1, 3)
        side.addWidget(self.play_button, 2, 0)
        side.addWidget(self.solo_button, 2, 1)
        side.addWidget(self.mute_button, 2, 2)
        side.addWidget(self.save_button, 3, 0, 1, 3)
        side_box = QWidget()
        side_box.setLayout(side)
        side_box.setFixedWidth(130)

        self.wave = _plot(ROW_HEIGHT)
        self.curve = self.wave.plot([], [], pen=WAVE_PEN)
        self.spec = _plot(ROW_HEIGHT)
        self.image = _image_item()
        self.spec.addItem(self.image)
        self.playheads = []
        for plot in (self.wave, self.spec):
            line = pg.InfiniteLine(0.0, angle=90, pen=PLAYHEAD_PEN, movable=False)
            line.setZValue(10)
            plot.addItem(line, ignoreBounds=True)
            self.playheads.append(line)
            plot.scene().sigMouseClicked.connect(lambda ev, p=plot: self._clicked(p, ev))
        self.spec.setXLink(self.wave)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addWidget(side_box)
        layout.addWidget(self.wave, 3)
        layout.addWidget(self.spec, 2)

    # -- state ----------------------------------------------------------------------------------
    @property
    def solo(self) -> bool:
        return self.solo_button.isChecked()

    @property
    def muted(self) -> bool:
        return self.mute_button.isChecked()

    def set_name(self, name: str) -> None:
        self.name_label.setText(f"<b>{name}</b>")

    def set_score(self, text: str) -> None:
        self.score_label.setText(text)

    def set_audio(self, audio: np.ndarray, rate: int) -> None:
        """Draw the waveform (downsampled) of ``audio`` [T] at ``rate``."""
        x, y = envelope(audio, rate)
        self.curve.setData(x, y)
        self.duration_s = len(audio) / rate if rate else 0.0
        if self.duration_s > 0:
            self.wave.setXRange(0.0, self.duration_s, padding=0.0)
        peak = float(np.abs(y).max()) if y.size else 0.0
        peak = max(peak, 1e-3)
        self.wave.setYRange(-peak, peak, padding=0.05)

    def set_spectrogram(self, picture: np.ndarray | None, duration_s: float, rate: int) -> None:
        """Show ``picture`` [F, K] in [0, 1] over 0 .. duration_s and 0 .. rate/2 Hz (None clears it)."""
        if picture is None or picture.size == 0:
            self.image.clear()
            return
        self.image.setImage(picture.T, levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(QRectF(0.0, 0.0, max(duration_s, 1e-6), rate / 2))
        self.spec.setYRange(0.0, rate / 2, padding=0.0)

    def set_playhead(self, seconds: float) -> None:
        for line in self.playheads:
            line.setValue(seconds)

    @property
    def playhead_s(self) -> float:
        return float(self.playheads[0].value())

    def _clicked(self, plot: pg.PlotWidget, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        vb = plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        self.seekRequested.emit(max(0.0, float(vb.mapSceneToView(event.scenePos()).x())))


class AudioRows(QWidget):
    """A column of :class:`AudioRow` (the mixture, then each voice), x-linked, one playhead for all.

    Signals carry the row index: ``playRow(int)``, ``saveRow(int)``; ``soloMuteChanged()``,
    ``seekRequested(seconds)``.
    """

    playRow = Signal(int)
    saveRow = Signal(int)
    soloMuteChanged = Signal()
    seekRequested = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[AudioRow] = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addStretch(1)

    def set_names(self, names: list[str]) -> None:
        """As many rows as names (rows are reused, so their solo / mute stay where they can)."""
        while len(self.rows) > len(names):
            row = self.rows.pop()
            self._layout.removeWidget(row)
            row.setParent(None)
            row.deleteLater()
        while len(self.rows) < len(names):
            k = len(self.rows)
            row = AudioRow(names[k])
            row.playClicked.connect(lambda k=k: self.playRow.emit(k))
            row.saveClicked.connect(lambda k=k: self.saveRow.emit(k))
            row.soloMuteChanged.connect(self.soloMuteChanged.emit)
            row.seekRequested.connect(self.seekRequested.emit)
            if self.rows:
                row.wave.setXLink(self.rows[0].wave)
            self._layout.insertWidget(k, row)
            self.rows.append(row)
        for row, name in zip(self.rows, names):
            row.set_name(name)

    def set_playhead(self, seconds: float) -> None:
        for row in self.rows:
            row.set_playhead(seconds)

    def solo(self) -> list[bool]:
        return [r.solo for r in self.rows]

    def muted(self) -> list[bool]:
        return [r.muted for r in self.rows]


class ModelStrip(QWidget):
    """The "inside the model" strip: a caption line and small captioned pictures side by side."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel(title)
        self.title.setWordWrap(True)
        self.captions: list[str] = []
        self._grid = QGridLayout()
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._cells: list[tuple[QLabel, pg.PlotWidget, pg.ImageItem]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(self._grid)

    def set_pictures(self, pictures: list[tuple[str, np.ndarray]]) -> None:
        """``(caption, picture [rows, time] in [0, 1])`` each; [] clears the strip."""
        while len(self._cells) > len(pictures):
            label, plot, _ = self._cells.pop()
            for w in (label, plot):
                self._grid.removeWidget(w)
                w.setParent(None)
                w.deleteLater()
        while len(self._cells) < len(pictures):
            k = len(self._cells)
            label = QLabel()
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            plot = _plot(70)
            plot.getPlotItem().hideAxis("bottom")
            plot.setMouseEnabled(x=False, y=False)
            item = _image_item()
            plot.addItem(item)
            self._grid.addWidget(label, 0, k)
            self._grid.addWidget(plot, 1, k)
            self._cells.append((label, plot, item))
        self.captions = [caption for caption, _ in pictures]
        for (label, plot, item), (caption, picture) in zip(self._cells, pictures):
            label.setText(caption)
            item.setImage(np.asarray(picture, dtype=np.float32).T, levels=(0.0, 1.0), autoLevels=False)
            plot.getPlotItem().getViewBox().autoRange(padding=0.0)
        self.setVisible(bool(pictures))
