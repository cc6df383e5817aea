"""A memory cap for an rpc-server, which has none of its own: a relay that speaks the protocol.

llama.cpp's ``rpc-server`` (this tree) offers no memory limit; it reports its device's real
memory (for the CPU device: all of the machine's RAM) and allocates whatever it is asked for.
``ollamads worker --mem`` therefore puts this relay in front of it, on the address the head
connects to, with the rpc-server itself on a private loopback port. The relay passes every
message through unchanged except:

* GET_DEVICE_MEMORY: ``total`` becomes at most the cap and ``free`` at most the cap minus what
  this worker has allocated, so llama-server (and Ollama's scheduler, which asks llama-server)
  plans with the capped figure;
* ALLOC_BUFFER: a request that would take the device past the cap is answered "failed"
  (remote pointer 0, what rpc-server answers when an allocation fails) without reaching it;
* GET_MAX_SIZE: at most the cap;
* HELLO: the transport capabilities are zeroed, so the connection stays plain TCP through the
  relay instead of upgrading to RDMA around it.

Each direction's bytes are counted, which is how the README's per-token traffic was measured.
The client sends the next request only after reading the reply to an answered command, and
one-way commands get no reply, so one loop per connection (request, then its reply if any)
keeps both directions framed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ollamads.rpc.protocol import (
    ALLOC_REPLY,
    ALLOC_REQUEST,
    ANSWERED,
    CONN_CAPS_SIZE,
    DEVICE_INDEX,
    DEVICE_MEMORY_REPLY,
    FREE_REQUEST,
    HELLO_REPLY,
    MAX_SIZE_REPLY,
    REPLY_HEADER,
    REQUEST_HEADER,
    Command,
    ProtocolError,
    abort,
    recv_exact,
)

CHUNK = 4 << 20


class MemoryCap:
    """Bytes allocated per device of one worker, against one cap per device."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._used: dict[int, int] = {}
        self._lock = threading.Lock()

    def used(self, device: int) -> int:
        with self._lock:
            return self._used.get(device, 0)

    def reserve(self, device: int, size: int) -> bool:
        with self._lock:
            used = self._used.get(device, 0)
            if used + size > self.cap:
                return False
            self._used[device] = used + size
            return True

    def release(self, device: int, size: int) -> None:
        self.settle(device, size, 0)

    def settle(self, device: int, reserved: int, granted: int) -> None:
        """Replace a reservation by what the worker granted (a little more: alignment)."""
        with self._lock:
            self._used[device] = max(self._used.get(device, 0) - reserved + granted, 0)

    def reported(self, device: int, free: int, total: int) -> tuple[int, int]:
        """What the head is told: ``(free, total)`` within the cap."""
        return min(free, max(self.cap - self.used(device), 0)), min(total, self.cap)


@dataclass
class Traffic:
    """Bytes through the relay since it started, per direction, and both ways per command."""

    from_head: int = 0
    to_head: int = 0
    by_command: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> Traffic:
        return Traffic(self.from_head, self.to_head, dict(self.by_command))


def _pump(source: socket.socket, sink: socket.socket, size: int, buffer: memoryview) -> None:
    while size:
        n = source.recv_into(buffer, min(size, len(buffer)))
        if n == 0:
            raise ProtocolError("the connection closed in the middle of a message")
        sink.sendall(buffer[:n])
        size -= n


