"""The Learn side panel: a tab's formulas drawn as formulas, each symbol with its live value.

The content comes from :mod:`playground.learn` (Qt-free sheets); this module only draws it.
Formulas are drawn by matplotlib's mathtext (its own TeX subset and fonts: offline, no
LaTeX installed) into QPixmaps, in the palette's text colour. Drawing one takes a few
milliseconds, so pixmaps are cached by what decides their pixels (source, size, colour,
device pixel ratio) and drawn once per sheet; while a model trains, :meth:`LearnPanel.update_values`
only sets the text of small value labels, several times a second, at no drawing cost.

The panel sits at the right of a tab and folds into a thin strip with its toggle button,
so it takes no room from the plots when it is not wanted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPalette, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..learn import Sheet, Symbol, render_alpha

log = logging.getLogger(__name__)

QWIDGETSIZE_MAX = (1 << 24) - 1
STRIP_WIDTH = 28  # collapsed: just the toggle button
EXPANDED_MIN_WIDTH = 280
EXPANDED_WIDTH = 360  # the width it asks for when open (the widest formulas then scroll sideways)
FORMULA_SCALE = 1.25  # formula size relative to the panel's font; symbols use the font's own size


class FormulaCache:
    """Formula pictures keyed by (tex, point size, colour, device pixel ratio, dpi).

    ``renders`` counts the pictures actually drawn, so a test (or a profiler) can tell a
    cache hit from a redraw. A formula mathtext cannot parse gives None (and is logged
    once): the panel then says so in words, never showing the source.
    """

    def __init__(self) -> None:
        self._pixmaps: dict[tuple, QPixmap | None] = {}
        self.renders = 0

    def pixmap(self, tex: str, size: float, color: QColor, dpr: float = 1.0, dpi: float = 96.0) -> QPixmap | None:
        key = (tex, round(size, 2), color.name(QColor.NameFormat.HexArgb), round(dpr, 3), round(dpi, 1))
        if key not in self._pixmaps:
            self._pixmaps[key] = self._draw(tex, size, color, dpr, dpi)
        return self._pixmaps[key]

    def _draw(self, tex: str, size: float, color: QColor, dpr: float, dpi: float) -> QPixmap | None:
        self.renders += 1
        try:
            mask = render_alpha(tex, size, dpi * dpr)
        except ValueError:
            log.error("mathtext could not draw %r", tex, exc_info=True)
            return None
        if mask.size == 0:
            return None
        h, w = mask.shape
        rgba = np.empty((h, w, 4), np.uint8)
        rgba[..., 0], rgba[..., 1], rgba[..., 2] = color.red(), color.green(), color.blue()
        rgba[..., 3] = (mask.astype(np.uint16) * color.alpha() // 255).astype(np.uint8)
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()  # copy: rgba may go
        pixmap = QPixmap.fromImage(image)
        pixmap.setDevicePixelRatio(dpr)
        return pixmap

    def clear(self) -> None:
        self._pixmaps.clear()


FORMULA_CACHE = FormulaCache()  # one for the app: every tab's panel shares the pictures


class LearnPanel(QWidget):
    """A collapsible side panel showing a :class:`~playground.learn.Sheet` with live values.

    ``set_sheet`` draws the formulas (once; cached), ``update_values`` changes only the
    value labels. Values accumulate: a dict with a few keys (a training step) leaves the
    others (last epoch's validation loss) as they were; :meth:`clear_values` forgets them.
    """

    collapsedChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None, cache: FormulaCache | None = None):
        super().__init__(parent)
        self.cache = cache if cache is not None else FORMULA_CACHE
        self._sheet: Sheet | None = None
        self._live: dict[str, object] = {}
        self._value_labels: list[tuple[Symbol, QLabel]] = []
        self._collapsed = False
        self._rebuilding = False
        self._built_dpr = 0.0  # the device pixel ratio the pictures were drawn for
        self._figure: QWidget | None = None  # a panel's live picture, above the formulas

        self.toggle = QToolButton()
        self.toggle.setAutoRaise(True)
        self.toggle.clicked.connect(lambda: self.set_collapsed(not self._collapsed))
        self.title = QLabel("Learn")
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(self.title, 1)

        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(self._empty_content())

        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        outer.addLayout(header)
        outer.addWidget(self.scroll, 1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._apply_collapsed()

    # -- collapsing -------------------------------------------------------------------------
    @property
    def collapsed(self) -> bool:
        return self._collapsed

    def set_collapsed(self, collapsed: bool) -> None:
        """Fold the panel into a thin strip (True) or open it again; emits collapsedChanged on a change."""
        collapsed = bool(collapsed)
        if collapsed == self._collapsed:
            return
        self._collapsed = collapsed
        self._apply_collapsed()
        if not collapsed:
            self._refresh_values()  # values that came while folded were only stored
        self.collapsedChanged.emit(collapsed)

    def _apply_collapsed(self) -> None:
        folded = self._collapsed
        self.scroll.setVisible(not folded)
        self.title.setVisible(not folded)
        # The panel sits at the right: the arrow points where the panel will go.
        self.toggle.setArrowType(Qt.ArrowType.LeftArrow if folded else Qt.ArrowType.RightArrow)
        self.toggle.setToolTip("Show the formulas" if folded else "Hide the formulas")
        if folded:
            self.setMinimumWidth(STRIP_WIDTH)
            self.setMaximumWidth(STRIP_WIDTH)
        else:
            self.setMaximumWidth(QWIDGETSIZE_MAX)
            self.setMinimumWidth(EXPANDED_MIN_WIDTH)
        self.updateGeometry()

    def sizeHint(self) -> QSize:
        """A fixed width to ask for, whatever the widest formula: the tab's own views come first."""
        hint = super().sizeHint()
        return QSize(STRIP_WIDTH if self._collapsed else EXPANDED_WIDTH, hint.height())

    # -- content ------------------------------------------------------------------------------
    def sheet(self) -> Sheet | None:
        return self._sheet

    def set_sheet(self, sheet: Sheet | None) -> None:
        """Show ``sheet`` (None: nothing), keeping the values received so far."""
        self._sheet = sheet
        self._rebuild()

    @property
    def figure(self) -> QWidget | None:
        return self._figure

    def set_figure(self, widget: QWidget | None) -> None:
        """Show ``widget`` (a tab's live diagram) above the formulas; it stays across sheet changes."""
        if self._figure is not None and self._figure is not widget:
            self._figure.setParent(None)
        self._figure = widget
        self._rebuild()

    def update_values(self, values: Mapping[str, object]) -> None:
        """Take new live values (any keys; those no symbol uses are ignored) and show them.

        Cheap enough for several calls a second: no drawing, only label texts that changed.
        """
        self._live.update(values)
        if not self._collapsed:
            self._refresh_values()

    def clear_values(self) -> None:
        """Forget every live value (a new run starts): all values show as "–"."""
        self._live.clear()
        self._refresh_values()

    def value_labels(self, key: str) -> list[QLabel]:
        """The labels that show the value of ``key`` (one per symbol row using it)."""
        return [label for symbol, label in self._value_labels if symbol.key == key]

    def _refresh_values(self) -> None:
        if self._sheet is None:
            return
        values = self._sheet.values_for(self._live)
        for symbol, label in self._value_labels:
            text = symbol.format(values)
            if label.text() != text:
                label.setText(text)

    def _empty_content(self) -> QWidget:
        content = QWidget()
        layout = QVBoxLayout(content)
        hint = QLabel("No formulas for this tab.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        layout.addStretch(1)
        return content

    def _rebuild(self) -> None:
        """Lay the sheet out again: titles, pictures (from the cache), symbol rows, the note."""
        self._rebuilding = True
        try:
            self._value_labels = []
            if self._figure is not None:
                self._figure.setParent(None)  # out of the old content, which the scroll area deletes
            sheet = self._sheet
            self.title.setText(f"Learn: {sheet.title}" if sheet else "Learn")
            if sheet is None:
                empty = self._empty_content()
                if self._figure is not None:
                    empty.layout().insertWidget(0, self._figure)
                    self._figure.show()
                self.scroll.setWidget(empty)  # the old content is deleted by the scroll area
                return
            content = QWidget()
            layout = QVBoxLayout(content)
            layout.setContentsMargins(4, 4, 4, 4)
            if self._figure is not None:
                layout.addWidget(self._figure)
                self._figure.show()
            for formula in sheet.formulas:
                layout.addWidget(self._formula_title(formula.title))
                layout.addWidget(self._picture(formula.tex, self._formula_size()))
                if formula.symbols:
                    layout.addLayout(self._symbol_rows(formula.symbols))
                layout.addSpacing(self.fontMetrics().height() // 2)
            note = QLabel(sheet.note)
            note.setWordWrap(True)
            note.setTextFormat(Qt.TextFormat.PlainText)
            layout.addWidget(note)
            layout.addStretch(1)
            self.scroll.setWidget(content)
            self._built_dpr = self.devicePixelRatioF()
            self._refresh_values()
        finally:
            self._rebuilding = False

    def _formula_title(self, text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.PlainText)
        font = label.font()
        font.setBold(True)
        label.setFont(font)
        return label

    def _symbol_rows(self, symbols: list[Symbol]) -> QGridLayout:
        """One row per symbol: its picture, "= value" (when it has a live value), and its meaning."""
        grid = QGridLayout()
        grid.setContentsMargins(8, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(2)
        size = self._symbol_size()
        for row, symbol in enumerate(symbols):
            grid.addWidget(self._picture(symbol.name, size), row, 0, Qt.AlignmentFlag.AlignVCenter)
            if symbol.key:
                value = QLabel("\u2013")
                value.setObjectName(f"value-{symbol.key}")
                value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                grid.addWidget(QLabel("="), row, 1)
                grid.addWidget(value, row, 2)
                self._value_labels.append((symbol, value))
            meaning = QLabel(f"\u2014 {symbol.meaning}")
            meaning.setWordWrap(True)
            meaning.setTextFormat(Qt.TextFormat.PlainText)
            grid.addWidget(meaning, row, 3)
        grid.setColumnStretch(3, 1)
        return grid

    def _picture(self, tex: str, size: float) -> QLabel:
        label = QLabel()
        pixmap = self.cache.pixmap(tex, size, self._text_color(), self.devicePixelRatioF(), self._dpi())
        if pixmap is None:
            label.setText("(this formula could not be drawn)")
        else:
            label.setPixmap(pixmap)
        return label

    def _formula_size(self) -> float:
        return self._font_points() * FORMULA_SCALE

    def _symbol_size(self) -> float:
        return self._font_points()

    def _font_points(self) -> float:
        points = self.font().pointSizeF()
        return points if points > 0 else 10.0

    def _dpi(self) -> float:
        return float(self.logicalDpiY() or 96)

    def _text_color(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.WindowText)

    def showEvent(self, event) -> None:
        """A window moved to a screen of another pixel ratio while hidden: draw sharp pictures for it."""
        super().showEvent(event)
        if self._sheet is not None and self.devicePixelRatioF() != self._built_dpr:
            self._rebuild()

    def changeEvent(self, event: QEvent) -> None:
        """Draw the formulas again in the new colour or size when the palette or font changes."""
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange) and not self._rebuilding:
            if self._sheet is not None:
                self._rebuild()
