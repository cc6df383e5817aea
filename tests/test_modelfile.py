from __future__ import annotations

from pathlib import Path

import pytest

from ollamads.errors import OllamadsError
from ollamads.catalog.families import FAMILIES, get_family
from ollamads.ollama.modelfile import ModelDefinition, choose_template_mode, go_template, parameter_lines
from ollamads.ollama.versions import ServerInfo

OLD = ServerInfo("http://127.0.0.1:1", "0.12.11")
MERGED_LINE = ServerInfo("http://127.0.0.1:1", "0.24.0")
SPLIT_LINE = ServerInfo("http://127.0.0.1:1", "0.32.15")


def definition(family: str = "v3.1", server: ServerInfo = SPLIT_LINE, **kw: object) -> ModelDefinition:
    files = [Path(f"/m/X-0000{i}-of-00003.gguf") for i in (1, 2, 3)]
    return ModelDefinition.for_family("x:tq1_0", get_family(family), files, server=server, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("family", "server", "expected"),
    [
        ("v3.1", OLD, "template"),
        ("v3.1", MERGED_LINE, "template"),  # the renderer would add a second BOS there
        ("v3.1", SPLIT_LINE, "renderer"),
        ("r1", SPLIT_LINE, "template"),
        ("v3", MERGED_LINE, "template"),
    ],
)
def test_server_line_decides_prompt_format(family: str, server: ServerInfo, expected: str) -> None:
    assert choose_template_mode(get_family(family), server) == expected


def test_flag_overrides_and_refuses_what_cannot_work() -> None:
    assert choose_template_mode(get_family("v3.1"), SPLIT_LINE, "template") == "template"
    with pytest.raises(OllamadsError, match="no built-in renderer"):
        choose_template_mode(get_family("r1"), SPLIT_LINE, "renderer")
    with pytest.raises(OllamadsError, match="0.12.11"):
        choose_template_mode(get_family("v3.1"), OLD, "renderer")


def test_renderer_modelfile_lists_every_shard_and_parameter() -> None:
    text = definition().modelfile("Ollama 0.32.15")
    lines = text.splitlines()
    assert [l for l in lines if l.startswith("FROM ")] == [
        "FROM X-00001-of-00003.gguf", "FROM X-00002-of-00003.gguf", "FROM X-00003-of-00003.gguf"
    ]
    assert "RENDERER deepseek3.1" in lines and "PARSER deepseek3" in lines
    assert "TEMPLATE" not in text
    assert "PARAMETER temperature 0.6" in lines
    assert "PARAMETER top_p 0.95" in lines
    assert "PARAMETER min_p 0.01" in lines
    assert "PARAMETER num_ctx 16384" in lines
    assert 'PARAMETER stop "<｜end▁of▁sentence｜>"' in lines


def test_go_template_is_passed_through_untouched_by_jinja() -> None:
    d = definition(server=OLD)
    text = d.modelfile()
    template = go_template("deepseek-v3.1.gotmpl")
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
    assert body["renderer"] == "deepseek3.1" and body["parser"] == "deepseek3"
    assert "template" not in body
    assert body["parameters"]["num_ctx"] == 2048  # type: ignore[index]
    assert "PARAMETER num_ctx 2048" in d.modelfile()
    t = definition(server=OLD).create_request(digests)
    assert t["template"] == go_template("deepseek-v3.1.gotmpl") and "renderer" not in t


def test_parameter_lines_order_and_quoting() -> None:
    lines = parameter_lines({"stop": ["<｜User｜>", "a"], "num_ctx": 8, "temperature": 0.3})
    assert lines == [("temperature", "0.3"), ("num_ctx", "8"), ("stop", '"<｜User｜>"'), ("stop", "a")]
