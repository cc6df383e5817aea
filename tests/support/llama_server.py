"""A real llama-server on a free loopback port, for tests that check templates through it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ollamads.children import stop_child
from ollamads.ollama.serve import free_port
from tests.support.toolchain import llama_cpp_tool


def http_json(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@contextmanager
def llama_server(model: Path, log: Path) -> Iterator[str]:
    binary = llama_cpp_tool("llama-server")
    port = free_port()
    cmd = [str(binary), "-m", str(model), "--jinja", "--host", "127.0.0.1", "--port", str(port),
           "-c", "1024", "-np", "1", "--no-webui"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if http_json(base + "/health", timeout=2).get("status") == "ok":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server never became healthy:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        stop_child(proc, timeout=10)
