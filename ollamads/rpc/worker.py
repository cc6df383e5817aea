"""``ollamads worker``: llama.cpp's rpc-server on a machine that lends its memory to a head node.

What rpc-server offers here (tools/rpc/rpc-server.cpp in the pinned tree): the bind address and
port, the devices to expose (``-d``; by default every GPU, else the CPU), CPU threads and a
local tensor cache (``-c``, kept under ``$LLAMA_CACHE/rpc``). It has no memory limit, so a cap
is enforced by :mod:`ollamads.rpc.relay` in front of it.

The child runs with SIGPIPE ignored (inherited from Python, kept with ``restore_signals=False``):
rpc-server does not ignore it, and a client that gives up while waiting in its backlog (Ollama's
device refresh does after 3 s) would otherwise kill it when it writes the reply. It also gets
``PR_SET_PDEATHSIG``, so it never outlives this process, even one killed with SIGKILL.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ollamads.children import ChildProcess, ChildService
from ollamads.errors import ToolNotFoundError, WorkerError
from ollamads.rpc.endpoints import resolve_ipv4
from ollamads.rpc.protocol import DEFAULT_PORT, WorkerProbe, probe
from ollamads.rpc.relay import CappingRelay

RPC_SERVER_ENV = "OLLAMADS_RPC_SERVER"
#: The target's name in llama.cpp's CMake (tools/rpc) and the name older releases installed.
RPC_SERVER_NAMES = ("ggml-rpc-server", "rpc-server")
DEFAULT_BIND = "127.0.0.1"
WORKER_START_TIMEOUT_S = 30.0
SECURITY_WARNING = (
    "llama.cpp's RPC protocol has no authentication and no encryption: anyone who can reach "
    "this port can use this machine's memory and compute and read what the head sends it. "
    "Use it only on a trusted network."
)
_BUILD_HINT = (
    "build llama.cpp with -DGGML_RPC=ON (the same release as the head node's llama-server) and "
    f"pass --rpc-server PATH or set {RPC_SERVER_ENV}"
)


def find_rpc_server(explicit: str | None = None) -> str:
    """``--rpc-server``, then ``OLLAMADS_RPC_SERVER``, then ggml-rpc-server / rpc-server on
    PATH; with ``OLLAMADS_DEV_TOOLCHAIN=1`` also the one scripts/toolchain.sh built."""
    for candidate, source in ((explicit, "--rpc-server"), (os.environ.get(RPC_SERVER_ENV), RPC_SERVER_ENV)):
        if candidate:
            if Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
            raise ToolNotFoundError(
                f"rpc-server {candidate!r} (from {source}) does not exist or is not executable",
                _BUILD_HINT,
            )
    for name in RPC_SERVER_NAMES:
        on_path = shutil.which(name)
        if on_path:
            return on_path
    from ollamads.toolchain import built_llama_cpp_tools, dev_toolchain_enabled

    built = built_llama_cpp_tools(RPC_SERVER_NAMES[0]) if dev_toolchain_enabled() else []
    if built:
        return str(built[-1])
    raise ToolNotFoundError(
        f"no llama.cpp rpc-server found ({' or '.join(RPC_SERVER_NAMES)} on PATH, {RPC_SERVER_ENV} unset)",
        _BUILD_HINT,
    )


def is_loopback(host: str) -> bool:
    return ipaddress.IPv4Address(host).is_loopback


def default_llama_cache() -> Path:
    """Where rpc-server keeps its cache without ``LLAMA_CACHE`` (fs_get_cache_directory)."""
    explicit = os.environ.get("LLAMA_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llama.cpp"


@dataclass(frozen=True)
class WorkerSettings:
    binary: str
    host: str = DEFAULT_BIND
    port: int = DEFAULT_PORT
    memory_cap: int | None = None
    cache_dir: Path | None = None  # None: no cache; otherwise LLAMA_CACHE for rpc-server
    threads: int | None = None
    devices: tuple[str, ...] = ()

    @property
    def exposed(self) -> bool:
        return not is_loopback(self.host)

    @property
    def cache_path(self) -> Path | None:
        """The folder rpc-server writes its tensor cache to."""
        return None if self.cache_dir is None else self.cache_dir / "rpc"

    def command(self, host: str, port: int) -> list[str]:
        cmd = [self.binary, "-H", host, "-p", str(port)]
        if self.threads:
            cmd += ["-t", str(self.threads)]
        if self.devices:
            cmd += ["-d", ",".join(self.devices)]
        if self.cache_dir is not None:
            cmd.append("-c")
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.cache_dir is not None:
            env["LLAMA_CACHE"] = str(self.cache_dir)
        return env

    def advertised(self) -> list[str]:
        """The address(es) to give the head node's ``--workers``."""
        if self.host != "0.0.0.0":
            return [f"{self.host}:{self.port}"]
        return [f"{ip}:{self.port}" for ip in this_machine_addresses()] or [
            f"{socket.gethostname()}:{self.port}"
        ]


def this_machine_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    found = []
    for info in infos:
        ip = str(info[4][0])
        if not is_loopback(ip) and ip not in found:
            found.append(ip)
    return found


