"""The prompt each real Ollama renders equals DeepSeek's own chat template, byte for byte.

Every conversation in ``tests/conversations/`` is sent to both built Ollama lines (v0.24 "merged",
v0.32 "split") for each family it applies to, with ``"_debug_render_only": true``, and the
server's ``_debug_info.rendered_template`` is compared with :func:`ollamads.reference.render_reference`
(DeepSeek's Jinja template, leading BOS removed). The tiny models are registered the way
``ollamads`` registers real ones, under the catalog's names (the name matters, see 6.): a Go
TEMPLATE for every family; V3.1 under two names, the plain one (no thinking capability) and
``NAME-think`` (a TEMPLATE, or ``RENDERER deepseek3.1`` with ``--template-mode renderer``).

Where Ollama cannot be identical, the difference is pinned here, each as a named step applied to
the expected text, never as a skip:

1. **think unset is think on** for a thinking-capable name. Since v0.12.4 Ollama sets
   ``think=true`` for such a model when the request has no ``think`` (server/routes.go), and a
   template cannot tell the two apart. So V3.1's ``NAME-think`` renders ``<｜Assistant｜><think>``
   without ``think``; the plain ``NAME`` has no thinking capability and renders DeepSeek's own
   default, ``</think>`` (and ``think: true`` is refused there).
2. **BOS.** Our TEMPLATEs emit none (the tokenizer adds it). ``RENDERER deepseek3.1`` writes BOS
   into the prompt (:func:`renderer_bos`): v0.30+ strips it before llama-server, but v0.24
   tokenizes it *and* adds its own, so two BOS tokens reach the model there
   (``test_renderer_bos_reaches_the_model_twice_on_v024``).
3. **Tool definitions.** DeepSeek's templates ignore ``tools``; V3.1's model card asks for a
   "## Tools" description after the system prompt, and R1 and V3 get the same block (DeepSeek
   documents none for them). Ollama's renderer writes that block and our TEMPLATEs the same
   words (:func:`with_tools_block`). Its ``Parameters`` JSON is Go's encoding of Ollama's schema
   structs: their field order, unknown keys dropped, and in a TEMPLATE the top-level
   ``properties`` sorted (a Go map) where the renderer keeps the client's order.
4. **Tool-call arguments** are Go JSON (see :mod:`ollamads.reference`); a TEMPLATE gets them as a
   Go map, so their top-level keys come out sorted; the renderer keeps the client's order.
5. **Consecutive messages of one role** (except tool results) reach a Go TEMPLATE merged into one,
   joined by a blank line (template.collate, :func:`ollama_collate`); the renderer sees them apart.
6. **Models named deepseek-r1** (how ollamads names R1) get their earlier assistant turns'
   leading ``<think>...</think>`` and the whitespace after it cut by Ollama itself before any
   template runs (server/routes.go filterThinkTags, :func:`ollama_filter_think_tags`); DeepSeek's
   template keeps that whitespace.
7. **Whatever template the GGUF embeds**, the server renders ours. v0.30+ prefers a GGUF's Jinja
   template that shows more capabilities than the TEMPLATE (server/images.go
   shouldPreferChatTemplate); our TEMPLATEs reference ``.Suffix`` (DeepSeek's fill-in-the-middle
   format), which counts as the "insert" capability that no Jinja template can show, so they
   always win. ``test_a_foreign_gguf_template_is_not_used`` proves it with a GGUF carrying another
   template, and shows that without ``.Suffix`` that template would take over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from ollamads.catalog.families import BOS, get_family
from ollamads.gguf.merge import merge
from ollamads.gguf.retemplate import rewrite_chat_template
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import ModelDefinition, go_template, thinking_name
from ollamads.ollama.serve import OllamaServe
from ollamads.ollama.versions import ServerInfo
from ollamads.registration import register
from ollamads.tiny import write_tiny_model, write_tiny_shards
from tests.support.reference import go_json, render_reference, to_hf_messages

CORPUS_DIR = Path(__file__).parent / "conversations"
#: The catalog's model names: Ollama treats a model called deepseek-r1 specially (pin 6).
MODEL_NAMES = {"v3.1": "deepseek-v3.1", "r1": "deepseek-r1", "v3": "deepseek-v3-0324"}


@dataclass(frozen=True)
class Variant:
    """One registered name: its family, its prompt format, and whether Ollama sees it as
    thinking-capable (V3.1: the plain name is not, ``NAME-think`` is)."""

    family: str
    mode: str
    thinking: bool

    @property
    def id(self) -> str:
        if self.family != "v3.1":
            return self.family
        return f"v3.1-think-{self.mode}" if self.thinking else "v3.1-plain"


VARIANTS = (
    Variant("v3.1", "template", thinking=False),
    Variant("v3.1", "template", thinking=True),
    Variant("v3.1", "renderer", thinking=True),
    Variant("r1", "template", thinking=True),
    Variant("v3", "template", thinking=False),
)
#: Random weights rarely stop; the context must hold the longest conversation, or Ollama would
#: silently drop its oldest turns.
TINY_PARAMETERS = {"num_predict": 8, "num_ctx": 8192}
#: Since this version a request without ``think`` is think=true for a thinking model (pin 1).
THINK_DEFAULT_ON_VERSION = (0, 12, 4)
#: Since this version (llama-server runner) a GGUF Jinja template may win over a TEMPLATE (pin 7).
GGUF_TEMPLATE_PREFERENCE_VERSION = (0, 30, 0)
#: What Ollama credits every one of our TEMPLATEs with (.Tools, .Suffix), thinking aside.
TEMPLATE_CAPABILITIES = {"completion", "tools", "insert"}
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


def template_source(variant: Variant) -> str:
    """Which prompt builder the server uses for our registered name (pin 7: never the GGUF's)."""
    return "renderer" if variant.mode == "renderer" else "go_template"


def effective_think(info: ServerInfo, variant: Variant, think: bool | None) -> bool | None:
    """Pin 1: no ``think`` means think=true for a thinking-capable name on Ollama >= 0.12.4."""
    if think is None and variant.thinking:
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


def expected_prompt(info: ServerInfo, variant: Variant, case: Conversation) -> str:
    source = template_source(variant)
    think = effective_think(info, variant, case.think)
    messages = [dict(m) for m in case.messages]
    if variant.family == "r1":
        messages = ollama_filter_think_tags(messages)
    if source == "go_template":
        messages = ollama_collate(messages)
    expected = render_reference(
        variant.family, messages, tools=case.tools, thinking=think,
        sort_argument_keys=source == "go_template",
    )
    if case.tools:
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


ModelFactory = Callable[[OllamaServe, Variant], str]


def _registered_name(plain: str, variant: Variant) -> str:
    return thinking_name(plain) if variant.family == "v3.1" and variant.thinking else plain


@pytest.fixture(scope="session")
def conformance_models(tmp_path_factory: pytest.TempPathFactory) -> ModelFactory:
    """Registers each (server, family, mode) once per session and returns the variant's name."""
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

    def model(serve: OllamaServe, variant: Variant) -> str:
        key = (serve.url, variant.family, variant.mode)
        if key not in registered:
            info = serve.info
            assert info is not None
            name = f"{MODEL_NAMES[variant.family]}:conformance-{variant.mode}"
            definition = ModelDefinition.for_family(
                name, get_family(variant.family), gguf_files(variant.family, info.line),
                server=info, mode=variant.mode, parameters=TINY_PARAMETERS,  # type: ignore[arg-type]
            )
            register(info, definition)
            registered[key] = name
        return _registered_name(registered[key], variant)

    return model


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
    for family in MODEL_NAMES:
        assert any(family in c.families for c in TOOL_CASES), f"no tools case for {family}"
    for case in CORPUS:
        assert set(case.families) <= set(MODEL_NAMES), case.name
        assert not (case.think and "v3" in case.families), f"{case.name}: V3 cannot think"


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
    pytest.param(variant, case, id=f"{variant.id}-{case.name}")
    for variant in VARIANTS
    for case in CORPUS
    if variant.family in case.families and (variant.thinking or not case.think)
]
#: The plain V3.1 name is asked to think: the server refuses (the thinking name is NAME-think).
REFUSED_CASES = [
    pytest.param(variant, case, id=f"{variant.id}-{case.name}")
    for variant in VARIANTS
    for case in CORPUS
    if variant.family in case.families and case.think and not variant.thinking
]


