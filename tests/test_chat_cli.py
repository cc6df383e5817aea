"""`ollamads chat` as a user runs it (``python -m ollamads``), against both real Ollama lines."""

from __future__ import annotations

import pytest

from ollamads.ollama.serve import OllamaServe
from tests.support.cli import ollamads_chat

pytestmark = pytest.mark.integration


def test_one_shot_shows_the_reasoning_when_asked(tiny_models_server: OllamaServe) -> None:
    shown = ollamads_chat(tiny_models_server, "tiny-v31:client", "hi", "--think", "--show-thinking")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip(), "the reasoning was not printed"
    hidden = ollamads_chat(tiny_models_server, "tiny-v31:client", "hi", "--think")
    assert hidden.returncode == 0, hidden.stderr
    # Eight tokens of reasoning and no answer: nothing to print but the final newline.
    assert hidden.stdout.strip() == ""
    plain = ollamads_chat(tiny_models_server, "tiny-v31:client", "hi", "--no-think", "--show-thinking")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()


def test_interactive_until_bye_or_end_of_input(tiny_models_server: OllamaServe) -> None:
    bye = ollamads_chat(tiny_models_server, "tiny-v31:client", stdin="hi\n\nand then?\n/bye\nnever sent\n")
    assert bye.returncode == 0, bye.stderr
    assert bye.stdout.count("\n") >= 2  # one line per answer, at least
    eof = ollamads_chat(tiny_models_server, "tiny-r1:client", "--show-thinking", stdin="hi\n")
    assert eof.returncode == 0, eof.stderr
    assert eof.stdout.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny-v3:client", "hi", "--think"],
         "Error: tiny-v3:client does not support thinking; DeepSeek V3 has no reasoning mode"
         " — use a V3.1 or R1 model or drop --think"),
        (["tiny-r1:client", "hi", "--no-think"], "always reasons"),
        (["no-such:model", "hi"], "`ollama list`"),
        # The REPL checks before the first prompt.
        (["tiny-v3:client", "--think"], "DeepSeek V3 has no reasoning mode"),
    ],
)
def test_errors_are_one_line(tiny_models_server: OllamaServe, args: list[str], message: str) -> None:
    result = ollamads_chat(tiny_models_server, *args, stdin="hi\n")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""
