from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ollamads.errors import ServerError
from ollamads.ollama.api import probe
from ollamads.ollama.serve import free_port
from ollamads.ollama.versions import ServerInfo, normalize_host, parse_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.24.0", (0, 24, 0)), ("v0.33.0-rc2", (0, 33, 0)), ("0.0.0", (0, 0, 0)), ("0.13.5\n", (0, 13, 5))],
)
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


def test_parse_version_rejects_garbage() -> None:
    with pytest.raises(ServerError, match="unreadable version"):
        parse_version("latest")


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        (":9000", "http://127.0.0.1:9000"),
        ("0.0.0.0:11434", "http://127.0.0.1:11434"),
        ("http://example.test", "http://example.test:11434"),
        ("https://h:1/", "https://h:1"),
    ],
)
def test_normalize_host(host: str, url: str) -> None:
    assert normalize_host(host) == url


def test_lines() -> None:
    assert ServerInfo("h", "0.24.0").line == "merged"
    assert ServerInfo("h", "0.30.0").line == "split"
    assert not ServerInfo("h", "0.24.0").accepts_split_gguf
    assert ServerInfo("h", "0.13.5").has_deepseek_renderer
    assert not ServerInfo("h", "0.13.4").has_deepseek_renderer


def test_unreachable_server_says_how_to_start_one() -> None:
    with pytest.raises(ServerError) as err:
        probe(f"127.0.0.1:{free_port()}", timeout=2)
    assert "no Ollama server answers" in err.value.message
    assert "ollamads serve" in (err.value.hint or "")


@pytest.fixture
def old_server() -> Iterator[str]:
    """Only /api/version of an Ollama older than thinking support: no such build exists here."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"version": "0.8.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_server_too_old_for_thinking(old_server: str) -> None:
    info = probe(old_server)
    assert info.version == "0.8.0" and not info.supports_think
    with pytest.raises(ServerError, match="too old for thinking"):
        info.require_think()
