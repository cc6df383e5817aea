"""What the Hub lists: a repo's commit and its files with sizes and LFS sha256."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ollamads.hub.api import hf_api, hub_call


@dataclass(frozen=True)
class RemoteFile:
    """One file as the Hub lists it at a commit."""

    path: str
    size: int
    #: LFS sha256 (hex); None for a plain git file, which is checked by its git blob sha1.
    sha256: str | None
    git_oid: str

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` (what Ollama names blobs by) or ``git-sha1:<hex>``."""
        return f"sha256:{self.sha256}" if self.sha256 else f"git-sha1:{self.git_oid}"


def _remote(item: Any) -> RemoteFile | None:
    if not hasattr(item, "size"):  # a RepoFolder
        return None
    lfs = getattr(item, "lfs", None)
    return RemoteFile(item.path, item.size, lfs.sha256 if lfs else None, item.blob_id)


def _files(items: Iterable[Any]) -> list[RemoteFile]:
    return [r for r in map(_remote, items) if r is not None]


def repo_commit(repo: str, revision: str | None = None) -> str:
    """The 40-hex commit a branch or tag points at now: every file is then fetched at it, so a
    concurrent upload cannot mix two versions."""
    with hub_call(repo):
        return str(hf_api().model_info(repo, revision=revision).sha)


def paths_info(repo: str, commit: str, paths: Sequence[str]) -> list[RemoteFile]:
    """The listed files among ``paths`` (unknown paths are left out)."""
    with hub_call(repo):
        return _files(hf_api().get_paths_info(repo, list(paths), revision=commit))


def tree(repo: str, commit: str, folder: str | None = None) -> list[RemoteFile]:
    """Every file under ``folder`` (the whole repo when None), recursively; [] if no folder."""
    from huggingface_hub import errors

    with hub_call(repo):
        try:
            items = hf_api().list_repo_tree(
                repo, path_in_repo=folder, recursive=True, revision=commit
            )
            return _files(items)
        except errors.EntryNotFoundError:
            return []


__all__ = ["RemoteFile", "paths_info", "repo_commit", "tree"]
