"""Chatting with a registered DeepSeek model: a thin layer over ``ollama.Client``.

What it adds is DeepSeek's three reasoning behaviours, learnt per model from ``/api/show``:

* V3.1 thinks on request. ``think=None`` means DeepSeek's own default, no reasoning, and is sent
  as ``think: false``: servers from v0.12.4 switch thinking on for every thinking-capable model
  whose request omits the field, which would make the answer depend on the server's version.
  ollamads registers V3.1 as ``NAME`` (no thinking capability) and ``NAME-think``; ``think=True``
  on ``NAME`` asks ``NAME-think`` (:meth:`DeepSeekClient.resolve`).
* R1 always reasons. ``think=None`` is sent as ``think: true`` so that its reasoning arrives as
  thinking; ``think=False`` is refused, since nothing can turn it off.
* V3 has no reasoning mode: ``think=True`` is refused before any request is made.

Where a server does not split reasoning from the answer (a template Ollama does not see as
thinking-capable, a server older than v0.9), ``<think>…</think>`` in the content is split here,
chunk by chunk, by :class:`ThinkSplitter`; likewise tool calls the server leaves in the content
as DeepSeek's text become :class:`ToolCall` events (:mod:`ollamads.toolcalls`).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import ollama

from ollamads.catalog.families import ASSISTANT, FAMILIES, THINK_CLOSE, THINK_OPEN
from ollamads.errors import OllamadsError, ServerError
from ollamads.ollama.api import probe
from ollamads.ollama.modelfile import go_template, thinking_name
from ollamads.ollama.versions import ServerInfo, normalize_host
from ollamads.toolcalls import ToolCallSplitter, tool_names

THINKING_CAPABILITY = "thinking"

Messages = Sequence[Mapping[str, Any] | ollama.Message]


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class Done:
    """The last event of an answer; durations are in nanoseconds, as Ollama reports them."""

    done_reason: str = ""
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0

    @classmethod
    def from_chunk(cls, chunk: ollama.ChatResponse) -> Done:
        return cls(
            done_reason=chunk.done_reason or "",
            total_duration=chunk.total_duration or 0,
            load_duration=chunk.load_duration or 0,
            prompt_eval_count=chunk.prompt_eval_count or 0,
            prompt_eval_duration=chunk.prompt_eval_duration or 0,
            eval_count=chunk.eval_count or 0,
            eval_duration=chunk.eval_duration or 0,
        )

    @property
    def tokens_per_second(self) -> float:
        return self.eval_count * 1e9 / self.eval_duration if self.eval_duration else 0.0


Event = ThinkingDelta | ContentDelta | ToolCall | Done


@dataclass(frozen=True)
class Answer:
    thinking: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    done: Done | None = None


# --- splitting <think>...</think> out of content -----------------------------------------------


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Files content chunks as reasoning or answer, whatever the chunk boundaries.

    As in Ollama's own parser, a reasoning block counts only at the very start of the answer
    (after whitespace); ``in_thinking`` starts inside one, for prompts that already end with the
    opening tag (R1). Text that may be the beginning of a tag is held back until the next chunk
    (or :meth:`flush`) decides it.
    """

    _START, _THINKING, _AFTER_CLOSE, _CONTENT = range(4)

    def __init__(self, in_thinking: bool = False) -> None:
        self._state = self._THINKING if in_thinking else self._START
        self._held = ""

    def feed(self, text: str) -> list[ThinkingDelta | ContentDelta]:
        out: list[ThinkingDelta | ContentDelta] = []
        text, self._held = self._held + text, ""
        while text:
            if self._state == self._START:
                stripped = text.lstrip()
                if stripped.startswith(THINK_OPEN):
                    text, self._state = stripped[len(THINK_OPEN) :], self._THINKING
                elif THINK_OPEN.startswith(stripped):  # whitespace, or "<thi" so far
                    self._held = text
                    break
                else:
                    self._state = self._CONTENT
            elif self._state == self._THINKING:
                end = text.find(THINK_CLOSE)
                if end >= 0:
                    if end:
                        out.append(ThinkingDelta(text[:end]))
                    text, self._state = text[end + len(THINK_CLOSE) :], self._AFTER_CLOSE
                    continue
                keep = _partial_tag_length(text, THINK_CLOSE)
                if len(text) > keep:
                    out.append(ThinkingDelta(text[: len(text) - keep]))
                self._held = text[len(text) - keep :]
                break
            elif self._state == self._AFTER_CLOSE:
                # DeepSeek writes "</think>\n\n" before the answer; Ollama trims it the same way.
                text = text.lstrip()
                if text:
                    self._state = self._CONTENT
            else:
                out.append(ContentDelta(text))
                break
        return out

    def flush(self) -> list[ThinkingDelta | ContentDelta]:
        """The held-back text at the end of the answer (an unfinished reasoning stays reasoning)."""
        held, self._held = self._held, ""
        if not held or self._state == self._AFTER_CLOSE:
            return []
        return [ThinkingDelta(held) if self._state == self._THINKING else ContentDelta(held)]


