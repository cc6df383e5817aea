"""A local stand-in for the Hugging Face Hub, so the real huggingface_hub code runs unpatched.

It answers what huggingface_hub 2.x asks of the Hub: model info with a 40-hex ``sha``, the
(paged) tree with git blob ``oid`` and ``lfs{oid,size,pointerSize}`` for .gguf files,
paths-info, ``whoami-v2`` (200 for the stub's token), HEAD/GET on ``/resolve/`` with
``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``X-Linked-Size``, ``Range`` -> 206 and 416 past the end, and errors with ``X-Error-Code``.

Knobs a test can turn: a token the repo requires (``private``: everything 401 RepoNotFound
without it; ``gated``: metadata public, downloads 401/403 GatedRepo), a file whose served bytes
differ from its advertised sha256 (:meth:`HubStub.corrupt`), a body that stops after N bytes
(:meth:`die_after`, the connection is closed as a killed download sees it) or stalls there until
released (:meth:`stall_after`), Range ignored (``ignore_range``), a wrong ``Content-Range``
(``wrong_range``), answers such as 429 or 503 for the next GETs (:meth:`fail_next`), a byte rate
per connection (``rate``, like the Hub's CDN), a file whose bytes change under the same commit
(:meth:`replace_in_place`), and LFS downloads redirected to another origin like the real Hub's
CDN (``redirect=True``), whose signed URLs can expire (:meth:`expire_cdn_urls`), which can be down
(``cdn_origin``), leave out the Hub's ``X-Linked-Etag`` as real CDNs do (``cdn_etag``) or redirect
to itself forever (``cdn_loop``). Old commits stay
downloadable, as on the Hub. Every request is logged, every body byte counted per file, and the
most body GETs in flight at once is kept (``max_in_flight``).

The CDN is a second listener under another host name (``localhost:<its port>``, where the Hub is
``127.0.0.1:<port>``), so a client opens new connections to it and must not send it the token,
as with the real Hub's CDN hosts. For speed measurements the stand-in can also behave like a
network path (:meth:`HubStub.shape`): one link shared by every connection, Hub and CDN alike
(``link_rate``, bytes a second: a token bucket every body byte passes through), the
per-connection ``rate`` on top, and a round-trip time (``rtt``) paid once per request before
the answer starts and :data:`CONNECT_RTTS` times more when a connection is opened.

Use it through ``HF_ENDPOINT`` (the ``hub`` fixture below sets it, with telemetry and Xet off
and a private HF_HOME so no real token is ever read).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".gguf",)
#: Round trips a new connection costs before its first request is read: TCP's handshake and
#: TLS 1.3's (the real Hub and its CDN speak HTTPS).
CONNECT_RTTS = 2
#: How far behind its schedule the shared link may fall and then catch up at once: a burst of
#: 20 ms of traffic, what a router's queue absorbs.
LINK_BURST_S = 0.02
#: Bytes written per pacing step: small enough that connections sharing the link interleave
#: finely (0.66 ms at 100 MB/s), large enough that pacing costs little CPU.
PACE_PIECE = 64 << 10
#: Size of a git-lfs pointer file; the Hub reports it as ``pointerSize``.
POINTER_SIZE = 134


@functools.lru_cache(maxsize=256)  # the stand-in names a file on every request: hash it once
def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub reports as ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@functools.lru_cache(maxsize=256)
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    headers: Mapping[str, str]
    status: int


class Link:
    """One network link shared by every connection, ``rate`` bytes a second.

    Senders queue for it piece by piece (:meth:`reserve`), first come first served, so
    connections share it fairly; a link that was idle lends at most :data:`LINK_BURST_S` of
    catching up, as a token bucket of that depth would."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._free_at = 0.0
        self._lock = threading.Lock()

    def reserve(self, n_bytes: int) -> float:
        """The monotonic time at which ``n_bytes`` queued now have crossed the link."""
        with self._lock:
            start = max(self._free_at, time.monotonic() - LINK_BURST_S)
            self._free_at = start + n_bytes / self.rate
            return self._free_at


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


@dataclass
class _Stall:
    after: int
    reached: threading.Event
    release: threading.Event


