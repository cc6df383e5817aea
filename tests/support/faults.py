"""What the fault tests share (loaded by tests/conftest.py's ``pytest_plugins``): small filesystems that fill up, and real servers that die.

* ``small_disk(size)`` mounts a tmpfs of ``size`` bytes for the test (``small_disk(size,
  "ext2")`` a loop-mounted ext2, which has no ``fallocate``, so a download writes into a sparse
  ``.part`` and meets the full disk part-way). Mounting needs root: where it fails, the test
  fails under CI and is skipped elsewhere, with the reason (``-ra``).
* ``fault_server(line)`` starts a real ``ollama serve`` of that line on its own store and port,
  which the test may kill (SIGKILL to its process group: the server and its llama-quantize),
  restart on the same store and port, or replace with another program on that port.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ollamads.ollama.serve import OllamaServe, free_port
from tests.support.servers import ollama_binary
from tests.support.toolchain import cannot_run

PAGE = 4096


@dataclass
class SmallDisk:
    """A filesystem of a few megabytes; :meth:`fill` eats its free space, :meth:`release` frees it."""

    path: Path
    filler: Path = field(init=False)

    def __post_init__(self) -> None:
        self.filler = self.path / "filler"

    def free(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all but ``leave`` bytes (rounded down to a page): the next big write fails."""
        want = max(0, self.free() - leave) // PAGE * PAGE
        with open(self.filler, "ab") as handle:
            block = bytes(1 << 20)
            while want > 0:
                try:
                    handle.write(block[: min(len(block), want)])
                    handle.flush()
                except OSError:
                    break
                want -= min(len(block), want)

    def release(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., SmallDisk]]:
    mounted: list[Path] = []

    def mount(size: int, kind: str = "tmpfs") -> SmallDisk:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if kind == "tmpfs":
            command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)]
        else:
            image = tmp_path / f"disk{len(mounted)}.img"
            with open(image, "wb") as handle:
                handle.truncate(size)
            made = subprocess.run(["mkfs.ext2", "-q", "-F", "-m", "0", str(image)],
                                  capture_output=True, text=True)
            if made.returncode != 0:
                cannot_run(f"cannot make an ext2 image here: {made.stderr.strip()}")
            command = ["mount", "-o", "loop", str(image), str(point)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            cannot_run(f"cannot mount a small {kind} here ({done.stderr.strip()}): it needs root")
        mounted.append(point)
        return SmallDisk(point)

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


class FaultServer:
    """A real ``ollama serve`` of one line on a fixed store and port, and ways to break it."""

    def __init__(self, root: Path, line: str, port: int, models: Path | None = None) -> None:
        self.root = root
        self.line = line
        self.bind = f"127.0.0.1:{port}"
        self.models_dir = models or root / "models"
        self.serve: OllamaServe | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.bind}"

    @property
    def log_path(self) -> Path:
        return self.root / "serve.log"

    def start(self, line: str | None = None, models: Path | None = None) -> FaultServer:
        self.line = line or self.line
        self.models_dir = models or self.models_dir
        self.serve = OllamaServe(
            self.models_dir, binary=ollama_binary(self.line), host=self.bind,
            log_path=self.log_path,
            # Prune at start-up as a plain `ollama serve` does; keys stay out of the real home.
            env={"HOME": str(self.root), "OLLAMA_NOPRUNE": "false"},
        )
        self.serve.start()
        self.starts += 1
        return self

    def kill(self) -> None:
        """SIGKILL the server and whatever it runs (llama-quantize): a crash, nothing cleaned."""
        process = self.serve.process if self.serve else None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill_while_running(self, program: str, timeout: float = 120.0) -> threading.Event:
        """Watch for the server's child ``program``; the moment it runs, freeze it (SIGSTOP)
        and kill the server with it. The event is set once that happened."""
        caught = threading.Event()
        process = self.serve.process if self.serve else None
        assert process is not None

        def watch() -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                for child in direct_children(process.pid):
                    try:
                        comm = Path(f"/proc/{child}/comm").read_text().strip()
                    except OSError:
                        continue
                    if comm == program:  # exec'd (before that the child is still "ollama")
                        os.kill(child, signal.SIGSTOP)
                        caught.set()
                        self.kill()
                        return
                time.sleep(0.0005)

        threading.Thread(target=watch, name=f"kill-on-{program}", daemon=True).start()
        return caught

    def stop(self) -> None:
        if self.serve is not None:
            self.serve.stop()

    def restart(self, line: str | None = None, models: Path | None = None) -> FaultServer:
        self.stop()
        return self.start(line, models)

    @property
    def info(self) -> object:
        return self.serve.info if self.serve else None

    def log_tail(self, lines: int = 60) -> str:
        return self.serve.log_tail(lines) if self.serve else ""


@pytest.fixture
def fault_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., FaultServer]]:
    started: list[FaultServer] = []

    def start(line: str, *, models: Path | None = None, port: int | None = None) -> FaultServer:
        root = tmp_path / f"server-{len(started)}"
        root.mkdir()
        server = FaultServer(root, line, port or free_port(), models).start()
        started.append(server)
        # tests/support/servers.py attaches the log of every server a failing test used.
        request.node.__dict__.setdefault("_ollama_servers", []).append(server)
        return server

    yield start
    for server in started:
        server.kill()


class NotOllama:
    """A plain HTTP server on a given port that answers every request with an HTML 404."""

    def __init__(self, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1>\n</body></html>\n"
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> NotOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def direct_children(pid: int) -> list[int]:
    """The children of ``pid``, from each of its threads' ``children`` list (cheap to poll)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(n) for n in handle.read().split()]
        except OSError:
            continue
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def bad_blobs(models: Path) -> list[str]:
    """Blobs whose bytes are not what their name says (a partial file that looks complete)."""
    blobs = models / "blobs"
    if not blobs.is_dir():
        return []
    return [
        p.name for p in blobs.iterdir()
        if p.is_file() and p.name.startswith("sha256-") and len(p.name) == 71
        and sha256_file(p) != p.name.removeprefix("sha256-")
    ]


def ollamads_debris(*roots: Path) -> list[str]:
    """Temporary files ollamads writes and must not leave behind."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            name = path.name
            if ".partial-" in name or name.startswith("sha256-ollamads-") or name.endswith(".tmp") \
                    or name.startswith(".ollamads-manifest-") or name.endswith(".part"):
                found.append(str(path.relative_to(root)))
    return found


def manifests(models: Path) -> list[str]:
    root = models / "manifests"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def one_line(text: str) -> str:
    """The CLI's error output must be exactly one line; returns it."""
    assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
    return text.rstrip("\n")
