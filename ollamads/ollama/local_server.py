"""The ``ollama serve`` process behind a local URL, however it was started.

A server started by a systemd unit or in another shell has its own ``OLLAMA_MODELS``, which the
shell running ollamads may not export. Linux tells which process listens on a port
(``/proc/net/tcp*`` gives the socket's inode, ``/proc/PID/fd`` the process holding it), and
that process's environment, user and working directory say where its store is. Reading another
user's ``environ`` or ``fd`` needs root; without it the user and home still come from
``/proc/PID/status``, which anyone may read.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
_TCP_LISTEN = "0A"
#: Addresses a server reachable on loopback may listen on (IPv4 and IPv6, as /proc writes them).
_LOOPBACK_OR_ANY = {
    "0100007F", "00000000",
    "00000000000000000000000001000000", "00000000000000000000000000000000",
    "0000000000000000FFFF00000100007F",
}


@dataclass(frozen=True)
class ServerProcess:
    """A local process serving Ollama: who runs it and, where readable, its environment."""

    pid: int
    uid: int
    #: None when this user may not read it (another user's process, not root).
    environ: dict[str, str] | None
    cwd: Path | None

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    @property
    def home(self) -> Path | None:
        if self.environ and self.environ.get("HOME"):
            return Path(self.environ["HOME"])
        try:
            return Path(pwd.getpwuid(self.uid).pw_dir)
        except KeyError:
            return None

    def models_dir(self) -> Path | None:
        """Where this server keeps models: its OLLAMA_MODELS, else ``~/.ollama/models`` of its
        user (for the Linux service that is ``/usr/share/ollama/.ollama/models``)."""
        explicit = (self.environ or {}).get("OLLAMA_MODELS")
        if explicit:
            path = Path(explicit)
            if explicit.startswith("~") and self.home is not None:
                path = self.home / explicit.removeprefix("~").lstrip("/")
            if not path.is_absolute() and self.cwd is not None:
                path = self.cwd / path
            return path
        # Unset, or not readable (another user's process): its home's store; a store that is
        # not the server's is never used, because the server must see a probe blob in it.
        return self.home / ".ollama" / "models" if self.home is not None else None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and address.upper() in _LOOPBACK_OR_ANY:
                inodes.add(fields[9])
    return inodes


def _holder_of(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _ollama_serve_pids() -> list[int]:
    """Every ``ollama serve`` on this machine (command lines are readable by anyone)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 2 and Path(argv[0].decode(errors="replace")).name == "ollama" and argv[1] == b"serve":
            found.append(int(entry.name))
    return found


def _describe(pid: int) -> ServerProcess | None:
    entry = PROC / str(pid)
    try:
        uid = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                   if line.startswith("Uid:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    try:
        raw = (entry / "environ").read_bytes().split(b"\0")
        environ: dict[str, str] | None = dict(
            item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    except OSError:
        environ = None
    try:
        cwd: Path | None = Path(os.readlink(entry / "cwd"))
    except OSError:
        cwd = None
    return ServerProcess(pid, uid, environ, cwd)


def server_process(url: str) -> ServerProcess | None:
    """The process serving ``url`` (a loopback URL) on this machine, or None when it cannot be
    told: no /proc, a port no process here listens on, or several candidates and no way to
    choose among them."""
    if not PROC.is_dir():
        return None
    port = urlsplit(url).port
    if port is None:
        return None
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    pid = _holder_of(inodes)
    if pid is None:
        # Another user's process: its descriptors are closed to us, its command line is not.
        candidates = _ollama_serve_pids()
        pid = candidates[0] if len(candidates) == 1 else None
    return _describe(pid) if pid is not None else None


__all__ = ["ServerProcess", "server_process"]
