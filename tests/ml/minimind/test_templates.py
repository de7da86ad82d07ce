"""Chat templates: the built-ins render exactly what MiniMind's scripts feed each generation
(expected strings written out by hand from the reference note), a model's own template is
rendered in a sandbox that refuses to reach Python internals, and <think> splitting."""

from __future__ import annotations

import json

import pytest

from playground.errors import BadFileError
from playground.ml.minimind import templates as T
from playground.ml.minimind.templates import TemplateError, render, split_thinking

HELLO = [{"role": "user", "content": "你好"}]
TWO_TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "床前明月光"},
]


def test_minimind2_adds_the_default_system_turn():
    assert render(T.MINIMIND2, HELLO) == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert render(T.MINIMIND2, TWO_TURNS) == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\n床前明月光<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_minimind2_with_a_system_turn_and_without_generation_prompt():
    messages = [{"role": "system", "content": "Be brief."}, *TWO_TURNS[:2]]
    assert render(T.MINIMIND2, messages, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n")
    assert render(T.MINIMIND2, HELLO, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_minimind3_has_think_blocks_and_no_default_system():
    assert render(T.MINIMIND3, HELLO) == (
        "<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render(T.MINIMIND3, HELLO, open_thinking=True) == (
        "<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n")
    assert render(T.MINIMIND3, TWO_TURNS) == (
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n"
        "<|im_start|>user\n床前明月光<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_minimind3_puts_reasoning_inside_the_think_block():
    expected = ("<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\n<think>\ngreet back\n</think>\n\nHello!<|im_end|>\n")
    with_field = [TWO_TURNS[0], {"role": "assistant", "content": "Hello!", "reasoning_content": "greet back"}]
    ours = [TWO_TURNS[0], {"role": "assistant", "content": "Hello!", "reasoning": "greet back"}]
    inline = [TWO_TURNS[0], {"role": "assistant", "content": "<think>\ngreet back\n</think>\n\nHello!"}]
    for messages in (with_field, ours, inline):
        assert render(T.MINIMIND3, messages, add_generation_prompt=False) == expected


def test_legacy_template_before_250426():
    assert render(T.LEGACY, HELLO) == (
        "<s>system\n你是 MiniMind，是一个有用的人工智能助手。</s>\n"
        "<s>user\n你好</s>\n"
        "<s>assistant\n")
    assert render(T.LEGACY, TWO_TURNS) == (
        "<s>system\n你是 MiniMind，是一个有用的人工智能助手。</s>\n"
        "<s>user\nHi</s>\n"
        "<s>assistant\nHello!</s>\n"
        "<s>user\n床前明月光</s>\n"
        "<s>assistant\n")


def test_base_models_get_bos_and_the_prompt():
    assert render(T.BASE, TWO_TURNS) == "<|im_start|>床前明月光"
    assert render(T.BASE, HELLO, bos_token="<s>") == "<s>你好"


def test_builtin_choice():
    assert T.builtin_for(generation="minimind3") is T.MINIMIND3
    assert T.builtin_for(tokens=["<unk>", "<s>", "</s>"]) is T.LEGACY
    assert T.builtin_for(tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) is T.MINIMIND2
    with pytest.raises(ValueError):
        T.builtin_for(generation="gpt")


# A template in the Hugging Face style, written for this test: it needs trim_blocks and
# lstrip_blocks (the newlines after the block tags must disappear), and uses tojson.
CONFIG_TEMPLATE = """{% for message in messages %}
    {% if message['role'] == 'system' %}
<|im_start|>system
{{ message['content'] }}<|im_end|>
    {% else %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
    {% endif %}
{% endfor %}
{% if tools %}
{{ tools | tojson }}
{% endif %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""


def test_a_template_from_a_tokenizer_config_renders(tmp_path):
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"bos_token": "<|im_start|>", "chat_template": CONFIG_TEMPLATE}), encoding="utf-8")
    template = json.loads(path.read_text(encoding="utf-8"))["chat_template"]
    assert render(template, HELLO) == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    assert render(template, HELLO, add_generation_prompt=False, tools=[{"name": "诗"}]) == (
        '<|im_start|>user\n你好<|im_end|>\n[{"name": "诗"}]\n')


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ messages[0]['__class__'] }}",
    "{{ messages.append({'role': 'user'}) }}",
    "{% set x = messages[0].update({'content': 'evil'}) %}",
    "{{ 'a' * 100000000 }}",
])
def test_hostile_templates_are_refused(source):
    with pytest.raises(TemplateError, match="unsafe"):
        render(source, HELLO)
    assert issubclass(TemplateError, BadFileError)


def test_broken_and_raising_templates_give_clear_errors():
    with pytest.raises(TemplateError, match="syntax"):
        render("{% if messages %}never closed", HELLO)
    with pytest.raises(TemplateError, match="Only user and assistant roles"):
        render("{{ raise_exception('Only user and assistant roles are supported') }}", HELLO)
    with pytest.raises(TemplateError):
        render("{% for i in range(10**7) %}{% endfor %}", HELLO)


def test_the_messages_given_are_not_changed():
    messages = [{"role": "user", "content": "q", "reasoning": None}]
    render(T.MINIMIND3, messages)
    assert messages == [{"role": "user", "content": "q", "reasoning": None}]


# -- <think> --------------------------------------------------------------------------------
def test_split_thinking_whole_answers():
    done = split_thinking("<think>\nthe user greets me\n</think>\n\nHello!")
    assert (done.reasoning, done.answer, done.thinking, done.had_thinking) == ("the user greets me", "Hello!",
                                                                               False, True)
    empty = split_thinking("<think>\n\n</think>\n\nHi")
    assert (empty.reasoning, empty.answer, empty.had_thinking) == ("", "Hi", True)
    plain = split_thinking("Just an answer.")
    assert (plain.reasoning, plain.answer, plain.thinking, plain.had_thinking) == ("", "Just an answer.", False, False)


def test_split_thinking_while_streaming():
    stream = "<think>\nLet me think</think>\n\nThe answer"
    states = [split_thinking(stream[:n]) for n in range(len(stream) + 1)]
    assert all(s.answer == "" for s in states if s.thinking)
    assert split_thinking("<thi").answer == "" and not split_thinking("<thi").thinking  # not sure yet
    mid = split_thinking("<think>\nLet me think</thi")
    assert mid.thinking and mid.reasoning == "Let me think" and mid.answer == ""
    assert split_thinking(stream).answer == "The answer"
    # reasoning and answer only grow as the stream goes on
    for a, b in zip(states, states[1:]):
        assert b.answer.startswith(a.answer) or not a.answer


def test_split_thinking_when_the_prompt_opened_the_block():
    s = split_thinking("first, recall the poem", starts_in_thinking=True)
    assert s.thinking and s.reasoning == "first, recall the poem" and s.answer == ""
    s = split_thinking("recalled\n</think>\n\n床前明月光", starts_in_thinking=True)
    assert not s.thinking and s.reasoning == "recalled" and s.answer == "床前明月光"
    s = split_thinking("recalled\n</think>\n\n床前明月光")  # the closing tag alone also tells
    assert s.reasoning == "recalled" and s.answer == "床前明月光"
