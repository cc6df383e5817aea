"""The real ``ollamads serve`` command as a test's server: what a user runs, with its settings.

``ServeCommand(models_dir, binary)`` starts ``python -m ollamads serve --models … --host …
--ollama …`` and waits for its ``ready`` line; it keeps what the command printed before it
(``said``) and reads the environment the ``ollama serve`` child really got from /proc, so a
test can check the server runs with exactly the variables the command printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ollamads.ollama.api import answers
from ollamads.ollama.serve import free_port
from ollamads.ollama.versions import ServerInfo
from tests.support.workers import signals_as_in_a_terminal

START_TIMEOUT_S = 60.0


class ServeCommand:
    """``ollamads serve`` on a free loopback port (or ``bind``), stopped with SIGTERM."""

    def __init__(self, models_dir: Path, binary: str, *, home: Path, bind: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.models_dir = models_dir
        self.binary = binary
        self.home = home
        self.bind = bind or f"127.0.0.1:{free_port()}"
        self.url = "http://" + self.bind.replace("0.0.0.0", "127.0.0.1")
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.info: ServerInfo | None = None
        self.lines: list[str] = []
        self.said = ""

    def start(self) -> ServerInfo | None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ollamads", "serve", "--models", str(self.models_dir),
             "--host", self.bind, "--ollama", self.binary, *self.args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "HOME": str(self.home)}, preexec_fn=signals_as_in_a_terminal,
        )
        lines: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line or line.strip() == "ready":
                break
            lines.append(line)
        self.lines = lines
        self.said = " ".join("".join(lines).split())
        assert self.process.poll() is None, f"ollamads serve exited: {self.said}"
        self.info = answers(self.url)
        return self.info

    def printed_variables(self) -> dict[str, str]:
        """The variables the command printed at start: its line of ``NAME=value`` words."""
        for line in self.lines:
            words = line.split()
            if words and all("=" in w and w.split("=", 1)[0].isupper() for w in words):
                return dict(w.split("=", 1) for w in words)
        raise AssertionError(f"ollamads serve printed no line of variables: {self.said}")

    def child_pid(self) -> int:
        """The ``ollama serve`` process the command started (its one child)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, f"expected one child of ollamads serve, found {children}"
        return int(children[0])

    def child_environment(self) -> dict[str, str]:
        """The environment of the ``ollama serve`` process the command started."""
        raw = Path(f"/proc/{self.child_pid()}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


__all__ = ["ServeCommand"]
