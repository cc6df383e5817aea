"""`ollamads serve` starts a real `ollama serve` with the environment these models want."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ollamads.ollama.serve import free_port
from ollamads.ollama.serve import MODEL_ENVIRONMENT

from tests.conftest import ollama_binary

pytestmark = pytest.mark.integration


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_serve_environment_and_stop(tmp_path: Path) -> None:
    port = free_port()
    models = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollamads", "serve", "--models", str(models),
         "--host", f"127.0.0.1:{port}", "--ollama", ollama_binary("split")],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            lines.append(line)
            if line.strip() == "ready" or not line:
                break
        assert lines[-1].strip() == "ready", "".join(lines)
        text = "".join(lines)
        assert f"OLLAMA_BASE_URL=http://127.0.0.1:{port}" in text
        assert requests.get(f"http://127.0.0.1:{port}/api/version", timeout=5).ok

        (server_pid,) = child_pids(proc.pid)
        env = environ(server_pid)
        for key, value in MODEL_ENVIRONMENT.items():
            assert env[key] == value
        assert env["OLLAMA_MODELS"] == str(models)
        assert env["OLLAMA_HOST"] == f"127.0.0.1:{port}"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert not Path(f"/proc/{server_pid}").exists() or "Z" in Path(f"/proc/{server_pid}/stat").read_text().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_models_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "ollamads", "serve", "--models", str(blocker / "store")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is not writable" in result.stderr
