"""The Chat tab: talk to a MiniMind model, its answer streamed token by token.

The method is :mod:`playground.ml.minimind` (the model, its loaders, the tokenizer and chat
templates, generation with a key-value cache); :func:`~playground.ml.minimind.chat.reply`
runs as the panel's job and yields one piece per token, which this module only draws.

* Bubbles with Markdown; Stop; Regenerate the last answer; Edit a question (it goes back in
  the box, and what followed it is dropped when it is resent); Copy. A ``<think>`` block
  is a collapsed "Thought" section.
* Settings: system prompt, past turns sent, max new tokens, temperature, top-p, top-k,
  repetition penalty, seed; tokens per second and the context used under the box.
* Conversations are saved as they happen (:mod:`~playground.ml.minimind.conversations`),
  listed, reopened, renamed, deleted and exported as Markdown.
* "Why this token": the candidates and probabilities of the newest token (or of any token
  clicked in the list), the attention of the newest token over the context for a chosen
  layer and head, and the rendered prompt the model received.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QInputDialog, QLabel, QListWidget, QListWidgetItem, QPlainTextEdit, QSpinBox,
                               QSplitter, QTabWidget, QVBoxLayout, QWidget)

from ..errors import friendly_message
from ..jobs import JobState
from ..learn.chat import chat_sheet
from ..ml.minimind import chat as chatcore
from ..ml.minimind import templates
from ..ml.minimind.conversations import Conversation, ConversationStore
from ..ml.minimind.generate import SamplingSettings
from ..widgets.chat_view import AttentionStrip, CandidateBars, ChatView
from ..widgets.forms import JobControls, button, compact_form
from ..widgets.model_picker import ModelPicker
from .base import JobRunner, Panel

log = logging.getLogger(__name__)

FILE_FILTER = "MiniMind (*.pth *.pt *.safetensors *.bin config.json);;All files (*)"
MARKDOWN_FILTER = "Markdown (*.md);;All files (*)"


@dataclass
class ChatSettings:
    """What the Chat tab remembers (MiniMind's own defaults: eval_llm.py's 0.85 / 0.85, top-k 50)."""

    system: str = ""
    history_turns: int = 2
    max_new_tokens: int = 256
    temperature: float = 0.85
    top_p: float = 0.85
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int = -1             # -1: a fresh seed for every answer
    open_thinking: bool = False
    layer: int = -1            # the attention strip's layer (-1: the last)
    head: int = 0
    conversation: str = ""

    def validate(self) -> dict[str, str]:
        bad = {}
        if not 0 <= self.history_turns <= 64:
            bad["history_turns"] = "from 0 to 64"
        if not 1 <= self.max_new_tokens <= 8192:
            bad["max_new_tokens"] = "from 1 to 8192"
        if not 0 <= self.temperature <= 5:
            bad["temperature"] = "from 0 to 5"
        if not 0 < self.top_p <= 1:
            bad["top_p"] = "above 0, at most 1"
        if not 0 <= self.top_k <= 10000:
            bad["top_k"] = "from 0 to 10000"
        if not 0.5 <= self.repetition_penalty <= 3:
            bad["repetition_penalty"] = "from 0.5 to 3"
        return bad


class ChatPanel(Panel):
    title = "C&hat"
    settings_key = "chat"
    Settings = ChatSettings

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.chat: chatcore.ChatModel | None = None
        self.store = ConversationStore()
        self.conversation: Conversation = self.store.new()
        self.pieces: list[chatcore.ReplyPiece] = []   # the answer streaming now (for "why this token")
        self.prompt_tokens: tuple[str, ...] = ()
        self.last_done: chatcore.ReplyDone | None = None
        self._answer_bubble = None
        self._answer_text = ""
        self._starts_thinking = False
        self._build()

    # -- building ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.lay_out(self._build_form(), self._build_view())
        self.picker.modelChanged.connect(self._on_model)
        self.runner.disable_while_running(self.picker, self.new_button, self.delete_button, self.conversations)
        self.refresh_conversations()

    def _build_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        d = ChatSettings()
        self.picker = ModelPicker(self.ctx.pool, self.ctx.settings, "chat/model",
                                  load_default=chatcore.load_default, load_path=chatcore.load_for_picker,
                                  default_name="MiniMind demo (tiny, embedded)", file_filter=FILE_FILTER,
                                  allow_folders=True, device=lambda: self.ctx.device)
        form.addRow(self.picker)
        self.model_note = QLabel("")
        self.model_note.setWordWrap(True)
        self.model_note.setStyleSheet("color: #555")
        form.addRow(self.model_note)

        group = QGroupBox("Answering")
        sf = QFormLayout(group)
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("System prompt (empty: the template's default)")
        self.system.setMaximumHeight(60)
        sf.addRow(self.system)
        self.history_turns = QSpinBox(minimum=0, maximum=64, value=d.history_turns)
        self.history_turns.setToolTip("How many past question/answer pairs are sent with a new question")
        sf.addRow("Past turns", self.history_turns)
        self.max_new = QSpinBox(minimum=1, maximum=8192, value=d.max_new_tokens)
        sf.addRow("Max new tokens", self.max_new)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=5.0, singleStep=0.05, decimals=2, value=d.temperature)
        self.temperature.setToolTip("0 always takes the most likely token (greedy)")
        sf.addRow("Temperature", self.temperature)
        self.top_p = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, decimals=2, value=d.top_p)
        sf.addRow("Top-p", self.top_p)
        self.top_k = QSpinBox(minimum=0, maximum=10000, value=d.top_k)
        self.top_k.setToolTip("0: no top-k limit")
        sf.addRow("Top-k", self.top_k)
        self.repetition = QDoubleSpinBox(minimum=0.5, maximum=3.0, singleStep=0.05, decimals=2,
                                         value=d.repetition_penalty)
        self.repetition.setToolTip("Above 1 makes tokens already in the text less likely (1: off)")
        sf.addRow("Repetition penalty", self.repetition)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=d.seed)
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("The same seed and settings give the same answer; 'random' a new one each time")
        sf.addRow("Seed", self.seed)
        self.open_thinking = QCheckBox("Let it think first (minimind-3)")
        self.open_thinking.setToolTip("Leave the <think> block open in the prompt, so the model reasons before it "
                                      "answers")
        sf.addRow(self.open_thinking)
        form.addRow(group)

        talks = QGroupBox("Conversations")
        tl = QVBoxLayout(talks)
        self.conversations = QListWidget()
        self.conversations.setMinimumHeight(120)
        for signal in (self.conversations.itemActivated, self.conversations.itemClicked):
            signal.connect(lambda item: self.open_conversation(item.data(Qt.ItemDataRole.UserRole)))
        tl.addWidget(self.conversations)
        row = QHBoxLayout()
        self.new_button = button("New", lambda: self.new_conversation(), "Start a new conversation (Ctrl+N)")
        self.rename_button = button("Rename…", lambda: self.rename_conversation(), "Rename this conversation")
        self.delete_button = button("Delete", lambda: self.delete_conversation(), "Delete this conversation")
        self.export_button = button("Export…", lambda: self.export_markdown(), "Save this conversation as Markdown")
        for b in (self.new_button, self.rename_button, self.delete_button, self.export_button):
            row.addWidget(b)
        tl.addLayout(row)
        form.addRow(talks)
        QShortcut(QKeySequence("Ctrl+N"), self, self.new_conversation).setContext(
            Qt.ShortcutContext.WidgetWithChildrenShortcut)
        return compact_form(box, min_width=320)

    def _build_view(self) -> QWidget:
        split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        layout = QVBoxLayout(top)
        self.view = ChatView()
        self.view.set_empty_text("Ask something. The embedded demo knows Tang poems, Song lyrics, fortunes, the "
                                 "Jargon File and the Devil's Dictionary: try “Write a Tang poem”, “Tell me a "
                                 "fortune” or “What does hacker mean?”.")
        layout.addWidget(self.view, 1)
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Your message (Ctrl+Return sends)")
        self.input.setMaximumHeight(90)
        layout.addWidget(self.input)
        foot = QWidget()
        ff = QFormLayout(foot)
        ff.setContentsMargins(0, 0, 0, 0)
        self.controls = JobControls(self, ff, start_text="Send", start_tip="Send the message",
                                    stop_tip="Stop the answer", start=self.send, stop=self.stop)
        self.runner = JobRunner(self.ctx, self.controls, failure_prefix="The answer failed", parent=self)
        self.speed_label = QLabel("")
        ff.addRow(self.speed_label)
        layout.addWidget(foot)
        split.addWidget(top)

        self.inspector = QTabWidget()
        why = QWidget()
        wl = QVBoxLayout(why)
        self.token_list = QListWidget()
        self.token_list.setFlow(QListWidget.Flow.LeftToRight)
        self.token_list.setWrapping(False)
        self.token_list.setMaximumHeight(44)
        self.token_list.currentRowChanged.connect(self._show_piece)
        wl.addWidget(QLabel("The answer's tokens (click one to see its candidates):"))
        wl.addWidget(self.token_list)
        self.bars = CandidateBars()
        wl.addWidget(self.bars)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Attention of the newest token: layer"))
        self.layer = QSpinBox(minimum=-1, maximum=63, value=-1)
        self.layer.setSpecialValueText("last")
        pick.addWidget(self.layer)
        pick.addWidget(QLabel("head"))
        self.head = QSpinBox(minimum=0, maximum=63, value=0)
        pick.addWidget(self.head)
        pick.addStretch(1)
        wl.addLayout(pick)
        self.strip = AttentionStrip()
        wl.addWidget(self.strip)
        self.inspector.addTab(why, "Why this token")
        self.prompt_view = QPlainTextEdit()
        self.prompt_view.setReadOnly(True)
        self.prompt_view.setPlaceholderText("The exact prompt string the model receives shows here.")
        self.inspector.addTab(self.prompt_view, "Prompt the model received")
        split.addWidget(self.inspector)
        split.setSizes([520, 260])
        return split

    def learn_sheet(self):
        return chat_sheet()

    # -- the model ---------------------------------------------------------------------------------
    def _on_model(self, loaded) -> None:
        self.chat = loaded.model
        cfg = self.chat.model.config
        self.layer.setMaximum(cfg.num_hidden_layers - 1)
        self.head.setMaximum(cfg.num_attention_heads - 1)
        self.open_thinking.setEnabled(self.chat.thinks)
        note = self.chat.note or f"{self.chat.description}. Prompts use {self.chat.template_name}."
        self.model_note.setText(note)
        self.conversation.model = loaded.name

    # -- sending -----------------------------------------------------------------------------------
    def sampling(self) -> SamplingSettings:
        seed = self.seed.value()
        return SamplingSettings(max_new_tokens=self.max_new.value(), temperature=self.temperature.value(),
                                top_p=self.top_p.value(), top_k=self.top_k.value(),
                                repetition_penalty=self.repetition.value(), seed=None if seed < 0 else seed,
                                candidates=8, attention_layer=self.layer.value(), attention_head=self.head.value())

    def send(self) -> None:
        """Send the box's text as the next question (Ctrl+Return)."""
        if self.running:
            return
        text = self.input.toPlainText().strip()
        if not text:
            self.controls.form_error.setText("Type a message first.")
            return
        if self.chat is None:
            self.controls.form_error.setText("No model is loaded yet: wait for it, or open a MiniMind model.")
            return
        self.controls.form_error.setText("")
        self.input.clear()
        self.conversation.add("user", text)
        self.view.add("user", text)
        self._wire(self.view.bubbles[-1])
        self._save()
        self._answer()

    def regenerate(self) -> None:
        """Answer the last question again (the last answer is replaced)."""
        if self.running or self.chat is None:
            return
        messages = self.conversation.messages
        while messages and messages[-1].role == "assistant":
            messages.pop()
        if not messages:
            return
        self._redraw_conversation()
        self._answer()

    def edit(self, index: int) -> None:
        """Put question ``index`` back in the box; it and everything after it go when it is resent."""
        if self.running:
            return
        message = self.conversation.messages[index]
        self.input.setPlainText(message.content)
        del self.conversation.messages[index:]
        self._redraw_conversation()
        self._save()
        self.input.setFocus()

    def _answer(self) -> None:
        history = [m.chat() for m in self.conversation.messages]
        messages = chatcore.prompt_messages(history, None, system=self.system.toPlainText(),
                                            history_turns=self.history_turns.value())
        self.save_settings()
        self.pieces = []
        self.token_list.clear()
        self._answer_text = ""
        self._starts_thinking = self.chat.thinks and self.open_thinking.isChecked()
        self._answer_bubble = self.view.add("assistant", "")
        self._wire(self._answer_bubble)
        self.conversation.settings = {"temperature": self.temperature.value(), "top_p": self.top_p.value(),
                                      "top_k": self.top_k.value(), "repetition_penalty": self.repetition.value(),
                                      "max_new_tokens": self.max_new.value(), "seed": self.seed.value()}
        self.runner.start(chatcore.reply, self.chat, messages, self.sampling(),
                          open_thinking=self.open_thinking.isChecked(), device=self.runner.device,
                          name="Chat answer", interactive=True, on_results=self._on_results,
                          on_ended=self._on_ended, delivery_ms=30)

    def stop(self) -> None:
        self.runner.stop()

    # -- streaming ---------------------------------------------------------------------------------
    def _on_results(self, items: list) -> None:
        changed = False
        for item in items:
            if isinstance(item, chatcore.PromptInfo):
                self.prompt_view.setPlainText(item.prompt)
                self.prompt_tokens = item.prompt_tokens
            elif isinstance(item, chatcore.ReplyPiece):
                self._answer_text += item.text
                if item.token:
                    self.pieces.append(item)
                    QListWidgetItem(item.token.replace("\n", "↵") or "∅", self.token_list)
                changed = True
        if not changed or self._answer_bubble is None:
            return
        split = templates.split_thinking(self._answer_text, self._starts_thinking)
        reasoning = split.reasoning if split.had_thinking else None
        self._answer_bubble.set_content(split.answer, reasoning, split.thinking)
        last = self.pieces[-1] if self.pieces else None
        if last is not None:
            self._show(last)
            self.token_list.blockSignals(True)
            self.token_list.setCurrentRow(len(self.pieces) - 1)
            self.token_list.blockSignals(False)
            self.token_list.scrollToBottom()
            self.speed_label.setText(self._speed_text(last.tokens_per_s, last.time_to_first_token_s,
                                                      last.context_used))

    def _speed_text(self, tps: float, ttft: float, used: int) -> str:
        length = self.chat.context_length if self.chat is not None else 0
        return (f"{tps:.1f} tokens/s · first token after {chatcore.elapsed_text(ttft)} · "
                f"context {used:,} / {length:,} tokens")

    def _show(self, piece: chatcore.ReplyPiece) -> None:
        self.bars.set_candidates(piece.candidates, piece.token)
        if piece.attention is not None:
            weights = piece.attention if piece.attention.ndim == 1 else piece.attention.mean(0)
            context = list(self.prompt_tokens) + [p.token for p in self.pieces]
            self.strip.set_attention(context[:len(weights)], weights.tolist())
        top = piece.candidates[0][1] if piece.candidates else float("nan")
        layer = self.layer.value() if self.layer.value() >= 0 else (
            self.chat.model.config.num_hidden_layers - 1 if self.chat is not None else 0)
        self.update_learn({"temperature": self.temperature.value(), "top_p": self.top_p.value(),
                           "top_k": self.top_k.value(), "p_chosen": piece.probability, "p_top": top,
                           "kept": piece.kept, "position": piece.context_used - 1,
                           "tokens_per_s": piece.tokens_per_s, "layer": layer, "head": self.head.value()})

    def _show_piece(self, row: int) -> None:
        if 0 <= row < len(self.pieces):
            self.bars.set_candidates(self.pieces[row].candidates, self.pieces[row].token)

    def _on_ended(self, state: JobState) -> None:
        job = self.job
        done = job.value if job is not None and state == JobState.FINISHED else None
        split = templates.split_thinking(self._answer_text, self._starts_thinking)
        answer = split.answer
        reasoning = split.reasoning if split.had_thinking and split.reasoning.strip() else None
        tps = self.pieces[-1].tokens_per_s if self.pieces else None
        if isinstance(done, chatcore.ReplyDone):
            self.last_done = done
            answer, reasoning, tps = done.answer, done.reasoning, done.stats.tokens_per_s
            self.speed_label.setText(self._speed_text(done.stats.tokens_per_s, done.stats.time_to_first_token_s,
                                                      done.context_used) + f" · {done.stats.new_tokens} new tokens, "
                                     f"{done.stats.stop_reason}")
        if state == JobState.FAILED and not self._answer_text:
            if self._answer_bubble is not None:
                self.view.remove_from(len(self.view.bubbles) - 1)
            self._answer_bubble = None
            return
        if state == JobState.CANCELLED:
            answer = answer + (" …" if answer else "…")
        self.conversation.add("assistant", answer, reasoning, tps)
        if self._answer_bubble is not None:
            self._answer_bubble.set_content(answer, reasoning)
            self._answer_bubble.footer.setText(f"{tps:.1f} tokens/s" if tps else "")
        self._answer_bubble = None
        self._mark_last_answer()
        self._save()

    # -- bubbles -----------------------------------------------------------------------------------
    def _wire(self, bubble) -> None:
        bubble.copyRequested.connect(lambda b: b.copy_to_clipboard())
        bubble.editRequested.connect(lambda b: self.edit(self.view.bubbles.index(b)))
        bubble.regenerateRequested.connect(lambda _b: self.regenerate())

    def _mark_last_answer(self) -> None:
        for i, b in enumerate(self.view.bubbles):
            b.regenerate_button.setVisible(b.role == "assistant" and i == len(self.view.bubbles) - 1)

    def _redraw_conversation(self) -> None:
        self.view.clear()
        for m in self.conversation.messages:
            footer = f"{m.tokens_per_s:.1f} tokens/s" if m.tokens_per_s else ""
            self._wire(self.view.add(m.role, m.content, m.reasoning, footer))
        self._mark_last_answer()

    # -- conversations -----------------------------------------------------------------------------
    def _save(self) -> None:
        if not self.conversation.messages:
            return
        try:
            self.store.save(self.conversation)
        except OSError as exc:
            self.controls.set_status(f"The conversation could not be saved: {friendly_message(exc)}", error=True)
            return
        self.refresh_conversations()

    def refresh_conversations(self) -> None:
        self.conversations.blockSignals(True)
        self.conversations.clear()
        for summary in self.store.list():
            item = QListWidgetItem(f"{summary.title or 'New conversation'}  ({summary.message_count})")
            item.setData(Qt.ItemDataRole.UserRole, summary.id)
            self.conversations.addItem(item)
            if summary.id == self.conversation.id:
                self.conversations.setCurrentItem(item)
        self.conversations.blockSignals(False)

    def open_conversation(self, conv_id: str) -> None:
        if self.running or not conv_id or conv_id == self.conversation.id:
            return
        try:
            self.conversation = self.store.load(conv_id)
        except Exception as exc:  # noqa: BLE001 - a damaged file must not take the tab down
            self.controls.set_status(f"That conversation could not be opened: {friendly_message(exc)}", error=True)
            return
        if self.chat is not None:
            self.chat.cache = None
        self._redraw_conversation()
        self.refresh_conversations()

    def new_conversation(self) -> None:
        if self.running:
            return
        self.conversation = self.store.new(self.picker.current.name if self.picker.current else "")
        if self.chat is not None:
            self.chat.cache = None
        self.view.clear()
        self.refresh_conversations()
        self.input.setFocus()

    def rename_conversation(self, title: str | None = None) -> None:
        if title is None:
            title, ok = QInputDialog.getText(self, "Rename", "Title:", text=self.conversation.display_title)
            if not ok:
                return
        self.conversation.title = title.strip()
        self._save()

    def delete_conversation(self) -> None:
        if self.running:
            return
        self.store.delete(self.conversation.id)
        self.new_conversation()

    def export_markdown(self, path: str | None = None) -> str | None:
        if not self.conversation.messages:
            self.controls.set_status("Nothing to export yet.", error=True)
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export as Markdown",
                                                  f"{self.conversation.display_title[:40]}.md", MARKDOWN_FILTER)
            if not path:
                return None
        self._save()
        try:
            self.store.export_markdown(self.conversation.id, path)
        except OSError as exc:
            self.controls.set_status(f"Could not write {Path(path).name}: {friendly_message(exc)}", error=True)
            return None
        self.controls.set_status(f"Saved {Path(path).name}.")
        return path

    # -- settings ----------------------------------------------------------------------------------
    def settings_state(self) -> ChatSettings:
        return ChatSettings(system=self.system.toPlainText(), history_turns=self.history_turns.value(),
                            max_new_tokens=self.max_new.value(), temperature=self.temperature.value(),
                            top_p=self.top_p.value(), top_k=self.top_k.value(),
                            repetition_penalty=self.repetition.value(), seed=self.seed.value(),
                            open_thinking=self.open_thinking.isChecked(), layer=self.layer.value(),
                            head=self.head.value(), conversation=self.conversation.id)

    def apply_settings(self, state: ChatSettings) -> None:
        self.system.setPlainText(state.system)
        self.history_turns.setValue(state.history_turns)
        self.max_new.setValue(state.max_new_tokens)
        self.temperature.setValue(state.temperature)
        self.top_p.setValue(state.top_p)
        self.top_k.setValue(state.top_k)
        self.repetition.setValue(state.repetition_penalty)
        self.seed.setValue(state.seed)
        self.open_thinking.setChecked(state.open_thinking)
        self.layer.setValue(state.layer)
        self.head.setValue(state.head)
        if state.conversation:
            try:
                self.conversation = self.store.load(state.conversation)
            except Exception:  # noqa: BLE001 - gone or damaged: start a new one
                log.info("The last conversation %s could not be reopened", state.conversation)
            else:
                self._redraw_conversation()
                self.refresh_conversations()

    def shutdown(self) -> None:
        self.runner.stop()
        self._save()
