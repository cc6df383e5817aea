"""Long-running child servers (``ollama serve``, Open WebUI) that must never outlive ollamads.

A child started in its own session does not get the terminal's Ctrl-C, and a SIGTERM or SIGHUP
to ollamads kills the Python process without running any ``finally``: the child would be left
running, re-parented to PID 1. So a foreground command waits with :func:`wait_forwarding_signals`
(SIGINT, SIGTERM and SIGHUP are passed on to the child, which then shuts down in its own way),
and :func:`parent_death_preexec` has Linux send the child SIGTERM if ollamads itself dies without
a chance to forward anything (SIGKILL, a crash).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this thread's process dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``); None elsewhere. The signal follows the thread that
    forks, so use it from the thread that lives as long as the child should."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

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


__all__ = ["FORWARDED_SIGNALS", "log_tail", "parent_death_preexec", "stop_child", "wait_forwarding_signals"]
