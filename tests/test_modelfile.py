from __future__ import annotations

from pathlib import Path

import pytest

from ollamads.catalog.families import FAMILIES, get_family
from ollamads.errors import OllamadsError
from ollamads.ollama.modelfile import (
    THINKING_DECLARATION,
    TOOLS_INCLUDE,
    ModelDefinition,
    choose_template_mode,
    go_template,
    parameter_lines,
    thinking_name,
)
from ollamads.ollama.versions import ServerInfo

OLD = ServerInfo("http://127.0.0.1:1", "0.12.11")
MERGED_LINE = ServerInfo("http://127.0.0.1:1", "0.24.0")
SPLIT_LINE = ServerInfo("http://127.0.0.1:1", "0.32.15")


def definition(family: str = "v3.1", server: ServerInfo = SPLIT_LINE, **kw: object) -> ModelDefinition:
    files = [Path(f"/m/X-0000{i}-of-00003.gguf") for i in (1, 2, 3)]
    return ModelDefinition.for_family("x:tq1_0", get_family(family), files, server=server, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("server", [OLD, MERGED_LINE, SPLIT_LINE])
def test_the_go_template_on_every_line(family: str, server: ServerInfo) -> None:
    assert choose_template_mode(get_family(family), server) == "template"


def test_flag_overrides_and_refuses_what_cannot_work() -> None:
    assert choose_template_mode(get_family("v3.1"), SPLIT_LINE, "template") == "template"
    with pytest.raises(OllamadsError, match="no built-in renderer"):
        choose_template_mode(get_family("r1"), SPLIT_LINE, "renderer")
    with pytest.raises(OllamadsError, match="0.12.11"):
        choose_template_mode(get_family("v3.1"), OLD, "renderer")


def test_modelfile_lists_every_shard_and_parameter() -> None:
    text = definition().modelfile("Ollama 0.32.15")
    lines = text.splitlines()
    assert [l for l in lines if l.startswith("FROM ")] == [
        "FROM X-00001-of-00003.gguf", "FROM X-00002-of-00003.gguf", "FROM X-00003-of-00003.gguf"
    ]
    assert "\nRENDERER" not in text and "\nPARSER" not in text
    assert "PARAMETER temperature 0.6" in lines
    assert "PARAMETER top_p 0.95" in lines
    assert "PARAMETER min_p 0.01" in lines
    assert "PARAMETER num_ctx 16384" in lines
    assert 'PARAMETER stop "<｜end▁of▁sentence｜>"' in lines


def test_go_template_is_passed_through_untouched_by_jinja() -> None:
    d = definition(server=OLD)
    text = d.modelfile()
    template = go_template("deepseek-v3.1.gotmpl", thinking=False, line="merged")
    assert f'TEMPLATE """{template}"""' in text
    # Go syntax Jinja would have eaten if it had parsed the template:
    assert '{{ "{{" }}additional_tool_calls{{ "}}" }}' in text
    assert "{{- if and $lastUser (not $isTool) }}" in text


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_template_emits_bos(family: str) -> None:
    assert "begin▁of▁sentence" not in go_template(get_family(family).go_template)


def test_create_request_matches_modelfile() -> None:
    d = definition(parameters={"num_ctx": 2048})
    digests = {f.name: f"sha256:{i:064x}" for i, f in enumerate(d.files)}
    body = d.create_request(digests)
    assert body["files"] == digests
    assert body["template"] == d.template == go_template("deepseek-v3.1.gotmpl", thinking=False)
    assert "renderer" not in body and "from" not in body
    assert body["parameters"]["num_ctx"] == 2048  # type: ignore[index]
    assert "PARAMETER num_ctx 2048" in d.modelfile()


def test_v31_is_two_names_on_the_same_blobs() -> None:
    plain = definition()
    (thinker,) = plain.companions
    assert plain.names == ("x:tq1_0", "x:tq1_0-think") and thinker.base == "x:tq1_0"
    assert not plain.thinking and thinker.thinking
    assert THINKING_DECLARATION not in (plain.template or "")
    assert THINKING_DECLARATION in (thinker.template or "")
    body = thinker.create_request()
    assert body["from"] == "x:tq1_0" and "files" not in body
    assert body["template"] == go_template("deepseek-v3.1.gotmpl")
    assert body["parameters"] == plain.create_request({f.name: "sha256:0" for f in plain.files})["parameters"]
    assert "FROM x:tq1_0\n" in thinker.modelfile()
    # --template-mode renderer: the thinking name gets Ollama's renderer and parser; the plain
    # name stays a TEMPLATE (a renderer alone would not accept tools).
    rendered = definition(mode="renderer")
    assert rendered.mode == "template" and rendered.companions[0].renderer == "deepseek3.1"
    assert rendered.companions[0].create_request()["parser"] == "deepseek3"
    assert definition("r1").companions == () and definition("r1").thinking
    assert definition("v3").companions == () and not definition("v3").thinking


@pytest.mark.parametrize(
    ("name", "thinker"),
    [("deepseek-v3.1:tq1_0", "deepseek-v3.1:tq1_0-think"), ("mine", "mine:think"),
     ("host:5000/ns/model", "host:5000/ns/model:think"), ("ns/model:q2", "ns/model:q2-think")],
)
def test_thinking_name(name: str, thinker: str) -> None:
    assert thinking_name(name) == thinker


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_template_takes_tools_and_a_suffix(family: str) -> None:
    template = go_template(get_family(family).go_template)
    assert "{{- if .Tools }}" in template and "## Tools" in template
    assert template.startswith("{{- /*") and "{{- if .Suffix }}<｜fim▁begin｜>" in template
    assert TOOLS_INCLUDE not in template


def test_parameter_lines_order_and_quoting() -> None:
    lines = parameter_lines({"stop": ["<｜User｜>", "a"], "num_ctx": 8, "temperature": 0.3})
    assert lines == [("temperature", "0.3"), ("num_ctx", "8"), ("stop", '"<｜User｜>"'), ("stop", "a")]


@pytest.mark.parametrize("family", ["v3.1", "r1", "v3"])
def test_tool_tag_is_spelled_for_each_line(family: str) -> None:
    # Ollama's tool parser waits for the first text of the .ToolCalls branch; v0.24 writes the
    # special tokens' U+2581 as spaces, so that line's TEMPLATE names the tag that way.
    filename = get_family(family).go_template
    split, merged = go_template(filename), go_template(filename, line="merged")
    assert "{{- if .ToolCalls }}{{- if false }}<｜tool▁calls▁begin｜>{{ end }}" in split
    assert "{{- if .ToolCalls }}{{- if false }}<｜tool calls begin｜>{{ end }}" in merged
    assert split.replace("<｜tool▁calls▁begin｜>{{ end }}", "<｜tool calls begin｜>{{ end }}") == merged
    assert definition(server=OLD).template == go_template("deepseek-v3.1.gotmpl", thinking=False, line="merged")
