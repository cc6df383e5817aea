"""``ollamads serve``: an ``ollama serve`` set up the way 100+ GB DeepSeek GGUFs want it.

The settings come from Unsloth's guides and Ollama's issue tracker: flash attention
on (it is what lets the KV cache be quantised), an 8-bit KV cache (DeepSeek's guides: 8-bit is
fine, 4-bit is clearly worse), a load timeout long enough to read 170-480 GB from disk, and a
keep-alive so a loaded model is not dropped between two questions. Everything else is Ollama's
default; in particular its pruning stays on (``OLLAMA_NOPRUNE`` unset): at start-up it deletes
blobs no manifest uses (a killed upload's, a replaced model's), and ``ollama create`` or
``pull`` over an existing name deletes the layers the old manifest alone used. Without it a
re-created 170 GB model would leave its old blob on disk for good. The tests that show the
prune treats ollamads' models like any other run under ``ollamads serve`` itself
(``tests/test_store.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ollamads.children import ChildProcess, ChildService
from ollamads.errors import OllamadsError, ServerError, ToolNotFoundError
from ollamads.ollama.api import answers
from ollamads.ollama.versions import ServerInfo, normalize_host, parse_version
from ollamads.paths import ollamads_home

SERVE_START_TIMEOUT_S = 60.0

DEFAULT_BIND = "127.0.0.1:11434"
MODEL_ENVIRONMENT: Mapping[str, str] = {
    "OLLAMA_FLASH_ATTENTION": "1",
    "OLLAMA_KV_CACHE_TYPE": "q8_0",
    # The default 5 minute stall timer trips while a 200 GB model is still being read.
    "OLLAMA_LOAD_TIMEOUT": "30m",
    "OLLAMA_KEEP_ALIVE": "30m",
}


def default_ollama_models() -> Path:
    """Where ``ollamads serve`` keeps Ollama's store: OLLAMA_MODELS if set, else <home>/ollama."""
    explicit = os.environ.get("OLLAMA_MODELS")
    return Path(explicit).expanduser() if explicit else ollamads_home() / "ollama"


@dataclass(frozen=True)
class ServeSettings:
    models_dir: Path
    bind: str = DEFAULT_BIND
    environment: Mapping[str, str] = field(default_factory=lambda: dict(MODEL_ENVIRONMENT))

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the server (``:8080`` and ``0.0.0.0`` too)."""
        return normalize_host(self.bind)

    @property
    def reachable_from_other_machines(self) -> bool:
        """Whether the server listens beyond this machine's loopback: Ollama has no
        authentication, so anyone who reaches it can run, pull, copy and delete models."""
        return not binds_loopback_only(self.bind)

    @property
    def variables(self) -> dict[str, str]:
        """Every environment variable ``ollamads serve`` sets for ``ollama serve`` (it prints
        them at start): where to listen, the store, then :attr:`environment`."""
        return {"OLLAMA_HOST": self.bind, "OLLAMA_MODELS": str(self.models_dir), **self.environment}

    def open_webui_hint(self) -> str:
        return f"ollamads webui --host {self.url} (or: OLLAMA_BASE_URL={self.url} open-webui serve)"


def binds_loopback_only(bind: str) -> bool:
    """Whether ``ollama serve`` with ``OLLAMA_HOST=bind`` listens on loopback only. As Ollama
    reads it: no host (``:8080``) or ``0.0.0.0`` / ``[::]`` is every interface, and a host name
    other than localhost is wherever it resolves."""
    import ipaddress
    from urllib.parse import urlsplit

    hostport = bind.strip().split("://", 1)[-1].split("/", 1)[0]
    host = urlsplit(f"//{hostport}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_settings(
    models_dir: Path | None = None,
    bind: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Check the store is writable before a server is started on it. ``environment`` (e.g. a
    plan's offload variables) goes on top of :data:`MODEL_ENVIRONMENT`."""
    directory = (models_dir or default_ollama_models()).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".ollamads-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OllamadsError(
            f"OLLAMA_MODELS {directory} is not writable ({exc.strerror})",
            "choose another folder with --models or fix its permissions",
        ) from exc
    return ServeSettings(models_dir=directory, bind=bind or DEFAULT_BIND,
                         environment={**MODEL_ENVIRONMENT, **(environment or {})})


def find_ollama(explicit: str | None = None) -> str:
    """The ``ollama`` binary: explicit path, ``OLLAMADS_OLLAMA``, then PATH; with
    ``OLLAMADS_DEV_TOOLCHAIN=1`` also the newest one scripts/toolchain.sh built."""
    for candidate in (explicit, os.environ.get("OLLAMADS_OLLAMA")):
        if candidate:
            if Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
            raise ToolNotFoundError(
                f"ollama binary {candidate!r} does not exist or is not executable",
                "pass the path of an installed `ollama`",
            )
    on_path = shutil.which("ollama")
    if on_path:
        return on_path
    from ollamads.toolchain import built_ollama_binaries, dev_toolchain_enabled

    built = built_ollama_binaries() if dev_toolchain_enabled() else {}
    if built:
        return str(built[max(built, key=parse_version)])
    raise ToolNotFoundError(
        "no `ollama` binary found on PATH",
        "install Ollama, or set OLLAMADS_OLLAMA to its path",
    )


#: With no server to answer (the usual case here) `ollama --version` prints "client version is
#: 0.24.0"; a server that does answer makes it "ollama version is 0.24.0".
_CLIENT_VERSION_RE = re.compile(r"(?:client version is|ollama version is)\s+v?(\S+)")


def ollama_version(binary: str) -> str:
    """The version of an ``ollama`` binary, without asking (or needing) a server."""
    try:
        # An unreachable OLLAMA_HOST makes `ollama --version` report its own (client) version.
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30,
            env={**os.environ, "OLLAMA_HOST": "127.0.0.1:1"}, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolNotFoundError(f"cannot run {binary} --version ({exc})", "check the ollama binary") from exc
    match = _CLIENT_VERSION_RE.search(out.stdout + out.stderr)
    if not match:
        raise ServerError(f"{binary} --version did not say its version", "check the ollama binary")
    return match[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OllamaServe(ChildService):
    """A real ``ollama serve`` child process on a loopback port.

    Use as a context manager; the server is stopped (and its log kept at ``log_path``) on exit.
    ``die_with_parent``: Linux stops the server if this process dies without stopping it (for
    a foreground ``ollamads serve``; start it from the main thread).
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        binary: str | None = None,
        host: str | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.binary = find_ollama(binary)
        self.models_dir = Path(models_dir)
        self.bind = host or f"127.0.0.1:{free_port()}"
        self.url = normalize_host(self.bind)
        self.extra_env = dict(env or {})
        self.log_path = log_path or self.models_dir.parent / f"ollama-serve-{os.getpid()}.log"
        self.child = ChildProcess("`ollama serve`", self.log_path, stop_timeout=15, die_with_parent=die_with_parent)
        self.info: ServerInfo | None = None

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OLLAMA_HOST=self.bind, OLLAMA_MODELS=str(self.models_dir))
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = SERVE_START_TIMEOUT_S) -> ServerInfo:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.child.start([self.binary, "serve"], env=self.environment())
        answered: list[ServerInfo] = []

        def ready() -> bool:
            info = answers(self.url)
            if info:
                answered.append(info)
            return info is not None

        self.child.wait_until_ready(ready, timeout=timeout, interval=0.2, where=self.url, error=ServerError)
        from ollamads.ollama.store import remember_serve

        self.info = answered[0]
        remember_serve(self.info.host, self.models_dir)
        return self.info
