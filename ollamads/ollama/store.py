"""The running server's model store on this machine: finding it, placing blobs, writing models.

Ollama keeps ``$OLLAMA_MODELS/blobs/sha256-<hex>`` and
``$OLLAMA_MODELS/manifests/<registry>/<namespace>/<model>/<tag>``. Its blob endpoint accepts a
file that is already at that path without reading it (``HEAD`` only stats it), so a client on
the same machine can put 100+ GB there without sending a byte:

* :func:`find_store` looks in the places a store can be (the one ``ollamads serve`` runs on,
  ``OLLAMA_MODELS``, the platform defaults) and lets the server decide: a random probe blob is
  written, and only a store whose probe the server then reports present is used.
* :meth:`LocalStore.place` puts a verified file there with a hard link (same filesystem), else a
  reflink or an in-kernel copy (another filesystem), and says which.
* :meth:`LocalStore.blob_writer` lets a writer (the merger) write a blob straight into the store,
  hashed while it is written: one write, no upload, no separate hash pass.
* :meth:`LocalStore.write_model` writes the small blobs and the manifest that ``/api/create``
  would write, for the server versions where that was proven equivalent (:data:`DIRECT_VERSIONS`).

A hard link shares the file with the download folder. ollamads never writes into a verified
download again (a template rewrite writes a new file and renames it over the old name), so the
blob's bytes cannot change under the server.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ollamads.errors import PlacementError
from ollamads.fileio import Copier, remove_stale, write_all
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.gojson import go_json
from ollamads.ollama.local_server import ServerProcess, server_process
from ollamads.ollama.versions import ServerInfo
from ollamads.paths import ollamads_home, read_record, write_record
from ollamads.pins import pin
from ollamads.units import disk_full_error, is_disk_full

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
#: Server versions whose ``/api/create`` output ollamads writes itself (tests/test_store.py
#: proves each equivalent). Every other version gets ``/api/create``.
DIRECT_VERSIONS = frozenset({pin("OLLAMA_NEW_LINE").removeprefix("v")})
#: Where ``ollamads serve`` records the store it runs on, so ``create`` can find it.
SERVE_RECORD = "serve.json"
BLOB_MODE = 0o644
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


class Placement(str, Enum):
    """How a file got into the store (each says so in ``create``'s output)."""

    PRESENT = "already in the store"
    HARDLINK = "hard link"
    REFLINK = "reflink"
    COPY = "in-kernel copy"
    WRITTEN = "written into the store"
    UPLOAD = "upload"


def default_stores() -> list[Path]:
    """Where Ollama keeps models when OLLAMA_MODELS is not set, for this platform."""
    home = Path.home() / ".ollama" / "models"
    if sys.platform.startswith("linux"):
        # The official install script runs the server as the `ollama` user, whose home is here.
        return [home, Path("/usr/share/ollama/.ollama/models")]
    return [home]


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def remember_serve(url: str, models_dir: Path) -> None:
    """Called whenever ollamads starts a server: the store behind ``url``."""
    record = {
        u: m for u, m in read_record(ollamads_home() / SERVE_RECORD).items()
        if isinstance(m, str) and Path(m).is_dir()
    }
    record[url] = str(models_dir)
    write_record(ollamads_home() / SERVE_RECORD, record)


def candidate_stores(server: ServerInfo, process: ServerProcess | None = None) -> list[Path]:
    """Stores that may be the server's, most likely first (none for a remote server): the one
    ``ollamads serve`` started it on, the one its process says, this shell's OLLAMA_MODELS,
    the platform defaults."""
    if not _is_loopback(server.host):
        return []
    found: list[Path] = []
    served = read_record(ollamads_home() / SERVE_RECORD).get(server.host)
    if isinstance(served, str):
        found.append(Path(served))
    process_store = process.models_dir() if process is not None else None
    if process_store is not None:
        found.append(process_store)
    if os.environ.get("OLLAMA_MODELS"):
        found.append(Path(os.environ["OLLAMA_MODELS"]).expanduser())
    found += default_stores()
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


@dataclass(frozen=True)
class StoreCheck:
    """The outcome of looking for the server's store: the store, or why there is none."""

    store: LocalStore | None
    reason: str
    #: The store a local server uses when ollamads may not place files in it (another user's):
    #: uploads land there, on this machine's disk.
    server_store: Path | None = None
    #: How to let ollamads place files there instead of uploading them.
    fix: str | None = None

    @property
    def local_server_store(self) -> Path | None:
        """Where the server writes what it is sent, when that is on this machine."""
        return self.store.root if self.store else self.server_store


@dataclass(frozen=True)
class ModelName:
    """An Ollama model name split as the store's folders are: host/namespace/model:tag."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> ModelName:
        rest, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
        parts = rest.split("/")
        model = parts[-1]
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        host = parts[-3] if len(parts) >= 3 else DEFAULT_REGISTRY
        for part in (host, namespace, model, tag or DEFAULT_TAG):
            if not part or part.startswith(".") or "/" in part or part in ("..",):
                raise PlacementError(f"cannot store a model named {name!r}", "use a plain name:tag")
        return cls(host, namespace, model, tag or DEFAULT_TAG)

    def manifest_path(self, root: Path) -> Path:
        return root / "manifests" / self.host / self.namespace / self.model / self.tag


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    source: str | None = None  # the manifest's ``from``

    def encoded(self) -> str:
        fields = [("mediaType", self.media_type), ("digest", self.digest), ("size", self.size)]
        if self.source:
            fields.append(("from", self.source))
        return "{" + ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in fields) + "}"


TEMP_BLOB_PATTERN = "sha256-ollamads-*-partial"
TEMP_MANIFEST_PATTERN = ".ollamads-manifest-*"


class BlobWriter:
    """A temp file in ``blobs/`` that becomes ``sha256-<hex>`` when :meth:`commit` is called.

    Its name is no valid blob name, so the server never serves it; while it is written it is
    flocked, so the next writer can tell a killed run's leftovers from a live one and remove them.
    """

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        remove_stale(store.blobs, TEMP_BLOB_PATTERN)
        self.tmp = store.blobs / TEMP_BLOB_PATTERN.replace("*", secrets.token_hex(6))
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BLOB_MODE)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def commit(self, digest: str) -> Path:
        os.fchmod(self.fd, BLOB_MODE)
        target = self.store.blob_path(digest)
        os.replace(self.tmp, target)
        return target

    def close(self) -> None:
        os.close(self.fd)
        self.tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class LocalStore:
    """An Ollama store that the running server reads and this process can write."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-", 1)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            stat = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or stat.st_size == size

    # --- putting files in ----------------------------------------------------------------------

    def place(self, path: Path, digest: str) -> Placement:
        """Put the verified file ``path`` into the store as ``digest`` without uploading it."""
        size = path.stat().st_size
        if self.has_blob(digest, size):
            return Placement.PRESENT
        target = self.blob_path(digest)
        try:
            os.link(path, target)
            return Placement.HARDLINK
        except FileExistsError:
            target.unlink()  # a blob of the wrong size: replace it
            os.link(path, target)
            return Placement.HARDLINK
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        with self.blob_writer(size, path.name) as writer:
            how = _clone_or_copy(path, writer.fd, size)
            os.fsync(writer.fd)
            writer.commit(digest)
        return how

    @contextlib.contextmanager
    def blob_writer(self, size: int, what: str) -> Iterator[BlobWriter]:
        """``with store.blob_writer(size, what) as w: write to w.fd; w.commit(digest)``; a
        failure leaves no temp file behind, and a full disk is one line naming ``what``."""
        writer = BlobWriter(self)
        try:
            yield writer
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.blobs, size, what) from None
            raise
        finally:
            writer.close()

    def write_small_blob(self, data: bytes) -> Layer:
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest, len(data)):
            with self.blob_writer(len(data), "a small blob") as writer:
                write_all(writer.fd, data)
                writer.commit(digest)
        return Layer("", digest, len(data))

    # --- models --------------------------------------------------------------------------------

    def manifest(self, name: str) -> dict[str, Any] | None:
        try:
            value = json.loads(ModelName.parse(name).manifest_path(self.root).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def referenced_digests(self, *, ignore: Path | None = None) -> set[str]:
        found: set[str] = set()
        for path in (self.root / "manifests").glob("*/*/*/*"):
            if path == ignore or not path.is_file():
                continue
            try:
                manifest = json.loads(path.read_text("utf-8"))
                found.add(manifest["config"]["digest"])
                found.update(layer["digest"] for layer in manifest["layers"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def write_model(
        self,
        name: str,
        model: Layer,
        *,
        template: str | None,
        system: str | None,
        parameters: Mapping[str, object],
        config: Mapping[str, object],
    ) -> bool:
        """Write the blobs and manifest that ``/api/create`` writes for such a model, as the
        server does (see :data:`DIRECT_VERSIONS`). False when that manifest was already there."""
        layers = [model]
        if template is not None:
            layers.append(_with_type(self.write_small_blob(template.encode("utf-8")), MEDIA_TEMPLATE))
        if system:
            layers.append(_with_type(self.write_small_blob(system.encode("utf-8")), MEDIA_SYSTEM))
        if parameters:
            params = (go_json(dict(parameters)) + "\n").encode("utf-8")
            layers.append(_with_type(self.write_small_blob(params), MEDIA_PARAMS))
        config_blob = _with_type(self.write_small_blob(_config_json(config)), MEDIA_CONFIG)
        manifest = (
            '{"schemaVersion":2,"mediaType":' + go_json(MEDIA_MANIFEST)
            + ',"config":' + config_blob.encoded()
            + ',"layers":[' + ",".join(layer.encoded() for layer in layers) + "]}\n"
        ).encode("utf-8")
        path = ModelName.parse(name).manifest_path(self.root)
        try:
            if path.read_bytes() == manifest:
                return False
        except OSError:
            pass
        old = self.manifest(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the store's root and renamed: a dot-file among the manifests would make
        # the server skip its start-up prune, and a reader must never see half a manifest.
        remove_stale(self.root, TEMP_MANIFEST_PATTERN)
        tmp = self.root / TEMP_MANIFEST_PATTERN.replace("*", secrets.token_hex(6))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            write_all(fd, manifest)
            os.replace(tmp, path)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.root, len(manifest), f"the manifest of {name}") from None
            raise
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)
        if old is not None:
            self._remove_unreferenced(old, keep={layer.digest for layer in layers} | {config_blob.digest})
        return True

    def _remove_unreferenced(self, manifest: Mapping[str, Any], keep: set[str]) -> None:
        """What ``/api/create`` does for the model's previous manifest: drop its blobs that no
        manifest uses any more."""
        used = self.referenced_digests() | keep
        digests = [manifest.get("config", {}).get("digest")]
        digests += [layer.get("digest") for layer in manifest.get("layers", [])]
        for digest in digests:
            if isinstance(digest, str) and digest not in used:
                self.blob_path(digest).unlink(missing_ok=True)


# Ollama's FileType names (fs/ggml/type.go): what `ollama show` calls general.file_type.
_FILE_TYPE_NAMES_V030 = {
    1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS",
    24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
    31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}


def file_type_name(value: int | None) -> str:
    return _FILE_TYPE_NAMES_V030.get(value or 0, "unknown")


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber, which `ollama show` prints as the parameter size."""
    for unit, scale in (("B", 1_000_000_000), ("M", 1_000_000), ("K", 1_000)):
        if n >= scale:
            value = n / scale
            if value == int(value):
                return f"{int(value)}{unit}"
            return f"{value:.1f}{unit}" if unit == "B" else (f"{value:.2f}M" if unit == "M" else f"{value:.0f}K")
    return str(n)


@dataclass(frozen=True)
class ModelFacts:
    """What the server's config blob says about a GGUF, read from the GGUF itself."""

    architecture: str
    parameter_count: int
    file_type: int | None

    def config(self, *, renderer: str | None, parser: str | None) -> dict[str, object]:
        return {
            "model_format": "gguf",
            "model_family": self.architecture,
            "model_families": [self.architecture],
            "model_type": human_number(self.parameter_count),
            "file_type": file_type_name(self.file_type),
            "renderer": renderer,
            "parser": parser,
            "architecture": "amd64",
            "os": "linux",
        }


def _with_type(layer: Layer, media_type: str) -> Layer:
    return Layer(media_type, layer.digest, layer.size)


def _config_json(config: Mapping[str, object]) -> bytes:
    """ConfigV2 as encoding/json writes it: struct field order, omitempty where the server has it."""
    order = ("model_format", "model_family", "model_families", "model_type", "file_type",
             "renderer", "parser", "requires", "architecture", "os")
    optional = {"renderer", "parser", "requires"}
    fields = []
    for key in order:
        value = config.get(key)
        if key in optional and not value:
            continue
        fields.append(f"{go_json(key)}:{go_json(value)}")
    return ("{" + ",".join(fields) + "}\n").encode("utf-8")


def _clone_or_copy(src: Path, dst_fd: int, size: int) -> Placement:
    with open(src, "rb") as source:
        try:
            fcntl.ioctl(dst_fd, _FICLONE, source.fileno())
            return Placement.REFLINK
        except OSError:
            pass
        Copier(dst_fd).copy(source.fileno(), 0, size, lambda: PlacementError(
            f"{src} shrank while it was copied into the store", "re-run"))
    return Placement.COPY


def find_store(server: ServerInfo) -> StoreCheck:
    """The server's store if it is on this machine and this process may place files in it."""
    if not _is_loopback(server.host):
        return StoreCheck(None, f"the server at {server.host} is not on this machine")
    api = OllamaAPI(server.host)
    process = server_process(server.host)
    from_process = process.models_dir() if process is not None else None
    reasons = []
    for root in candidate_stores(server, process):
        blobs = root / "blobs"
        try:
            if not blobs.is_dir():
                continue
            owner = blobs.stat().st_uid
        except OSError:
            continue
        server_uid = process.uid if process is not None and root == from_process else owner
        if server_uid not in (os.geteuid(), 0):
            # The server sets each blob's times at create (os.Chtimes), which only the file's
            # owner may do: files this user places would stop its create.
            if root == from_process:
                return _not_placeable(root, _user_name(server_uid),
                                      f"the server runs as {_user_name(server_uid)}")
            reasons.append(f"{root} belongs to {_user_name(owner)}")
            continue
        if not os.access(blobs, os.W_OK):
            if root == from_process:
                return _not_placeable(root, _user_name(owner),
                                      f"this user may not write {blobs}")
            reasons.append(f"{root} is not writable")
            continue
        if _server_sees(api, LocalStore(root)):
            how = f" (from its process, pid {process.pid})" if process is not None and root == from_process else ""
            return StoreCheck(LocalStore(root), f"the server's store is {root}{how}")
        reasons.append(f"{root} is not the running server's store")
    return StoreCheck(None, "; ".join(reasons) or "the server's store was not found on this machine")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _not_placeable(root: Path, user: str, why: str) -> StoreCheck:
    me = _user_name(os.geteuid())
    return StoreCheck(
        None,
        f"the server's store is {root}, but {why}: files are uploaded through the API instead "
        "of placed",
        server_store=root,
        fix=(f"to place files (no upload, no second copy): run ollamads as {user} "
             f"(sudo -u {user} ollamads ...), or run the server as {me} on a store of yours "
             "(`ollamads serve`, or OLLAMA_MODELS=<folder> ollama serve)"),
    )


def _server_sees(api: OllamaAPI, store: LocalStore) -> bool:
    """Place a random probe blob and ask the server for it: the server is the judge."""
    import hashlib

    data = b"ollamads store probe " + secrets.token_bytes(16)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = store.blob_path(digest)
    try:
        path.write_bytes(data)
    except OSError:
        return False
    try:
        return api.has_blob(digest)
    finally:
        path.unlink(missing_ok=True)


def supports_direct(server: ServerInfo) -> bool:
    return server.version in DIRECT_VERSIONS


__all__ = [
    "DIRECT_VERSIONS",
    "BlobWriter",
    "Layer",
    "LocalStore",
    "ModelFacts",
    "ModelName",
    "Placement",
    "StoreCheck",
    "candidate_stores",
    "default_stores",
    "file_type_name",
    "find_store",
    "human_number",
    "remember_serve",
    "supports_direct",
]
