"""More than one machine, on loopback: real ``ollamads worker`` processes (llama.cpp's
rpc-server), a real Ollama v0.32.15 started by ``ollamads serve --workers``, a model bigger
than each worker's cap, generation through Ollama's API and ``ollama run``, and the failures.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from ollamads.ollama.serve import free_port
from ollamads.rpc.protocol import (
    ALLOC_REPLY,
    ALLOC_REQUEST,
    DEVICE_INDEX,
    DEVICE_MEMORY_REPLY,
    FREE_REQUEST,
    PROTOCOL_MAJOR,
    Command,
    call,
    hello,
    probe,
    request,
)
from ollamads.rpc.worker import RpcWorker, worker_settings
from ollamads.units import parse_size
from tests.support.cli import run_cli
from tests.support.servers import ollama_binary
from tests.support.toolchain import executable, llama_cpp_tool
from tests.support.workers import (
    SPLIT_PARAMETERS,
    WORKER_CAP,
    ollamads_command,
    other_version_worker,
    pid_running,
    running,
    running_worker,
    write_split_model,
)

pytestmark = pytest.mark.integration
MIB = 1 << 20
#: ``load_tensors: RPC0[127.0.0.1:50152] model buffer size =     1.80 MiB`` (llama-model.cpp).
MODEL_BUFFER = re.compile(r"RPC\d+\[([\d.]+:\d+)\] model buffer size =\s+([\d.]+) MiB")


@pytest.fixture(autouse=True)
def _rpc_server(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every worker here uses the toolchain's rpc-server, named the way a user would."""
    path = str(executable("OLLAMADS_RPC_SERVER", "llama.cpp's rpc-server"))
    monkeypatch.setenv("OLLAMADS_RPC_SERVER", path)
    return path


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_model(tmp_path_factory.mktemp("split-model") / "split.gguf")


def model_buffers(log: str) -> dict[str, float]:
    return {address: float(mib) for address, mib in MODEL_BUFFER.findall(log)}


def test_model_split_over_two_capped_workers(tmp_path: Path, split_model: Path) -> None:
    """The README's "More than one machine" section, on loopback."""
    home, models, port = tmp_path / "home", tmp_path / "store", free_port()
    cap = parse_size(WORKER_CAP)
    assert split_model.stat().st_size > cap  # no worker could hold the model alone
    ollama = ollama_binary("split")
    env = {"HOME": str(tmp_path), "OLLAMADS_HOME": str(home)}
    with running_worker(home, "--mem", WORKER_CAP) as first, running_worker(home, "--mem", WORKER_CAP) as second:
        assert f"on the head node: ollamads serve --workers {first.address}" in first.text
        serve_args = ["serve", "--models", str(models), "--host", f"127.0.0.1:{port}", "--ollama", ollama,
                      "--workers", f"{first.address},{second.address}"]
        with running(serve_args, env) as serve:
            for worker in (first, second):  # what llama-server sees: the cap, in whole MiB
                assert f"worker {worker.address}: RPC 7.0.0, RPC" in serve.text
                assert f"{cap // MIB} MiB free of {cap // MIB} MiB" in serve.text
            assert f"LLAMA_ARG_RPC={first.address},{second.address}" in serve.text

            registered = subprocess.run(
                [*ollamads_command(), "register", "split:test", str(split_model), "--host", f"127.0.0.1:{port}",
                 *SPLIT_PARAMETERS], capture_output=True, text=True, timeout=120, env={**os.environ, **env},
            )
            assert registered.returncode == 0, registered.stderr
            answer = requests.post(f"http://127.0.0.1:{port}/api/generate",
                                   json={"model": "split:test", "prompt": "hi", "stream": False}, timeout=120)
            assert answer.ok, answer.text
            assert answer.json()["eval_count"] > 0

            buffers = model_buffers((models / "serve.log").read_text(errors="replace"))
            assert set(buffers) == {first.address, second.address}, buffers
            assert all(0 < mib * MIB < cap for mib in buffers.values()), buffers

            client_env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "HOME": str(tmp_path)}
            run = subprocess.run([ollama, "run", "--verbose", "split:test", "hi"], capture_output=True, text=True,
                                 timeout=120, env=client_env, stdin=subprocess.DEVNULL)
            assert run.returncode == 0, run.stderr
            assert "eval count" in run.stderr

            # A worker crashes mid-session: its rpc-server dies with the model loaded on it.
            (rpc_server_pid,) = second.children()
            os.kill(rpc_server_pid, signal.SIGKILL)
            assert second.process.wait(timeout=30) == 1
            assert "rpc-server exited with code -9" in second.text
            failed = requests.post(f"http://127.0.0.1:{port}/api/generate",
                                   json={"model": "split:test", "prompt": "hi again", "stream": False}, timeout=120)
            assert failed.status_code == 500 and "error" in failed.json()
            assert serve.wait_for(f"Error: worker {second.address} stopped answering mid-request"), serve.text
            again = subprocess.run([ollama, "run", "split:test", "hi"], capture_output=True, text=True,
                                   timeout=120, env=client_env, stdin=subprocess.DEVNULL)
            assert again.returncode != 0 and "Error" in again.stderr
            assert serve.wait_for(f"llama-server could not reach worker {second.address}"), serve.text

            (ollama_pid,) = serve.children()
            assert serve.stop(signal.SIGTERM) == 128 + signal.SIGTERM
            assert not pid_running(ollama_pid)
        (rpc_server_pid,) = first.children()
        assert first.stop(signal.SIGINT) == 130
        assert not pid_running(rpc_server_pid)
        assert "relayed" in first.text  # the relay's byte counts, printed on exit


