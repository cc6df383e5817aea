"""DeepSeek's tool-call syntax, read back from an answer's text.

Where a server hands a model's tool calls over as text (a line or client that has no parser for
DeepSeek's format), :class:`ToolCallSplitter` finds them in the streamed content so that the
Python API still returns structured calls. Two dialects, as DeepSeek's chat templates write them:

* V3.1 / V3.1-Terminus: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{JSON}<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>``
* V3-0324 / R1 / R1-0528: ``…<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{JSON}\\n```<｜tool▁call▁end｜>…``

Servers that drop special tokens from the text keep only the first marker (Ollama preserves the
tag its tool parser looks for), so a call is also read as ``NAME{JSON}`` when NAME is one of
the request's tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
#: The V3 / R1 dialect names the call's type before the separator.
FUNCTION_TYPE = "function"

_FENCE_RE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_MARKERS = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)
#: Ollama v0.24 writes the special tokens' U+2581 as spaces ("<｜tool calls begin｜>").
_SPACED = {m.replace("\u2581", " "): m for m in _MARKERS}


def normalize_markers(text: str) -> str:
    """``text`` with the spaced spelling of the markers turned back into DeepSeek's."""
    for spaced, marker in _SPACED.items():
        text = text.replace(spaced, marker)
    return text


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: Mapping[str, Any]


def tool_names(tools: Sequence[Any] | None) -> tuple[str, ...]:
    """The function names of a request's ``tools`` (dicts or ``ollama.Tool``s)."""
    names = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, Mapping) else getattr(tool, "function", None)
        name = function.get("name") if isinstance(function, Mapping) else getattr(function, "name", None)
        if name:
            names.append(str(name))
    return tuple(names)


def _arguments(text: str) -> Mapping[str, Any] | None:
    fenced = _FENCE_RE.match(text)
    body = fenced.group(1) if fenced else text.strip()
    try:
        value = json.loads(body) if body else {}
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _one_call(text: str) -> ParsedCall | None:
    """``NAME<｜tool▁sep｜>ARGS`` (V3.1) or ``function<｜tool▁sep｜>NAME\\n```json…``` `` (V3/R1)."""
    head, sep, rest = text.partition(SEP)
    if not sep:
        return None
    head = head.strip()
    if head == FUNCTION_TYPE:
        name, _, args = rest.partition("\n")
        name = name.strip()
    else:
        name, args = head, rest
    parsed = _arguments(args)
    return ParsedCall(name, parsed) if name and parsed is not None else None


def _bare_calls(text: str, names: Iterable[str]) -> list[ParsedCall] | None:
    """``NAME{JSON}NAME{JSON}``: what is left when the server dropped the other markers."""
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    pos = 0
    ordered = sorted(names, key=len, reverse=True)
    while pos < len(text):
        rest = text[pos:].lstrip()
        pos = len(text) - len(rest)
        if not rest:
            break
        rest = rest.removeprefix(FUNCTION_TYPE) if not any(rest.startswith(n) for n in ordered) else rest
        pos = len(text) - len(rest)
        name = next((n for n in ordered if rest.startswith(n)), None)
        if name is None:
            return None
        pos += len(name)
        body = text[pos:].lstrip().removeprefix("```json").removeprefix("```").lstrip()
        pos = len(text) - len(body)
        try:
            value, used = decoder.raw_decode(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        calls.append(ParsedCall(name, value))
        pos += used
        tail = text[pos:].lstrip()
        pos = len(text) - len(tail.removeprefix("```"))
    return calls


def parse_tool_calls(text: str, names: Iterable[str] = ()) -> tuple[str, list[ParsedCall]] | None:
    """``(content before the calls, calls)`` when ``text`` holds DeepSeek tool calls, else None."""
    text = normalize_markers(text)
    start = text.find(CALLS_BEGIN)
    if start < 0:
        return None
    content, block = text[:start], text[start + len(CALLS_BEGIN) :]
    block = block.split(CALLS_END, 1)[0]
    if CALL_BEGIN in block or SEP in block:
        calls = []
        for part in block.split(CALL_BEGIN):
            part = part.split(CALL_END, 1)[0]
            if not part.strip():
                continue
            call = _one_call(part)
            if call is None:
                return None
            calls.append(call)
        return (content, calls) if calls else None
    bare = _bare_calls(block, names)
    return (content, bare) if bare else None


_SPACED_BEGIN = CALLS_BEGIN.replace("\u2581", " ")


class ToolCallSplitter:
    """Passes content through until a tool-call block starts, then holds it back and reads the
    calls at the end of the answer. A block that does not parse is given back as content."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names = tuple(names)
        self._held = ""
        self._in_block = False

    def feed(self, text: str) -> str:
        if self._in_block:
            self._held += text
            return ""
        text, self._held = self._held + text, ""
        starts = [i for i in (text.find(CALLS_BEGIN), text.find(_SPACED_BEGIN)) if i >= 0]
        if starts:
            start = min(starts)
            self._in_block, self._held = True, text[start:]
            return text[:start]
        for n in range(min(len(CALLS_BEGIN) - 1, len(text)), 0, -1):
            if text.endswith((CALLS_BEGIN[:n], _SPACED_BEGIN[:n])):
                self._held = text[-n:]
                return text[:-n]
        return text

    def flush(self) -> tuple[str, list[ParsedCall]]:
        """What was held back: ``(content, calls)``."""
        held, self._held = self._held, ""
        if not self._in_block:
            return held, []
        parsed = parse_tool_calls(held, self._names)
        if parsed is None:
            return held, []
        return parsed[0], parsed[1]


__all__ = [
    "CALLS_BEGIN",
    "ParsedCall",
    "ToolCallSplitter",
    "normalize_markers",
    "parse_tool_calls",
    "tool_names",
]
