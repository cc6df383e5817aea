"""ollamads.client: the <think> splitter and think planning as units, then chat on both real lines."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
import requests

from ollamads.catalog.families import ASSISTANT, FAMILIES, get_family
from ollamads.chat import (
    Answer,
    ContentDelta,
    DeepSeekClient,
    Done,
    ModelInfo,
    ThinkingDelta,
    ThinkPlan,
    ThinkSplitter,
    ToolCall,
    collect,
    detect_family,
    events_from_chunks,
    plan_think,
)
from ollamads.errors import OllamadsError, ServerError
from ollamads.ollama.modelfile import go_template, thinking_name
from ollamads.ollama.serve import OllamaServe
from ollamads.ollama.versions import ServerInfo
from tests.support.reference import render_prompt
from tests.support.tiny_models import LONE_V31, TINY_MODELS

HI = [{"role": "user", "content": "hi"}]


# --- ThinkSplitter -------------------------------------------------------------------------------


def split_all(chunks: list[str], in_thinking: bool = False) -> tuple[str, str]:
    splitter = ThinkSplitter(in_thinking)
    events = [e for c in chunks for e in splitter.feed(c)] + splitter.flush()
    assert all(e.text for e in events), "no empty deltas"
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    return thinking, content


def every_split(text: str) -> Iterator[list[str]]:
    """The text whole, in two pieces at every position, and in three at every pair."""
    yield [text]
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
        for j in range(i, len(text) + 1):
            yield [text[:i], text[i:j], text[j:]]


@pytest.mark.parametrize(
    ("text", "in_thinking", "thinking", "content"),
    [
        ("<think>why</think>\n\nbecause", False, "why", "because"),
        ("  \n<think>a<b</think>c", False, "a<b", "c"),
        ("plain answer", False, "", "plain answer"),
        ("<thin>k", False, "", "<thin>k"),
        ("answer <think>x</think> y", False, "", "answer <think>x</think> y"),
        ("<think>unfinished </thi", False, "unfinished </thi", ""),
        ("<think>", False, "", ""),
        ("<thi", False, "", "<thi"),
        ("reason</think>answer", True, "reason", "answer"),
        ("reason only", True, "reason only", ""),
        ("</think>", True, "", ""),
        ("r</think>a</think>b", True, "r", "a</think>b"),
    ],
)
def test_splitter_any_chunk_boundaries(text: str, in_thinking: bool, thinking: str, content: str) -> None:
    for chunks in every_split(text):
        assert split_all(chunks, in_thinking) == (thinking, content), chunks


def test_splitter_holds_back_only_what_may_be_a_tag() -> None:
    s = ThinkSplitter()
    assert s.feed("<th") == []
    assert s.feed("ink>step 1 <") == [ThinkingDelta("step 1 ")]
    assert s.feed("/thi") == []
    assert s.feed("nk>\n") == []
    assert s.feed("\nthe answer") == [ContentDelta("the answer")]
    assert s.feed(" <think>") == [ContentDelta(" <think>")]
    assert s.flush() == []


def test_splitter_a_lone_less_than_in_reasoning_is_passed_on() -> None:
    s = ThinkSplitter(in_thinking=True)
    assert s.feed("a < b") == [ThinkingDelta("a < b")]
    assert s.feed("<") == []
    assert s.feed("x") == [ThinkingDelta("<x")]


# --- planning the think field ----------------------------------------------------------------------

OLD = ServerInfo("http://127.0.0.1:1", "0.8.0")
NEW = ServerInfo("http://127.0.0.1:1", "0.24.0")


def info(family: str | None, can_think: bool = True, opens: bool = False) -> ModelInfo:
    caps = ("completion", "thinking") if can_think else ("completion",)
    return ModelInfo(f"m-{family}", family, caps, prompt_opens_think=opens)


@pytest.mark.parametrize(
    ("model", "server", "think", "plan"),
    [
        (info("v3.1"), NEW, True, ThinkPlan(True)),
        (info("v3.1"), NEW, False, ThinkPlan(False)),
        # DeepSeek's default, whatever the server's own default for omitted think is.
        (info("v3.1"), NEW, None, ThinkPlan(False)),
        (info("v3.1"), OLD, None, ThinkPlan(None)),
        (info("r1", opens=True), NEW, None, ThinkPlan(True)),
        (info("r1", opens=True), NEW, True, ThinkPlan(True)),
        # Nobody on the server splits the reasoning out: the client does, from the first token.
        (info("r1", opens=True), OLD, None, ThinkPlan(None, primed=True)),
        (info("r1", can_think=False, opens=True), NEW, True, ThinkPlan(None, primed=True)),
        (info("r1", can_think=False), NEW, None, ThinkPlan(None)),
        (info("v3", can_think=False), NEW, None, ThinkPlan(None)),
        (info("v3", can_think=False), NEW, False, ThinkPlan(None)),
        (info(None), NEW, None, ThinkPlan(None)),
        (info(None), NEW, False, ThinkPlan(False)),
    ],
)
def test_plan_think(model: ModelInfo, server: ServerInfo, think: bool | None, plan: ThinkPlan) -> None:
    assert plan_think(model, server, think) == plan


def test_plan_refuses_thinking_on_v3() -> None:
    with pytest.raises(OllamadsError) as err:
        plan_think(info("v3", can_think=False), NEW, True)
    assert "does not support thinking; DeepSeek V3 has no reasoning mode" in err.value.message
    assert "V3.1 or R1" in (err.value.hint or "") and "--think" in (err.value.hint or "")


def test_plan_refuses_turning_r1_reasoning_off() -> None:
    with pytest.raises(OllamadsError, match="always reasons"):
        plan_think(info("r1"), NEW, False)


@pytest.mark.parametrize("model", [info("v3.1"), info("r1"), info(None)])
def test_plan_asks_old_servers_for_thinking_only_to_refuse(model: ModelInfo) -> None:
    with pytest.raises(ServerError, match="too old for thinking") as err:
        plan_think(model, OLD, True)
    assert "v0.9.0" in (err.value.hint or "")


# --- recognising the family ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_family_from_our_templates(family: str) -> None:
    assert detect_family(go_template(get_family(family).go_template)) == family


def test_detect_family_from_renderer_and_foreign_templates() -> None:
    assert detect_family("{{ .Prompt }}", "FROM x\nRENDERER deepseek3.1\nPARSER deepseek3\n") == "v3.1"
    assert detect_family("{{ .Prompt }}") is None
    hub_r1 = "{{ range .Messages }}<｜User｜>{{ .Content }}{{ end }}<｜Assistant｜><think>\n"
    assert detect_family(hub_r1) == "r1"
    hub_v31 = "<｜User｜>{{ .Prompt }}<｜Assistant｜>{{ if .Think }}<think>{{ else }}</think>{{ end }}"
    assert detect_family(hub_v31) == "v3.1"
    assert detect_family("<｜User｜>{{ .Prompt }}<｜Assistant｜>") == "v3"
    # .Thinking (past reasoning) is not a switch.
    assert detect_family("<｜Assistant｜>{{ .Thinking }}") == "v3"


# --- events from Ollama's chunks -------------------------------------------------------------------


def chunk(content: str = "", thinking: str | None = None, done: bool = False, **extra: Any) -> ollama.ChatResponse:
    message = ollama.Message(role="assistant", content=content, thinking=thinking, tool_calls=extra.pop("tool_calls", None))
    return ollama.ChatResponse(message=message, done=done, **extra)


def test_events_from_chunks_split_content_and_pass_tool_calls() -> None:
    call = ollama.Message.ToolCall(function=ollama.Message.ToolCall.Function(name="add", arguments={"a": 1}))
    chunks = [
        chunk("<thi"),
        chunk("nk>mull"),
        chunk("ing</th"),
        chunk("ink>4", tool_calls=[call]),
        chunk("2", done=True, done_reason="stop", eval_count=5, eval_duration=10**9, total_duration=7),
    ]
    events = list(events_from_chunks(chunks, ThinkSplitter()))
    assert events[-1] == Done(done_reason="stop", total_duration=7, eval_count=5, eval_duration=10**9)
    assert ToolCall("add", {"a": 1}) in events
    answer = collect(events)
    assert answer == Answer("mulling", "42", (ToolCall("add", {"a": 1}),), events[-1])
    assert answer.done and answer.done.tokens_per_second == 5.0


def test_events_keep_the_servers_thinking() -> None:
    events = list(events_from_chunks([chunk(thinking="hm"), chunk("ok", done=True)], ThinkSplitter()))
    assert events[:2] == [ThinkingDelta("hm"), ContentDelta("ok")]


def test_a_stream_that_stops_early_is_an_error() -> None:
    with pytest.raises(ServerError, match="ended before it was done"):
        list(events_from_chunks([chunk("<think>par")], ThinkSplitter()))


# --- against real servers ---------------------------------------------------------------------------

@pytest.fixture
def server(tiny_models_server: OllamaServe) -> OllamaServe:
    return tiny_models_server


class Recorder:
    """Every request the client's httpx sends, as (path, JSON body)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.sent.append((request.url.path, json.loads(request.content or b"{}")))

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.sent if p == path]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(server: OllamaServe, recorder: Recorder) -> Iterator[DeepSeekClient]:
    with DeepSeekClient(server.url, event_hooks={"request": [recorder]}) as c:
        yield c


