"""Chat prompts: a model's own Jinja chat template, rendered in a sandbox, or one of ours.

A Hugging Face folder ships its template (``tokenizer_config.json`` ``chat_template`` or
``chat_template.jinja``). That text comes with a downloaded file, so it is rendered as
transformers does it (``trim_blocks``, ``lstrip_blocks``, ``raise_exception``, a ``tojson``
that keeps non-ASCII) but in jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`:
a template cannot reach Python internals (``''.__class__``, ``__globals__``), call unsafe
methods, or change the messages it is given; trying to raises :class:`TemplateError`.

A plain ``.pth`` checkpoint has no template, so the built-ins below (our own Jinja text)
reproduce what MiniMind's scripts feed each generation:

* :data:`MINIMIND2` (250426 to 2026-03): ``<|im_start|>role\\ncontent<|im_end|>\\n`` turns, a
  default system turn "You are a helpful assistant" when none is given, generation prompt
  ``<|im_start|>assistant\\n`` (``enable_thinking=False`` adds an empty think block).
* :data:`MINIMIND3` (2026-04): no default system turn; each assistant turn is
  ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``; generation prompt
  ``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``, or ``<|im_start|>assistant\\n<think>\\n``
  with ``open_thinking=True`` (the model then writes its reasoning first).
* :data:`LEGACY` (before 250426): ``<s>role\\ncontent</s>\\n`` with the default system prompt
  "你是 MiniMind，是一个有用的人工智能助手。".
* :data:`BASE` (pretrained, not chat-tuned models): ``bos_token`` + the last user message.

:func:`split_thinking` separates a (streamed) answer into its ``<think>`` reasoning and
the visible answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from ...errors import BadFileError


class TemplateError(BadFileError):
    """A chat template that cannot be used: bad syntax, refused by the sandbox, or it raised."""


@dataclass(frozen=True)
class ChatTemplate:
    """A named Jinja chat template and the special tokens it expects as ``bos_token`` etc."""

    name: str
    source: str
    bos_token: str = "<|im_start|>"
    eos_token: str = "<|im_end|>"
    description: str = ""


_MINIMIND2_SOURCE = """\
{%- if messages and messages[0].role == 'system' -%}
{{ '<|im_start|>system\\n' ~ messages[0].content ~ '<|im_end|>\\n' }}
{%- set turns = messages[1:] -%}
{%- else -%}
{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}
{%- set turns = messages -%}
{%- endif -%}
{%- for m in turns -%}
{{ '<|im_start|>' ~ m.role ~ '\\n' ~ (m.content if m.content is string else '') ~ '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{ '<think>\\n\\n</think>\\n\\n' }}
{%- endif -%}
{%- endif -%}
"""

_MINIMIND3_SOURCE = """\
{%- for m in messages -%}
{%- set text = m.content if m.content is string else '' -%}
{%- if m.role == 'assistant' -%}
{%- if m.reasoning_content is string -%}
{%- set thought = m.reasoning_content -%}
{%- elif '</think>' in text -%}
{%- set thought = text.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}
{%- set text = text.split('</think>')[-1] -%}
{%- else -%}
{%- set thought = '' -%}
{%- endif -%}
{{ '<|im_start|>assistant\\n<think>\\n' ~ thought.strip('\\n') ~ '\\n</think>\\n\\n' }}
{{- text.lstrip('\\n') ~ '<|im_end|>\\n' }}
{%- else -%}
{{ '<|im_start|>' ~ m.role ~ '\\n' ~ text ~ '<|im_end|>\\n' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- if open_thinking is defined and open_thinking is true -%}
{{ '<think>\\n' }}
{%- else -%}
{{ '<think>\\n\\n</think>\\n\\n' }}
{%- endif -%}
{%- endif -%}
"""

_LEGACY_SOURCE = """\
{%- if messages and messages[0].role == 'system' -%}
{{ '<s>system\\n' ~ messages[0].content ~ '</s>\\n' }}
{%- set turns = messages[1:] -%}
{%- else -%}
{{ '<s>system\\n你是 MiniMind，是一个有用的人工智能助手。</s>\\n' }}
{%- set turns = messages -%}
{%- endif -%}
{%- for m in turns -%}
{{ '<s>' ~ m.role ~ '\\n' ~ (m.content if m.content is string else '') ~ '</s>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<s>assistant\\n' }}
{%- endif -%}
"""

_BASE_SOURCE = """\
{%- set users = messages | selectattr('role', 'equalto', 'user') | list -%}
{{ bos_token ~ (users[-1].content if users else '') }}
"""

MINIMIND2 = ChatTemplate("minimind2", _MINIMIND2_SOURCE,
                         description="MiniMind2 (250426 on): ChatML with a default system turn")
MINIMIND3 = ChatTemplate("minimind3", _MINIMIND3_SOURCE,
                         description="minimind-3: ChatML with <think> blocks, no default system turn")
LEGACY = ChatTemplate("legacy", _LEGACY_SOURCE, bos_token="<s>", eos_token="</s>",
                      description="MiniMind before 250426: <s>role ... </s>")
BASE = ChatTemplate("base", _BASE_SOURCE,
                    description="pretrained base model: bos token + the prompt, no chat turns")

BUILTIN: dict[str, ChatTemplate] = {t.name: t for t in (MINIMIND2, MINIMIND3, LEGACY, BASE)}

#: Longest string or list a template may build with ``*`` (a guard against 'x' * 10**10).
MAX_PRODUCT = 1_000_000
MAX_TEMPLATE_CHARS = 1_000_000


def _tojson(value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    """transformers' ``tojson``: plain JSON, non-ASCII kept (jinja's own escapes HTML characters)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: Any) -> None:
    raise TemplateError(f"The chat template refused these messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import ext
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            # the default returns an Undefined that renders as "" and only raises when used
            # further; a template reaching for internals is refused at once instead.
            raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_PRODUCT:
                        raise SecurityError("the template builds a string or list that is too long")
            if operator == "**" and isinstance(right, int) and abs(right) > 64 and isinstance(left, int) \
                    and abs(left) > 1:
                raise SecurityError("the template computes a number that is too large")
            return super().call_binop(context, operator, left, right)

    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def compile_template(source: str) -> Any:
    """The compiled Jinja template for ``source`` (cached); :class:`TemplateError` on bad syntax."""
    from jinja2.exceptions import TemplateError as JinjaError

    if not isinstance(source, str):
        raise TemplateError("A chat template must be text.")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"The chat template is too long ({len(source):,} characters).")
    try:
        return _environment().from_string(source)
    except JinjaError as exc:
        raise TemplateError(f"The chat template has a syntax error: {exc}") from exc


def _plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ValueError("each message must be a mapping with a 'role'")
        msg = {k: v for k, v in m.items() if v is not None}
        if "reasoning" in msg and "reasoning_content" not in msg:  # our Message field name
            msg["reasoning_content"] = msg.pop("reasoning")
        out.append(msg)
    return out


def render(template: str | ChatTemplate, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
           **flags: Any) -> str:
    """The prompt text for ``messages`` (``[{"role": ..., "content": ...}, ...]``).

    ``template`` is Jinja source or a :class:`ChatTemplate` (its ``bos_token``/``eos_token``
    are passed unless ``flags`` name them). ``flags`` become template variables:
    ``enable_thinking``, ``open_thinking``, ``tools``, ``bos_token``, ...
    Raises :class:`TemplateError` for a template that is broken, unsafe or raises.
    """
    from jinja2.exceptions import SecurityError
    from jinja2.exceptions import TemplateError as JinjaError

    context: dict[str, Any] = {}
    if isinstance(template, ChatTemplate):
        context.update(bos_token=template.bos_token, eos_token=template.eos_token)
        source = template.source
    else:
        source = template
    context.update(flags)
    context["messages"] = _plain_messages(messages)
    context["add_generation_prompt"] = bool(add_generation_prompt)
    compiled = compile_template(source)
    try:
        return compiled.render(**context)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"The chat template tried something unsafe and was stopped: {exc}") from exc
    except JinjaError as exc:
        raise TemplateError(f"The chat template failed: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
            RecursionError) as exc:
        raise TemplateError(f"The chat template failed: {type(exc).__name__}: {exc}") from exc


