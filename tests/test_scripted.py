"""The scripted tiny model (ollamads.tiny.write_scripted_model) writes its reply, token by token,
after prompts of its family, through a real llama-server (greedy decoding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollamads.catalog.families import EOS
from ollamads.tiny import write_scripted_model
from ollamads.tiny_script import plan_script
from tests.support import scripts
from tests.support.llama_server import http_json, llama_server
from tests.support.reference import render_reference

GREEDY = {"temperature": 0, "top_k": 1, "n_predict": 64, "return_tokens": True}
ASK = [{"role": "user", "content": "What is the weather in Paris? Answer briefly, please."}]
WITH_HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    *ASK,
]
AFTER_CALL = [
    *ASK,
    {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": scripts.PARIS}}]},
    {"role": "tool", "content": "sunny, 24 C", "tool_name": "get_weather"},
]

CASES = [
    ("v3.1", scripts.V31_ONE_CALL),
    ("v3.1", scripts.V31_TWO_CALLS),
    ("v3.1", scripts.PLAIN),
    ("v3", scripts.V3_ONE_CALL),
    ("r1", scripts.R1_REASONING),
    ("r1", scripts.R1_REASONED_CALL),
]


def _generate(base: str, prompt: str) -> str:
    out = http_json(base + "/completion", {"prompt": prompt, **GREEDY})
    # /completion leaves control tokens out of its text; /detokenize writes them.
    return http_json(base + "/detokenize", {"tokens": out["tokens"]})["content"]


def test_no_token_twice_and_text_kept() -> None:
    vocab = ["a", "b", "<x>", "<y>"]
    plan = plan_script(vocab, {"<x>": 2, "<y>": 3}, ["<x>one<y> two<x>one<y> three", "one more"])
    texts = vocab + list(plan.added)
    for chain, reply in zip(plan.chains, ["<x>one<y> two<x>one<y> three", "one more"], strict=True):
        assert "".join(texts[t] for t in chain) == reply
    every = [t for chain in plan.chains for t in chain]
    assert len(every) == len(set(every))


def test_too_long_a_reply_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorten"):
        write_scripted_model(tmp_path / "m.gguf", "v3", " ".join(f"w{i}" for i in range(80)))


@pytest.mark.integration
@pytest.mark.parametrize(("family", "reply"), CASES)
def test_llama_server_writes_the_reply_after_any_prompt(tmp_path: Path, family: str, reply: str) -> None:
    model = write_scripted_model(tmp_path / "m.gguf", family, reply, after_tool=scripts.AFTER_TOOL)
    with llama_server(model, tmp_path / "server.log") as base:
        for messages in (ASK, WITH_HISTORY):
            for thinking in (False, True) if family == "v3.1" else (None,):
                prompt = render_reference(family, messages, thinking=thinking, keep_bos=True)
                assert _generate(base, prompt) == reply + EOS, (messages, thinking)
        after = render_reference(family, AFTER_CALL, keep_bos=True)
        assert _generate(base, after) == scripts.AFTER_TOOL + EOS