def rendered(server: OllamaServe, body: dict[str, Any]) -> str:
    """What the server makes of exactly this request body."""
    response = requests.post(
        f"{server.url}/api/chat", json={**body, "stream": False, "_debug_render_only": True}, timeout=120
    )
    assert response.status_code == 200, response.text
    return response.json()["_debug_info"]["rendered_template"]


@pytest.mark.integration
@pytest.mark.parametrize("model", ["tiny-v31:client", "tiny-v31-rend:client"])
@pytest.mark.parametrize(("think", "suffix"), [(True, "<think>"), (False, "</think>"), (None, "</think>")])
def test_v31_think_reaches_the_server_as_the_prompt_suffix(
    client: DeepSeekClient, recorder: Recorder, server: OllamaServe,
    model: str, think: bool | None, suffix: str,
) -> None:
    answer = client.chat(model, HI, think=think)
    (body,) = recorder.bodies("/api/chat")
    # Thinking is asked of the thinking name; the plain name cannot think, so nothing is sent.
    assert body["model"] == (thinking_name(model) if think else model)
    assert body.get("think") is (True if think else None)
    prompt = rendered(server, body)
    assert prompt.endswith(f"<｜User｜>hi{ASSISTANT}{suffix}"), prompt
    assert render_prompt(client, model, HI, think=think) == prompt
    assert bool(answer.thinking) == bool(think)
    assert answer.done is not None and answer.done.eval_count > 0