@pytest.mark.integration
@pytest.mark.parametrize(("variant", "case"), CONFORMANCE_CASES)
def test_rendered_prompt_is_deepseeks(
    ollama_server: OllamaServe, conformance_models: ModelFactory, variant: Variant, case: Conversation
) -> None:
    info = ollama_server.info
    assert info is not None
    model = conformance_models(ollama_server, variant)
    assert rendered(ollama_server, model, case) == expected_prompt(info, variant, case)


@pytest.mark.integration
@pytest.mark.parametrize(("variant", "case"), REFUSED_CASES)
def test_the_plain_v31_name_refuses_to_think(
    ollama_server: OllamaServe, conformance_models: ModelFactory, variant: Variant, case: Conversation
) -> None:
    model = conformance_models(ollama_server, variant)
    response = render_only(ollama_server, model, case)
    assert response.status_code == 400
    assert response.json()["error"] == f'"{model}" does not support thinking'


def expected_capabilities(variant: Variant) -> set[str]:
    """Every TEMPLATE references .Tools and .Suffix; the renderer's name also carries the plain
    name's TEMPLATE (made ``from`` it), and PARSER deepseek3 adds tools and thinking."""
    return TEMPLATE_CAPABILITIES | ({"thinking"} if variant.thinking else set())


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_capabilities(
    ollama_server: OllamaServe, conformance_models: ModelFactory, variant: Variant
) -> None:
    model = conformance_models(ollama_server, variant)
    caps = capabilities(ollama_server, model)
    assert caps == expected_capabilities(variant)
    assert ("thinking" in caps) == (variant.family == "r1" or variant.thinking)
    if variant.mode == "template":
        shown = OllamaAPI(ollama_server.url).show(model)
        assert shown is not None
        assert shown["template"] == go_template(
            get_family(variant.family).go_template, thinking=variant.thinking,
            line=ollama_server.info.line,  # type: ignore[union-attr]
        )


