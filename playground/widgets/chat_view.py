"""The Chat tab's pieces: message bubbles, and the pictures of why a token was chosen.

:class:`ChatView` is a scrolling column of :class:`Bubble` widgets (a question at the right,
an answer at the left), each rendered as Markdown, with Copy, and Edit (questions) or
Regenerate (the last answer). An answer's ``<think>`` section is a collapsed
"Thinking" block that expands on a click. While an answer streams, only its bubble's text
changes, and the view follows the end unless the reader scrolled up.

:class:`CandidateBars` draws the most likely next tokens as bars (the chosen one marked);
:class:`AttentionStrip` draws the newest token's attention over the context as one row of
coloured cells under the tokens. Both paint from plain lists: no torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFontMetricsF, QGuiApplication, QPainter, QPen
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget)

USER_COLOR = "#dcecff"
ASSISTANT_COLOR = "#f1f1f1"
THINK_COLOR = "#6a6a6a"


class Bubble(QFrame):
    """One message: Markdown text, an optional collapsed reasoning block, and its actions."""

    copyRequested = Signal(object)
    editRequested = Signal(object)
    regenerateRequested = Signal(object)

    def __init__(self, role: str, text: str = "", reasoning: str | None = None, footer: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self._text = ""
        self._reasoning: str | None = None
        self._thinking = False
        self.setObjectName("bubble")
        color = USER_COLOR if role == "user" else ASSISTANT_COLOR
        self.setStyleSheet(f"QFrame#bubble {{ background: {color}; border-radius: 8px; }}")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(3)
        self.think_button = QToolButton()
        self.think_button.setCheckable(True)
        self.think_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.think_button.setArrowType(Qt.ArrowType.RightArrow)
        self.think_button.setAutoRaise(True)
        self.think_button.toggled.connect(self._toggle_thinking)
        self.think_label = QLabel()
        self.think_label.setWordWrap(True)
        self.think_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.think_label.setStyleSheet(f"color: {THINK_COLOR}; border-left: 3px solid #bbb; padding-left: 6px;")
        self.think_label.setVisible(False)
        self.think_button.setVisible(False)
        layout.addWidget(self.think_button)
        layout.addWidget(self.think_label)
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.MarkdownText)
        self.label.setWordWrap(True)
        self.label.setOpenExternalLinks(False)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                           | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        layout.addWidget(self.label)
        actions = QHBoxLayout()
        actions.setSpacing(4)
        self.footer = QLabel(footer)
        self.footer.setStyleSheet("color: #777; font-size: 9pt;")
        actions.addWidget(self.footer, 1)
        self.copy_button = self._action("Copy", "Copy this message as text", self.copyRequested)
        actions.addWidget(self.copy_button)
        self.edit_button = self._action("Edit", "Put this question back in the box to change and resend it",
                                        self.editRequested)
        self.regenerate_button = self._action("Regenerate", "Answer this question again", self.regenerateRequested)
        actions.addWidget(self.edit_button)
        actions.addWidget(self.regenerate_button)
        self.edit_button.setVisible(role == "user")
        self.regenerate_button.setVisible(False)
        layout.addLayout(actions)
        self.set_content(text, reasoning)

    def _action(self, text: str, tip: str, signal) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.clicked.connect(lambda: signal.emit(self))
        return b

    @property
    def text(self) -> str:
        return self._text

    @property
    def reasoning(self) -> str | None:
        return self._reasoning

    def set_content(self, text: str, reasoning: str | None = None, thinking: bool = False) -> None:
        """The visible answer, and the reasoning (``thinking``: the model is still writing it)."""
        if text != self._text:
            self._text = text
            self.label.setText(text if text else ("…" if self.role == "assistant" else ""))
        has = reasoning is not None and (bool(reasoning.strip()) or thinking)
        if reasoning != self._reasoning or thinking != self._thinking:
            self._reasoning, self._thinking = reasoning, thinking
            self.think_label.setText(reasoning or "")
            words = len((reasoning or "").split())
            self.think_button.setText(f"Thinking… ({words} words)" if thinking else f"Thought ({words} words)")
        self.think_button.setVisible(has)
        self.think_label.setVisible(has and self.think_button.isChecked())

    def _toggle_thinking(self, on: bool) -> None:
        self.think_button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.think_label.setVisible(on and self._reasoning is not None)

    def plain_text(self) -> str:
        return self._text

    def copy_to_clipboard(self) -> None:
        QGuiApplication.clipboard().setText(self._text)


class ChatView(QScrollArea):
    """A column of bubbles that keeps the newest in view while it grows."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._box = QWidget()
        self._column = QVBoxLayout(self._box)
        self._column.setSpacing(8)
        self._column.addStretch(1)
        self.setWidget(self._box)
        self.bubbles: list[Bubble] = []
        self._follow = True
        self.verticalScrollBar().rangeChanged.connect(self._on_range)
        self.verticalScrollBar().valueChanged.connect(self._on_scroll)
        self.empty = QLabel("")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color: #777; padding: 30px;")
        self._column.insertWidget(0, self.empty)

    def set_empty_text(self, text: str) -> None:
        self.empty.setText(text)
        self.empty.setVisible(not self.bubbles)

    def add(self, role: str, text: str = "", reasoning: str | None = None, footer: str = "") -> Bubble:
        bubble = Bubble(role, text, reasoning, footer)
        row = QHBoxLayout()
        if role == "user":
            row.addStretch(1)
        row.addWidget(bubble, 5)
        if role != "user":
            row.addStretch(1)
        holder = QWidget()
        holder.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        bubble.holder = holder
        self._column.insertWidget(self._column.count() - 1, holder)
        self.bubbles.append(bubble)
        self.empty.setVisible(False)
        self._follow = True
        return bubble

    def clear(self) -> None:
        for bubble in self.bubbles:
            bubble.holder.setParent(None)
            bubble.holder.deleteLater()
        self.bubbles = []
        self.empty.setVisible(True)

    def remove_from(self, index: int) -> None:
        """Remove bubble ``index`` and every one after it."""
        for bubble in self.bubbles[index:]:
            bubble.holder.setParent(None)
            bubble.holder.deleteLater()
        self.bubbles = self.bubbles[:index]
        self.empty.setVisible(not self.bubbles)

    def _on_scroll(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 4

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._follow:
            QTimer.singleShot(0, lambda: self.verticalScrollBar().setValue(self.verticalScrollBar().maximum()))


# -- why this token -------------------------------------------------------------------------------
def readable(token: str) -> str:
    """A token as it can be shown in a cell: spaces and newlines made visible."""
    return token.replace("\n", "↵").replace(" ", "·").replace("\t", "→") or "∅"


class CandidateBars(QWidget):
    """The top candidates for one token and their probabilities; the chosen one filled darker."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.candidates: list[tuple[str, float]] = []
        self.chosen = ""
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_candidates(self, candidates: Sequence[tuple[str, float]], chosen: str) -> None:
        self.candidates = [(str(t), float(p)) for t, p in candidates]
        self.chosen = chosen
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(300, 22 * max(5, len(self.candidates)))

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        fm = QFontMetricsF(self.font())
        rows = max(1, len(self.candidates))
        h = max(14.0, min(22.0, (self.height() - 2) / rows))
        label_w = min(self.width() * 0.35, 120.0)
        for i, (token, prob) in enumerate(self.candidates):
            y = 1 + i * h
            bar_w = max(1.0, (self.width() - label_w - 60) * prob)
            chosen = token == self.chosen
            p.fillRect(QRectF(label_w, y + 2, bar_w, h - 4), QColor("#3b7dd8" if chosen else "#a9c6ee"))
            p.setPen(QColor("#222"))
            text = fm.elidedText(readable(token), Qt.TextElideMode.ElideRight, label_w - 6)
            p.drawText(QRectF(0, y, label_w - 6, h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text)
            p.drawText(QRectF(label_w + bar_w + 4, y, 56, h), Qt.AlignmentFlag.AlignVCenter, f"{prob:.1%}")
        p.end()


class AttentionStrip(QWidget):
    """One row of cells, one per context token, coloured by the newest token's attention to it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tokens: list[str] = []
        self.weights: list[float] = []
        self.setMinimumHeight(54)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_attention(self, tokens: Sequence[str], weights: Sequence[float]) -> None:
        n = min(len(tokens), len(weights))
        self.tokens = list(tokens[:n])
        self.weights = [float(w) for w in weights[:n]]
        self.setToolTip(self._top_text())
        self.update()

    def _top_text(self) -> str:
        order = sorted(range(len(self.weights)), key=lambda i: -self.weights[i])[:5]
        return "Most attended: " + ", ".join(f"{readable(self.tokens[i])} ({self.weights[i]:.0%})" for i in order)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        n = len(self.weights)
        if n == 0:
            p.setPen(QColor("#777"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "The newest token's attention shows here.")
            p.end()
            return
        top = max(self.weights) or 1.0
        w = self.width() / n
        cell_h = 18.0
        for i, a in enumerate(self.weights):
            level = math.sqrt(max(a, 0.0) / top)  # square root: small weights stay visible
            color = QColor.fromRgbF(1 - 0.85 * level, 1 - 0.55 * level, 1 - 0.1 * level)
            p.fillRect(QRectF(i * w, 0, math.ceil(w), cell_h), color)
        p.setPen(QPen(QColor("#999")))
        p.drawRect(QRectF(0, 0, self.width() - 1, cell_h))
        # the labels of the most attended tokens under their cells
        fm = QFontMetricsF(self.font())
        p.setPen(QColor("#222"))
        placed: list[tuple[float, float]] = []
        for i in sorted(range(n), key=lambda k: -self.weights[k])[:8]:
            text = readable(self.tokens[i])[:10]
            tw = fm.horizontalAdvance(text)
            x = min(max(0.0, (i + 0.5) * w - tw / 2), self.width() - tw)
            if any(not (x + tw < a or x > b) for a, b in placed):
                continue
            placed.append((x, x + tw))
            p.drawText(QRectF(x, cell_h + 2, tw + 2, fm.height()), Qt.AlignmentFlag.AlignLeft, text)
        p.end()
