"""The Chat tab, offscreen, with a tiny random MiniMind and a tokenizer trained in the test."""

from __future__ import annotations

import json

import pytest
import torch

from playground.app import AppContext, MainWindow
from playground.jobs import JobState
from playground.ml.minimind import chat as chatcore
from playground.ml.minimind import conversations
from playground.ml.minimind.model import MiniMindConfig, MiniMindForCausalLM
from playground.ml.minimind.tokenizer import train_bpe
from playground.panels.chat import ChatPanel
from playground.settings import Settings

TEXTS = ["床前明月光，疑是地上霜。", "A fortune: you will write a test today.", "hacker: one who enjoys code.",
         "The quick brown fox jumps over the lazy dog."] * 20


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    train_bpe(TEXTS, 300, folder)
    return folder


def tiny_chat(tokenizer_dir, seed=0):
    from playground.ml.minimind.tokenizer import MiniMindTokenizer

    tok = MiniMindTokenizer.from_dir(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = MiniMindConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512)
    model = MiniMindForCausalLM(cfg).eval()
    from playground.ml.minimind import templates

    return chatcore.ChatModel(model, tok, templates.MINIMIND2, "built-in MiniMind2 template", "minimind2",
                              "tiny test model", is_demo=True, note="A tiny test model.")


@pytest.fixture
def panel(qtbot, tmp_path, monkeypatch, tokenizer_dir):
    chat = tiny_chat(tokenizer_dir)

    def load_default():
        yield from ()
        return chatcore.describe(chat, "tiny chat", "", "test")

    monkeypatch.setattr(chatcore, "load_default", load_default)
    monkeypatch.setattr(conversations, "default_folder", lambda: tmp_path / "chats")
    win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
    qtbot.addWidget(win)
    win.show()
    p = win.panel(ChatPanel)
    win.tabs.setCurrentWidget(p)
    qtbot.waitUntil(lambda: p.chat is not None, timeout=20000)
    yield p
    win.close()


def ask(qtbot, p, text="Write a poem", tokens=12):
    p.max_new.setValue(tokens)
    p.temperature.setValue(0.0)  # greedy: the tiny random model never stops on its own
    p.input.setPlainText(text)
    p.send()
    qtbot.waitUntil(lambda: not p.running, timeout=30000)


def test_a_message_streams_an_answer_token_by_token_and_the_conversation_is_saved(qtbot, panel):
    p = panel
    ask(qtbot, p, tokens=12)
    assert p.job.state == JobState.FINISHED, p.controls.status.text()
    assert [b.role for b in p.view.bubbles] == ["user", "assistant"]
    assert len(p.pieces) == 12 and p.token_list.count() == 12
    streamed = "".join(piece.text for piece in p.pieces)
    assert p.last_done.text == streamed and p.last_done.stats.new_tokens == 12
    assert p.conversation.messages[-1].content == p.last_done.answer
    assert p.view.bubbles[-1].text == p.conversation.messages[-1].content
    # the Learn side: candidates of the newest token, the prompt the model received, the speed
    assert p.bars.candidates and p.bars.chosen == p.pieces[-1].token
    assert p.prompt_view.toPlainText().startswith("<|im_start|>system\nYou are a helpful assistant<|im_end|>\n")
    assert p.prompt_view.toPlainText().endswith("<|im_start|>user\nWrite a poem<|im_end|>\n<|im_start|>assistant\n")
    assert "tokens/s" in p.speed_label.text() and "context" in p.speed_label.text()
    assert len(p.strip.weights) == len(p.prompt_tokens) + 11  # the last token's query saw the prompt and 11 before it
    saved = json.loads(p.store.path(p.conversation.id).read_text(encoding="utf-8"))
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert p.conversations.count() == 1 and "Write a poem" in p.conversations.item(0).text()


def test_stop_ends_a_long_answer_quickly_and_keeps_what_came(qtbot, panel):
    p = panel
    p.max_new.setValue(4000)
    p.temperature.setValue(0.0)
    p.input.setPlainText("Tell me a fortune")
    p.send()
    qtbot.waitUntil(lambda: len(p.pieces) >= 3, timeout=20000)
    p.stop()
    qtbot.waitUntil(lambda: not p.running, timeout=5000)
    assert p.job.state == JobState.CANCELLED
    assert 3 <= len(p.pieces) < 4000
    assert p.conversation.messages[-1].role == "assistant" and p.conversation.messages[-1].content.endswith("…")