def worker_settings(
    *,
    binary: str | None = None,
    host: str = DEFAULT_BIND,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
    memory_cap: str | None = None,
    cache: bool = False,
    cache_dir: Path | None = None,
    threads: int | None = None,
    devices: tuple[str, ...] = (),
) -> WorkerSettings:
    """Check what was asked before anything starts; the rpc-server binary is looked up last."""
    address = resolve_ipv4(host)
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise WorkerError(
            f"cannot listen on {host!r}: it is not an IPv4 address or a name that resolves to one",
            "give an IPv4 address of this machine, e.g. --host 10.0.0.2, or 0.0.0.0 for all",
        ) from None
    if not is_loopback(address) and not allow_remote:
        raise WorkerError(
            f"refusing to listen on {address}: llama.cpp's RPC protocol has no authentication "
            "or encryption",
            "add --allow-remote to expose this worker on a trusted network, or keep the default "
            "127.0.0.1",
        )
    cap = None
    if memory_cap is not None:
        from ollamads.errors import OllamadsError
        from ollamads.units import parse_size

        try:
            cap = parse_size(memory_cap, what="memory cap")
        except OllamadsError:
            raise WorkerError(f"--mem {memory_cap!r} is not a size", "write it like --mem 64GiB or --mem 512MiB") from None
        if cap <= 0:
            raise WorkerError(f"--mem {memory_cap!r} is not a positive size", "write it like --mem 64GiB")
    if cache_dir is not None:
        cache_dir = cache_dir.expanduser().absolute()
    elif cache:
        cache_dir = default_llama_cache()
    return WorkerSettings(
        binary=find_rpc_server(binary), host=address, port=port, memory_cap=cap,
        cache_dir=cache_dir, threads=threads, devices=tuple(devices),
    )


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RpcWorker(ChildService):
    """A running rpc-server (behind the capping relay when there is a cap)."""

    def __init__(self, settings: WorkerSettings, log_path: Path, on_line: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        # Always dies with this process, even one killed with SIGKILL (see the module docstring).
        self.child = ChildProcess("rpc-server", log_path, stop_timeout=10, die_with_parent=True)
        self.child.on_line = on_line
        self.relay: CappingRelay | None = None
        self.probe: WorkerProbe | None = None

    @property
    def local_address(self) -> tuple[str, int]:
        """Where this machine reaches the worker (what the head connects to)."""
        host = "127.0.0.1" if self.settings.host == "0.0.0.0" else self.settings.host
        return host, self.settings.port

    def start(self, timeout: float = WORKER_START_TIMEOUT_S) -> WorkerProbe:
        s = self.settings
        if not _port_is_free(s.host, s.port):
            raise WorkerError(
                f"cannot listen on {s.host}:{s.port}: the port is in use",
                "choose another --port, or stop what listens there",
            )
        if s.memory_cap is None:
            rpc_host, rpc_port = s.host, s.port
        else:
            rpc_host, rpc_port = "127.0.0.1", _free_loopback_port()
        # Its output is read here: the last lines explain a failed start (_exit_error).
        self.child.start(s.command(rpc_host, rpc_port), env=s.environment(), follow=True,
                         restore_signals=False)  # keep SIGPIPE ignored (see the module docstring)
        address = ("127.0.0.1" if rpc_host == "0.0.0.0" else rpc_host, rpc_port)
        try:
            self.child.wait_until_ready(lambda: self._answers(address), timeout=timeout, interval=0.1,
                                        where=f"{address[0]}:{address[1]}", error=WorkerError,
                                        exited=self._exit_error)
            if s.memory_cap is not None:
                self.relay = CappingRelay((s.host, s.port), (rpc_host, rpc_port), s.memory_cap)
                self.relay.start()
            self.probe = probe(*self.local_address)
        except BaseException:
            self.stop()
            raise
        return self.probe

    def _answers(self, address: tuple[str, int]) -> bool:
        try:
            probe(*address, timeout=2.0)
        except OSError:
            return False
        except Exception as exc:
            raise WorkerError(f"{self.settings.binary} does not answer as an rpc-server ({exc})", _BUILD_HINT) from exc
        return True

    def _exit_error(self, code: int) -> WorkerError:
        lines = self.child.tail()
        text = "\n".join(lines)
        s = self.settings
        if "Failed to create server socket" in text:
            return WorkerError(
                f"rpc-server could not listen on {s.host}:{s.port}",
                "choose another --port, or an address of this machine with --host",
            )
        if "unknown device" in text:
            bad = next(line for line in lines if "unknown device" in line).rsplit(":", 1)[1].strip()
            known = [line.split(":")[0].strip() for line in lines if line.startswith("  ") and "MiB" in line]
            return WorkerError(f"rpc-server has no device {bad!r}", f"choose from {', '.join(known) or 'the devices rpc-server lists'}")
        if "Failed to create cache directory" in text:
            return WorkerError(f"rpc-server cannot create its cache in {s.cache_path}", "choose a writable --cache-dir")
        return WorkerError(f"rpc-server exited with code {code}: {self.child.last_line()}", f"see its log {self.log_path}")

    def exit_code(self) -> int:
        """Block until rpc-server exits; its exit code (signals are ``ollamads worker``'s own)."""
        assert self.process is not None
        return self.process.wait()

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        super().stop()


__all__ = [
    "DEFAULT_BIND",
    "RPC_SERVER_ENV",
    "RPC_SERVER_NAMES",
    "SECURITY_WARNING",
    "RpcWorker",
    "WorkerSettings",
    "find_rpc_server",
    "worker_settings",
]
