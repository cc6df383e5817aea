"""Worker addresses as the head node is given them: ``host:port[,host:port...]``.

llama.cpp splits each address at its first colon and resolves the host with
``gethostbyname`` (ggml-rpc.cpp ``parse_endpoint``), so only IPv4 addresses and host names work,
and the port is mandatory. The list is rebuilt without spaces for ``LLAMA_ARG_RPC``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from ollamads.errors import WorkerError
from ollamads.rpc.protocol import DEFAULT_PORT

#: The environment variable llama-server reads its ``--rpc`` list from (common/arg.cpp).
RPC_LIST_ENV = "LLAMA_ARG_RPC"
#: ggml-rpc.h GGML_RPC_MAX_SERVERS.
MAX_WORKERS = 16


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _fix(example: str) -> str:
    return f"write each worker as host:port, e.g. {example}:{DEFAULT_PORT} (the address `ollamads worker` printed)"


def parse_endpoint(text: str) -> Endpoint:
    item = text.strip()
    host, sep, port_text = item.partition(":")
    if not item or not host:
        raise WorkerError(f"worker address {text!r} has no host", _fix("10.0.0.2"))
    if ":" in port_text or item.startswith("["):
        raise WorkerError(
            f"worker address {item!r} looks like IPv6, which llama.cpp's RPC client cannot use",
            "give the worker's IPv4 address or host name as host:port",
        )
    if not sep:
        raise WorkerError(f"worker address {item!r} has no port", _fix(host))
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise WorkerError(f"worker address {item!r} has an invalid port {port_text!r}", _fix(host))
    return Endpoint(host.lower(), int(port_text))


def parse_workers(values: str | Iterable[str]) -> tuple[Endpoint, ...]:
    """``"a:1,b:2"`` (or several such strings) -> endpoints, each listed once."""
    texts = [values] if isinstance(values, str) else list(values)
    items = [part for text in texts for part in text.split(",")]
    if not any(part.strip() for part in items):
        raise WorkerError("no worker addresses given", _fix("10.0.0.2"))
    endpoints = [parse_endpoint(part) for part in items if part.strip()]
    if len(endpoints) > MAX_WORKERS:
        raise WorkerError(
            f"{len(endpoints)} workers given; llama.cpp connects to at most {MAX_WORKERS}",
            "list fewer workers",
        )
    seen: dict[tuple[str, int], Endpoint] = {}
    for endpoint in endpoints:
        key = (resolve_ipv4(endpoint.host), endpoint.port)
        if key in seen:
            also = "" if seen[key] == endpoint else f" (as {seen[key]} and {endpoint})"
            raise WorkerError(
                f"worker {endpoint} is listed twice{also}",
                "list each worker once: llama.cpp would load two shares of the model onto one machine",
            )
        seen[key] = endpoint
    return tuple(endpoints)


def resolve_ipv4(host: str) -> str:
    """The IPv4 address llama.cpp would connect to; the name itself if it does not resolve
    (the reachability check then says so)."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def rpc_list(endpoints: Iterable[Endpoint]) -> str:
    """The value of ``LLAMA_ARG_RPC`` / ``--rpc``."""
    return ",".join(str(e) for e in endpoints)


__all__ = ["MAX_WORKERS", "RPC_LIST_ENV", "Endpoint", "parse_endpoint", "parse_workers", "resolve_ipv4", "rpc_list"]
