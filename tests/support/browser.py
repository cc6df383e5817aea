"""Headless Chromium on Open WebUI, from Python: a small Node script (``webui_driver.mjs``) run
with playwright-core and Debian's chromium (both found through tests/support/toolchain.py), one
browser and one page for a whole test module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.toolchain import component_path, missing_component

DRIVER = Path(__file__).with_name("webui_driver.mjs")
#: Starting Chromium and loading Open WebUI's page take seconds; an answer may take minutes.
REPLY_TIMEOUT_S = 300


@dataclass(frozen=True)
class Shown:
    """One answer as the page shows it."""

    answer: str
    reasoning: bool
    error: str


class BrowserError(AssertionError):
    """The page did not do what the driver asked (the message has playwright's details)."""


class Browser:
    def __init__(self) -> None:
        node = shutil.which("node")
        playwright = component_path("OLLAMADS_PLAYWRIGHT_CORE")
        chromium = component_path("OLLAMADS_CHROMIUM")
        if node is None:
            missing_component("node (for playwright-core)")
        if not (playwright / "package.json").is_file():
            missing_component(f"playwright-core at {playwright}")
        if not (chromium.is_file() and os.access(chromium, os.X_OK)):
            missing_component(f"chromium at {chromium}")
        env = {**os.environ, "OLLAMADS_PLAYWRIGHT_CORE": str(playwright), "OLLAMADS_CHROMIUM": str(chromium)}
        self.process = subprocess.Popen(
            [str(node), str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )

    def _call(self, cmd: str, **args: Any) -> Any:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise BrowserError(f"the browser driver stopped: {stderr[-2000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise BrowserError(reply["error"])
        return reply["ok"]

    def open(self, url: str) -> None:
        self._call("open", url=url)

    def models(self) -> list[str]:
        return list(self._call("models"))

    def chat_turn(self, model: str, text: str, *, think: str = "Default", new: bool = False) -> list[Shown]:
        """Send ``text`` (in a new chat with ``model`` when ``new``) with the chat's think control
        at ``think`` ("Default", "On", "Off"); what the page shows of the answer."""
        return [Shown(**self._call("turn", model=model, think=think, text=text, fresh=new))]

    def expand(self, label: str) -> str:
        """Open the collapsible labelled ``label`` in the last answer (a tool call's "View Result
        from NAME"); the answer's whole text once it is open."""
        return str(self._call("expand", label=label))

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(self._call("screenshot", path=str(path)))

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin
                self.process.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


__all__ = ["Browser", "BrowserError", "Shown"]