def builtin_for(tokens: Sequence[str] | None = None, generation: str | None = None) -> ChatTemplate:
    """A built-in template for a checkpoint without one: by ``generation`` ("minimind2",
    "minimind3", "legacy", "base") or, failing that, by the special tokens of its vocabulary."""
    if generation is not None:
        try:
            return BUILTIN[generation]
        except KeyError:
            raise ValueError(f"no built-in chat template {generation!r}; choose from {sorted(BUILTIN)}") from None
    if tokens is not None and "<|im_start|>" not in tokens and "<s>" in tokens:
        return LEGACY
    return MINIMIND2


# -- <think> ... </think> ------------------------------------------------------------------
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class ThinkingSplit:
    """An answer cut into its reasoning and what the user sees.

    ``thinking`` is True while a ``<think>`` block is still open (streaming: the model has
    not finished reasoning, ``answer`` is empty); ``had_thinking`` tells whether any block was
    there at all (``reasoning`` may still be empty: minimind-3 writes empty blocks).
    """

    reasoning: str
    answer: str
    thinking: bool
    had_thinking: bool


def _strip_partial(text: str, tag: str) -> str:
    """``text`` without a trailing beginning of ``tag`` ("...</thi" while streaming)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return text[:-n]
    return text


def split_thinking(text: str, starts_in_thinking: bool = False) -> ThinkingSplit:
    """Separate ``<think>reasoning</think>answer`` (the text may be a stream cut anywhere).

    ``starts_in_thinking``: the prompt already ended with ``<think>\\n`` (minimind-3 with
    ``open_thinking``), so the model's text begins inside the block. Without any tag the
    whole text is the answer. The reasoning and answer are stripped of the newlines the
    templates put around them.
    """
    head = text.lstrip()
    inside = starts_in_thinking
    if head.startswith(THINK_OPEN):
        inside, body = True, head[len(THINK_OPEN):]
    elif not inside and THINK_CLOSE in text and THINK_OPEN not in text:
        inside, body = True, text  # the opening tag was in the prompt
    elif not inside and head and THINK_OPEN.startswith(head):
        return ThinkingSplit("", "", thinking=False, had_thinking=False)  # "<thi": wait and see
    else:
        body = text
    if not inside:
        return ThinkingSplit("", text, thinking=False, had_thinking=False)
    if THINK_CLOSE in body:
        reasoning, _, answer = body.partition(THINK_CLOSE)
        return ThinkingSplit(reasoning.strip("\n").strip(), answer.lstrip("\n").lstrip(), thinking=False,
                             had_thinking=True)
    return ThinkingSplit(_strip_partial(body, THINK_CLOSE).strip("\n").lstrip(), "", thinking=True,
                         had_thinking=True)