def test_regenerate_replaces_the_last_answer_and_edit_takes_the_question_back(qtbot, panel):
    p = panel
    ask(qtbot, p, "first question", tokens=5)
    ask(qtbot, p, "second question", tokens=5)
    assert len(p.conversation.messages) == 4
    assert p.view.bubbles[-1].regenerate_button.isVisibleTo(p.view.bubbles[-1])
    assert not p.view.bubbles[1].regenerate_button.isVisibleTo(p.view.bubbles[1])
    p.seed.setValue(3)
    p.temperature.setValue(1.0)
    p.regenerate()
    qtbot.waitUntil(lambda: not p.running, timeout=30000)
    assert len(p.conversation.messages) == 4 and len(p.view.bubbles) == 4
    # edit the second question: it returns to the box, and it and its answer leave the conversation
    p.edit(2)
    assert p.input.toPlainText() == "second question"
    assert len(p.conversation.messages) == 2 and len(p.view.bubbles) == 2


def test_conversations_are_listed_reopened_renamed_exported_and_deleted(qtbot, panel, tmp_path):
    p = panel
    ask(qtbot, p, "about the moon", tokens=4)
    first = p.conversation.id
    p.new_conversation()
    assert p.view.bubbles == []
    ask(qtbot, p, "about the sea", tokens=4)
    assert p.conversations.count() == 2
    p.open_conversation(first)
    assert p.conversation.id == first and p.view.bubbles[0].text == "about the moon"
    p.rename_conversation("Moon talk")
    assert any("Moon talk" in p.conversations.item(i).text() for i in range(p.conversations.count()))
    out = p.export_markdown(str(tmp_path / "moon.md"))
    text = (tmp_path / "moon.md").read_text(encoding="utf-8")
    assert out and "Moon talk" in text and "about the moon" in text
    p.delete_conversation()
    assert p.conversations.count() == 1 and p.conversation.id != first


def test_a_think_block_is_shown_collapsed_and_expands(qtbot):
    from playground.widgets.chat_view import Bubble

    b = Bubble("assistant")
    qtbot.addWidget(b)
    b.show()
    b.set_content("The answer.", "Let me reason about it.")
    assert b.think_button.isVisible() and not b.think_label.isVisible()
    assert "Thought" in b.think_button.text()
    b.think_button.click()
    assert b.think_label.isVisible() and b.think_label.text() == "Let me reason about it."
    b.set_content("", "still reasoning", thinking=True)
    assert "Thinking" in b.think_button.text()


def test_prompt_messages_sends_the_chosen_number_of_past_turns():
    history = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
               {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
               {"role": "user", "content": "q3"}]
    assert chatcore.prompt_messages(history, None, history_turns=0) == [{"role": "user", "content": "q3"}]
    one = chatcore.prompt_messages(history, None, system="be brief", history_turns=1)
    assert [m["content"] for m in one] == ["be brief", "q2", "a2", "q3"]
    assert len(chatcore.prompt_messages(history, None, history_turns=9)) == 5


def test_the_learn_panel_gets_every_live_value_its_sheet_names(qtbot, panel):
    from playground.learn.chat import chat_sheet

    p = panel
    sent = {}
    original = p.update_learn
    p.update_learn = lambda values: (sent.update(values), original(values))
    ask(qtbot, p, tokens=3)
    wanted = {s.key for s in chat_sheet().symbols() if s.key}
    assert wanted <= set(sent), wanted - set(sent)
    assert sent["p_chosen"] == pytest.approx(p.pieces[-1].probability)
    assert sent["kept"] == p.pieces[-1].kept >= 1 and sent["temperature"] == 0.0


def test_a_token_holding_part_of_a_character_is_shown_as_its_bytes(tokenizer_dir):
    chat = tiny_chat(tokenizer_dir)
    tok = chat.tokenizer
    texts = {chat.token_text(i) for i in range(tok.vocab_size)}
    assert "<|im_end|>" in texts
    partial = [t for t in texts if t.startswith("⟨")]
    assert partial, "a byte-level BPE over Chinese text has tokens that end inside a character"
    for t in partial:
        raw = bytes(int(b, 16) for b in t.strip("⟨⟩").split())
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise AssertionError(f"{t} decodes as text and should be shown as such")


def test_ctrl_return_in_the_message_box_sends(qtbot, panel):
    from PySide6.QtCore import Qt

    p = panel
    p.max_new.setValue(3)
    p.temperature.setValue(0.0)
    p.input.setFocus()
    qtbot.keyClicks(p.input, "a question")
    qtbot.keyClick(p.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(p.conversation.messages) == 2 and not p.running, timeout=20000)
    assert p.conversation.messages[0].content == "a question" and p.input.toPlainText() == ""
