"""Open WebUI at its defaults (Function Calling "native") calls a tool for the plain V3.1 name
and shows the result, in headless Chromium, with a scripted tiny V3.1 that writes a call to one
of Open WebUI's built-in tools and, once given the result, an answer.

Per line (``OLLAMADS_WEBUI_TOOL_LINES`` picks lines, default all): Open WebUI sends its built-in
tools, Ollama hands the call back as ``tool_calls``, Open WebUI runs the tool and sends the
result, and the page shows the call with its result and then the answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.serve import free_port
from ollamads.tiny import write_scripted_model
from ollamads.webui import OpenWebUI, WebUISettings
from tests.support.browser import Browser
from tests.support.recording_proxy import RecordingProxy
from tests.support.servers import serve_line
from tests.support.toolchain import open_webui_binary

pytestmark = pytest.mark.integration

MODEL = "deepseek-v3.1:scripted"
#: One of Open WebUI's built-in tools (open_webui/tools/builtin.py), without arguments.
TOOL = "get_current_timestamp"
CALL = (
    f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>{TOOL}<｜tool▁sep｜>{{}}"
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)
ANSWER = "The clock tool has answered."
LINES = [line for line in ("merged", "split", "layers")
         if line in os.environ.get("OLLAMADS_WEBUI_TOOL_LINES", "merged,split,layers").split(",")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.mark.parametrize("line", LINES)
def test_native_function_calling_shows_the_tool_result(
    line: str, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    serve = serve_line(line, request.getfixturevalue("_servers"), request.getfixturevalue("tmp_path_factory"))
    model = write_scripted_model(tmp_path / "scripted.gguf", "v3.1", CALL, after_tool=ANSWER)
    done = subprocess.run(
        [sys.executable, "-m", "ollamads", "register", MODEL, str(model), "--family", "v3.1",
         "--host", serve.url, "-p", "temperature=0", "-p", "top_k=1", "-p", "num_predict=64"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    with RecordingProxy(serve.url) as proxy:
        settings = WebUISettings(ollama_url=proxy.url, data_dir=tmp_path / "open-webui", port=free_port(),
                                 model_defaults=False)
        with OpenWebUI(settings, binary=open_webui_binary()) as webui:
            try:
                browser.open(settings.url)
                (page,) = browser.chat_turn(MODEL, "What time is it?", new=True)
                assert not page.error, page
                shown = browser.expand(f"View Result from {TOOL}")
            except AssertionError:
                browser.screenshot(tmp_path / "page.png")
                print(webui.log_tail())
                raise
    chats = [r for r in proxy.chats() if r.body.get("model") == MODEL and not r.is_background_task]
    assert len(chats) >= 2, [r.body for r in chats]
    first, second = chats[0], chats[1]
    assert TOOL in {t["function"]["name"] for t in first.body.get("tools") or []}
    assert "think" not in first.body
    assert OllamaAPI(serve.url).render(first.body).endswith("<｜Assistant｜></think>")
    # Ollama answered the first request with the call, structured; Open WebUI ran the tool and
    # sent its result back as a tool message.
    roles = [m["role"] for m in second.body["messages"]]
    assert roles[-2:] == ["assistant", "tool"], roles
    assert second.body["messages"][-2]["tool_calls"][0]["function"]["name"] == TOOL
    result = json.loads(second.body["messages"][-1]["content"])
    assert "current_timestamp" in result
    assert str(result["current_timestamp"]) in shown, shown
    assert ANSWER in shown