@pytest.mark.integration
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.thinking], ids=lambda v: v.id)
def test_think_unset_renders_as_think_on(
    ollama_server: OllamaServe, conformance_models: ModelFactory, variant: Variant
) -> None:
    """Pin 1, asked directly: on a thinking-capable name no ``think`` is ``think: true``."""
    model = conformance_models(ollama_server, variant)
    unset, on = (rendered(ollama_server, model, one_turn("hi", think=t)) for t in (None, True))
    assert unset == on


@pytest.mark.integration
def test_v31_plain_name_answers_without_thinking_by_default(
    ollama_server: OllamaServe, conformance_models: ModelFactory
) -> None:
    """What every client that does not send ``think`` gets: DeepSeek's own default."""
    plain = conformance_models(ollama_server, VARIANTS[0])
    thinker = conformance_models(ollama_server, VARIANTS[1])
    unset, off = (rendered(ollama_server, plain, one_turn("hi", think=t)) for t in (None, False))
    assert unset == off and unset.endswith("<｜User｜>hi<｜Assistant｜></think>")
    assert rendered(ollama_server, thinker, one_turn("hi", think=None)).endswith("<｜Assistant｜><think>")
    assert rendered(ollama_server, thinker, one_turn("hi", think=False)) == off


@pytest.mark.integration
def test_v3_cannot_be_asked_to_think(
    ollama_server: OllamaServe, conformance_models: ModelFactory
) -> None:
    model = conformance_models(ollama_server, VARIANTS[-1])
    response = render_only(ollama_server, model, one_turn("hi", think=True))
    assert response.status_code == 400
    assert "does not support thinking" in response.json()["error"]


