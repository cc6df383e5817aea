"""ChildProcess, the lifecycle `ollama serve`, Open WebUI and rpc-server share, on a Python child:
its output lands in the log (written by the child, or read here with ``follow``), a child that
exits or never answers while starting is one error that quotes it, and nothing is left running."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ollamads.children import ChildProcess
from ollamads.errors import OllamadsError, WorkerError

PRINT_AND_EXIT = "import sys; print('starting'); print('port 1 in use', flush=True); sys.exit(3)"
SLEEP = "import time; print('up', flush=True); time.sleep(60)"


@pytest.mark.parametrize("follow", [False, True])
def test_a_child_that_exits_while_starting_is_one_error_quoting_its_last_line(tmp_path: Path, follow: bool) -> None:
    child = ChildProcess("toy-server", tmp_path / "logs" / "toy.log", stop_timeout=5)
    child.start([sys.executable, "-c", PRINT_AND_EXIT], env=os.environ, follow=follow)
    with pytest.raises(WorkerError) as caught:
        child.wait_until_ready(lambda: False, timeout=30, interval=0.05, where="here", error=WorkerError)
    assert caught.value.message == "toy-server exited with code 3: port 1 in use"
    assert caught.value.hint == f"see its log {tmp_path / 'logs' / 'toy.log'}"
    assert (tmp_path / "logs" / "toy.log").read_text().splitlines() == ["starting", "port 1 in use"]
    assert child.tail(1) == ["port 1 in use"]


def test_a_child_that_never_answers_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    child = ChildProcess("toy-server", tmp_path / "toy.log", stop_timeout=5)
    child.start([sys.executable, "-c", SLEEP], env=os.environ)
    started = time.monotonic()
    with pytest.raises(OllamadsError) as caught:
        child.wait_until_ready(lambda: False, timeout=1, interval=0.05, where="127.0.0.1:9")
    assert caught.value.message == "toy-server did not answer at 127.0.0.1:9 within 1s"
    assert time.monotonic() - started < 10
    assert child.poll() is not None  # stopped, not left running


def test_follow_passes_each_line_on_and_stop_ends_the_child(tmp_path: Path) -> None:
    seen: list[str] = []
    child = ChildProcess("toy-server", tmp_path / "toy.log", stop_timeout=5)
    child.on_line = seen.append
    child.start([sys.executable, "-c", SLEEP], env=os.environ, follow=True)
    child.wait_until_ready(lambda: bool(seen), timeout=30, interval=0.05, where="here")
    assert child.poll() is None
    child.stop()
    assert child.poll() == -15  # SIGTERM was enough
    assert seen == ["up"] and (tmp_path / "toy.log").read_text() == "up\n"


def test_an_error_raised_by_the_readiness_check_stops_the_child(tmp_path: Path) -> None:
    child = ChildProcess("toy-server", tmp_path / "toy.log", stop_timeout=5)
    child.start([sys.executable, "-c", SLEEP], env=os.environ)

    def refuse() -> bool:
        raise WorkerError("it speaks another protocol", "check the binary")

    with pytest.raises(WorkerError, match="another protocol"):
        child.wait_until_ready(refuse, timeout=30, interval=0.05, where="here")
    assert child.poll() is not None