# --- what a model can do ---------------------------------------------------------------------

_RENDERER_RE = re.compile(r"^RENDERER\s+(\S+)", re.MULTILINE)
# .Think / .IsThinkSet / .ThinkLevel: the template follows the request's think flag.
# (.Thinking, the reasoning of past turns, is not a switch.)
_THINK_SWITCH_RE = re.compile(r"\.(?:Think|IsThinkSet|ThinkLevel)\b")
_RENDERER_FAMILIES = {f.renderer: f.name for f in FAMILIES.values() if f.renderer}


def detect_family(template: str, modelfile: str = "") -> str | None:
    """``"v3.1"``, ``"r1"``, ``"v3"``, or None for a prompt format that is not DeepSeek's."""
    renderer = _RENDERER_RE.search(modelfile)
    if renderer:
        return _RENDERER_FAMILIES.get(renderer.group(1))
    for family in FAMILIES.values():
        for thinking in (True, False):
            for line in ("split", "merged"):
                if template.strip() == go_template(family.go_template, thinking=thinking, line=line).strip():
                    return family.name
    # Someone else's DeepSeek template (e.g. pulled from the Hub): judge by what it does.
    if ASSISTANT not in template:
        return None
    if _THINK_SWITCH_RE.search(template):
        return "v3.1"
    return "r1" if THINK_OPEN in template else "v3"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str | None
    capabilities: tuple[str, ...]
    #: The prompt ends inside ``<think>``: the answer starts as reasoning (R1's templates).
    prompt_opens_think: bool = False

    @property
    def can_think(self) -> bool:
        return THINKING_CAPABILITY in self.capabilities

    @classmethod
    def from_show(cls, name: str, shown: ollama.ShowResponse) -> ModelInfo:
        template = shown.template or ""
        family = detect_family(template, shown.modelfile or "")
        return cls(
            name=name,
            family=family,
            capabilities=tuple(shown.capabilities or ()),
            prompt_opens_think=family == "r1" and THINK_OPEN in template,
        )


@dataclass(frozen=True)
class ThinkPlan:
    """The request's ``think`` field (None: not sent) and how the splitter starts."""

    think: bool | None
    primed: bool = False


def _cannot_think(model: ModelInfo) -> OllamadsError:
    if model.family == "v3":
        return OllamadsError(
            f"{model.name} does not support thinking; DeepSeek V3 has no reasoning mode",
            "use a V3.1 or R1 model or drop --think",
        )
    return OllamadsError(
        f"{model.name} does not support thinking (its prompt template has no reasoning mode)",
        "drop --think, or use a V3.1 or R1 model",
    )


