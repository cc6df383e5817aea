"""Open WebUI with its own defaults, in a real browser, on both Ollama lines.

What the README's "Open WebUI" section says a user does, done here for real: ``ollama serve``
with ``ollamads serve``'s settings (the shared test servers), the tiny models registered with
``ollamads register``, Open WebUI (the pinned release, from the toolchain cache) offline, and
Debian's Chromium driven headless. Between Open WebUI and Ollama a logging proxy keeps every
request Open WebUI sends; each chat request is replayed with ``_debug_render_only`` to see the
prompt the server rendered for it.

Per line, one chat per model name, with the think control at Default, then Off, then On, one
message each: the page must show an answer or a reasoning block as the name promises, or, where
thinking cannot be had, the server's clear refusal. Screenshots of failing tests are saved under
pytest's base temp folder (their path is in the report).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.modelfile import thinking_name
from ollamads.ollama.serve import OllamaServe, free_port
from ollamads.tiny import write_tiny_shards
from ollamads.webui import MODEL_DEFAULTS_ENVIRONMENT, OpenWebUI, WebUISettings
from ollamads.webui import tested_version as open_webui_version
from tests.support.browser import Browser, Shown
from tests.support.recording_proxy import RecordedRequest, RecordingProxy
from tests.support.servers import serve_line
from tests.support.toolchain import open_webui_binary

pytestmark = pytest.mark.integration

PLAIN = "deepseek-v3.1:tiny"
THINKER = thinking_name(PLAIN)
R1 = "deepseek-r1:tiny"
V3 = "deepseek-v3-0324:tiny"
FAMILIES = {PLAIN: "v3.1", R1: "r1", V3: "v3"}
#: Random weights rarely stop; the family's own num_ctx (16K) holds Open WebUI's tools.
TINY_PARAMETERS = ("-p", "num_predict=12", "-p", "seed=3407")
#: Open WebUI's built-in tools at its defaults (Function Calling "native"), as recorded.
BUILTIN_TOOLS_AT_LEAST = 30
#: What each name's prompt ends with when the request has no "think" / "think": true / false.
ENDINGS = {
    PLAIN: {"Default": "<｜Assistant｜></think>", "Off": "<｜Assistant｜></think>"},
    THINKER: {"Default": "<｜Assistant｜><think>", "On": "<｜Assistant｜><think>",
              "Off": "<｜Assistant｜></think>"},
    R1: {"Default": "<｜Assistant｜><think>\n", "On": "<｜Assistant｜><think>\n",
         "Off": "<｜Assistant｜><think>\n"},  # R1 always reasons: Off only stops the splitting
    V3: {"Default": "<｜Assistant｜>", "Off": "<｜Assistant｜>"},
}
#: Names that think when Open WebUI sends nothing (the page shows a reasoning block).
THINKS_BY_DEFAULT = {THINKER, R1}
REFUSES_THINKING = {PLAIN, V3}
ORDER = ("Default", "Off", "On")  # a refusal last, so it is not in the history of the others
TASK_WAIT_S = 120


@dataclass
class Stack:
    line: str
    serve: OllamaServe
    proxy: RecordingProxy
    webui: OpenWebUI
    browser: Browser

    def render(self, request: RecordedRequest) -> str:
        """The prompt the server built for exactly what Open WebUI sent."""
        return OllamaAPI(self.serve.url).render(request.body)


def register_tiny_models(serve: OllamaServe, root: Path) -> None:
    """As a user would: ``ollamads register`` (which also makes V3.1's thinking name)."""
    assert serve.info is not None
    for name, family in FAMILIES.items():
        shards = write_tiny_shards(root / family, family, n_shards=2)
        result = subprocess.run(
            [sys.executable, "-m", "ollamads", "register", name, *map(str, shards), "--family", family,
             "--host", serve.url, *TINY_PARAMETERS],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert f"ollama run {name}" in result.stdout


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module", params=["merged", "split", "layers"])
def stack(request: pytest.FixtureRequest, browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    line = request.param
    serve = serve_line(line, request.getfixturevalue("_servers"), tmp_path_factory)
    root = tmp_path_factory.mktemp(f"webui-{line}")
    register_tiny_models(serve, root / "hub")
    with RecordingProxy(serve.url) as proxy:
        # Open WebUI's own defaults: only offline, and wired to the proxy.
        settings = WebUISettings(ollama_url=proxy.url, data_dir=root / "open-webui", port=free_port(),
                                 model_defaults=False)
        with OpenWebUI(settings, binary=open_webui_binary()) as webui:
            browser.open(settings.url)
            yield Stack(line, serve, proxy, webui, browser)


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        path = tmp_path_factory.getbasetemp() / "webui-screenshots" / f"{request.node.name}.png"
        try:
            stack.browser.screenshot(path)
            request.node.add_report_section("teardown", "screenshot", str(path))
        except AssertionError as exc:
            request.node.add_report_section("teardown", "screenshot", f"none: {exc}")
        request.node.add_report_section("teardown", "open-webui log", stack.webui.log_tail())


def chat_requests(stack: Stack, model: str) -> tuple[list[RecordedRequest], list[RecordedRequest]]:
    """(the chat's own requests, its background tasks) for ``model``, in order."""
    chats = [r for r in stack.proxy.chats() if r.body.get("model") == model]
    return [r for r in chats if not r.is_background_task], [r for r in chats if r.is_background_task]


def wait_for_tasks(stack: Stack, model: str, count: int) -> list[RecordedRequest]:
    deadline = time.monotonic() + TASK_WAIT_S
    while time.monotonic() < deadline:
        tasks = chat_requests(stack, model)[1]
        if len(tasks) >= count:
            return tasks
        time.sleep(0.5)
    raise AssertionError(f"Open WebUI sent {len(chat_requests(stack, model)[1])} background requests for {model}")


def test_models_are_listed(stack: Stack) -> None:
    listed = stack.browser.models()
    assert {PLAIN, THINKER, R1, V3} <= set(listed), listed


@pytest.mark.parametrize("model", [PLAIN, THINKER, R1, V3])
def test_a_chat_with_default_then_off_then_on(stack: Stack, model: str) -> None:
    stack.proxy.clear()
    messages = [f"Question {i} for {model}, think {state}" for i, state in enumerate(ORDER)]
    shown: list[Shown] = []
    for state, text in zip(ORDER, messages):
        shown += stack.browser.chat_turn(model, text, think=state, new=not shown)

    sent, tasks = chat_requests(stack, model)
    assert len(sent) == len(ORDER), [r.body.get("think") for r in sent]
    for state, page, request in zip(ORDER, shown, sent):
        body = request.body
        # What Open WebUI sends at its defaults: every built-in tool, and "think" only when set.
        assert len(body.get("tools") or []) >= BUILTIN_TOOLS_AT_LEAST
        assert body.get("think") == {"Default": None, "On": True, "Off": False}[state]
        if state == "On" and model in REFUSES_THINKING:
            assert request.status == 400
            assert page.error == f'"{model}" does not support thinking', page
            continue
        assert request.status == 200 and not page.error, page
        prompt = stack.render(request)
        assert "\n\n## Tools\nYou have access to the following tools:\n" in prompt
        assert prompt.endswith(ENDINGS[model][state]), prompt[-200:]
        # Earlier turns are kept: every earlier question is in the prompt.
        index = messages.index(body["messages"][-1]["content"])
        assert all(m in prompt for m in messages[:index])
        reasons = state == "On" or (state == "Default" and model in THINKS_BY_DEFAULT)
        assert page.reasoning == reasons, (state, page)
        if not reasons:
            assert page.answer, (state, page)

    # Open WebUI's background requests (title, tags, follow-ups) carry no tools and no think:
    # on the plain V3.1 name they answer without thinking, as DeepSeek's default is.
    tasks = wait_for_tasks(stack, model, 2)
    for task in tasks:
        assert "tools" not in task.body and "think" not in task.body
        if model in (PLAIN, V3):
            assert stack.render(task).endswith(ENDINGS[model]["Default"])


# --- `ollamads webui`: the same Open WebUI, with ollamads' defaults for 671B models ------------


def read_until_ready(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        lines.append(line)
        if line.strip() == "ready" or not line:
            break
    text = "".join(lines)
    assert lines and lines[-1].strip() == "ready", text
    return text


def test_ollamads_webui(split_line_server: OllamaServe, browser: Browser, tmp_path: Path) -> None:
    """Background tasks off (think: false should they come back), Open WebUI's built-in tools
    sent (native function calling, its default), and the plain V3.1 name answering without
    thinking; SIGTERM stops Open WebUI with it."""
    register_tiny_models(split_line_server, tmp_path / "hub")
    with RecordingProxy(split_line_server.url) as proxy:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ollamads", "webui", "--host", proxy.url, "--port", str(port),
             "--data-dir", str(tmp_path / "open-webui"), "--open-webui", open_webui_binary()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            text = read_until_ready(proc)
            url = f"http://127.0.0.1:{port}"
            assert f"Open WebUI: {url}" in text and f"checked with {open_webui_version()}" in text
            token = requests.post(f"{url}/api/v1/auths/signin", json={"email": "", "password": ""},
                                  timeout=30).json()["token"]
            config = requests.get(f"{url}/api/v1/tasks/config", timeout=30,
                                  headers={"Authorization": f"Bearer {token}"}).json()
            for key in ("ENABLE_TITLE_GENERATION", "ENABLE_TAGS_GENERATION", "ENABLE_FOLLOW_UP_GENERATION",
                        "ENABLE_AUTOCOMPLETE_GENERATION", "ENABLE_SEARCH_QUERY_GENERATION",
                        "ENABLE_RETRIEVAL_QUERY_GENERATION"):
                assert config[key] is False, key
                assert MODEL_DEFAULTS_ENVIRONMENT[key] == "False"
            assert config["TASK_MODEL_PARAMS"] == {"think": False, "max_tokens": 1000}

            browser.open(url)
            (page,) = browser.chat_turn(PLAIN, "Why is the sky blue?", new=True)
            assert page.answer and not page.reasoning and not page.error, page
            time.sleep(3)  # time enough for background requests, were any sent
            (request,) = proxy.chats()
            assert len(request.body.get("tools") or []) >= BUILTIN_TOOLS_AT_LEAST
            assert "think" not in request.body
            assert OllamaAPI(split_line_server.url).render(request.body).endswith("<｜Assistant｜></think>")

            (webui_pid,) = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 128 + signal.SIGTERM
            assert not Path(f"/proc/{webui_pid}").exists() or \
                Path(f"/proc/{webui_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_webui_extra_pins_the_open_webui_version() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["optional-dependencies"]["webui"] == [f"open-webui=={open_webui_version()}"]
    assert "open-webui" not in " ".join(pyproject["project"]["dependencies"])


def test_ollamads_webui_without_open_webui(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OLLAMADS_OPEN_WEBUI"}
    env["PATH"] = str(tmp_path)  # no open-webui there
    result = subprocess.run([sys.executable, "-m", "ollamads", "webui"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: Open WebUI is not installed")
    assert f"pipx install open-webui=={open_webui_version()}" in result.stderr


def test_ollamads_webui_without_an_ollama_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ollamads", "webui", "--host", "127.0.0.1:9", "--open-webui", open_webui_binary(),
         "--data-dir", str(tmp_path / "ui")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "no Ollama server answers at http://127.0.0.1:9" in result.stderr and "ollamads serve" in result.stderr
    assert not (tmp_path / "ui").exists()
