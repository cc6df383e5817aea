"""``ollamads webui``: Open WebUI wired to the ollamads server, set up for 671B DeepSeek models.

Open WebUI is an optional extra, installed in its own environment; ollamads runs its
``open-webui serve`` with environment settings only (Open WebUI's documented configuration,
read from its ``config.py``). Checked with the version pinned as ``OPEN_WEBUI_VERSION``.

* Offline and local: no account (one local user), no telemetry, no update check, no
  downloads, no OpenAI connection; nothing but the Ollama server at ``OLLAMA_BASE_URL``.
* The right mode per model comes from the names ollamads registers: V3.1's plain name answers
  without thinking when Open WebUI's think control is at Default (it then sends no ``think``),
  ``NAME-think`` thinks; R1 always reasons, V3 never.
* Every answer is followed by background requests to the same model (a title, tags, follow-up
  suggestions): on a 671B model each holds the server for minutes, and on R1 or ``NAME-think``
  it reasons first. They are off; the chat is named after its first message. Should a user
  turn one back on, it is sent with ``think: false``.
* Function Calling stays at Open WebUI's default, "native": it sends its ~36 built-in tools
  with every chat (about 23,000 characters of prefill on an uncached prompt), and Ollama hands
  the model's DeepSeek-syntax calls back as ``tool_calls`` on every tested line (the Go
  TEMPLATEs name the tag Ollama's tool parser waits for), so Open WebUI runs the tools and
  shows their results. Chat Controls -> Function Calling "Legacy" sends no tools.
* Open WebUI copies settings into its database on the first start and prefers those later;
  ``ENABLE_PERSISTENT_CONFIG=False`` makes the settings above apply on every start (changes
  made in its admin pages then last until it stops).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ollamads.children import ChildProcess, ChildService
from ollamads.errors import OllamadsError, ToolNotFoundError
from ollamads.paths import ollamads_home
from ollamads.pins import pin

BINARY = "open-webui"
#: An explicit ``open-webui`` executable (e.g. in a venv that is not on PATH).
BINARY_VARIABLE = "OLLAMADS_OPEN_WEBUI"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DATA_DIR = "open-webui"
#: Open WebUI imports torch and migrates its database at start: 16-42 s measured here.
START_TIMEOUT_S = 300.0
HEALTH_PATH = "/health"

#: Local and offline (shared notes: open-webui.md): nothing leaves the machine.
OFFLINE_ENVIRONMENT: Mapping[str, str] = {
    "WEBUI_AUTH": "False",
    "OFFLINE_MODE": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ENABLE_OPENAI_API": "False",
    "ENABLE_OLLAMA_API": "True",
    "ENABLE_VERSION_UPDATE_CHECK": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "ENABLE_OTEL": "False",
}
#: What suits a 671B DeepSeek on one machine (see the module's docstring for each).
MODEL_DEFAULTS_ENVIRONMENT: Mapping[str, str] = {
    "ENABLE_TITLE_GENERATION": "False",
    "ENABLE_TAGS_GENERATION": "False",
    "ENABLE_FOLLOW_UP_GENERATION": "False",
    "ENABLE_AUTOCOMPLETE_GENERATION": "False",
    "ENABLE_SEARCH_QUERY_GENERATION": "False",
    "ENABLE_RETRIEVAL_QUERY_GENERATION": "False",
    "TASK_MODEL_PARAMS": json.dumps({"think": False, "max_tokens": 1000}),
    "ENABLE_PERSISTENT_CONFIG": "False",
}


def tested_version() -> str:
    return pin("OPEN_WEBUI_VERSION")


def install_hint() -> str:
    version = tested_version()
    return (
        f"install it in its own environment: pipx install open-webui=={version} (the version "
        f"ollamads is checked with), or set {BINARY_VARIABLE} to an installed open-webui"
    )


def find_open_webui(explicit: str | None = None) -> str:
    """The ``open-webui`` executable: ``explicit``, ``OLLAMADS_OPEN_WEBUI``, then PATH."""
    for candidate in (explicit, os.environ.get(BINARY_VARIABLE)):
        if candidate:
            if Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
            raise ToolNotFoundError(f"{candidate} is not an executable open-webui", install_hint())
    found = shutil.which(BINARY)
    if found:
        return found
    raise ToolNotFoundError("Open WebUI is not installed (no open-webui on PATH)", install_hint())


def default_data_dir() -> Path:
    """Open WebUI's database, chats and secret key: <ollamads home>/open-webui."""
    return ollamads_home() / DATA_DIR


@dataclass(frozen=True)
class WebUISettings:
    """How Open WebUI is started: which Ollama, where, and with whose defaults."""

    ollama_url: str
    data_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: ollamads' defaults for these models; False leaves Open WebUI's own (as the tests use it).
    model_defaults: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {**OFFLINE_ENVIRONMENT, "DATA_DIR": str(self.data_dir), "OLLAMA_BASE_URL": self.ollama_url}
        if self.model_defaults:
            env.update(MODEL_DEFAULTS_ENVIRONMENT)
        env.update(self.extra)
        return env


class OpenWebUI(ChildService):
    """A real ``open-webui serve`` child process; a context manager that stops it on exit."""

    def __init__(
        self, settings: WebUISettings, *, binary: str | None = None, log_path: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.binary = find_open_webui(binary)
        self.settings = settings
        self.log_path = log_path or settings.data_dir / "open-webui.log"
        self.child = ChildProcess("open-webui", self.log_path, stop_timeout=20, die_with_parent=die_with_parent)

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        data = self.settings.data_dir
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OllamadsError(
                f"cannot create Open WebUI's data folder {data} ({exc.strerror})",
                "choose another with --data-dir",
            ) from exc
        # Its secret key file is written into the working directory: the data folder.
        self.child.start(
            [self.binary, "serve", "--host", self.settings.host, "--port", str(self.settings.port)],
            env={**os.environ, **self.settings.environment()}, cwd=data,
        )
        self.child.wait_until_ready(self.healthy, timeout=timeout, interval=0.5, where=self.settings.url)

    def healthy(self) -> bool:
        try:
            return requests.get(self.settings.url + HEALTH_PATH, timeout=2).ok
        except requests.RequestException:
            return False


__all__ = [
    "BINARY_VARIABLE",
    "MODEL_DEFAULTS_ENVIRONMENT",
    "OFFLINE_ENVIRONMENT",
    "OpenWebUI",
    "WebUISettings",
    "default_data_dir",
    "find_open_webui",
    "install_hint",
    "tested_version",
]
