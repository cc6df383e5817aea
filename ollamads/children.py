"""Long-running child servers (``ollama serve``, Open WebUI, rpc-server) that must never outlive
ollamads, and :class:`ChildProcess`, the one lifecycle they share: start with the output in a log,
wait until it answers, forward signals while it runs, stop it, quote its log in errors.

A child started in its own session does not get the terminal's Ctrl-C, and a SIGTERM or SIGHUP
to ollamads kills the Python process without running any ``finally``: the child would be left
running, re-parented to PID 1. So a foreground command waits with :func:`wait_forwarding_signals`
(SIGINT, SIGTERM and SIGHUP are passed on to the child, which then shuts down in its own way),
and :func:`parent_death_preexec` has Linux send the child SIGTERM if ollamads itself dies without
a chance to forward anything (SIGKILL, a crash).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

from ollamads.errors import OllamadsError
from ollamads.fileio import libc

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this thread's process dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``); None elsewhere. The signal follows the thread that
    forks, so use it from the thread that lives as long as the child should."""
    if not sys.platform.startswith("linux"):
        return None
    c_library = libc()
    if c_library is None:
        return None

    def preexec() -> None:
        c_library.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


def wait_forwarding_signals(process: subprocess.Popen[bytes]) -> int | None:
    """Wait until ``process`` exits, passing SIGINT, SIGTERM and SIGHUP on to it meanwhile.

    Returns the first such signal that arrived (the caller exits 128 + it), or None when the
    child ended by itself. Only the main thread can take signals; elsewhere this just waits.
    """
    if threading.current_thread() is not threading.main_thread():
        process.wait()
        return None
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None


def stop_child(process: subprocess.Popen[Any] | None, timeout: float) -> None:
    """SIGTERM, up to ``timeout`` seconds for the child to shut down in its own way, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a child's log ("" when there is none yet)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ChildProcess:
    """One child server, started in its own session (the terminal's Ctrl-C reaches ollamads,
    which stops it in order) with its output appended to ``log_path``.

    ``name`` is how messages call it (``"`ollama serve`"``); ``stop_timeout`` how long it gets to
    shut down after SIGTERM; ``die_with_parent``: Linux sends it SIGTERM if this process dies
    without stopping it (start it from the thread that lives as long as it should).
    """

    def __init__(self, name: str, log_path: Path, *, stop_timeout: float, die_with_parent: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        #: With ``follow=True``: called with each line of output, from the reader thread.
        self.on_line: Callable[[str], None] | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._reader: threading.Thread | None = None

    def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        follow: bool = False,
        restore_signals: bool = True,
    ) -> None:
        """Start it. ``follow``: read its output here (into the log, :attr:`on_line` and the
        tail) rather than have it write the log itself; ``restore_signals=False`` keeps the
        signals this process ignores (SIGPIPE) ignored in the child."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(command), env=dict(env), cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if follow else log, stderr=subprocess.STDOUT,
                start_new_session=True, restore_signals=restore_signals,
                preexec_fn=parent_death_preexec() if self.die_with_parent else None,
            )
        if follow:
            assert self.process.stdout is not None
            self._reader = threading.Thread(target=self._follow, args=(self.process.stdout,),
                                            name=f"{self.name}-output", daemon=True)
            self._reader.start()

    def _follow(self, stream: IO[bytes]) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                self._tail.append(line)
                if self.on_line:
                    self.on_line(line)

    def wait_until_ready(
        self,
        ready: Callable[[], bool],
        *,
        timeout: float,
        interval: float,
        where: str,
        error: type[OllamadsError] = OllamadsError,
        exited: Callable[[int], OllamadsError] | None = None,
    ) -> None:
        """Poll ``ready()`` until it is true. If the child exits first (``exited(code)``, by
        default its last line of output) or ``timeout`` passes, it is stopped and the error
        raised; so is whatever ``ready()`` raises."""
        process = self._started()
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = process.poll()
                if code is not None:
                    raise exited(code) if exited else error(
                        f"{self.name} exited with code {code}: {self.last_line()}", f"see its log {self.log_path}")
                if ready():
                    return
                if time.monotonic() > deadline:
                    raise error(f"{self.name} did not answer at {where} within {timeout:.0f}s",
                                f"see its log {self.log_path}")
                time.sleep(interval)
        except BaseException:
            self.stop()
            raise

    def wait(self) -> int | None:
        """Run until the child exits, passing SIGINT/SIGTERM/SIGHUP on to it; the signal that
        stopped it, if one did."""
        return wait_forwarding_signals(self._started())

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        stop_child(self.process, timeout=self.stop_timeout)
        if self._reader is not None:
            self._reader.join(timeout=2)

    def tail(self, lines: int = 40) -> list[str]:
        """Its last lines of output: the ones read here (``follow``), else the log's."""
        if self._reader is not None:
            self._reader.join(timeout=0 if self.poll() is None else 2)
            return list(self._tail)[-lines:]
        return log_tail(self.log_path, lines).splitlines()

    def last_line(self) -> str:
        return next((line for line in reversed(self.tail()) if line.strip()), "no output")

    def _started(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, f"start() {self.name} first"
        return self.process


class ChildService:
    """What a server ollamads runs as a :class:`ChildProcess` offers (``ollama serve``, Open
    WebUI, rpc-server): ``start()`` (each its own), then wait, stop, its log, and ``with``."""

    child: ChildProcess

    def start(self) -> object:
        raise NotImplementedError

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.child.process

    def wait(self) -> int | None:
        """Run until the child exits, passing SIGINT/SIGTERM/SIGHUP on to it; the signal that
        stopped it, if one did."""
        return self.child.wait()

    def poll(self) -> int | None:
        return self.child.poll()

    def stop(self) -> None:
        self.child.stop()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.child.tail(lines))

    def __enter__(self: _Service) -> _Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_Service = TypeVar("_Service", bound=ChildService)


__all__ = [
    "FORWARDED_SIGNALS",
    "ChildProcess",
    "ChildService",
    "log_tail",
    "parent_death_preexec",
    "stop_child",
    "wait_forwarding_signals",
]