def plan_think(model: ModelInfo, server: ServerInfo, think: bool | None) -> ThinkPlan:
    """What to send as ``think`` for the caller's wish on this model and server."""
    if model.family == "r1":
        if think is False:
            raise OllamadsError(
                f"{model.name} is DeepSeek R1, which always reasons: thinking cannot be turned off",
                "drop --no-think (the reasoning stays hidden unless shown), or use a V3.1 model",
            )
        if think:
            server.require_think()
        if model.can_think and server.supports_think:
            return ThinkPlan(True)
        # The server will not split it: the reasoning arrives in the content.
        return ThinkPlan(None, primed=model.prompt_opens_think)
    if think:
        if not model.can_think:
            raise _cannot_think(model)
        server.require_think()
        return ThinkPlan(True)
    if not model.can_think or not server.supports_think:
        return ThinkPlan(None)
    if think is None and model.family != "v3.1":
        return ThinkPlan(None)  # not a DeepSeek hybrid: the server's default applies
    return ThinkPlan(False)


# --- the client --------------------------------------------------------------------------------


def events_from_chunks(
    chunks: Iterable[ollama.ChatResponse],
    splitter: ThinkSplitter,
    calls: ToolCallSplitter | None = None,
) -> Iterator[Event]:
    """Ollama's streamed chat chunks as typed events; :class:`Done` comes last.

    Tool calls the server returns as ``tool_calls`` pass through; ones it leaves in the content
    as DeepSeek's text (see :mod:`ollamads.toolcalls`) are read here into :class:`ToolCall`."""
    calls = calls or ToolCallSplitter()

    def content(events: Iterable[ThinkingDelta | ContentDelta]) -> Iterator[Event]:
        for event in events:
            if isinstance(event, ContentDelta):
                text = calls.feed(event.text)
                if text:
                    yield ContentDelta(text)
            else:
                yield event

    def finish() -> Iterator[Event]:
        yield from content(splitter.flush())
        text, parsed = calls.flush()
        if text:
            yield ContentDelta(text)
        for call in parsed:
            yield ToolCall(call.name, dict(call.arguments))

    for chunk in chunks:
        message = chunk.message
        if message.thinking:
            yield ThinkingDelta(message.thinking)
        if message.content:
            yield from content(splitter.feed(message.content))
        for call in message.tool_calls or ():
            yield ToolCall(call.function.name, dict(call.function.arguments))
        if chunk.done:
            yield from finish()
            yield Done.from_chunk(chunk)
            return
    yield from finish()
    raise ServerError("Ollama's answer stream ended before it was done", "check the server log")


def collect(events: Iterable[Event]) -> Answer:
    thinking: list[str] = []
    content: list[str] = []
    calls: list[ToolCall] = []
    done = None
    for event in events:
        if isinstance(event, ThinkingDelta):
            thinking.append(event.text)
        elif isinstance(event, ContentDelta):
            content.append(event.text)
        elif isinstance(event, ToolCall):
            calls.append(event)
        else:
            done = event
    return Answer("".join(thinking), "".join(content), tuple(calls), done)


def _unknown_model(model: str, host: str) -> OllamadsError:
    return OllamadsError(
        f"no model {model!r} on the Ollama server at {host}",
        "`ollama list` shows the names there; register one with `ollamads create` or `ollamads register`",
    )


