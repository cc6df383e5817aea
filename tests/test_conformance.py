"""The prompt each real Ollama renders equals DeepSeek's own chat template, byte for byte.

Every conversation in ``tests/conversations/`` is sent to both built Ollama lines (v0.24 "merged",
v0.32 "split") for each family it applies to, with ``"_debug_render_only": true``, and the
server's ``_debug_info.rendered_template`` is compared with :func:`ollamads.reference.render_reference`
(DeepSeek's Jinja template, leading BOS removed). The tiny models are registered the way
``ollamads`` registers real ones: a Go TEMPLATE for all three families, and ``RENDERER deepseek3.1``
for V3.1 too, under the catalog's names (the name matters, see 6.).

Where Ollama cannot be identical, the difference is pinned here, each as a named step applied to
the expected text, never as a skip:

1. **think unset is think on.** Since v0.12.4 Ollama sets ``think=true`` for a thinking-capable
   model when the request has no ``think`` (server/routes.go), and a template cannot tell the two
   apart. V3.1 requests without ``think`` therefore render like ``think: true``
   (``...<｜Assistant｜><think>``), although DeepSeek's own default is non-thinking.
2. **BOS.** Our TEMPLATEs emit none (the tokenizer adds it). ``RENDERER deepseek3.1`` writes BOS
   into the prompt (:func:`renderer_bos`): v0.30+ strips it before llama-server, but v0.24
   tokenizes it *and* adds its own, so two BOS tokens reach the model there
   (``test_renderer_bos_reaches_the_model_twice_on_v024``).
3. **V3.1 tool definitions.** DeepSeek's template ignores ``tools``; its model card asks for a
   "## Tools" description after the system prompt. Ollama's renderer writes that block and our
   TEMPLATE the same words (:func:`with_tools_block`). Its ``Parameters`` JSON is Go's encoding of
   Ollama's schema structs: their field order, unknown keys dropped, and in a TEMPLATE the
   top-level ``properties`` sorted (a Go map) where the renderer keeps the client's order.
4. **Tool-call arguments** are Go JSON (see :mod:`ollamads.reference`); a TEMPLATE gets them as a
   Go map, so their top-level keys come out sorted; the renderer and the GGUF path keep the
   client's order.
5. **Consecutive messages of one role** (except tool results) reach a Go TEMPLATE merged into one,
   joined by a blank line (template.collate, :func:`ollama_collate`); renderer and GGUF paths see
   them apart.
6. **Models named deepseek-r1** (how ollamads names R1) get their earlier assistant turns'
   leading ``<think>...</think>`` and the whitespace after it cut by Ollama itself before any
   template runs (server/routes.go filterThinkTags, :func:`ollama_filter_think_tags`); DeepSeek's
   template keeps that whitespace.
7. **v0.30+ picks the GGUF's own template for R1 and V3.** Their Jinja template mentions
   ``tool_calls``, so Ollama credits it with the ``tools`` capability; our TEMPLATEs do not
   reference ``.Tools`` (DeepSeek's templates never describe tools), so the GGUF template "shows
   more capabilities" and wins unless ``OLLAMA_GO_TEMPLATE=1``: the prompt comes from
   llama-server's Jinja engine. It is DeepSeek's template itself, so it conforms with no collate
   and ordered arguments, but those models then list ``tools`` (tool definitions are accepted
   and never shown to the model, as in DeepSeek's template; v0.24 refuses them), and a final
   assistant message is continued instead of closed (:func:`llama_server_prefill`). With
   ``OLLAMA_GO_TEMPLATE=1`` our TEMPLATEs are used and conform like on v0.24.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from ollamads.catalog.families import BOS, get_family
from ollamads.gguf.merge import merge
from ollamads.ollama.modelfile import ModelDefinition, go_template
from tests.support.reference import go_json, render_reference, to_hf_messages
from ollamads.ollama.register import register
from ollamads.ollama.versions import ServerInfo
from ollamads.ollama.serve import OllamaServe
from ollamads.tiny import write_tiny_shards

from tests.conftest import ollama_binary

CORPUS_DIR = Path(__file__).parent / "conversations"
#: The catalog's model names: Ollama treats a model called deepseek-r1 specially (pin 6).
MODEL_NAMES = {"v3.1": "deepseek-v3.1", "r1": "deepseek-r1", "v3": "deepseek-v3-0324"}
VARIANTS = (("v3.1", "template"), ("v3.1", "renderer"), ("r1", "template"), ("v3", "template"))
#: Random weights rarely stop; the context must hold the longest conversation, or Ollama would
#: silently drop its oldest turns.
TINY_PARAMETERS = {"num_predict": 8, "num_ctx": 8192}
#: Since this version a request without ``think`` is think=true for a thinking model (pin 1).
THINK_DEFAULT_ON_VERSION = (0, 12, 4)
#: Since this version (llama-server runner) a GGUF Jinja template may win over a TEMPLATE (pin 7).
GGUF_TEMPLATE_PREFERENCE_VERSION = (0, 30, 0)
REQUEST_TIMEOUT_S = 120
#: Ollama's thinking parser trims with Go's unicode.IsSpace.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True)
class Conversation:
    name: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    think: bool | None
    families: tuple[str, ...]


def load_corpus() -> list[Conversation]:
    cases = []
    for path in sorted(CORPUS_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        cases.append(
            Conversation(
                name=path.stem,
                messages=data["messages"],
                tools=data.get("tools"),
                think=data["think"],
                families=tuple(data["families"]),
            )
        )
    return cases


CORPUS = load_corpus()
TOOL_CASES = [c for c in CORPUS if c.tools]


# --- what Ollama does before or instead of a template (the pins) ------------------------------


def template_source(
    info: ServerInfo, family: str, mode: str, *, go_template_env: bool = False
) -> str:
    """Which prompt builder the server uses for our registered model (pin 7)."""
    if mode == "renderer":
        return "renderer"
    # Only R1's and V3's GGUF templates show more capabilities than our TEMPLATE (tools).
    newer = info.version_tuple >= GGUF_TEMPLATE_PREFERENCE_VERSION
    if newer and family in ("r1", "v3") and not go_template_env:
        return "gguf_chat_template"
    return "go_template"


def effective_think(info: ServerInfo, family: str, think: bool | None) -> bool | None:
    """Pin 1: no ``think`` means think=true for a thinking model on Ollama >= 0.12.4."""
    if think is None and get_family(family).can_think:
        return True if info.version_tuple >= THINK_DEFAULT_ON_VERSION else None
    return think


def ollama_collate(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pin 5, template/template.go collate: merge consecutive same-role messages but tool ones."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if out and out[-1]["role"] == message["role"] and message["role"] != "tool":
            out[-1]["content"] = out[-1].get("content", "") + "\n\n" + message.get("content", "")
        else:
            out.append(dict(message))
    return out


def _strip_leading_think(content: str) -> str:
    """thinking.Parser{"<think>", "</think>"}.AddContent(content), the content half, in one go."""
    trimmed = content.lstrip(_GO_SPACE)
    if trimmed.startswith("<think>"):
        after = trimmed[len("<think>"):].lstrip(_GO_SPACE)
        if "</think>" not in after:
            return ""
        return after.split("</think>", 1)[1].lstrip(_GO_SPACE)
    if "<think>".startswith(trimmed):
        return ""
    return content


def ollama_filter_think_tags(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pin 6, server/routes.go filterThinkTags: assistant turns before the last user turn of a
    model named deepseek-r1 lose a leading <think>...</think> and the whitespace after it."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return [
        {**m, "content": _strip_leading_think(m.get("content", ""))}
        if m["role"] == "assistant" and i < last_user
        else dict(m)
        for i, m in enumerate(messages)
    ]


def _go_tool_property(prop: Mapping[str, Any]) -> str:
    """api.ToolProperty as encoding/json writes it: field order, omitempty, unknown keys gone."""
    fields = []
    if prop.get("anyOf"):
        fields.append('"anyOf":[' + ",".join(_go_tool_property(p) for p in prop["anyOf"]) + "]")
    kind = prop.get("type")
    if kind:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        fields.append('"type":' + (go_json(kinds[0]) if len(kinds) == 1 else go_json(kinds)))
    if prop.get("items") is not None:
        fields.append('"items":' + go_json(prop["items"]))
    if prop.get("description"):
        fields.append('"description":' + go_json(prop["description"]))
    if prop.get("enum"):
        fields.append('"enum":' + go_json(prop["enum"]))
    if prop.get("properties") is not None:
        fields.append('"properties":' + _go_properties(prop["properties"], sort=False))
    if prop.get("required"):
        fields.append('"required":' + go_json(prop["required"]))
    return "{" + ",".join(fields) + "}"


def _go_properties(properties: Mapping[str, Any], *, sort: bool) -> str:
    keys = sorted(properties) if sort else list(properties)
    return "{" + ",".join(f"{go_json(k)}:{_go_tool_property(properties[k])}" for k in keys) + "}"


def ollama_parameters_json(parameters: Mapping[str, Any], *, sort_properties: bool) -> str:
    """api.ToolFunctionParameters (renderer) / templateToolFunctionParameters (TEMPLATE)."""
    fields = ['"type":' + go_json(parameters.get("type", ""))]
    for key in ("$defs", "items"):
        if parameters.get(key) is not None:
            fields.append(f"{go_json(key)}:{go_json(parameters[key])}")
    if parameters.get("required"):
        fields.append('"required":' + go_json(parameters["required"]))
    properties = parameters.get("properties") or {}
    fields.append('"properties":' + _go_properties(properties, sort=sort_properties))
    return "{" + ",".join(fields) + "}"


TOOLS_FOOTER = (
    "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments"
    "<｜tool▁call▁end｜>{{additional_tool_calls}}<｜tool▁calls▁end｜>\n\n"
    "Where:\n\n"
    "- `tool_call_name` must be an exact match to one of the available tools\n"
    "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"
    "- For multiple tool calls, chain them directly without separators or spaces\n"
)


def tools_block(tools: Sequence[Mapping[str, Any]], *, sort_properties: bool) -> str:
    """DeepSeek V3.1's tool description (model card), worded as Ollama's RENDERER deepseek3.1."""
    parts = ["\n\n## Tools\nYou have access to the following tools:\n"]
    for tool in tools:
        function = tool["function"]
        parameters = ollama_parameters_json(
            function.get("parameters") or {}, sort_properties=sort_properties
        )
        parts.append(
            f"\n### {function['name']}\nDescription: {function.get('description', '')}"
            f"\n\nParameters: {parameters}\n"
        )
    parts.append(TOOLS_FOOTER)
    return "".join(parts)


def with_tools_block(
    expected: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    *,
    sort_properties: bool,
) -> str:
    """Pin 3: the tools block goes right after the system prompt."""
    system = "\n\n".join(m.get("content", "") for m in messages if m["role"] == "system")
    assert expected.startswith(system)
    return system + tools_block(tools, sort_properties=sort_properties) + expected[len(system):]


def renderer_bos(expected: str) -> str:
    """Pin 2: RENDERER deepseek3.1 writes BOS into the prompt it returns."""
    return BOS + expected


def llama_server_prefill(
    family: str, messages: Sequence[Mapping[str, Any]], think: bool | None
) -> str:
    """Pin 7: llama-server continues a final assistant message (continue_final_message): the
    earlier messages with the generation prompt, then the content as is, no end-of-sentence; a
    generation prompt that opens <think> gets an empty reasoning block, its newline dropped."""
    head = render_reference(family, messages[:-1], thinking=think)
    if head.endswith("<think>\n"):
        head = head[: -len("\n")] + "</think>"
    return head + messages[-1].get("content", "")


def expected_prompt(
    info: ServerInfo, family: str, mode: str, case: Conversation, *, go_template_env: bool = False
) -> str:
    source = template_source(info, family, mode, go_template_env=go_template_env)
    think = effective_think(info, family, case.think)
    messages = [dict(m) for m in case.messages]
    if family == "r1":
        messages = ollama_filter_think_tags(messages)
    if source == "go_template":
        messages = ollama_collate(messages)
    if source == "gguf_chat_template" and messages[-1]["role"] == "assistant":
        return llama_server_prefill(family, messages, think)
    expected = render_reference(
        family, messages, tools=case.tools, thinking=think, sort_argument_keys=source == "go_template"
    )
    if case.tools and family == "v3.1":
        expected = with_tools_block(
            expected, messages, case.tools, sort_properties=source == "go_template"
        )
    if source == "renderer":
        expected = renderer_bos(expected)
    return expected


# --- talking to the servers ---------------------------------------------------------------------


def chat_body(model: str, case: Conversation, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": case.messages, "stream": False, **extra}
    if case.tools:
        body["tools"] = case.tools
    if case.think is not None:
        body["think"] = case.think
    return body


def one_turn(text: str, *, think: bool | None) -> Conversation:
    messages = [{"role": "user", "content": text}]
    return Conversation("one_turn", messages, None, think, tuple(MODEL_NAMES))


def render_only(serve: OllamaServe, model: str, case: Conversation) -> requests.Response:
    return requests.post(
        f"{serve.url}/api/chat",
        json=chat_body(model, case, _debug_render_only=True),
        timeout=REQUEST_TIMEOUT_S,
    )


def rendered(serve: OllamaServe, model: str, case: Conversation) -> str:
    response = render_only(serve, model, case)
    assert response.status_code == 200, response.text
    return response.json()["_debug_info"]["rendered_template"]


def capabilities(serve: OllamaServe, model: str) -> set[str]:
    response = requests.post(f"{serve.url}/api/show", json={"model": model}, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    return set(response.json()["capabilities"])


ModelFactory = Callable[[OllamaServe, str, str], str]


@pytest.fixture(scope="session")
def conformance_models(tmp_path_factory: pytest.TempPathFactory) -> ModelFactory:
    """Registers each (server, family, mode) once per session and returns the model name."""
    root = tmp_path_factory.mktemp("conformance")
    files: dict[tuple[str, str], list[Path]] = {}
    registered: dict[tuple[str, str, str], str] = {}

    def gguf_files(family: str, line: str) -> list[Path]:
        if (family, line) not in files:
            shards = write_tiny_shards(root / family / "hub", family, n_shards=2)
            if line == "merged":
                out = root / family / "merged.gguf"
                merge(shards[0], out)
                files[(family, line)] = [out]
            else:
                files[(family, line)] = shards
        return files[(family, line)]

    def model(serve: OllamaServe, family: str, mode: str) -> str:
        key = (serve.url, family, mode)
        if key not in registered:
            info = serve.info
            assert info is not None
            name = f"{MODEL_NAMES[family]}:conformance-{mode}"
            definition = ModelDefinition.for_family(
                name, get_family(family), gguf_files(family, info.line),
                server=info, mode=mode, parameters=TINY_PARAMETERS,  # type: ignore[arg-type]
            )
            register(info, definition)
            registered[key] = name
        return registered[key]

    return model


@pytest.fixture(scope="module")
def _go_template_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServe]:
    root = tmp_path_factory.mktemp("ollama-split-go-template")
    serve = OllamaServe(
        root / "models",
        binary=ollama_binary("split"),
        log_path=root / "serve.log",
        env={"HOME": str(root), "OLLAMA_KEEP_ALIVE": "5m", "OLLAMA_GO_TEMPLATE": "1"},
    )
    serve.start()
    yield serve
    serve.stop()


@pytest.fixture
def go_template_server(request: pytest.FixtureRequest, _go_template_serve: OllamaServe) -> OllamaServe:
    """A v0.30+ server with OLLAMA_GO_TEMPLATE=1; its log is attached to failing tests."""
    request.node.__dict__.setdefault("_ollama_servers", []).append(_go_template_serve)
    return _go_template_serve


# --- the corpus itself (no server) ------------------------------------------------------------


def test_corpus_covers_what_the_brief_asks_for() -> None:
    assert len(CORPUS) >= 30
    messages = [m for c in CORPUS for m in c.messages]
    assert any(not any(m["role"] == "system" for m in c.messages) for c in CORPUS)
    assert any(sum(m["role"] == "system" for m in c.messages) > 1 for c in CORPUS)
    assert any(sum(m["role"] == "user" for m in c.messages) > 2 for c in CORPUS)
    assert any(m.get("thinking") for m in messages)
    assert any("</think>" in m.get("content", "") and m["role"] == "assistant" for m in messages)
    assert any(m.get("tool_calls") for m in messages) and any(m["role"] == "tool" for m in messages)
    assert TOOL_CASES
    assert {c.think for c in CORPUS} == {True, False, None}
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in m.get("content", "")) for m in messages)
    assert any(any(ord(ch) > 0xFFFF for ch in m.get("content", "")) for m in messages)
    assert any(m["content"] == "" and not m.get("tool_calls") for m in messages)
    for case in CORPUS:
        assert set(case.families) <= set(MODEL_NAMES), case.name
        assert not (case.think and "v3" in case.families), f"{case.name}: V3 cannot think"
        assert not (case.tools and set(case.families) - {"v3.1"}), f"{case.name}: see test_r1_v3_tools"


@pytest.mark.parametrize("family", sorted(MODEL_NAMES))
def test_go_templates_never_write_bos(family: str) -> None:
    assert BOS not in go_template(get_family(family).go_template)


def test_go_json_matches_encoding_json() -> None:
    """Outputs of Go 1.26 encoding/json.Marshal for the same values."""
    cases = {
        1.0: "1", 0.1: "0.1", 1e-05: "0.00001", 1.5e-07: "1.5e-7", 1e21: "1e+21",
        1e20: "100000000000000000000", -2.5: "-2.5", 123456.789: "123456.789", 3e-6: "0.000003",
    }
    for value, text in cases.items():
        assert go_json(value) == text
    nested = {"b": 1, "a": {"z": "<x> & é 😀\u2028", "y": [1, 2.0]}}
    assert go_json(nested) == '{"a":{"y":[1,2],"z":"\\u003cx\\u003e \\u0026 é 😀\\u2028"},"b":1}'
    assert go_json(nested, sort_keys=False).startswith('{"b":1,"a":{"y"')


def test_reference_reproduces_the_model_card_formats() -> None:
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert render_reference("v3.1", chat) == "S<｜User｜>Q<｜Assistant｜></think>"
    assert render_reference("v3.1", chat, thinking=True) == "S<｜User｜>Q<｜Assistant｜><think>"
    assert render_reference("v3", chat) == "S<｜User｜>Q<｜Assistant｜>"
    assert render_reference("r1", chat, thinking=False) == "S<｜User｜>Q<｜Assistant｜><think>\n"
    arguments = {"b": 1, "a": 2}
    function = {"name": "f", "arguments": arguments}
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": function}]}
    assert to_hf_messages([call])[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"b":1,"a":2}'}}],
    }
    (sorted_call,) = to_hf_messages([call], sort_argument_keys=True)[0]["tool_calls"]
    assert sorted_call["function"]["arguments"] == '{"a":2,"b":1}'


def test_ollama_normalisations() -> None:
    assert _strip_leading_think("\n<think>x</think>\n\n answer") == "answer"
    assert _strip_leading_think("x</think>y") == "x</think>y"
    assert _strip_leading_think("<think>unfinished") == ""
    merged = ollama_collate([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                             {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}])
    assert [m["content"] for m in merged] == ["a\n\nb", "1", "2"]


# --- against the real servers -------------------------------------------------------------------

CONFORMANCE_CASES = [
    pytest.param(family, mode, case, id=f"{family}-{mode}-{case.name}")
    for family, mode in VARIANTS
    for case in CORPUS
    if family in case.families
]


@pytest.mark.integration
@pytest.mark.parametrize(("family", "mode", "case"), CONFORMANCE_CASES)
def test_rendered_prompt_is_deepseeks(
    ollama_server: OllamaServe,
    conformance_models: ModelFactory,
    family: str,
    mode: str,
    case: Conversation,
) -> None:
    info = ollama_server.info
    assert info is not None
    model = conformance_models(ollama_server, family, mode)
    assert rendered(ollama_server, model, case) == expected_prompt(info, family, mode, case)


def expected_capabilities(
    info: ServerInfo, family: str, mode: str, *, go_template_env: bool = False
) -> set[str]:
    caps = {"completion"}
    if get_family(family).can_think:
        caps.add("thinking")
    source = template_source(info, family, mode, go_template_env=go_template_env)
    # Our V3.1 TEMPLATE and the renderer describe tools; the GGUF's Jinja template merely
    # mentions tool_calls, which is enough for Ollama (pin 7).
    if family == "v3.1" or source == "gguf_chat_template":
        caps.add("tools")
    return caps


@pytest.mark.integration
@pytest.mark.parametrize(("family", "mode"), VARIANTS, ids=[f"{f}-{m}" for f, m in VARIANTS])
def test_capabilities(
    ollama_server: OllamaServe, conformance_models: ModelFactory, family: str, mode: str
) -> None:
    info = ollama_server.info
    assert info is not None
    caps = capabilities(ollama_server, conformance_models(ollama_server, family, mode))
    assert caps == expected_capabilities(info, family, mode)
    assert ("thinking" in caps) == (family != "v3")
    uses_go_template = template_source(info, family, mode) == "go_template"
    if uses_go_template:
        assert ("tools" in caps) == (".Tools" in go_template(get_family(family).go_template))


@pytest.mark.integration
@pytest.mark.parametrize("family", ["r1", "v3"])
@pytest.mark.parametrize("case", TOOL_CASES, ids=[c.name for c in TOOL_CASES])
def test_r1_v3_tools(
    ollama_server: OllamaServe, conformance_models: ModelFactory, family: str, case: Conversation
) -> None:
    """Pin 7: tool definitions for R1/V3 are refused on v0.24 and accepted but never shown on v0.30+."""
    info = ollama_server.info
    assert info is not None
    model = conformance_models(ollama_server, family, "template")
    think = None if family == "v3" else case.think
    probe = Conversation(case.name, case.messages, case.tools, think, (family,))
    response = render_only(ollama_server, model, probe)
    if template_source(info, family, "template") == "go_template":
        assert response.status_code == 400
        assert response.json()["error"].endswith(f"{model} does not support tools")
    else:
        assert response.status_code == 200, response.text
        expected = expected_prompt(info, family, "template", probe)
        assert response.json()["_debug_info"]["rendered_template"] == expected
        assert "## Tools" not in expected and "get_weather\nDescription" not in expected


@pytest.mark.integration
def test_v3_cannot_be_asked_to_think(
    ollama_server: OllamaServe, conformance_models: ModelFactory
) -> None:
    model = conformance_models(ollama_server, "v3", "template")
    response = render_only(ollama_server, model, one_turn("hi", think=True))
    assert response.status_code == 400
    assert "does not support thinking" in response.json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["template", "renderer"])
def test_v31_think_unset_renders_as_think_on(
    ollama_server: OllamaServe, conformance_models: ModelFactory, mode: str
) -> None:
    """Pin 1, asked directly: no ``think`` gives the same prompt as ``think: true``."""
    model = conformance_models(ollama_server, "v3.1", mode)
    unset, on, off = (
        rendered(ollama_server, model, one_turn("hi", think=think)) for think in (None, True, False)
    )
    assert unset == on != off
    assert unset.endswith("<｜Assistant｜><think>") and off.endswith("<｜Assistant｜></think>")


@pytest.mark.integration
def test_renderer_bos_reaches_the_model_twice_on_v024(
    ollama_server: OllamaServe, conformance_models: ModelFactory
) -> None:
    """Pin 2: a real (one-token) generation counts the prompt tokens each mode feeds the model."""
    info = ollama_server.info
    assert info is not None
    counts = {}
    for mode in ("template", "renderer"):
        model = conformance_models(ollama_server, "v3.1", mode)
        body = chat_body(model, one_turn("bos check", think=False), options={"num_predict": 1})
        response = requests.post(f"{ollama_server.url}/api/chat", json=body, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text
        counts[mode] = response.json()["prompt_eval_count"]
    if info.accepts_split_gguf:
        assert counts["renderer"] == counts["template"]  # LeadingBOS stripped before llama-server
    else:
        assert counts["renderer"] == counts["template"] + 1
        log = ollama_server.log_path.read_text(errors="replace")
        assert "adding bos token to prompt which already has it" in log


GO_TEMPLATE_CASES = [
    pytest.param(family, case, id=f"{family}-{case.name}")
    for family in ("r1", "v3")
    for case in CORPUS
    if family in case.families
]


@pytest.mark.integration
@pytest.mark.parametrize(("family", "case"), GO_TEMPLATE_CASES)
def test_go_template_env_keeps_our_template_on_v030(
    go_template_server: OllamaServe, conformance_models: ModelFactory, family: str, case: Conversation
) -> None:
    """Pin 7, other side: with OLLAMA_GO_TEMPLATE=1 the R1/V3 TEMPLATEs run on v0.30+ too."""
    info = go_template_server.info
    assert info is not None and info.accepts_split_gguf
    model = conformance_models(go_template_server, family, "template")
    expected = expected_prompt(info, family, "template", case, go_template_env=True)
    assert rendered(go_template_server, model, case) == expected


@pytest.mark.integration
@pytest.mark.parametrize("family", ["r1", "v3"])
def test_go_template_env_capabilities(
    go_template_server: OllamaServe, conformance_models: ModelFactory, family: str
) -> None:
    info = go_template_server.info
    assert info is not None
    model = conformance_models(go_template_server, family, "template")
    caps = capabilities(go_template_server, model)
    assert caps == expected_capabilities(info, family, "template", go_template_env=True)
    assert "tools" not in caps
