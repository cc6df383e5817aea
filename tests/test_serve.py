"""`ollamads serve` starts a real `ollama serve` with the environment these models want."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ollamads.ollama.serve import MODEL_ENVIRONMENT, serve_settings
from tests.support.serve_command import ServeCommand
from tests.support.servers import ollama_binary

pytestmark = pytest.mark.integration


def served_on_a_free_port(tmp_path: Path) -> ServeCommand:
    """The real ``ollamads serve`` on a free port, once it says ready."""
    served = ServeCommand(tmp_path / "store", ollama_binary("split"), home=tmp_path)
    served.start()
    return served


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
    served = served_on_a_free_port(tmp_path)
    proc = served.process
    assert proc is not None
    try:
        text = served.said
        assert f"OLLAMA_BASE_URL={served.url}" in text
        assert f"ollamads webui --host {served.url}" in text
        assert requests.get(f"{served.url}/api/version", timeout=5).ok

        # Every variable it sets is printed, and is what the server runs with.
        printed = served.printed_variables()
        assert printed == serve_settings(served.models_dir, served.bind).variables
        assert printed["OLLAMA_MODELS"] == str(tmp_path / "store") and printed["OLLAMA_HOST"] == served.bind
        assert set(MODEL_ENVIRONMENT) <= set(printed)
        env = served.child_environment()
        assert {key: env.get(key) for key in printed} == printed
        assert "OLLAMA_NOPRUNE" not in env, "Ollama's pruning stays on under ollamads serve"

        server_pid = served.child_pid()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert gone(server_pid)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_ollama_serve_too(tmp_path: Path, sig: signal.Signals) -> None:
    """A service manager's SIGTERM, a closed terminal's SIGHUP: `ollama serve` goes as well."""
    served = served_on_a_free_port(tmp_path)
    proc = served.process
    assert proc is not None
    try:
        server_pid = served.child_pid()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig
        assert gone(server_pid), f"ollama serve ({server_pid}) outlived ollamads serve"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ollama_serve_dies_with_a_killed_ollamads_serve(tmp_path: Path) -> None:
    """SIGKILL leaves nothing to forward: the kernel's parent-death signal stops the child."""
    served = served_on_a_free_port(tmp_path)
    proc = served.process
    assert proc is not None
    server_pid = served.child_pid()
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
