"""Saved conversations: written atomically, listed newest first, reopened, renamed, deleted,
exported as Markdown; damaged files are skipped with a note."""

from __future__ import annotations

import json

import pytest

from playground.errors import UserError
from playground.ml.minimind import conversations as C
from playground.ml.minimind.conversations import Conversation, ConversationStore


def _chat(store: ConversationStore, question: str, created: float) -> Conversation:
    conv = store.new(model="MiniMind2-Small (full_sft_512.pth)", settings={"temperature": 0.85, "top_p": 0.85})
    conv.created = conv.updated = created
    conv.add("user", question)
    conv.add("assistant", "床前明月光，疑是地上霜。", reasoning="The user wants a poem.", tokens_per_s=31.5)
    return conv


def test_save_and_reopen(tmp_path):
    store = ConversationStore(tmp_path)
    conv = _chat(store, "请写一首唐诗\nabout the moon", 1000.0)
    path = store.save(conv)
    assert path == tmp_path / f"{conv.id}.json" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    back = store.load(conv.id)
    assert back == conv
    assert back.title == "请写一首唐诗" and back.messages[1].reasoning == "The user wants a poem."
    assert back.messages[1].tokens_per_s == 31.5 and back.settings["top_p"] == 0.85
    assert back.updated >= back.created
    assert back.chat_messages()[1] == {"role": "assistant", "content": "床前明月光，疑是地上霜。",
                                       "reasoning_content": "The user wants a poem."}


def test_listing_is_newest_first_with_titles(tmp_path):
    store = ConversationStore(tmp_path)
    old = _chat(store, "first question", 1000.0)
    new = _chat(store, "second question " + "x" * 100, 2000.0)
    store.save(old, touch=False)
    store.save(new, touch=False)
    listing = store.list()
    assert [s.id for s in listing] == [new.id, old.id]
    assert listing[1].title == "first question" and listing[1].message_count == 2
    assert len(listing[0].title) == C.TITLE_CHARS and listing[0].title.endswith("…")
    store.save(old)  # a new message in the old one brings it to the top
    assert [s.id for s in store.list()] == [old.id, new.id]


def test_rename_and_delete(tmp_path):
    store = ConversationStore(tmp_path)
    conv = _chat(store, "What does hacker mean?", 1000.0)
    store.save(conv, touch=False)
    renamed = store.rename(conv.id, "  Jargon   questions ")
    assert renamed.title == "Jargon questions" and store.load(conv.id).title == "Jargon questions"
    assert store.load(conv.id).updated == 1000.0  # renaming is not a new message
    store.rename(conv.id, "")
    assert store.list()[0].title == "What does hacker mean?"  # back to the first question
    assert store.delete(conv.id) and not store.delete(conv.id)
    assert store.list() == []
    with pytest.raises(UserError):
        store.load(conv.id)


def test_an_empty_conversation_has_a_placeholder_title(tmp_path):
    store = ConversationStore(tmp_path)
    conv = store.new()
    assert conv.display_title == "New conversation" and conv.messages == []
    store.save(conv)
    assert store.list()[0].title == "New conversation"


def test_damaged_files_are_skipped_with_a_note(tmp_path):
    store = ConversationStore(tmp_path)
    good = _chat(store, "ok", 1000.0)
    store.save(good)
    (tmp_path / "20240101-000000-aaaaaa.json").write_text("{ truncated", encoding="utf-8")
    (tmp_path / "20240101-000000-bbbbbb.json").write_text(json.dumps([1, 2, 3]), encoding="utf-8")
    (tmp_path / "20240101-000000-cccccc.json").write_bytes(b"\xff\xfe\x00garbage")
    wrong_id = good.to_json() | {"id": "20240101-000000-eeeeee"}
    (tmp_path / "20240101-000000-dddddd.json").write_text(json.dumps(wrong_id), encoding="utf-8")
    bad_message = good.to_json() | {"id": "20240101-000000-ffffff", "messages": [{"role": "wizard"}]}
    (tmp_path / "20240101-000000-ffffff.json").write_text(json.dumps(bad_message), encoding="utf-8")
    (tmp_path / "notes.json").write_text("not ours", encoding="utf-8")  # not a conversation name: ignored
    listing = store.list()
    assert [s.id for s in listing] == [good.id]
    assert len(store.problems) == 5 and all(p.startswith("Skipped ") for p in store.problems)
    assert any("20240101-000000-aaaaaa.json" in p for p in store.problems)


def test_odd_values_in_a_file_are_tolerated(tmp_path):
    store = ConversationStore(tmp_path)
    data = {"id": "20240101-000000-abcdef", "title": 5, "created": "yesterday", "settings": [1],
            "messages": [{"role": "user", "content": "hi", "tokens_per_s": "fast", "reasoning": 3}]}
    (tmp_path / "20240101-000000-abcdef.json").write_text(json.dumps(data), encoding="utf-8")
    conv = store.load("20240101-000000-abcdef")
    assert conv.title == "" and conv.display_title == "hi" and conv.settings == {}
    assert conv.messages[0].tokens_per_s is None and conv.messages[0].reasoning is None


def test_ids_are_checked_so_no_path_escapes_the_folder(tmp_path):
    store = ConversationStore(tmp_path / "chats")
    for bad in ("../settings", "x/../../y", "", "20240101-000000-abcdef/../../z"):
        with pytest.raises(UserError):
            store.load(bad)
        with pytest.raises(UserError):
            store.delete(bad)


def test_markdown_export(tmp_path):
    store = ConversationStore(tmp_path)
    conv = _chat(store, "Write a Tang poem", 1000.0)
    conv.add("user", "Thanks!")
    store.save(conv)
    target = store.export_markdown(conv.id, tmp_path / "out.md")
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Write a Tang poem\n")
    assert "MiniMind2-Small (full_sft_512.pth)" in text and "temperature = 0.85" in text
    assert "## You\n\nWrite a Tang poem\n" in text
    assert ("## Assistant (31.5 tokens/s)\n\n<details>\n<summary>Thinking</summary>\n\n"
            "> The user wants a poem.\n\n</details>\n\n床前明月光，疑是地上霜。\n") in text
    assert text.endswith("## You\n\nThanks!\n")


def test_the_default_folder_is_under_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path / "data"))
    store = ConversationStore()
    assert store.folder == tmp_path / "data" / "chat" / "conversations" and store.folder.is_dir()
