"""The prompt DeepSeek's own chat template gives for an Ollama chat request: the yardstick.

DeepSeek's official Jinja template (``templates/chat/``, see SOURCES.md) is rendered the way
Hugging Face's ``apply_chat_template`` renders it: a jinja2 ``ImmutableSandboxedEnvironment``
with ``bos_token``, ``eos_token``, ``add_generation_prompt=True``, ``tools`` and the thinking
switch under both names (``thinking`` is DeepSeek's, ``enable_thinking`` Unsloth's and
llama-server's). The leading BOS is cut off: Ollama and llama.cpp add it when tokenizing, so
a prompt that Ollama renders must not contain it.

Ollama's chat messages are not the shape the template wants, so they are converted first:

* a tool call's ``arguments`` is an object in Ollama and a JSON string for the template. The
  string is what Go's ``encoding/json`` writes for that object (Ollama's renderers call
  ``json.Marshal``, its Go templates the ``json`` function, which does the same): compact, no
  spaces, ``<`` ``>`` ``&`` U+2028 U+2029 escaped as ``\\u003c``..., other non-ASCII as is,
  whole floats without ``.0``, nested objects with sorted keys. The top level keeps the order
  the client sent, unless ``sort_argument_keys`` (what an Ollama Go template sees: a Go map);
* DeepSeek's templates read ``tool['type']``, which Ollama's tool calls do not carry: it is
  always ``"function"``;
* an assistant turn that only calls tools has ``content`` None, as in the OpenAI shape;
* the ``thinking`` field has no place in DeepSeek's templates (earlier reasoning is dropped)
  and is left out; reasoning kept inside ``content`` as ``<think>...</think>`` is the
  template's to strip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from ollamads._resources import templates_dir
from ollamads.catalog.families import BOS, EOS, get_family
from ollamads.gguf.retemplate import fixed_template_for
from ollamads.ollama.gojson import go_json


def to_hf_messages(
    messages: Sequence[Mapping[str, Any]], *, sort_argument_keys: bool = False
) -> list[dict[str, Any]]:
    """Ollama ``/api/chat`` messages in the shape DeepSeek's template reads."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        out: dict[str, Any] = {"role": message["role"], "content": message.get("content", "")}
        calls = message.get("tool_calls") or []
        if calls:
            out["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": go_json(
                            call["function"].get("arguments", {}), sort_keys=sort_argument_keys
                        ),
                    },
                }
                for call in calls
            ]
            if not out["content"]:
                out["content"] = None
        if message.get("tool_name"):
            out["name"] = message["tool_name"]
        converted.append(out)
    return converted


@cache
def _template(family: str):  # -> jinja2.Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source = (templates_dir() / "chat" / get_family(family).chat_template).read_text(encoding="utf-8")
    # apply_chat_template's environment settings; these templates have no line breaks
    # after block tags, so trim/lstrip change nothing, but they are what HF uses.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def render_reference(
    family: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    thinking: bool | None = None,
    sort_argument_keys: bool = False,
    keep_bos: bool = False,
) -> str:
    """DeepSeek's template applied to Ollama-style ``messages``, without the leading BOS.

    ``thinking`` None leaves both switches undefined (the template's own default).
    """
    context: dict[str, Any] = {
        "messages": to_hf_messages(messages, sort_argument_keys=sort_argument_keys),
        "bos_token": BOS,
        "eos_token": EOS,
        "add_generation_prompt": True,
    }
    if tools:
        context["tools"] = list(tools)
    if thinking is not None:
        context["thinking"] = thinking
        context["enable_thinking"] = thinking
    text = _template(family).render(**context)
    if keep_bos:
        return text
    if not text.startswith(BOS):
        raise AssertionError(f"DeepSeek's {family} template did not start with BOS: {text[:40]!r}")
    return text[len(BOS):]


def render_prompt(
    client: Any, model: str, messages: Sequence[Mapping[str, Any]], think: bool | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The prompt the server builds for ``client.chat(model, messages, think, tools)``: the same
    ``think`` decision, replayed with ``_debug_render_only``."""
    from ollamads.ollama.api import OllamaAPI

    model, plan = client.resolve(model, think)
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    if tools:
        body["tools"] = [dict(t) for t in tools]
    if plan.think is not None:
        body["think"] = plan.think
    return OllamaAPI(client.host).render(body)


# Unsloth's two fixes and its comments, as SOURCES.md lists them, with what DeepSeek shipped.
UNSLOTH_EDITS = [
    ("{#- Unsloth template fixes #}", ""),
    ("{#- Copyright 2025-present Unsloth. Apache 2.0 License. #}", ""),
    (
        "{% if enable_thinking is defined and enable_thinking is false %}{% set thinking = false %}"
        "{% elif enable_thinking is defined and enable_thinking is true %}{% set thinking = true %}"
        "{% elif not thinking is defined %}{% set thinking = false %}{% endif %}",
        "{% if not thinking is defined %}{% set thinking = false %}{% endif %}",
    ),
    (
        "{%- set splitted = content.split('</think>') -%}{%- set content = splitted[1:] | join('</think>') -%}",
        "{%- set content = content.split('</think>', 1)[1] -%}",
    ),
]


def deepseek_original_v31() -> str:
    """DeepSeek's own V3.1 template: Unsloth's fixed one with its edits undone."""
    text = fixed_template_for("v3.1")
    assert text is not None
    for fixed, original in UNSLOTH_EDITS:
        assert text.count(fixed) == 1, fixed
        text = text.replace(fixed, original)
    return text