class HubStub:
    """``with HubStub({"org/repo": {"dir/file.gguf": b"..."}}) as hub: ... hub.url``."""

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, bytes]],
        *,
        token: str | None = None,
        private: set[str] | frozenset[str] = frozenset(),
        gated: set[str] | frozenset[str] = frozenset(),
        redirect: bool = False,
        tree_page_size: int = 1000,
    ) -> None:
        self.repos = {repo: dict(files) for repo, files in repos.items()}
        self.token = token
        self.private = set(private)
        self.gated = set(gated)
        self.redirect = redirect
        self.tree_page_size = tree_page_size
        #: Answer Range requests with the whole file (200), as some proxies do.
        self.ignore_range = False
        #: Answer Range requests with a Content-Range one byte off.
        self.wrong_range = False
        #: Bytes per second per connection for file bodies (None: as fast as it goes).
        self.rate: float | None = None
        #: The link every connection shares (None: no limit); see :meth:`shape`.
        self.link: Link | None = None
        #: Round-trip time in seconds (0: none); see :meth:`shape`.
        self.rtt = 0.0
        #: Bytes of file bodies sent through each listener and when the first and last left.
        self.body_window: list[float] = []
        #: Where redirects send LFS downloads (None: this stub's own CDN); a dead port is a
        #: CDN that is down.
        self.cdn_origin: str | None = None
        #: Whether the CDN's answers carry the Hub's X-Linked-Etag (the real CDNs' do not).
        self.cdn_etag = True
        #: The CDN answers every GET with a redirect to itself.
        self.cdn_loop = False
        self.commits = {repo: self._commit(files) for repo, files in self.repos.items()}
        #: Every commit's files, so a pull pinned to an older commit still gets its bytes.
        self.history = {repo: {self.commits[repo]: dict(files)} for repo, files in self.repos.items()}
        self._failures: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.cdn_generation = 0
        self.in_flight = 0
        self.max_in_flight = 0
        #: body bytes sent, per ``"<repo>/<path>"``
        self.served: Counter[str] = Counter()
        self.log: list[Logged] = []
        self._corrupted: dict[tuple[str, str], bytes] = {}
        self.hidden: set[tuple[str, str]] = set()
        self._deaths: dict[tuple[str, str], list[int]] = {}
        self._stalls: dict[tuple[str, str], _Stall] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._cdn_server: ThreadingHTTPServer | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> HubStub:
        self._server = self._listen("hub")
        self._cdn_server = self._listen("cdn")
        return self

    def _listen(self, role: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self, role))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return server

    def __exit__(self, *exc: object) -> None:
        for stall in self._stalls.values():
            stall.release.set()
        for server in (self._server, self._cdn_server):
            assert server is not None
            server.shutdown()
            server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None, "use HubStub as a context manager"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_host(self) -> str:
        """The CDN's ``host:port``: another listener, under another name than the Hub's."""
        assert self._cdn_server is not None, "use HubStub as a context manager"
        return f"localhost:{self._cdn_server.server_address[1]}"

    def shape(self, *, link_rate: float | None = None, rate: float | None = None, rtt: float = 0.0) -> None:
        """Make the stand-in a network path: ``link_rate`` bytes a second shared by every
        connection, ``rate`` bytes a second per connection, ``rtt`` seconds per round trip."""
        self.link = Link(link_rate) if link_rate else None
        self.rate = rate
        self.rtt = rtt

    # --- knobs ---------------------------------------------------------------------------------

    def corrupt(self, repo: str, path: str) -> None:
        """Serve ``path`` with one byte changed; the listing keeps the true sha256 and size."""
        data = bytearray(self.repos[repo][path])
        data[len(data) // 2] ^= 0xFF
        self._corrupted[(repo, path)] = bytes(data)

    def heal(self, repo: str, path: str) -> None:
        self._corrupted.pop((repo, path), None)

    def hide(self, repo: str, path: str) -> None:
        """Listed in the tree, but ``/resolve/`` answers 404 EntryNotFound (a removed upload)."""
        self.hidden.add((repo, path))

    def die_after(self, repo: str, path: str, n_bytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` send ``n_bytes`` of body, then hang up."""
        self._deaths.setdefault((repo, path), []).extend([n_bytes] * times)

    def stall_after(self, repo: str, path: str, n_bytes: int) -> _Stall:
        """The next GET of ``path`` sends ``n_bytes`` then waits for ``.release`` (then drops)."""
        stall = _Stall(n_bytes, threading.Event(), threading.Event())
        self._stalls[(repo, path)] = stall
        return stall

    def set_file(self, repo: str, path: str, data: bytes) -> None:
        """A new upload: the file changes and so does the repo's commit."""
        self.repos[repo][path] = data
        self.commits[repo] = self._commit(self.repos[repo])
        self.history[repo][self.commits[repo]] = dict(self.repos[repo])

    def replace_in_place(self, repo: str, path: str, data: bytes) -> None:
        """A misbehaving Hub: new bytes (and sha256) for the file under the same commit."""
        self.repos[repo][path] = data
        for files in self.history[repo].values():
            if path in files:
                files[path] = data

    def fail_next(
        self, status: int, times: int = 1, *, where: str = "any", headers: Mapping[str, str] | None = None
    ) -> None:
        """The next ``times`` body GETs (``where``: "resolve", "cdn" or "any") answer ``status``."""
        self._failures.setdefault(where, []).extend([(status, dict(headers or {}))] * times)

    def clear_faults(self) -> None:
        """Pending failures and hang-ups dropped, the CDN up and sane again."""
        with self._lock:
            self._failures.clear()
            self._deaths.clear()
        self.cdn_origin = None
        self.cdn_loop = False

    def expire_cdn_urls(self) -> None:
        """Every CDN URL handed out so far now answers 403, like an expired signature."""
        self.cdn_generation += 1

    def take_failure(self, where: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            for key in (where, "any"):
                if self._failures.get(key):
                    return self._failures[key].pop(0)
        return None

    # --- what a test reads ---------------------------------------------------------------------

    def bytes_served(self, repo: str | None = None, path: str | None = None) -> int:
        if path is not None:
            return self.served[f"{repo}/{path}"]
        prefix = f"{repo}/" if repo else ""
        return sum(n for key, n in self.served.items() if key.startswith(prefix))

    def downloads(self, path: str | None = None) -> list[Logged]:
        """GETs of file bodies (resolve or CDN), optionally of one repo path."""
        gets = [
            r
            for r in self.log
            if r.method == "GET" and ("/resolve/" in r.path or r.path.startswith("/cdn/"))
        ]
        if path is None:
            return gets
        return [
            r for r in gets if r.path.endswith("/" + quote(path)) or r.path.endswith("/" + path)
        ]

    def ranges(self, path: str) -> list[str | None]:
        """The Range header of every GET of ``path`` (None for a plain GET)."""
        return [r.headers.get("range") for r in self.downloads(path)]

    def reset_counters(self) -> None:
        self.served.clear()
        self.log.clear()
        self.body_window.clear()

    def body_seconds(self) -> float:
        """Seconds from the first body byte sent to the last, since the last reset."""
        return max(self.body_window) - min(self.body_window) if self.body_window else 0.0

    # --- internals -----------------------------------------------------------------------------

    @staticmethod
    def _commit(files: Mapping[str, bytes]) -> str:
        digest = hashlib.sha1()
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        return digest.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def entry(self, repo: str, path: str, expand: bool) -> dict[str, object]:
        files = self.repos[repo]
        if path in files:
            data = files[path]
            item: dict[str, object] = {
                "type": "file",
                "path": path,
                "size": len(data),
                "oid": git_blob_sha1(data),
            }
            if self.is_lfs(path):
                item["lfs"] = {
                    "oid": sha256_hex(data),
                    "size": len(data),
                    "pointerSize": POINTER_SIZE,
                }
        else:
            item = {
                "type": "directory",
                "path": path,
                "oid": hashlib.sha1(path.encode()).hexdigest(),
            }
        if expand:
            item["lastCommit"] = {
                "id": self.commits[repo],
                "title": "upload",
                "date": "2025-09-22T00:00:00.000Z",
            }
            if item["type"] == "file":
                item["securityFileStatus"] = {"status": "safe"}
        return item

    def folders(self, repo: str) -> set[str]:
        out = set()
        for path in self.repos[repo]:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out

    def tree(self, repo: str, root: str, recursive: bool) -> list[str] | None:
        """Paths under ``root`` ("" for the repo root); None if ``root`` is not a folder."""
        folders = self.folders(repo)
        if root and root not in folders:
            return None
        prefix = root + "/" if root else ""
        everything = sorted(folders | set(self.repos[repo]))
        under = [p for p in everything if p.startswith(prefix) and p != root]
        if not recursive:
            under = [p for p in under if "/" not in p[len(prefix) :]]
        # The Hub lists folders before files.
        return sorted(under, key=lambda p: (p in self.repos[repo], p))

    def body_for(self, repo: str, path: str, files: Mapping[str, bytes] | None = None) -> bytes:
        return self._corrupted.get((repo, path), (files or self.repos[repo])[path])

    def take_death(self, repo: str, path: str) -> int | None:
        with self._lock:
            pending = self._deaths.get((repo, path))
            return pending.pop(0) if pending else None

    def take_stall(self, repo: str, path: str) -> _Stall | None:
        with self._lock:
            return self._stalls.pop((repo, path), None)


def _handler_for(hub: HubStub, listener: str) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        stub = hub
        role = listener

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: HubStub
    #: "hub" (the API and /resolve/) or "cdn" (the redirected bodies).
    role: str

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
        pass

    def setup(self) -> None:
        super().setup()
        if self.stub.rtt:  # the handshakes of a new connection
            time.sleep(CONNECT_RTTS * self.stub.rtt)

    # --- plumbing ------------------------------------------------------------------------------

    def _log(self, status: int) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.stub.log.append(Logged(self.command, self.path, headers, status))

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: object, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _error(
        self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._json(status, {"error": message}, extra)

    def _bearer(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def _find_repo(self, parts: list[str]) -> tuple[str, list[str]] | None:
        if len(parts) >= 2 and f"{parts[0]}/{parts[1]}" in self.stub.repos:
            return f"{parts[0]}/{parts[1]}", parts[2:]
        return None

    def _allowed(self, repo: str, download: bool) -> bool:
        """Answer 401/403 like the Hub when a token is required and missing or wrong."""
        token = self._bearer()
        good = self.stub.token is not None and token == self.stub.token
        if repo in self.stub.private and not good:
            self._error(401, "RepoNotFound", "Repository not found")
            return False
        if download and repo in self.stub.gated and not good:
            status = 401 if token is None else 403
            message = (
                f"Access to model {repo} is restricted. You must be authenticated and have access."
            )
            self._error(status, "GatedRepo", message)
            return False
        return True

    def _revision_ok(self, repo: str, revision: str) -> bool:
        if unquote(revision) == "main" or unquote(revision) in self.stub.history[repo]:
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
        return False

    # --- routes --------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._form = parse_qs(self.rfile.read(length).decode())
        self._route()

    def _route(self) -> None:
        if self.stub.rtt:  # the request's way here and the answer's first byte's way back
            time.sleep(self.stub.rtt)
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = parse_qs(split.query)
        if parts[:2] == ["api", "agent-harnesses"]:
            # The harness registry the CLI reads at start-up: an empty one.
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "whoami-v2"]:
            return self._whoami()
        if self.role == "cdn":
            if parts[:1] == ["cdn"] and len(parts) >= 5:
                return self._cdn(f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:]), parts[1])
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        if parts[:2] == ["api", "models"]:
            found = self._find_repo(parts[2:])
            if not found:
                return self._error(401, "RepoNotFound", "Repository not found")
            repo, rest = found
            if not self._allowed(repo, download=False):
                return None
            if not rest or rest[0] == "revision":
                if rest and not self._revision_ok(repo, "/".join(rest[1:])):
                    return None
                return self._info(repo)
            if rest[0] == "tree" and len(rest) >= 2:
                if not self._revision_ok(repo, rest[1]):
                    return None
                return self._tree(repo, "/".join(rest[2:]), query)
            if rest[0] == "paths-info" and len(rest) >= 2 and self.command == "POST":
                if not self._revision_ok(repo, rest[1]):
                    return None
                return self._paths_info(repo)
            return self._error(404, None, "Not Found")
        found = self._find_repo(parts)
        if found and len(found[1]) >= 3 and found[1][0] == "resolve":
            repo, rest = found
            return self._resolve(repo, rest[1], "/".join(rest[2:]))
        return self._error(401, "RepoNotFound", "Repository not found")

    def _whoami(self) -> None:
        """Who a token belongs to: 200 for the stub's token, 401 for any other (or none)."""
        token = self._bearer()
        if token is None or token != self.stub.token:
            return self._error(401, None, "Invalid credentials in Authorization header")
        return self._json(200, {"type": "user", "name": "stub-user", "auth": {"type": "access_token"}})

    def _info(self, repo: str) -> None:
        files = self.stub.repos[repo]
        self._json(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": self.stub.commits[repo],
                "private": repo in self.stub.private,
                "gated": "manual" if repo in self.stub.gated else False,
                "siblings": [{"rfilename": p} for p in sorted(files)],
                "tags": ["gguf"],
            },
        )

    def _tree(self, repo: str, root: str, query: dict[str, list[str]]) -> None:
        recursive = query.get("recursive", ["false"])[0] == "true"
        expand = query.get("expand", ["false"])[0] == "true"
        paths = self.stub.tree(repo, root.strip("/"), recursive)
        if paths is None:
            return self._error(
                404,
                "EntryNotFound",
                f"{root} does not exist on main",
                {"X-Repo-Commit": self.stub.commits[repo]},
            )
        start = int(query.get("cursor", ["0"])[0])
        page = paths[start : start + self.stub.tree_page_size]
        headers = {}
        if start + len(page) < len(paths):
            split = urlsplit(self.path)
            rest = "&".join(p for p in split.query.split("&") if p and not p.startswith("cursor="))
            headers["Link"] = (
                f'<{self.stub.url}{split.path}?{rest}&cursor={start + len(page)}>; rel="next"'
            )
        self._json(200, [self.stub.entry(repo, p, expand) for p in page], headers)

    def _paths_info(self, repo: str) -> None:
        form = getattr(self, "_form", {})
        expand = form.get("expand", ["false"])[0] == "true"
        known = self.stub.folders(repo) | set(self.stub.repos[repo])
        wanted = [p for p in form.get("paths", []) if p in known]
        self._json(200, [self.stub.entry(repo, p, expand) for p in wanted])

    def _files_at(self, repo: str, revision: str) -> dict[str, bytes]:
        revision = unquote(revision)
        return self.stub.history[repo].get(revision, self.stub.repos[repo])

    def _file_headers(self, repo: str, path: str, revision: str = "main") -> dict[str, str]:
        data = self._files_at(repo, revision)[path]
        commit = unquote(revision) if unquote(revision) in self.stub.history[repo] else self.stub.commits[repo]
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if self.stub.is_lfs(path):
            headers["X-Linked-Etag"] = f'"{sha256_hex(data)}"'
            headers["X-Linked-Size"] = str(len(data))
            headers["ETag"] = f'"{sha256_hex(data)}"'
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        return headers

    def _resolve(self, repo: str, revision: str, path: str) -> None:
        if not self._allowed(repo, download=True) or not self._revision_ok(repo, revision):
            return None
        if path not in self._files_at(repo, revision) or (repo, path) in self.stub.hidden:
            return self._error(
                404,
                "EntryNotFound",
                f"{path} does not exist on main",
                {"X-Repo-Commit": self.stub.commits[repo]},
            )
        headers = self._file_headers(repo, path, revision)
        if self.stub.redirect and self.stub.is_lfs(path):
            # Like the Hub's CDN: another host (its own listener), no token needed there.
            origin = self.stub.cdn_origin or f"http://{self.stub.cdn_host}"
            cdn = f"{origin}/cdn/{self.stub.cdn_generation}"
            headers["Location"] = f"{cdn}/{repo}/{headers['X-Repo-Commit']}/{quote(path)}"
            return self._send(302, b"", headers)
        if self.command == "GET" and self._injected_failure("resolve"):
            return None
        self._body(repo, path, headers, revision)

    def _cdn(self, repo: str, revision: str, path: str, generation: str) -> None:
        if repo not in self.stub.repos or path not in self._files_at(repo, revision):
            return self._error(404, None, "Not Found")
        if generation != str(self.stub.cdn_generation):
            return self._send(403, b"<Error><Code>AccessDenied</Code>Request has expired</Error>",
                              content_type="application/xml")
        if self.command == "GET" and self._injected_failure("cdn"):
            return None
        if self.stub.cdn_loop:
            return self._send(302, b"", {"Location": self.path}, content_type="text/plain")
        headers = self._file_headers(repo, path, revision)
        if not self.stub.cdn_etag:
            for key in ("X-Linked-Etag", "X-Linked-Size", "ETag"):
                headers.pop(key, None)
        self._body(repo, path, headers, revision)

    def _injected_failure(self, where: str) -> bool:
        failure = self.stub.take_failure(where)
        if failure is None:
            return False
        status, headers = failure
        self._send(status, b"", headers, content_type="text/plain")
        return True

    def _body(self, repo: str, path: str, headers: dict[str, str], revision: str = "main") -> None:
        data = self.stub.body_for(repo, path, self._files_at(repo, revision))
        size = len(data)
        status, start, end = 200, 0, size - 1
        wanted = None if self.stub.ignore_range else self.headers.get("Range")
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if start >= size:
                headers["Content-Range"] = f"bytes */{size}"
                return self._send(416, b"", headers, content_type="text/plain")
            status = 206
            shift = 1 if self.stub.wrong_range else 0
            headers["Content-Range"] = f"bytes {start + shift}-{end}/{size}"
        body = memoryview(data)[start : end + 1]  # no copy of a range of a big file
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return None
        cut = self.stub.take_death(repo, path)
        stall = self.stub.take_stall(repo, path)
        if stall is not None:
            cut = stall.after
        sent = body if cut is None else body[:cut]
        with self.stub._lock:
            self.stub.in_flight += 1
            self.stub.max_in_flight = max(self.stub.max_in_flight, self.stub.in_flight)
        try:
            self._write_paced(repo, path, sent)
        finally:
            with self.stub._lock:
                self.stub.in_flight -= 1
        if cut is not None:
            if stall is not None:
                stall.reached.set()
                stall.release.wait(timeout=60)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


    def _write_paced(self, repo: str, path: str, data: bytes) -> None:
        """Send ``data``: at most ``rate`` bytes a second on this connection when it is set, and
        through the shared link when there is one (each piece queues for it once this
        connection may send it).

        Bytes are counted before each write: once the client has them, a test may read the
        counters."""
        key = f"{repo}/{path}"
        rate, link = self.stub.rate, self.stub.link
        # Pieces of a twentieth of a second at most, so a slow connection still trickles.
        piece = max(1024, min(PACE_PIECE, int(rate / 20))) if rate else PACE_PIECE
        started = time.monotonic()
        self.stub.body_window.append(started)
        for offset in range(0, len(data), piece):
            chunk = data[offset : offset + piece]
            if rate:
                _sleep_until(started + offset / rate)
            if link:
                _sleep_until(link.reserve(len(chunk)))
            with self.stub._lock:
                self.stub.served[key] += len(chunk)
            self.wfile.write(chunk)
        if rate:
            _sleep_until(started + len(data) / rate)
        self.wfile.flush()
        self.stub.body_window.append(time.monotonic())


def repo_from_dir(directory: Path, prefix: str = "") -> dict[str, bytes]:
    """``{prefix + name: bytes}`` for every file in ``directory`` (e.g. tiny shards)."""
    return {prefix + p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., HubStub]]:
    """A factory: ``stub = hub({"org/repo": {...}}, token=..., ...)`` starts a stub and points
    ``HF_ENDPOINT`` at it. Telemetry and Xet are off; HF_HOME is private so no real token
    leaks in."""
    started: list[HubStub] = []
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    # huggingface_hub fixed its token file's path at import: point it into the test's HF_HOME too.
    from huggingface_hub import constants

    hf_home = Path(os.environ["HF_HOME"])
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))

    def start(repos: Mapping[str, Mapping[str, bytes]], **knobs: object) -> HubStub:
        stub = HubStub(repos, **knobs).__enter__()  # type: ignore[arg-type]
        started.append(stub)
        monkeypatch.setenv("HF_ENDPOINT", stub.url)
        # huggingface_hub read HF_ENDPOINT when it was imported; a real process sets it before
        # that, so give the library's own defaults the stub too.
        monkeypatch.setattr(constants, "ENDPOINT", stub.url)
        template = stub.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        return stub

    yield start
    for stub in started:
        stub.__exit__(None, None, None)


__all__ = ["HubStub", "Logged", "git_blob_sha1", "hub", "repo_from_dir", "sha256_hex"]
