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

from ollamads.ollama.serve import MODEL_ENVIRONMENT, free_port
from tests.support.servers import ollama_binary

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


def start_ollamads_serve(tmp_path: Path) -> tuple[subprocess.Popen[str], int, str]:
    """``ollamads serve`` on a free port, once it says ready: (process, port, its stderr)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollamads", "serve", "--models", str(tmp_path / "store"),
         "--host", f"127.0.0.1:{port}", "--ollama", ollama_binary("split")],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        lines.append(line)
        if line.strip() == "ready" or not line:
            break
    assert lines[-1].strip() == "ready", "".join(lines)
    return proc, port, "".join(lines)


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its (new) parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.1)
    return False


def test_serve_environment_and_stop(tmp_path: Path) -> None:
    proc, port, text = start_ollamads_serve(tmp_path)
    try:
        assert f"OLLAMA_BASE_URL=http://127.0.0.1:{port}" in text
        assert f"ollamads webui --host http://127.0.0.1:{port}" in text
        assert requests.get(f"http://127.0.0.1:{port}/api/version", timeout=5).ok

        (server_pid,) = child_pids(proc.pid)
        env = environ(server_pid)
        for key, value in MODEL_ENVIRONMENT.items():
            assert env[key] == value
        assert env["OLLAMA_MODELS"] == str(tmp_path / "store")
        assert env["OLLAMA_HOST"] == f"127.0.0.1:{port}"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert gone(server_pid)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_ollama_serve_too(tmp_path: Path, sig: signal.Signals) -> None:
    """A service manager's SIGTERM, a closed terminal's SIGHUP: `ollama serve` goes as well."""
    proc, port, _ = start_ollamads_serve(tmp_path)
    try:
        (server_pid,) = child_pids(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig
        assert gone(server_pid), f"ollama serve ({server_pid}) outlived ollamads serve"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ollama_serve_dies_with_a_killed_ollamads_serve(tmp_path: Path) -> None:
    """SIGKILL leaves nothing to forward: the kernel's parent-death signal stops the child."""
    proc, port, _ = start_ollamads_serve(tmp_path)
    (server_pid,) = child_pids(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    assert wait_gone(server_pid), f"ollama serve ({server_pid}) outlived a killed ollamads serve"


def test_models_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "ollamads", "serve", "--models", str(blocker / "store")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is not writable" in result.stderr
