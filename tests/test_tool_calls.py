"""Tool calls from every client, on every Ollama line, with scripted tiny models that write a
family's documented tool-call syntax (ollamads.tiny.write_scripted_model).

What each test shows is the README's tool-call table: ``/api/chat`` (streaming and not),
``/v1/chat/completions`` through the ``openai`` package, and ``DeepSeekClient``; the plain V3.1
name keeps answering without thinking; after the tool's result the model answers in text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ollamads.catalog.families import get_family
from ollamads.chat import DeepSeekClient
from ollamads.ollama.modelfile import ModelDefinition
from ollamads.ollama.serve import OllamaServe
from ollamads.registration import register
from ollamads.tiny import write_scripted_model
from tests.support import scripts

pytestmark = pytest.mark.integration

GREEDY = {"temperature": 0, "top_k": 1, "num_ctx": 4096, "num_predict": 64}
ASK = [{"role": "user", "content": "What is the weather in Paris, and the time there?"}]
TIMEOUT = 120


@dataclass(frozen=True)
class Scripted:
    name: str
    family: str
    reply: str
    calls: tuple[tuple[str, dict[str, Any]], ...]
    thinking: str = ""


CASES = (
    Scripted("sc-v31-one:tools", "v3.1", scripts.V31_ONE_CALL, (("get_weather", scripts.PARIS),)),
    Scripted("sc-v31-two:tools", "v3.1", scripts.V31_TWO_CALLS,
             (("get_weather", scripts.PARIS), ("get_time", scripts.ZONE))),
    Scripted("sc-v3:tools", "v3", scripts.V3_ONE_CALL, (("get_weather", scripts.PARIS),)),
    Scripted("sc-r1:tools", "r1", scripts.R1_REASONED_CALL, (("get_weather", scripts.PARIS),),
             thinking="I need the weather."),
)
PLAIN = Scripted("sc-v31-plain:tools", "v3.1", scripts.PLAIN, ())
REASONS = Scripted("sc-r1-reasons:tools", "r1", scripts.R1_REASONING, ())
_registered: set[tuple[str, str]] = set()


@pytest.fixture
def server(ollama_server: OllamaServe, tmp_path_factory: pytest.TempPathFactory) -> OllamaServe:
    info = ollama_server.info
    assert info is not None
    for case in (*CASES, PLAIN, REASONS):
        if (ollama_server.url, case.name) in _registered:
            continue
        path = write_scripted_model(
            tmp_path_factory.mktemp("scripted") / f"{case.family}.gguf", case.family, case.reply,
            after_tool=scripts.AFTER_TOOL,
        )
        register(info, ModelDefinition.for_family(case.name, get_family(case.family), [path], server=info))
        _registered.add((ollama_server.url, case.name))
    return ollama_server


def _chat(server: OllamaServe, model: str, messages: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "tools": scripts.TOOLS, "options": GREEDY, "stream": stream}
    if not stream:
        response = httpx.post(server.url + "/api/chat", json=body, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()["message"]
    merged: dict[str, Any] = {"content": "", "thinking": "", "tool_calls": []}
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                message = json.loads(line).get("message", {})
                merged["content"] += message.get("content", "")
                merged["thinking"] += message.get("thinking") or ""
                merged["tool_calls"] += message.get("tool_calls") or []
    return merged


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.split(":")[0])
def test_api_chat_returns_structured_tool_calls(server: OllamaServe, case: Scripted, stream: bool) -> None:
    message = _chat(server, case.name, ASK, stream)
    got = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    assert got == list(case.calls), message
    assert message["content"].strip() == ""
    assert (message.get("thinking") or "").strip() == case.thinking


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.split(":")[0])
def test_openai_client_gets_tool_calls(server: OllamaServe, case: Scripted, stream: bool) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=TIMEOUT)
    kwargs: dict[str, Any] = {"model": case.name, "messages": ASK, "tools": scripts.TOOLS,
                              "temperature": 0, "max_tokens": 64}
    if not stream:
        message = client.chat.completions.create(**kwargs).choices[0].message
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
        content = message.content or ""
    else:
        calls, content = [], ""
        for chunk in client.chat.completions.create(**kwargs, stream=True):
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta is None:
                continue
            content += delta.content or ""
            for call in delta.tool_calls or []:
                calls.append((call.function.name, json.loads(call.function.arguments)))
    assert calls == list(case.calls), content
    assert content.strip() == ""


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.split(":")[0])
def test_deepseek_client_returns_tool_calls(server: OllamaServe, case: Scripted) -> None:
    with DeepSeekClient(server.url) as client:
        answer = client.chat(case.name, ASK, tools=scripts.TOOLS, **GREEDY)
    assert [(c.name, dict(c.arguments)) for c in answer.tool_calls] == list(case.calls)
    assert answer.content.strip() == ""
    assert answer.thinking.strip() == case.thinking


def test_plain_v31_name_answers_without_thinking_and_without_calls(server: OllamaServe) -> None:
    shown = httpx.post(server.url + "/api/show", json={"model": PLAIN.name}, timeout=TIMEOUT).json()
    assert "thinking" not in shown["capabilities"] and "tools" in shown["capabilities"]
    render = {"model": PLAIN.name, "messages": ASK, "tools": scripts.TOOLS, "_debug_render_only": True}
    prompt = httpx.post(server.url + "/api/chat", json=render, timeout=TIMEOUT).json()
    assert prompt["_debug_info"]["rendered_template"].endswith("<｜Assistant｜></think>")
    message = _chat(server, PLAIN.name, ASK, stream=False)
    assert message["content"] == scripts.PLAIN and not message.get("tool_calls")
    assert not message.get("thinking")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.split(":")[0])
def test_after_the_tool_result_the_model_answers(server: OllamaServe, case: Scripted) -> None:
    turn = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": n, "arguments": a}} for n, a in case.calls]},
        *({"role": "tool", "content": "sunny, 24 C", "tool_name": n} for n, _ in case.calls),
    ]
    with DeepSeekClient(server.url) as client:
        answer = client.chat(case.name, turn, tools=scripts.TOOLS, **GREEDY)
    assert answer.content == scripts.AFTER_TOOL and not answer.tool_calls


def test_ollamads_chat_prints_the_calls(server: OllamaServe, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.cli import ollamads_chat

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(scripts.TOOLS), encoding="utf-8")
    done = ollamads_chat(server, "sc-v31-two:tools", "weather?", "--tools", str(tools))
    assert done.returncode == 0, done.stderr
    assert "[tool call] get_weather {'city': 'Paris'}" in done.stderr
    assert "[tool call] get_time {'zone': 'Europe/Paris'}" in done.stderr
    assert "tool▁call" not in done.stdout and "tool call" not in done.stdout
    bad = ollamads_chat(server, "sc-v31-two:tools", "weather?", "--tools", str(tmp_path / "none.json"))
    assert bad.returncode == 1 and "cannot read the tools file" in bad.stderr


def test_client_reads_calls_the_server_left_as_text(
    merged_line_server: OllamaServe, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A v0.24 server with the other line's TEMPLATE (the tag spelled as v0.30+ writes it) never
    # sees the tag and hands the calls over as text; DeepSeekClient reads them itself.
    from dataclasses import replace

    info = merged_line_server.info
    assert info is not None
    name = "sc-v31-text:tools"
    path = write_scripted_model(tmp_path_factory.mktemp("text") / "m.gguf", "v3.1", scripts.V31_TWO_CALLS)
    definition = ModelDefinition.for_family(name, get_family("v3.1"), [path], server=info)
    register(info, replace(definition, line="split", companions=()))
    message = _chat(merged_line_server, name, ASK, stream=False)
    assert not message.get("tool_calls") and "get_weather" in message["content"]
    with DeepSeekClient(merged_line_server.url) as client:
        answer = client.chat(name, ASK, tools=scripts.TOOLS, **GREEDY)
        streamed = list(client.stream(name, ASK, tools=scripts.TOOLS, **GREEDY))
    expected = [("get_weather", scripts.PARIS), ("get_time", scripts.ZONE)]
    assert [(c.name, dict(c.arguments)) for c in answer.tool_calls] == expected
    assert answer.content == ""
    assert [(e.name, dict(e.arguments)) for e in streamed if hasattr(e, "arguments")] == expected


def test_r1_reasons_then_answers(server: OllamaServe) -> None:
    with DeepSeekClient(server.url) as client:
        answer = client.ask(REASONS.name, "Say hello.", **GREEDY)
    assert answer.thinking.strip() == "The user wants a greeting."
    assert answer.content == "Hello from Paris." and not answer.tool_calls