# --- the worker -----------------------------------------------------------------------------


def test_worker_refuses_a_non_loopback_address_without_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "worker", "--host", "0.0.0.0", "--port", str(free_port()))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "refusing to listen on 0.0.0.0" in err and "--allow-remote" in err


def test_worker_on_all_interfaces_warns(tmp_path: Path) -> None:
    with running_worker(tmp_path, "--host", "0.0.0.0", "--allow-remote") as worker:
        assert "warning: listening on 0.0.0.0" in worker.text and "no authentication and no encryption" in worker.text
        assert "trusted network" in worker.text
        advertised = re.search(r"on the head node: ollamads serve --workers (\S+)", worker.text)
        assert advertised and all(a.endswith(f":{worker.port}") for a in advertised[1].split(","))
        assert "127.0.0.1" not in advertised[1] and "0.0.0.0" not in advertised[1]
        assert probe("127.0.0.1", worker.port).version[0] == PROTOCOL_MAJOR


def test_worker_without_rpc_server(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMADS_RPC_SERVER")
    monkeypatch.delenv("OLLAMADS_DEV_TOOLCHAIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run_cli(capsys, "worker", "--port", str(free_port()))
    assert code == 1 and err.count("\n") == 1
    assert "no llama.cpp rpc-server found" in err and "-DGGML_RPC=ON" in err
    code, _, err = run_cli(capsys, "worker", "--rpc-server", str(tmp_path / "nope"))
    assert code == 1 and "does not exist" in err and err.count("\n") == 1


def test_worker_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with running_worker(tmp_path) as worker:
        code, _, err = run_cli(capsys, "worker", "--port", str(worker.port))
    assert code == 1 and "the port is in use" in err and err.count("\n") == 1


def test_probe_reads_version_and_memory_from_a_real_rpc_server(tmp_path: Path, _rpc_server: str) -> None:
    settings = worker_settings(port=free_port())
    with RpcWorker(settings, tmp_path / "worker.log") as worker:
        answer = probe(*worker.local_address)
    assert answer.version == (7, 0, 0)
    (device,) = answer.devices
    # The CPU device reports the machine's RAM, all of it "free" (ggml-cpu.cpp).
    assert device.total == device.free == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_memory_cap_is_what_llama_server_sees_and_is_enforced(tmp_path: Path) -> None:
    settings = worker_settings(port=free_port(), memory_cap="4MiB")
    with RpcWorker(settings, tmp_path / "worker.log") as worker:
        with socket.create_connection(worker.local_address, timeout=10) as sock:
            assert hello(sock)[0] == PROTOCOL_MAJOR

            def memory() -> tuple[int, int]:
                reply = call(sock, Command.GET_DEVICE_MEMORY, DEVICE_INDEX.pack(0), DEVICE_MEMORY_REPLY.size)
                return DEVICE_MEMORY_REPLY.unpack(reply)

            def alloc(size: int) -> tuple[int, int]:
                return ALLOC_REPLY.unpack(call(sock, Command.ALLOC_BUFFER, ALLOC_REQUEST.pack(0, size), ALLOC_REPLY.size))

            assert memory() == (4 * MIB, 4 * MIB)
            assert alloc(5 * MIB) == (0, 0)  # over the cap: "failed", as rpc-server answers
            buffer, granted = alloc(3 * MIB)
            assert buffer and granted >= 3 * MIB
            assert memory() == (4 * MIB - granted, 4 * MIB)
            assert alloc(2 * MIB) == (0, 0)  # 3 + 2 > 4
            sock.sendall(request(Command.FREE_BUFFER, FREE_REQUEST.pack(buffer)))
            assert memory() == (4 * MIB, 4 * MIB)
        assert worker.relay is not None and worker.relay.refused == 2


def test_llama_server_sees_the_cap(tmp_path: Path) -> None:
    llama_server = llama_cpp_tool("llama-server")
    settings = worker_settings(port=free_port(), memory_cap="3GiB")
    with RpcWorker(settings, tmp_path / "worker.log"):
        listed = subprocess.run(
            [str(llama_server), "--list-devices"], capture_output=True, text=True, timeout=60,
            env={**os.environ, "LLAMA_ARG_RPC": f"127.0.0.1:{settings.port}"},
        )
    assert listed.returncode == 0, listed.stderr
    assert f"RPC0: 127.0.0.1:{settings.port} (3072 MiB, 3072 MiB free)" in listed.stdout


def test_worker_survives_a_client_that_hangs_up_before_its_reply(tmp_path: Path) -> None:
    """rpc-server dies of SIGPIPE when it answers a closed connection; the worker keeps it ignored."""
    settings = worker_settings(port=free_port())
    with RpcWorker(settings, tmp_path / "worker.log") as worker:
        with socket.create_connection(worker.local_address, timeout=10) as busy:
            hello(busy)  # the worker now serves this client; the next one waits in the backlog
            with socket.create_connection(worker.local_address, timeout=10) as impatient:
                impatient.sendall(request(Command.HELLO, bytes(24)))
        # The busy client leaves; rpc-server reads the impatient one's hello and answers a
        # closed socket.
        assert probe(*worker.local_address).version[0] == PROTOCOL_MAJOR
        assert worker.poll() is None


def test_rpc_server_dies_with_a_killed_worker(tmp_path: Path) -> None:
    with running_worker(tmp_path) as worker:
        (rpc_server_pid,) = worker.children()
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while pid_running(rpc_server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_running(rpc_server_pid)


# --- the head: bad input --------------------------------------------------------------------


def _serve(capsys: pytest.CaptureFixture[str], tmp_path: Path, workers: str, line: str = "split",
           ollama: str | None = None) -> tuple[int, str]:
    code, out, err = run_cli(capsys, "serve", "--models", str(tmp_path / "store"), "--host", f"127.0.0.1:{free_port()}",
                             "--ollama", ollama or ollama_binary(line), "--workers", workers)
    # Every check runs before anything is created: no store, no server (it would write its log).
    assert not (tmp_path / "store").exists()
    return code, err


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:x", "invalid port"),
        ("[::1]:50052", "IPv6"),
        (" , ", "no worker addresses given"),
    ],
)
def test_bad_worker_addresses(capsys: pytest.CaptureFixture[str], tmp_path: Path, workers: str, expected: str) -> None:
    code, err = _serve(capsys, tmp_path, workers)
    assert code == 1 and expected in err and err.count("\n") == 1 and "host:port" in err


def test_duplicate_worker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = free_port()
    code, err = _serve(capsys, tmp_path, f"127.0.0.1:{port},localhost:{port}")
    assert code == 1 and err.count("\n") == 1
    assert f"worker localhost:{port} is listed twice (as 127.0.0.1:{port} and localhost:{port})" in err


def test_unreachable_worker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = free_port()
    code, err = _serve(capsys, tmp_path, f"127.0.0.1:{port}")
    assert code == 1 and err.count("\n") == 1
    assert f"worker 127.0.0.1:{port} refused the connection" in err and f"ollamads worker --port {port}" in err


def test_worker_busy_with_another_head(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with running_worker(tmp_path / "home") as worker, socket.create_connection(("127.0.0.1", worker.port)) as other:
        hello(other)
        code, err = _serve(capsys, tmp_path, worker.address)
    assert code == 1 and err.count("\n") == 1 and "another head node is probably using it" in err


def test_old_ollama_line_cannot_use_workers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _serve(capsys, tmp_path, "127.0.0.1:50052", line="merged")
    assert code == 1 and err.count("\n") == 1
    assert "Ollama 0.24.0 cannot use RPC workers" in err and "v0.30.0 or newer" in err


def test_llama_server_without_rpc(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An Ollama install whose llama-server lacks the RPC backend (Ollama's own builds). Building
    llama.cpp once more without it is too costly here, so a script stands in for that binary,
    answering what common/arg.cpp makes such a build answer."""
    install = tmp_path / "ollama-install"
    (install / "bin").mkdir(parents=True)
    (install / "lib" / "ollama").mkdir(parents=True)
    shutil.copy2(ollama_binary("split"), install / "bin" / "ollama")
    fake = install / "lib" / "ollama" / "llama-server"
    fake.write_text(
        "#!/bin/sh\n"
        "[ -n \"$LLAMA_ARG_RPC\" ] && { printf 'error while handling environment variable \"LLAMA_ARG_RPC\": "
        "RPC not supported in this build\\n\\n' >&2; exit 1; }\n"
        "echo 'Available devices:'\n"
    )
    fake.chmod(0o755)
    code, err = _serve(capsys, tmp_path, "127.0.0.1:50052", ollama=str(install / "bin" / "ollama"))
    assert code == 1 and err.count("\n") == 1
    assert "was built without llama.cpp's RPC backend" in err and "-DGGML_RPC=ON" in err


@pytest.mark.parametrize(("version", "expected"), [((8, 0, 0), "speaks RPC protocol 8.0.0"), (None, "broke off the RPC hello")])
def test_worker_of_another_llama_cpp_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, version: tuple[int, int, int] | None, expected: str
) -> None:
    """A worker of another protocol (a stand-in: building a second llama.cpp is too costly
    here); with 8.0.0 the refusal is llama-server's own handshake, run before Ollama starts."""
    with other_version_worker(version) as port:
        code, err = _serve(capsys, tmp_path, f"127.0.0.1:{port}")
    assert code == 1 and err.count("\n") == 1
    assert f"worker 127.0.0.1:{port}" in err and expected in err


def test_toolchain_head_and_workers_come_from_one_llama_cpp_tree() -> None:
    """scripts/toolchain.sh copies the RPC-enabled llama-server of its llama.cpp build into the
    v0.32.15 install, next to the ggml-rpc-server of the same build."""
    from ollamads.rpc.head import check_rpc_support, llama_server_of

    head = llama_server_of(ollama_binary("split"))
    assert head is not None
    built = llama_cpp_tool("llama-server")
    assert head.read_bytes() == built.read_bytes()
    assert Path(executable("OLLAMADS_RPC_SERVER", "llama.cpp's rpc-server")).parent == built.parent
    check_rpc_support(head, "0.32.15")  # raises unless the RPC backend is in


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--device", "NOPE"), "rpc-server has no device 'NOPE' — choose from CPU"),
        (("--mem", "lots"), "--mem 'lots' is not a size"),
        (("--host", "no-such-host.invalid"), "not an IPv4 address or a name that resolves to one"),
    ],
)
def test_worker_bad_options(capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str) -> None:
    code, out, err = run_cli(capsys, "worker", "--port", str(free_port()), *args)
    assert code == 1 and out == "" and err.count("\n") == 1 and expected in err
