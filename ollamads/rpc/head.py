"""The head node: an Ollama of the v0.30+ line whose llama-server spreads a model over workers.

Ollama has no RPC code of its own. From v0.30 it runs llama.cpp's ``llama-server`` as a child
that inherits its environment, so ``LLAMA_ARG_RPC=host:port,...`` in ``ollama serve``'s
environment makes every model load use the workers: Ollama's device discovery lists each
worker as a GPU (``RPC0`` ...), and llama-server puts layers on them. Before that server
starts, :func:`prepare_head` checks everything that would otherwise fail later and less
clearly:

1. the Ollama binary is of the v0.30+ line (up to v0.24 llama.cpp is linked in, with no RPC);
2. its llama-server has the RPC backend. ``--help`` lists ``--rpc`` in every build, so that
   proves nothing; instead ``--rpc`` is given an address without a port: a build with the
   backend fails to parse it ("Failed to parse endpoint"), one without says "RPC not supported
   in this build" (common/arg.cpp), and no network is touched;
3. every worker answers the RPC hello (:func:`ollamads.rpc.protocol.probe`, with a timeout, so
   a dead host cannot stall the start for the kernel's two-minute connect timeout);
4. llama-server itself accepts every worker: ``llama-server --list-devices`` with the workers
   set, exactly as Ollama's discovery runs it, which also performs llama.cpp's own version
   handshake and reports each worker's memory as llama-server sees it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ollamads.errors import ServerError, ToolNotFoundError, WorkerError
from ollamads.ollama.serve import ollama_version
from ollamads.ollama.versions import SPLIT_GGUF_VERSION, parse_version
from ollamads.rpc.endpoints import RPC_LIST_ENV, Endpoint, rpc_list
from ollamads.rpc.protocol import PROBE_TIMEOUT_S, NoReplyError, ProtocolError, WorkerProbe, probe, version_text

#: The first Ollama line that runs llama-server (and so can reach RPC workers).
MIN_RPC_OLLAMA = SPLIT_GGUF_VERSION
LIST_DEVICES_TIMEOUT_S = 60.0
#: An address llama.cpp cannot parse (no port): the RPC check then fails before any network.
_UNPARSABLE_ENDPOINT = "ollamads-rpc-check"
_RPC_MISSING = ("RPC not supported in this build", "failed to find RPC backend")
_RPC_PRESENT = ("Failed to parse endpoint",)
#: ``  RPC0: 10.0.0.2:50052 (24152 MiB, 24152 MiB free)`` (common/arg.cpp, --list-devices).
_DEVICE_LINE = re.compile(r"^\s+(\S+):\s+(.+?)\s+\((\d+) MiB, (\d+) MiB free\)\s*$")
_VERSION_MISMATCH = re.compile(r"RPC server version mismatch: (\d+\.\d+\.\d+)")
_HANDSHAKE_FAILED = re.compile(r"RPC handshake failed for (\S+)")
_CONNECT_FAILED = re.compile(r"Failed to connect to (\S+)")
#: Child processes of llama.cpp otherwise attach gdb to print a backtrace on every abort.
_QUIET_ABORT = {"GGML_NO_BACKTRACE": "1"}


def llama_server_of(ollama_binary: str) -> Path | None:
    """The llama-server an installed Ollama (v0.30+) runs: its packaged layouts, as Ollama
    searches them (llm/llama_binary.go, ml/path.go), starting from the resolved executable."""
    exe_dir = Path(ollama_binary).resolve().parent
    for folder in (exe_dir.parent / "lib" / "ollama", exe_dir / "lib" / "ollama", exe_dir):
        candidate = folder / "llama-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _llama_server_env(llama_server: Path, rpc: str) -> dict[str, str]:
    library_path = os.pathsep.join(p for p in (str(llama_server.parent), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    return {**os.environ, **_QUIET_ABORT, "LD_LIBRARY_PATH": library_path, RPC_LIST_ENV: rpc}


def _list_devices(llama_server: Path, rpc: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(llama_server), "--list-devices", "--offline"],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=_llama_server_env(llama_server, rpc),
    )


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no output")


def check_rpc_support(llama_server: Path, ollama_version_text: str) -> None:
    """Raise unless ``llama_server`` was built with llama.cpp's RPC backend."""
    try:
        result = _list_devices(llama_server, _UNPARSABLE_ENDPOINT, timeout=LIST_DEVICES_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolNotFoundError(f"cannot run {llama_server} ({exc})", "reinstall Ollama") from exc
    output = result.stdout + result.stderr
    if any(text in output for text in _RPC_MISSING):
        raise ToolNotFoundError(
            f"Ollama {ollama_version_text}'s llama-server ({llama_server}) was built without "
            "llama.cpp's RPC backend",
            f"replace it with a llama-server built with -DGGML_RPC=ON from the llama.cpp release "
            f"that Ollama {ollama_version_text} pins (scripts/toolchain.sh builds one), and use "
            "that build's rpc-server on the workers",
        )
    if not any(text in output for text in _RPC_PRESENT):
        raise ToolNotFoundError(
            f"cannot tell whether {llama_server} supports RPC: it exited {result.returncode}: "
            f"{_last_line(output)}",
            "check that this Ollama's llama-server runs",
        )


def _probe_error(endpoint: Endpoint, exc: BaseException) -> WorkerError:
    where = f"worker {endpoint}"
    start = (
        f"start `ollamads worker --port {endpoint.port}` there (with --host and --allow-remote "
        "on another machine), or fix the address"
    )
    if isinstance(exc, socket.gaierror):
        return WorkerError(f"cannot resolve the host of {where}", "check the name, or give its IP address")
    if isinstance(exc, ConnectionRefusedError):
        return WorkerError(f"{where} refused the connection: nothing listens on port {endpoint.port}", start)
    if isinstance(exc, NoReplyError):
        return WorkerError(
            f"{where} accepted the connection but did not answer within {PROBE_TIMEOUT_S:.0f}s: "
            "another head node is probably using it (rpc-server serves one client at a time)",
            "stop the other head's server, or start another worker for this one",
        )
    if isinstance(exc, TimeoutError):
        return WorkerError(
            f"{where} did not answer within {PROBE_TIMEOUT_S:.0f}s",
            f"check that the machine is up and that no firewall drops port {endpoint.port}",
        )
    if isinstance(exc, ProtocolError):
        return WorkerError(
            f"{where} broke off the RPC hello ({exc}): it is not a llama.cpp rpc-server of a "
            "protocol this llama-server speaks",
            "run the worker with the rpc-server of the same llama.cpp build as the head's llama-server",
        )
    reason = getattr(exc, "strerror", None) or str(exc)
    return WorkerError(f"{where} is unreachable ({reason})", start)


def probe_worker(endpoint: Endpoint, timeout: float = PROBE_TIMEOUT_S) -> WorkerProbe:
    """The worker's hello and memory, or a :class:`WorkerError` saying what to do."""
    try:
        return probe(endpoint.host, endpoint.port, timeout)
    except (OSError, ProtocolError) as exc:
        raise _probe_error(endpoint, exc) from exc


@dataclass(frozen=True)
class ListedDevice:
    """One device as ``llama-server --list-devices`` prints it (whole MiB)."""

    name: str
    description: str
    total_mib: int
    free_mib: int


@dataclass(frozen=True)
class WorkerReport:
    endpoint: Endpoint
    version: str
    devices: tuple[ListedDevice, ...]

    def describe(self) -> str:
        memory = ", ".join(f"{d.name} {d.free_mib} MiB free of {d.total_mib} MiB" for d in self.devices)
        return f"worker {self.endpoint}: RPC {self.version}, {memory or 'no devices'}"


@dataclass(frozen=True)
class HeadPlan:
    """What ``ollamads serve --workers`` starts Ollama with, after the checks passed."""

    ollama_version: str
    llama_server: Path
    workers: tuple[WorkerReport, ...]

    @property
    def environment(self) -> dict[str, str]:
        return {RPC_LIST_ENV: rpc_list(w.endpoint for w in self.workers)}


def listed_devices(stdout: str) -> list[ListedDevice]:
    devices = []
    for line in stdout.splitlines():
        match = _DEVICE_LINE.match(line)
        if match:
            devices.append(ListedDevice(match[1], match[2], int(match[3]), int(match[4])))
    return devices


def _list_devices_error(
    output: str, endpoints: Sequence[Endpoint], probes: dict[Endpoint, WorkerProbe], llama_server: Path
) -> WorkerError:
    by_text = {str(e): e for e in endpoints}
    handshake = _HANDSHAKE_FAILED.search(output)
    if handshake and handshake[1] in by_text:
        # llama.cpp logs the worker's version on a log thread that the abort may cut short;
        # the probe a moment ago read it.
        endpoint = by_text[handshake[1]]
        mismatch = _VERSION_MISMATCH.search(output)
        version = mismatch[1] if mismatch else probes[endpoint].version_text
        return WorkerError(
            f"worker {endpoint} speaks RPC protocol {version}, which this head's llama-server does not accept",
            f"run the worker with the rpc-server built with {llama_server} (the same llama.cpp tree)",
        )
    refused = _CONNECT_FAILED.search(output)
    if refused and refused[1] in by_text:
        return WorkerError(
            f"llama-server could not connect to worker {refused[1]}, which answered a moment ago",
            "check that the worker is still running and that no other head is using it",
        )
    return WorkerError(f"llama-server did not accept the workers: {_last_line(output)}", "check each worker")


def check_workers(llama_server: Path, endpoints: Sequence[Endpoint]) -> tuple[WorkerReport, ...]:
    """Probe each worker, then let llama-server itself connect to all of them."""
    probes = {endpoint: probe_worker(endpoint) for endpoint in endpoints}
    try:
        result = _list_devices(llama_server, rpc_list(endpoints), timeout=LIST_DEVICES_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise WorkerError(
            f"llama-server did not finish listing the workers within {LIST_DEVICES_TIMEOUT_S:.0f}s",
            "check that no other head node is using them",
        ) from exc
    if result.returncode != 0:
        raise _list_devices_error(result.stdout + result.stderr, endpoints, probes, llama_server)
    devices = listed_devices(result.stdout)
    reports = []
    for endpoint in endpoints:
        mine = tuple(d for d in devices if d.description == str(endpoint))
        reports.append(WorkerReport(endpoint, probes[endpoint].version_text, mine))
    return tuple(reports)


_RUNNER_FAILURE = re.compile(
    r"Remote RPC server crashed or returned malformed response"
    r"|Failed to connect to (?P<refused>\S+)"
    r"|RPC handshake failed for (?P<handshake>\S+)"
)
_NEXT_REQUEST = "Ollama loads the model again at the next request"


class WorkerWatch:
    """Follows the Ollama server's log and turns llama-server's RPC failures (it aborts; Ollama
    answers the request with an error and drops the runner) into errors naming the worker."""

    def __init__(self, log_path: Path, endpoints: Sequence[Endpoint]) -> None:
        self.log_path = log_path
        self.endpoints = tuple(endpoints)
        self.offset = log_path.stat().st_size if log_path.exists() else 0

    def _new_text(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except OSError:
            return ""
        complete = data.rfind(b"\n") + 1  # leave a half-written line for the next poll
        self.offset += complete
        return data[:complete].decode(errors="replace")

    def poll(self) -> list[WorkerError]:
        errors: list[WorkerError] = []
        known = {str(e) for e in self.endpoints}
        for match in _RUNNER_FAILURE.finditer(self._new_text()):
            address = match["refused"] or match["handshake"]
            if address and address not in known:
                continue  # not one of ours (a line about something else)
            if address:
                error = WorkerError(
                    f"llama-server could not reach worker {address}, so the model did not load",
                    f"start `ollamads worker` there again; {_NEXT_REQUEST}",
                )
            else:
                error = self._lost_worker()
            if all(str(error) != str(seen) for seen in errors):
                errors.append(error)
        return errors

    def _lost_worker(self) -> WorkerError:
        for endpoint in self.endpoints:
            try:
                probe(endpoint.host, endpoint.port, timeout=2.0)
            except NoReplyError:
                continue  # busy: a new runner is already using it, so it is alive
            except (OSError, ProtocolError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                return WorkerError(
                    f"worker {endpoint} stopped answering mid-request ({reason}); the model was unloaded",
                    f"restart `ollamads worker` there; {_NEXT_REQUEST}",
                )
        return WorkerError(
            "llama-server lost a worker mid-request (Remote RPC server crashed or returned "
            "malformed response); the model was unloaded",
            f"check the workers' logs; {_NEXT_REQUEST}",
        )


def prepare_head(ollama_binary: str, endpoints: Sequence[Endpoint]) -> HeadPlan:
    """Every check ``ollamads serve --workers`` makes before it starts anything."""
    version = ollama_version(ollama_binary)
    if parse_version(version) < MIN_RPC_OLLAMA:
        raise ServerError(
            f"Ollama {version} cannot use RPC workers: up to v0.24 llama.cpp is built into the "
            "server, without RPC",
            f"use Ollama v{version_text(MIN_RPC_OLLAMA)} or newer with an RPC-enabled llama-server (--ollama PATH)",
        )
    llama_server = llama_server_of(ollama_binary)
    if llama_server is None:
        raise ToolNotFoundError(
            f"Ollama {version} at {ollama_binary} has no llama-server in its lib/ollama folder",
            "reinstall Ollama, or pass an installed one with --ollama",
        )
    check_rpc_support(llama_server, version)
    return HeadPlan(version, llama_server, check_workers(llama_server, endpoints))


__all__ = [
    "MIN_RPC_OLLAMA",
    "HeadPlan",
    "ListedDevice",
    "WorkerReport",
    "WorkerWatch",
    "check_rpc_support",
    "check_workers",
    "llama_server_of",
    "prepare_head",
    "probe_worker",
]