class DeepSeekClient:
    """``ollama.Client`` plus what DeepSeek models need; one per server.

    The server's version and each model's capabilities are asked once and kept. Extra keyword
    arguments go to ``ollama.Client`` (and from there to ``httpx.Client``).
    """

    def __init__(self, host: str | None = None, **client_options: Any) -> None:
        self.host = normalize_host(host)
        self._ollama = ollama.Client(host=self.host, **client_options)
        self._server: ServerInfo | None = None
        self._models: dict[str, ModelInfo] = {}

    @property
    def server(self) -> ServerInfo:
        if self._server is None:
            self._server = probe(self.host)
        return self._server

    def model_info(self, model: str) -> ModelInfo:
        if model not in self._models:
            server = self.server  # a missing server gets probe's message, not httpx's
            try:
                shown = self._ollama.show(model)
            except ollama.ResponseError as exc:
                if exc.status_code == 404:
                    raise _unknown_model(model, server.host) from None
                raise self._server_error(model, exc) from None
            self._models[model] = ModelInfo.from_show(model, shown)
        return self._models[model]

    def plan(self, model: str, think: bool | None) -> ThinkPlan:
        return self.resolve(model, think)[1]

    def resolve(self, model: str, think: bool | None) -> tuple[str, ThinkPlan]:
        """The model to ask and what to send as ``think``. A V3.1 model that cannot think
        (ollamads' ``NAME``) is asked to think under its thinking name, ``NAME-think``."""
        info = self.model_info(model)
        if think and info.family == "v3.1" and not info.can_think:
            thinker = thinking_name(model)
            other = self._find(thinker)
            if other is None or not other.can_think:
                raise OllamadsError(
                    f"{model} answers without thinking, and the server has no {thinker} to think",
                    "register the model again with `ollamads register` or `ollamads create` "
                    "(they make both names), or drop --think",
                )
            model, info = thinker, other
        return model, plan_think(info, self.server, think)

    def _find(self, model: str) -> ModelInfo | None:
        try:
            return self.model_info(model)
        except OllamadsError as exc:
            if isinstance(exc, ServerError):
                raise
            return None

    def stream(
        self,
        model: str,
        messages: Messages,
        think: bool | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> Generator[Event, None, None]:
        """Typed events as the answer is generated. Checks run now; the request on iteration;
        ``close()`` on the generator stops the answer and the request."""
        import pydantic

        model, plan = self.resolve(model, think)
        try:
            chunks = self._ollama.chat(
                model=model,
                messages=messages,
                tools=tools,
                think=plan.think,
                options=dict(options) or None,
                stream=True,
            )
        except pydantic.ValidationError as exc:
            # The ollama package checks messages and tools against its types before sending.
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem.get("loc", ())) or exc.title
            raise OllamadsError(
                f"malformed {exc.title.lower()} for {model}: {where}: {problem.get('msg', 'invalid')}",
                "a tool is {\"type\": \"function\", \"function\": {\"name\": ..., "
                "\"description\": ..., \"parameters\": {JSON Schema}}}",
            ) from None
        splitters = ThinkSplitter(plan.primed), ToolCallSplitter(tool_names(tools))
        return self._translated(model, events_from_chunks(chunks, *splitters))

    def chat(
        self,
        model: str,
        messages: Messages,
        think: bool | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> Answer:
        return collect(self.stream(model, messages, think=think, tools=tools, **options))

    def ask(self, model: str, prompt: str, think: bool | None = None, **options: Any) -> Answer:
        """One user message, one answer; ``think`` as in :meth:`chat` (None: the family's own)."""
        return self.chat(model, [{"role": "user", "content": prompt}], think=think, **options)

    def _translated(self, model: str, events: Iterator[Event]) -> Generator[Event, None, None]:
        try:
            yield from events
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise _unknown_model(model, self.host) from None
            raise self._server_error(model, exc) from None
        except (httpx.HTTPError, ConnectionError) as exc:
            raise ServerError(
                f"lost the connection to the Ollama server at {self.host} ({type(exc).__name__})",
                "is it still running? see its log",
            ) from exc

    def _server_error(self, model: str, exc: ollama.ResponseError) -> ServerError:
        code = f" {exc.status_code}" if exc.status_code > 0 else ""
        return ServerError(
            f"Ollama answered{code} for {model}: {exc.error}", "check the server log"
        )

    def close(self) -> None:
        self._ollama.close()

    def __enter__(self) -> DeepSeekClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Answer",
    "ContentDelta",
    "DeepSeekClient",
    "Done",
    "Event",
    "ModelInfo",
    "ThinkPlan",
    "ThinkSplitter",
    "ThinkingDelta",
    "ToolCall",
    "collect",
    "detect_family",
    "events_from_chunks",
    "plan_think",
]
