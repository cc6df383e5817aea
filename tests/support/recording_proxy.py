"""A logging HTTP proxy between a client (Open WebUI) and a real ``ollama serve``.

It forwards every request unchanged, streams the answer back line by line (Ollama's NDJSON
chat stream stays a stream), and keeps each request's method, path, JSON body and the
status it got, so a test can replay exactly what the client sent (``_debug_render_only``).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

#: Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length", "host"}
UPSTREAM_TIMEOUT_S = 600


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any  # the decoded JSON body, or None
    status: int
    #: The answer's body for non-streamed answers (errors included), else "".
    answer: str = ""
    #: From the request to the end of the answer.
    seconds: float = 0.0

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path == "/api/chat" and isinstance(self.body, dict)

    @property
    def is_background_task(self) -> bool:
        """Open WebUI's title / tags / follow-up requests: one user message starting ``### Task:``."""
        if not self.is_chat:
            return False
        messages = self.body.get("messages") or []
        return bool(messages) and str(messages[-1].get("content", "")).lstrip().startswith("### Task:")


class RecordingProxy:
    """``with RecordingProxy("http://127.0.0.1:11434") as proxy: ... proxy.url ... proxy.requests``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 11434
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def chats(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.is_chat]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                started = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_S
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=raw or None, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                    self.end_headers()
                    upstream.close()
                    proxy._record(RecordedRequest(self.command, self.path, body, response.status,
                                                  seconds=time.monotonic() - started))
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                kept: list[bytes] = []
                streamed = False
                while line := response.readline():
                    kept.append(line)
                    streamed = streamed or len(kept) > 1
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                upstream.close()
                answer = "" if streamed else b"".join(kept).decode("utf-8", "replace")
                proxy._record(RecordedRequest(self.command, self.path, body, response.status, answer,
                                              time.monotonic() - started))

            do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _forward  # noqa: N815

        return Handler

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["RecordedRequest", "RecordingProxy"]