@pytest.mark.integration
def test_the_thinking_name_follows_deepseeks_default_too(
    client: DeepSeekClient, recorder: Recorder, server: OllamaServe
) -> None:
    """On NAME-think the client still sends think: false unless asked: DeepSeek's default."""
    thinker = thinking_name("tiny-v31:client")
    answer = client.chat(thinker, HI)
    (body,) = recorder.bodies("/api/chat")
    assert body["model"] == thinker and body["think"] is False
    assert rendered(server, body).endswith(f"{ASSISTANT}</think>") and not answer.thinking


@pytest.mark.integration
def test_think_without_a_thinking_name_is_refused_naming_it(
    client: DeepSeekClient, recorder: Recorder
) -> None:
    with pytest.raises(OllamadsError) as err:
        client.chat(LONE_V31, HI, think=True)
    assert err.value.message == (
        f"{LONE_V31} answers without thinking, and the server has no {thinking_name(LONE_V31)} to think"
    )
    assert "ollamads register" in (err.value.hint or "")
    assert recorder.bodies("/api/chat") == []
    assert not client.chat(LONE_V31, HI).thinking


@pytest.mark.integration
def test_ask_files_reasoning_as_thinking_only_when_asked(client: DeepSeekClient) -> None:
    thought = client.ask("tiny-v31:client", "Why is the sky blue?", think=True)
    assert isinstance(thought, Answer)
    assert thought.thinking
    plain = client.ask("tiny-v31:client", "Why is the sky blue?", think=False)
    assert plain.thinking == "" and plain.content


@pytest.mark.integration
def test_ask_follows_the_family_default_like_chat(client: DeepSeekClient) -> None:
    # V3.1: non-thinking unless asked, as chat() does.
    default = client.ask("tiny-v31:client", "Why is the sky blue?", num_predict=4)
    assert default.thinking == "" and default.content
    assert client.plan("tiny-v31:client", None) == client.plan("tiny-v31:client", False)


@pytest.mark.integration
def test_stream_yields_typed_events_and_done_last(client: DeepSeekClient) -> None:
    events = list(client.stream("tiny-v31:client", HI, think=True, num_predict=4))
    *deltas, done = events
    assert isinstance(done, Done) and done.eval_count == 4 and done.done_reason == "length"
    assert deltas and all(isinstance(e, ThinkingDelta) for e in deltas)
    assert done.total_duration >= done.eval_duration > 0


@pytest.mark.integration
def test_r1_always_thinks(client: DeepSeekClient, recorder: Recorder, server: OllamaServe) -> None:
    answer = client.chat("tiny-r1:client", HI)
    (body,) = recorder.bodies("/api/chat")
    assert body["think"] is True
    assert rendered(server, body).endswith(f"{ASSISTANT}<think>\n")
    assert answer.thinking
    with pytest.raises(OllamadsError, match="always reasons"):
        client.chat("tiny-r1:client", HI, think=False)
    assert len(recorder.bodies("/api/chat")) == 1


@pytest.mark.integration
def test_v3_refuses_thinking_before_asking(client: DeepSeekClient, recorder: Recorder) -> None:
    with pytest.raises(OllamadsError) as err:
        client.ask("tiny-v3:client", "hi", think=True)
    assert "tiny-v3:client does not support thinking; DeepSeek V3 has no reasoning mode" in str(err.value)
    assert recorder.bodies("/api/chat") == []
    answer = client.chat("tiny-v3:client", HI)
    assert "think" not in recorder.bodies("/api/chat")[0]
    assert answer.content and not answer.thinking