@pytest.mark.integration
def test_renderer_bos_reaches_the_model_twice_on_v024(
    ollama_server: OllamaServe, conformance_models: ModelFactory
) -> None:
    """Pin 2: a real (one-token) generation counts the prompt tokens each mode feeds the model."""
    info = ollama_server.info
    assert info is not None
    counts = {}
    for variant in VARIANTS[1:3]:  # NAME-think as a TEMPLATE and with the renderer
        model = conformance_models(ollama_server, variant)
        body = chat_body(model, one_turn("bos check", think=False), options={"num_predict": 1})
        response = requests.post(f"{ollama_server.url}/api/chat", json=body, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text
        counts[variant.mode] = response.json()["prompt_eval_count"]
    if info.accepts_split_gguf:
        assert counts["renderer"] == counts["template"]  # LeadingBOS stripped before llama-server
    else:
        assert counts["renderer"] == counts["template"] + 1
        log = ollama_server.log_path.read_text(errors="replace")
        assert "adding bos token to prompt which already has it" in log


# --- a GGUF that carries someone else's template (pin 7) -------------------------------------------

#: Another chat format that, by Ollama's reading of it, takes tools (with a tool round trip) and
#: thinks: the most a GGUF's template can claim. Ours must still be the one rendered.
FOREIGN_TEMPLATE = (
    "{%- for message in messages -%}"
    '{%- if message.role == "tool" -%}<|tool_result|>{{ message.content }}'
    "{%- elif message.tool_calls -%}<|assistant|>{{ message.tool_calls | tojson }}"
    "{%- else -%}<|{{ message.role }}|>{{ message.content }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if tools %}<|tools|>{{ tools | tojson }}{% endif -%}"
    "{%- if add_generation_prompt -%}<|assistant|>"
    "{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% else %}<think>\n{% endif %}"
    "{%- endif -%}"
)
FOREIGN_CASES = [c for c in CORPUS if c.name in ("02_system_user", "28_tools_round_trip")]
#: The TEMPLATE's fill-in-the-middle branch: without it Ollama credits no "insert" capability.
FIM_BRANCH = (
    "{{- if .Suffix }}<｜fim▁begin｜>{{ .Prompt }}<｜fim▁hole｜>{{ .Suffix }}<｜fim▁end｜>\n"
    "{{- else }}\n"
)


@pytest.fixture(scope="session")
def foreign_gguf(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """The tiny model of a family with FOREIGN_TEMPLATE as its chat template. Another ``seed``
    gives other bytes, hence another blob: Ollama v0.30+ shares one llama-server among the
    models on a blob, started for whichever came first (with or without its Jinja engine)."""
    root = tmp_path_factory.mktemp("foreign")

    def path(family: str, seed: int = 0) -> Path:
        out = root / f"{family}-{seed}-foreign.gguf"
        if not out.exists():
            plain = write_tiny_model(root / f"{family}-{seed}.gguf", family, seed=seed)
            rewrite_chat_template(plain, out, FOREIGN_TEMPLATE)
        return out

    return path


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_a_foreign_gguf_template_is_not_used(
    ollama_server: OllamaServe, foreign_gguf: Callable[..., Path], variant: Variant
) -> None:
    info = ollama_server.info
    assert info is not None
    name = f"foreign-{variant.family.replace('.', '')}:{variant.mode}"
    definition = ModelDefinition.for_family(
        name, get_family(variant.family), [foreign_gguf(variant.family)], server=info,
        mode=variant.mode, parameters=TINY_PARAMETERS,  # type: ignore[arg-type]
    )
    register(info, definition)
    model = _registered_name(name, variant)
    for case in FOREIGN_CASES:
        if variant.family in case.families:
            assert rendered(ollama_server, model, case) == expected_prompt(info, variant, case)
    assert capabilities(ollama_server, model) == expected_capabilities(variant)


@pytest.mark.integration
def test_without_suffix_the_foreign_template_takes_over_on_v030(
    ollama_server: OllamaServe, foreign_gguf: Callable[..., Path]
) -> None:
    """The control: the plain V3.1 TEMPLATE minus its .Suffix branch loses to the GGUF's
    template on v0.30+ (which then thinks by default again); v0.24 has no such path."""
    info = ollama_server.info
    assert info is not None
    definition = ModelDefinition.for_family(
        "foreign-nosuffix:test", get_family("v3.1"), [foreign_gguf("v3.1", seed=1)], server=info,
        parameters=TINY_PARAMETERS,
    )
    template = definition.template or ""
    assert template.count(FIM_BRANCH) == 1 and template.endswith("\n{{- end }}")
    without = template.replace(FIM_BRANCH, "")[: -len("\n{{- end }}")]
    api = OllamaAPI(ollama_server.url)
    digest = "sha256:" + hashlib.sha256(definition.files[0].read_bytes()).hexdigest()
    api.push_blob(definition.files[0], digest)
    api.create({**definition.create_request({definition.files[0].name: digest}), "template": without})
    prompt = rendered(ollama_server, definition.name, one_turn("hi", think=None))
    if info.version_tuple >= GGUF_TEMPLATE_PREFERENCE_VERSION:
        assert prompt == "<|user|>hi<|assistant|><think>\n"
    else:
        assert prompt == "<｜User｜>hi<｜Assistant｜></think>"


@pytest.mark.integration
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.mode == "template"], ids=lambda v: v.id)
def test_a_suffix_renders_deepseeks_fill_in_the_middle(
    ollama_server: OllamaServe, conformance_models: ModelFactory, variant: Variant
) -> None:
    """What ``.Suffix`` is there for: ``/api/generate`` with a suffix, in DeepSeek's PSM format."""
    model = conformance_models(ollama_server, variant)
    body = {"model": model, "prompt": "def add(a, b):\n", "suffix": "\n    return total\n",
            "stream": False, "_debug_render_only": True}
    response = requests.post(f"{ollama_server.url}/api/generate", json=body, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.json()["_debug_info"]["rendered_template"] == (
        "<｜fim▁begin｜>def add(a, b):\n<｜fim▁hole｜>\n    return total\n<｜fim▁end｜>"
    )
