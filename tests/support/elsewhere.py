"""``ollama serve`` started the way a systemd unit or a user's other shell starts it.

Its own ``OLLAMA_MODELS``, which the process running ollamads does not export, no record of
``ollamads serve``, and optionally another user (the Linux service runs as ``ollama``): what
ollamads knows about its store comes from the server process alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from ollamads.children import log_tail, stop_child
from ollamads.ollama.serve import MODEL_ENVIRONMENT, free_port
from tests.support.toolchain import cannot_run

#: The user a foreign server runs as: nobody (uid 65534), as a service user would.
FOREIGN_UID = 65534
START_TIMEOUT_S = 60.0


@dataclass
class ElsewhereServer:
    url: str
    models_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    uid: int

    def log(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def _foreign_copy(binary: Path, root: Path) -> Path:
    """The server's folder (bin/ and lib/ollama/) hard-linked where another user can reach it:
    the toolchain cache lies under root's 0700 home."""
    component = binary.parent.parent
    target = root / "ollama"
    subprocess.run(["cp", "-al", str(component), str(target)], check=True)
    return target / "bin" / binary.name


@contextmanager
def server_started_elsewhere(binary: str | Path, *, foreign_user: bool = False,
                             env: dict[str, str] | None = None) -> Iterator[ElsewhereServer]:
    """A running ``ollama serve`` on a free port with its own store, started outside ollamads
    (with ``foreign_user``, as ``nobody``, which needs root)."""
    if foreign_user and os.geteuid() != 0:
        cannot_run("a server of another user needs root to start")
    root = Path(tempfile.mkdtemp(prefix="ollamads-elsewhere-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        binary = Path(binary)
        if foreign_user:
            binary = _foreign_copy(binary, root)
        models, home = root / "models", root / "home"
        models.mkdir()
        home.mkdir()
        port = free_port()
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": str(models),
            **MODEL_ENVIRONMENT,
            **(env or {}),
        }
        if foreign_user:
            for path in (models, home):
                os.chown(path, FOREIGN_UID, FOREIGN_UID)
        log_path = root / "serve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(binary), "serve"], env=environment, stdout=log, stderr=subprocess.STDOUT,
                cwd=root, user=FOREIGN_UID if foreign_user else None,
                group=FOREIGN_UID if foreign_user else None,
            )
        server = ElsewhereServer(f"http://127.0.0.1:{port}", models, log_path, process,
                                 FOREIGN_UID if foreign_user else os.geteuid())
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                requests.get(f"{server.url}/api/version", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ollama serve did not start:\n{server.log()}") from None
                time.sleep(0.2)
        try:
            yield server
        finally:
            stop_child(process, 10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["FOREIGN_UID", "ElsewhereServer", "server_started_elsewhere"]
