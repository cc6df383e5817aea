"""RPC workers for the multi-host tests: real ``ollamads worker`` processes, the model they
split, and a stand-in worker of another protocol version.

The model is the tiny DeepSeek V3 architecture, made wide and deep enough (8 layers, F16,
3.2 MB) that a worker capped below its size exists at all: Ollama lists device memory in whole
MiB and skips a device of 0 MiB, so a cap must be at least 1 MiB. Its K head is 96 wide so
``ollamads serve``'s 8-bit KV cache (blocks of 32) applies.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ollamads.gguf.format import GGMLQuantizationType
from ollamads.ollama.serve import free_port
from ollamads.rpc.protocol import CONN_CAPS_SIZE, HELLO_REPLY, REPLY_HEADER, REQUEST_HEADER, Command
from ollamads.tiny import TinyModelSpec, write_tiny_model

SPLIT_MODEL_SPEC = TinyModelSpec(
    "v3.1", n_layer=8, n_embd=128, n_ff=256, q_lora_rank=64, kv_lora_rank=64,
    qk_rope_head_dim=32, n_ff_exp=64, weight_type=GGMLQuantizationType.F16,
)
#: Each worker's cap: below the model's 3.2 MB, above half of it plus a layer's KV cache and
#: compute buffers at these parameters.
WORKER_CAP = "2.5MiB"
#: num_gpu 99: the caps are MiB, far below the 1 GiB llama-server's --fit keeps free on each
#: device, so without it --fit would leave every layer on the head. num_ctx/num_batch keep the
#: KV cache and compute buffers small enough for the caps.
SPLIT_PARAMETERS = ("-p", "num_gpu=99", "-p", "num_ctx=256", "-p", "num_batch=32", "-p", "num_predict=12")


def write_split_model(path: Path) -> Path:
    return write_tiny_model(path, spec=SPLIT_MODEL_SPEC)


def ollamads_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ollamads", *args]


def signals_as_in_a_terminal() -> None:
    """``preexec_fn`` for a command whose signal handling a test checks: SIGINT, SIGTERM and
    SIGHUP at their defaults, as in a terminal, whatever the test run inherited (a background
    job of a non-interactive shell ignores SIGINT, ``nohup`` ignores SIGHUP, and an ignored
    signal stays ignored across exec)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class Running:
    """A running ``ollamads`` command; ``lines`` is its stderr so far (read in the background)."""

    process: subprocess.Popen[str]
    lines: list[str]

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


@dataclass
class WorkerProcess(Running):
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def running(args: list[str], env: dict[str, str], timeout: float = 90) -> Iterator[Running]:
    """``ollamads ARGS`` until it prints ``ready``; stopped with SIGTERM afterwards."""
    process = subprocess.Popen(
        ollamads_command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, preexec_fn=signals_as_in_a_terminal,
    )
    started = Running(process, [])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stderr.readline()  # type: ignore[union-attr]
            started.lines.append(line)
            if line.strip() == "ready" or not line:
                break
        if started.lines[-1].strip() != "ready":
            raise AssertionError(f"ollamads {args[0]} did not start:\n" + started.text)
        # Keep reading, so a chatty child never blocks on a full pipe.
        threading.Thread(target=lambda: started.lines.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
        yield started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_worker(home: Path, *args: str) -> Iterator[WorkerProcess]:
    """``ollamads worker --port P ARGS`` on a free loopback port."""
    port = free_port()
    with running(["worker", "--port", str(port), *args], {"OLLAMADS_HOME": str(home)}) as started:
        yield WorkerProcess(started.process, started.lines, port)


@contextmanager
def other_version_worker(version: tuple[int, int, int] | None) -> Iterator[int]:
    """A listener that answers the RPC hello as a worker of protocol ``version`` would, or,
    with None, closes the connection after reading it, as a pre-4.0 rpc-server does (it expects
    a hello without payload). A stand-in for an rpc-server from another llama.cpp build, which
    would take a second llama.cpp build to have for real."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                try:
                    header = client.recv(REQUEST_HEADER.size, socket.MSG_WAITALL)
                    command, size = REQUEST_HEADER.unpack(header)
                    client.recv(size, socket.MSG_WAITALL)
                    if command == Command.HELLO and version is not None:
                        reply = HELLO_REPLY.pack(*version, bytes(CONN_CAPS_SIZE))
                        client.sendall(REPLY_HEADER.pack(len(reply)) + reply)
                        client.recv(1)  # wait until the client gives up on us
                except (OSError, struct.error):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)