@pytest.mark.integration
def test_unknown_model(client: DeepSeekClient) -> None:
    with pytest.raises(OllamadsError) as err:
        client.chat("no-such-model:latest", HI)
    assert "no model 'no-such-model:latest'" in err.value.message
    assert "ollama list" in (err.value.hint or "")


@pytest.mark.integration
def test_model_and_server_are_asked_once(client: DeepSeekClient, recorder: Recorder) -> None:
    client.chat("tiny-v31:client", HI, think=False)
    first = client.server
    client.chat("tiny-v31:client", HI, think=True)
    client.chat("tiny-v31:client", HI, think=True)
    assert client.server is first
    # Once for the name, once for its thinking name.
    assert [b["model"] for b in recorder.bodies("/api/show")] == [
        "tiny-v31:client", thinking_name("tiny-v31:client")]
    assert client.model_info("tiny-v31:client").family == "v3.1"
    assert client.model_info(thinking_name("tiny-v31-rend:client")).family == "v3.1"
    assert client.model_info("tiny-r1:client").prompt_opens_think


@pytest.mark.integration
def test_tools_reach_the_template(client: DeepSeekClient, recorder: Recorder) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    prompt = render_prompt(client, "tiny-v31:client", HI, think=False, tools=[tool])
    assert "## Tools" in prompt and "### get_weather" in prompt
    client.chat("tiny-v31:client", HI, think=False, tools=[tool])
    assert recorder.bodies("/api/chat")[0]["tools"][0]["function"]["name"] == "get_weather"


MALFORMED_TOOLS = [
    pytest.param("x", "cannot unmarshal string", id="not-a-list"),
    pytest.param([{"type": "function", "function": {"name": 123}}], "cannot unmarshal number",
                 id="numeric-name"),
    pytest.param([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": 5}}}}}], "cannot unmarshal number",
        id="numeric-property-type"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("tools", "error"), MALFORMED_TOOLS)
def test_malformed_tools_get_a_400_and_the_server_goes_on(
    server: OllamaServe, tools: Any, error: str
) -> None:
    for model in TINY_MODELS:
        url = f"{server.url}/api/chat"
        bad = requests.post(url, json={"model": model, "messages": HI, "tools": tools, "stream": False},
                            timeout=120)
        assert bad.status_code == 400 and error in bad.json()["error"], bad.text
        good = requests.post(url, json={"model": model, "messages": HI, "stream": False,
                                        "options": {"num_predict": 1}}, timeout=120)
        assert good.status_code == 200, good.text


@pytest.mark.integration
def test_a_tool_with_nothing_in_it_is_described_not_fatal(server: OllamaServe) -> None:
    """Ollama accepts ``{"function": {}}``; every family's TEMPLATE renders it as an empty entry."""
    for model in TINY_MODELS:
        prompt = rendered(server, {"model": model, "messages": HI, "tools": [{"function": {}}]})
        assert "\n### \nDescription: \n\nParameters: {\"type\":\"\",\"properties\":null}\n" in prompt


@pytest.mark.integration
def test_the_client_refuses_malformed_tools_in_one_line(client: DeepSeekClient, recorder: Recorder) -> None:
    with pytest.raises(OllamadsError) as err:
        client.chat("tiny-v31:client", HI, tools=[{"type": "function", "function": {"name": 123}}])
    assert err.value.message.startswith("malformed tool for tiny-v31:client: function.name:")
    assert recorder.bodies("/api/chat") == []


# --- the real `ollama run` on the same model ---------------------------------------------------------


def ollama_run(server: OllamaServe, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": server.bind, "HOME": str(server.models_dir.parent)}
    return subprocess.run(
        [server.binary, "run", *args], capture_output=True, text=True, timeout=300, env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.integration
def test_ollama_run_think_flags(server: OllamaServe) -> None:
    thinker = thinking_name("tiny-v31:client")
    # DeepSeek's default, where the server would think for a thinking-capable model.
    default = ollama_run(server, "tiny-v31:client", "hi")
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() and "Thinking..." not in default.stdout
    off = ollama_run(server, thinker, "--think=false", "hi")
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() and "Thinking..." not in off.stdout
    for args in ([thinker, "hi"], [thinker, "--think", "hi"]):
        on = ollama_run(server, *args)
        assert on.returncode == 0, on.stderr
        assert on.stdout.startswith("Thinking...\n") and on.stdout.strip() != "Thinking...", args
    refused = ollama_run(server, "tiny-v31:client", "--think", "hi")
    assert refused.returncode != 0 and "does not support thinking" in refused.stderr


@pytest.mark.integration
def test_a_server_gone_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="no Ollama server answers"):
        DeepSeekClient("127.0.0.1:9").chat("m", HI)
