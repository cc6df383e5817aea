"""Reading DeepSeek's tool-call text back into calls (ollamads.toolcalls), chunk by chunk."""

from __future__ import annotations

import pytest

from ollamads.toolcalls import ToolCallSplitter, parse_tool_calls, tool_names
from tests.support.scripts import PARIS, TOOLS, V3_ONE_CALL, V31_ONE_CALL, V31_TWO_CALLS, ZONE


def _calls(text: str, names=("get_weather", "get_time")):
    parsed = parse_tool_calls(text, names)
    assert parsed is not None, text
    return parsed[0], [(c.name, dict(c.arguments)) for c in parsed[1]]


def test_v31_one_and_two_calls() -> None:
    assert _calls(V31_ONE_CALL) == ("", [("get_weather", PARIS)])
    assert _calls("Let me look." + V31_TWO_CALLS) == (
        "Let me look.", [("get_weather", PARIS), ("get_time", ZONE)]
    )


def test_v3_and_r1_dialect() -> None:
    assert _calls(V3_ONE_CALL) == ("", [("get_weather", PARIS)])
    two = V3_ONE_CALL.replace(
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n"
        '```json\n{"zone": "Europe/Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    )
    assert _calls(two) == ("", [("get_weather", PARIS), ("get_time", ZONE)])


def test_markers_dropped_by_the_server_except_the_first() -> None:
    # What llama-server leaves when only the tag Ollama's parser looks for is preserved.
    text = '<｜tool▁calls▁begin｜>get_weather{"city": "Paris"}get_time{"zone": "Europe/Paris"}'
    assert _calls(text) == ("", [("get_weather", PARIS), ("get_time", ZONE)])
    v3 = '<｜tool▁calls▁begin｜>functionget_weather\n```json\n{"city": "Paris"}\n```'
    assert _calls(v3) == ("", [("get_weather", PARIS)])


@pytest.mark.parametrize("text", ["no calls here", "<｜tool▁calls▁begin｜>nonsense", "<｜tool▁calls▁begin｜>x<｜tool▁sep｜>{bad"])
def test_text_that_is_not_a_call(text: str) -> None:
    assert parse_tool_calls(text, ("get_weather",)) is None


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_splitter_any_chunking(size: int) -> None:
    text = "Sure." + V31_TWO_CALLS
    splitter = ToolCallSplitter(tool_names(TOOLS))
    shown = "".join(splitter.feed(text[i : i + size]) for i in range(0, len(text), size))
    rest, calls = splitter.flush()
    assert shown + rest == "Sure."
    assert [(c.name, dict(c.arguments)) for c in calls] == [("get_weather", PARIS), ("get_time", ZONE)]


def test_splitter_gives_back_what_does_not_parse() -> None:
    splitter = ToolCallSplitter()
    shown = splitter.feed("a <｜tool▁calls▁begin｜>oops")
    rest, calls = splitter.flush()
    assert (shown + rest, calls) == ("a <｜tool▁calls▁begin｜>oops", [])
    splitter = ToolCallSplitter()
    assert splitter.feed("ends with <｜tool") == "ends with "
    assert splitter.flush() == ("<｜tool", [])


def test_ollama_v024_spelling_with_spaces() -> None:
    # Ollama v0.24 writes the special tokens' U+2581 as spaces (measured with the scripted model).
    spaced = V31_TWO_CALLS.replace("\u2581", " ")
    assert _calls(spaced) == ("", [("get_weather", PARIS), ("get_time", ZONE)])
    splitter = ToolCallSplitter()
    shown = "".join(splitter.feed(spaced[i : i + 3]) for i in range(0, len(spaced), 3))
    assert shown == "" and [c.name for c in splitter.flush()[1]] == ["get_weather", "get_time"]