class _Session:
    """One head connection and its own connection to the rpc-server behind the relay."""

    def __init__(self, relay: CappingRelay, client: socket.socket) -> None:
        self.relay = relay
        self.client = client
        self.backend: socket.socket | None = None
        self.buffers: dict[int, tuple[int, int]] = {}  # remote buffer -> (device, bytes)
        self.buffer = memoryview(bytearray(CHUNK))
        self.command = ""

    def run(self) -> None:
        clean = False
        try:
            self.backend = socket.create_connection(self.relay.backend)
            for connected in (self.client, self.backend):
                connected.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while self._one_message():
                pass
            clean = True
        except (OSError, ProtocolError):
            pass  # either side went away: close the other, as rpc-server itself would
        finally:
            for device, size in self.buffers.values():
                self.relay.cap.release(device, size)
            self.buffers.clear()
            # Between messages nothing is queued and a plain close is safe; in the middle of
            # one, a reset keeps the other side from answering a request nobody reads.
            for sock in (self.client, self.backend):
                if sock is not None:
                    sock.close() if clean else abort(sock)

    def _one_message(self) -> bool:
        try:
            header = recv_exact(self.client, REQUEST_HEADER.size)
        except ProtocolError:
            return False  # the head closed between messages
        command, size = REQUEST_HEADER.unpack(header)
        try:
            cmd = Command(command)
        except ValueError:
            return False  # a command this relay cannot frame: drop it like rpc-server does
        self.command = cmd.name
        self._count(from_head=len(header) + size)
        handler = _HANDLERS.get(cmd)
        if handler is not None and size == _REQUEST_SIZES[cmd]:
            handler(self, header, recv_exact(self.client, size))
            return True
        assert self.backend is not None
        self.backend.sendall(header)
        _pump(self.client, self.backend, size, self.buffer)
        if cmd in ANSWERED:
            self._pass_reply()
        return True

    def _count(self, *, from_head: int = 0, to_head: int = 0) -> None:
        traffic = self.relay.traffic
        with self.relay.lock:
            traffic.from_head += from_head
            traffic.to_head += to_head
            traffic.by_command[self.command] = traffic.by_command.get(self.command, 0) + from_head + to_head

    def _forward(self, header: bytes, payload: bytes, reply_size: int | None) -> bytes | None:
        assert self.backend is not None
        self.backend.sendall(header + payload)
        if reply_size is None:
            return None
        (size,) = REPLY_HEADER.unpack(recv_exact(self.backend, REPLY_HEADER.size))
        if size != reply_size:
            raise ProtocolError(f"unexpected reply size {size}")
        return recv_exact(self.backend, size)

    def _reply(self, payload: bytes) -> None:
        self.client.sendall(REPLY_HEADER.pack(len(payload)) + payload)
        self._count(to_head=REPLY_HEADER.size + len(payload))

    def _pass_reply(self) -> None:
        assert self.backend is not None
        header = recv_exact(self.backend, REPLY_HEADER.size)
        (size,) = REPLY_HEADER.unpack(header)
        self.client.sendall(header)
        _pump(self.backend, self.client, size, self.buffer)
        self._count(to_head=len(header) + size)

    # --- the messages the relay reads -------------------------------------------------------

    def hello(self, header: bytes, payload: bytes) -> None:
        reply = self._forward(header, bytes(CONN_CAPS_SIZE), HELLO_REPLY.size)
        assert reply is not None
        major, minor, patch, _caps = HELLO_REPLY.unpack(reply)
        self._reply(HELLO_REPLY.pack(major, minor, patch, bytes(CONN_CAPS_SIZE)))

    def alloc_buffer(self, header: bytes, payload: bytes) -> None:
        device, size = ALLOC_REQUEST.unpack(payload)
        cap = self.relay.cap
        if not cap.reserve(device, size):
            self.relay.refused += 1
            self._reply(ALLOC_REPLY.pack(0, 0))
            return
        reply = self._forward(header, payload, ALLOC_REPLY.size)
        assert reply is not None
        remote, granted = ALLOC_REPLY.unpack(reply)
        cap.settle(device, size, granted if remote else 0)
        if remote:
            self.buffers[remote] = (device, granted)
        self._reply(reply)

    def free_buffer(self, header: bytes, payload: bytes) -> None:
        (remote,) = FREE_REQUEST.unpack(payload)
        self._forward(header, payload, None)
        device, size = self.buffers.pop(remote, (0, 0))
        self.relay.cap.release(device, size)

    def device_memory(self, header: bytes, payload: bytes) -> None:
        (device,) = DEVICE_INDEX.unpack(payload)
        reply = self._forward(header, payload, DEVICE_MEMORY_REPLY.size)
        assert reply is not None
        free, total = DEVICE_MEMORY_REPLY.unpack(reply)
        self._reply(DEVICE_MEMORY_REPLY.pack(*self.relay.cap.reported(device, free, total)))

    def max_size(self, header: bytes, payload: bytes) -> None:
        reply = self._forward(header, payload, MAX_SIZE_REPLY.size)
        assert reply is not None
        (largest,) = MAX_SIZE_REPLY.unpack(reply)
        self._reply(MAX_SIZE_REPLY.pack(min(largest, self.relay.cap.cap)))


_HANDLERS: dict[Command, Callable[[_Session, bytes, bytes], None]] = {
    Command.HELLO: _Session.hello,
    Command.ALLOC_BUFFER: _Session.alloc_buffer,
    Command.FREE_BUFFER: _Session.free_buffer,
    Command.GET_DEVICE_MEMORY: _Session.device_memory,
    Command.GET_MAX_SIZE: _Session.max_size,
}
_REQUEST_SIZES = {
    Command.HELLO: CONN_CAPS_SIZE,
    Command.ALLOC_BUFFER: ALLOC_REQUEST.size,
    Command.FREE_BUFFER: FREE_REQUEST.size,
    Command.GET_DEVICE_MEMORY: DEVICE_INDEX.size,
    Command.GET_MAX_SIZE: DEVICE_INDEX.size,
}


class CappingRelay:
    """Listens on ``listen`` and relays each connection to the rpc-server at ``backend``."""

    def __init__(self, listen: tuple[str, int], backend: tuple[str, int], cap: int) -> None:
        self.listen = listen
        self.backend = backend
        self.cap = MemoryCap(cap)
        self.traffic = Traffic()
        self.refused = 0
        self.lock = threading.Lock()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def traffic_now(self) -> Traffic:
        with self.lock:
            return self.traffic.snapshot()

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(self.listen)
            server.listen(8)
        except OSError:
            server.close()
            raise
        self._server = server
        self._thread = threading.Thread(target=self._accept_loop, name="rpc-relay", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed by stop()
            session = _Session(self, client)
            threading.Thread(target=session.run, name="rpc-relay-session", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None


__all__ = ["CappingRelay", "MemoryCap", "Traffic"]
