"""The one HTTP client for an Ollama server: version, blobs, create, show, tags, delete, render,
generate (for timing) and unload.

Every URL that ollamads builds for Ollama is built here. Chat streaming goes through the
``ollama`` package (:mod:`ollamads.chat`); this class covers what that package lacks or does
in a way that costs at 100+ GB: ``create`` with ``renderer``/``parser``, blob uploads that ask
first and stream with a Content-Length, and ``_debug_render_only``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from ollamads.errors import InsufficientSpaceError, ServerError
from ollamads.ollama.versions import CONTROL_TIMEOUT_S, ServerInfo, normalize_host, parse_version
from ollamads.units import format_bytes

#: ``_debug_render_only`` in ``/api/chat``: the server returns the prompt instead of generating.
DEBUG_RENDER_VERSION = (0, 11, 5)
UPLOAD_CHUNK = 8 << 20
#: How Go (so every Ollama) spells ENOSPC in the errors it returns.
SERVER_DISK_FULL = "no space left on device"
ByteProgress = Callable[[int, int], None]


class _FileBody:
    """A file streamed in large chunks with a known length.

    requests sends a sized iterable with Content-Length and no chunked framing, which is what
    Ollama's blob endpoint expects; a bare generator would be sent chunked.
    """

    def __init__(self, path: Path, progress: ByteProgress | None) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        done = 0
        with open(self.path, "rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                done += len(chunk)
                yield chunk
                if self.progress:
                    self.progress(done, self.size)


def error_text(response: requests.Response) -> str:
    """Ollama's ``{"error": ...}``; anything else (another program's page) as its status line."""
    try:
        value = response.json()
    except ValueError:
        value = None
    if isinstance(value, dict) and "error" in value:
        return " ".join(str(value["error"]).split())
    return f"HTTP {response.status_code} {response.reason}, not an Ollama answer"


def _lost(url: str, exc: BaseException) -> ServerError:
    return ServerError(
        f"lost the connection to the Ollama server at {url} ({type(exc).__name__})",
        "is it still running? see its log, then re-run: nothing was registered half-way",
    )


class OllamaAPI:
    """``OllamaAPI(host)``; host as OLLAMA_HOST accepts it (default: OLLAMA_HOST, else local)."""

    def __init__(self, host: str | None = None) -> None:
        self.url = normalize_host(host)

    # --- version -----------------------------------------------------------------------------

    def info(self, *, timeout: float = CONTROL_TIMEOUT_S) -> ServerInfo:
        """Ask the server its version; raise a :class:`ServerError` saying how to start one."""
        try:
            response = requests.get(f"{self.url}/api/version", timeout=timeout)
        except requests.RequestException as exc:
            raise ServerError(
                f"no Ollama server answers at {self.url} ({type(exc).__name__})",
                "start one with `ollamads serve` or `ollama serve`, or set OLLAMA_HOST",
            ) from exc
        try:
            response.raise_for_status()
            version = response.json()["version"]
            if not isinstance(version, str):
                raise TypeError(version)
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise ServerError(
                f"something other than Ollama answers at {self.url} "
                f"(HTTP {response.status_code} to /api/version)",
                "another program holds that port: start Ollama there, or point --host / "
                "OLLAMA_HOST at the Ollama server",
            ) from exc
        parse_version(version)
        return ServerInfo(host=self.url, version=version)

    def require_same(self, server: ServerInfo) -> None:
        """Raise unless the server answering now is the one a plan was made for: a server
        upgraded or replaced on the same port mid-run gets nothing meant for the other."""
        now = self.info()
        if now.version != server.version:
            raise ServerError(
                f"the Ollama server at {self.url} changed from {server.version} to {now.version} "
                "during the run; nothing was registered",
                "re-run: ollamads plans again for the server that answers now",
            )

    # --- blobs -------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        try:
            response = requests.head(f"{self.url}/api/blobs/{digest}", timeout=CONTROL_TIMEOUT_S)
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc
        return response.status_code == 200

    def push_blob(self, path: Path, digest: str, progress: ByteProgress | None = None) -> int:
        """Make sure the server stores ``path`` as ``digest``; returns the bytes sent (0 if it
        had it)."""
        if self.has_blob(digest):
            return 0
        body = _FileBody(path, progress)
        try:
            response = requests.post(
                f"{self.url}/api/blobs/{digest}", data=body, timeout=(CONTROL_TIMEOUT_S, None)
            )
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc
        if response.status_code not in (200, 201):
            text = error_text(response)
            if SERVER_DISK_FULL in text:
                raise InsufficientSpaceError(
                    f"the Ollama server at {self.url} ran out of disk storing {path.name} "
                    f"({format_bytes(body.size)} needed): {text}",
                    "free space where that server keeps its models (its OLLAMA_MODELS), then "
                    "re-run: what it already has is not sent again",
                )
            raise ServerError(
                f"Ollama refused {path.name}: {text}",
                "the file changed while uploading? re-run the command",
            )
        return body.size

    # --- models ------------------------------------------------------------------------------

    def create(
        self, body: Mapping[str, Any], on_status: Callable[[str], None] | None = None
    ) -> tuple[str, ...]:
        """POST /api/create and follow its progress stream; raise on the server's error."""
        name = body.get("model")
        failed = "check the server log; nothing was registered"
        statuses: list[str] = []
        try:
            with requests.post(
                f"{self.url}/api/create", json=dict(body), stream=True,
                timeout=(CONTROL_TIMEOUT_S, None),
            ) as response:
                if response.status_code != 200:
                    raise ServerError(f"Ollama could not create {name}: {error_text(response)}", failed)
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if "error" in event:
                        if SERVER_DISK_FULL in str(event["error"]):
                            raise InsufficientSpaceError(
                                f"the Ollama server at {self.url} ran out of disk creating {name}: "
                                f"{event['error']}",
                                "free space where that server keeps its models (its OLLAMA_MODELS), "
                                "then re-run: nothing was registered",
                            )
                        raise ServerError(f"Ollama could not create {name}: {event['error']}", failed)
                    status = event.get("status", "")
                    if status and (not statuses or statuses[-1] != status):
                        statuses.append(status)
                        if on_status:
                            on_status(status)
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc
        if not statuses or statuses[-1] != "success":
            raise ServerError(
                f"Ollama's create stream for {name} ended without success",
                "the server may have stopped; check its log and re-run",
            )
        return tuple(statuses)

    def show(self, name: str) -> dict[str, Any] | None:
        """``/api/show`` of ``name``, or None when the server has no such model."""
        response = self._about_model("POST", "/api/show", name, "show")
        if response is None:
            return None
        value = response.json()
        return value if isinstance(value, dict) else None

    def tags(self) -> list[dict[str, Any]]:
        """The registered models (``/api/tags``)."""
        return self._models("/api/tags")

    def _models(self, path: str) -> list[dict[str, Any]]:
        """The ``models`` list a GET of ``path`` answers with."""
        try:
            response = requests.get(f"{self.url}{path}", timeout=CONTROL_TIMEOUT_S)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc
        return list(response.json().get("models") or [])

    def delete(self, name: str) -> bool:
        """Remove a model; False when there was none."""
        return self._about_model("DELETE", "/api/delete", name, "delete") is not None

    def _about_model(self, method: str, path: str, name: str, verb: str) -> requests.Response | None:
        """A control request about one model: the answer, or None when there is no such model."""
        try:
            response = requests.request(method, f"{self.url}{path}", json={"model": name}, timeout=CONTROL_TIMEOUT_S)
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ServerError(f"Ollama could not {verb} {name}: {error_text(response)}", "check the server log")
        return response

    def generate(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """POST /api/generate, streamed: each event as Ollama sends it; the last one (``done``)
        carries its counters. Loading a model takes as long as it takes: no read timeout."""
        name = body.get("model")
        try:
            with requests.post(
                f"{self.url}/api/generate", json={**body, "stream": True}, stream=True,
                timeout=(CONTROL_TIMEOUT_S, None),
            ) as response:
                if response.status_code == 404:
                    raise ServerError(f"the Ollama server at {self.url} has no model {name}",
                                      "see `ollama list`; register it with `ollamads create`")
                if response.status_code != 200:
                    raise ServerError(f"Ollama could not run {name}: {error_text(response)}",
                                      "check the server log")
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if "error" in event:
                        raise ServerError(f"Ollama could not run {name}: {event['error']}",
                                          "check the server log")
                    yield event
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc

    def unload(self, name: str) -> None:
        """Ask the server to drop ``name`` from memory now (``keep_alive: 0``)."""
        try:
            response = requests.post(f"{self.url}/api/generate",
                                     json={"model": name, "keep_alive": 0},
                                     timeout=(CONTROL_TIMEOUT_S, None))
        except requests.RequestException as exc:
            raise _lost(self.url, exc) from exc
        if response.status_code not in (200, 404):
            raise ServerError(f"Ollama could not unload {name}: {error_text(response)}",
                              "check the server log")

    def loaded(self) -> list[dict[str, Any]]:
        """The models in memory now (``/api/ps``)."""
        return self._models("/api/ps")

    def render(self, body: Mapping[str, Any]) -> str:
        """The prompt the server builds for a chat request (``_debug_render_only``)."""
        info = self.info()
        if info.version_tuple < DEBUG_RENDER_VERSION:
            raise ServerError(
                f"Ollama {info.version} cannot show the prompt it renders",
                "upgrade Ollama to v0.11.5 or newer",
            )
        request = {**body, "stream": False, "_debug_render_only": True}
        # The server loads the model before rendering: no read timeout.
        response = requests.post(
            f"{self.url}/api/chat", json=request, timeout=(CONTROL_TIMEOUT_S, None)
        )
        if response.status_code != 200:
            raise ServerError(
                f"Ollama answered {response.status_code} for {body.get('model')}: {error_text(response)}",
                "check the request and the server log",
            )
        return str(response.json()["_debug_info"]["rendered_template"])


def probe(host: str | None = None, *, timeout: float = CONTROL_TIMEOUT_S) -> ServerInfo:
    """The version of the server at ``host``; a :class:`ServerError` saying how to start one."""
    return OllamaAPI(host).info(timeout=timeout)


def answers(host: str | None = None) -> ServerInfo | None:
    try:
        return probe(host, timeout=2.0)
    except ServerError:
        return None


__all__ = ["DEBUG_RENDER_VERSION", "OllamaAPI", "answers", "error_text", "probe"]
