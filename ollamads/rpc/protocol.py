"""llama.cpp's RPC wire protocol (ggml-rpc, protocol 7.x): the facts, and a probe of one worker.

A request is ``u8 command | u64 size | payload``; a reply, for the commands that have one, is
``u64 size | payload``; integers are little-endian. Every connection starts with HELLO. The
worker (``rpc-server``) serves one client at a time and keeps the others waiting in its listen
backlog, so a probe that times out must not leave a request queued behind it: an
``rpc-server`` that later writes a reply to a closed socket dies of SIGPIPE. The probe
therefore aborts with a TCP reset (``SO_LINGER`` 0), which discards anything still queued.

Sources: ggml/include/ggml-rpc.h (versions), ggml/src/ggml-rpc/ggml-rpc.cpp (commands,
message layouts, ``rpc_serve_client``), ggml/src/ggml-rpc/transport.h (caps size).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

#: The protocol the llama.cpp tree pinned in pins.toml speaks (ggml-rpc.h).
PROTOCOL_MAJOR = 7
PROTOCOL_MINOR = 0
#: HELLO carries a fixed block of transport capabilities (RDMA); all zero means plain TCP.
CONN_CAPS_SIZE = 24
#: rpc-server's default port (tools/rpc/rpc-server.cpp).
DEFAULT_PORT = 50052
PROBE_TIMEOUT_S = 5.0


class Command(IntEnum):
    """``enum rpc_cmd``; the values are the bytes on the wire."""

    ALLOC_BUFFER = 0
    GET_ALIGNMENT = 1
    GET_MAX_SIZE = 2
    BUFFER_GET_BASE = 3
    FREE_BUFFER = 4
    BUFFER_CLEAR = 5
    SET_TENSOR = 6
    SET_TENSOR_HASH = 7
    GET_TENSOR = 8
    COPY_TENSOR = 9
    GRAPH_COMPUTE = 10
    GET_DEVICE_MEMORY = 11
    INIT_TENSOR = 12
    GET_ALLOC_SIZE = 13
    HELLO = 14
    DEVICE_COUNT = 15
    GRAPH_RECOMPUTE = 16
    MEMSET_TENSOR = 17


#: The commands rpc-server answers (``send_msg`` in ``rpc_serve_client``); the others are
#: one-way, and the client sends the next request without waiting.
ANSWERED = frozenset({
    Command.ALLOC_BUFFER, Command.GET_ALIGNMENT, Command.GET_MAX_SIZE, Command.BUFFER_GET_BASE,
    Command.SET_TENSOR_HASH, Command.GET_TENSOR, Command.COPY_TENSOR, Command.GET_DEVICE_MEMORY,
    Command.GET_ALLOC_SIZE, Command.HELLO, Command.DEVICE_COUNT,
})

REQUEST_HEADER = struct.Struct("<BQ")  # command, payload size
REPLY_HEADER = struct.Struct("<Q")  # payload size
HELLO_REPLY = struct.Struct(f"<BBBx{CONN_CAPS_SIZE}s")  # major, minor, patch, pad, caps
DEVICE_INDEX = struct.Struct("<I")  # GET_DEVICE_MEMORY, GET_ALIGNMENT, GET_MAX_SIZE requests
DEVICE_COUNT_REPLY = struct.Struct("<I")
DEVICE_MEMORY_REPLY = struct.Struct("<QQ")  # free, total
ALLOC_REQUEST = struct.Struct("<IQ")  # device, size
ALLOC_REPLY = struct.Struct("<QQ")  # remote buffer (0: failed), its size
FREE_REQUEST = struct.Struct("<Q")  # remote buffer
MAX_SIZE_REPLY = struct.Struct("<Q")


def version_text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def compatible(version: tuple[int, int, int]) -> bool:
    """What llama.cpp's client accepts (``negotiate_hello``): same major, minor not newer."""
    return version[0] == PROTOCOL_MAJOR and version[1] <= PROTOCOL_MINOR


class ProtocolError(Exception):
    """The peer does not speak this protocol (closed early, or sent a reply of the wrong size)."""


class NoReplyError(TimeoutError):
    """The worker accepted the connection but did not answer: it is serving another client."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ProtocolError(f"the connection closed after {got} of {size} bytes")
        got += n
    return bytes(buf)


def request(command: Command, payload: bytes = b"") -> bytes:
    return REQUEST_HEADER.pack(command, len(payload)) + payload


def call(sock: socket.socket, command: Command, payload: bytes, reply_size: int) -> bytes:
    """Send one request and read its reply, which must be ``reply_size`` bytes."""
    sock.sendall(request(command, payload))
    (size,) = REPLY_HEADER.unpack(recv_exact(sock, REPLY_HEADER.size))
    if size != reply_size:
        raise ProtocolError(f"a {reply_size}-byte reply to {command.name} came as {size} bytes")
    return recv_exact(sock, size)


def abort(sock: socket.socket) -> None:
    """Close with a reset: nothing we sent stays queued for the worker to answer later."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(frozen=True)
class DeviceMemory:
    free: int
    total: int


@dataclass(frozen=True)
class WorkerProbe:
    """What one worker said: its protocol version and each device's memory in bytes."""

    version: tuple[int, int, int]
    devices: tuple[DeviceMemory, ...]

    @property
    def version_text(self) -> str:
        return version_text(self.version)


def hello(sock: socket.socket) -> tuple[int, int, int]:
    major, minor, patch, _caps = HELLO_REPLY.unpack(
        call(sock, Command.HELLO, bytes(CONN_CAPS_SIZE), HELLO_REPLY.size)
    )
    return major, minor, patch


def query(sock: socket.socket) -> WorkerProbe:
    """HELLO, then DEVICE_COUNT and GET_DEVICE_MEMORY for each device, on a fresh connection."""
    version = hello(sock)
    if not compatible(version):
        return WorkerProbe(version, ())
    (count,) = DEVICE_COUNT_REPLY.unpack(call(sock, Command.DEVICE_COUNT, b"", DEVICE_COUNT_REPLY.size))
    devices = []
    for index in range(count):
        free, total = DEVICE_MEMORY_REPLY.unpack(
            call(sock, Command.GET_DEVICE_MEMORY, DEVICE_INDEX.pack(index), DEVICE_MEMORY_REPLY.size)
        )
        devices.append(DeviceMemory(free, total))
    return WorkerProbe(version, tuple(devices))


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> WorkerProbe:
    """Ask the worker at ``host:port`` its version and memory.

    Raises OSError (refused, unreachable, no connection in time), :class:`NoReplyError`
    (connected, no answer in time: busy with another client) or :class:`ProtocolError` (not an
    rpc-server of a protocol this code reads).
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        answer = query(sock)
    except TimeoutError as exc:
        abort(sock)
        raise NoReplyError(f"no reply from {host}:{port} within {timeout:.0f}s") from exc
    except BaseException:
        abort(sock)
        raise
    sock.close()  # every reply was read: a normal close is safe
    return answer
