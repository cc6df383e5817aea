"""The catalog joined with the Hub's own listing: real sizes, shard counts, which quants exist.

``catalog.toml`` holds what Unsloth's guides publish; the Hub knows more (exact byte counts, how
many shards, whether an unconfirmed quant exists). :func:`refresh` asks the Hub once per repo
(the commit, then the recursive tree) and keeps the answer, with its date, in
``<ollamads home>/hub-listing.json``; :func:`known_entries` joins whatever is kept with the
catalog, and falls back to the catalog's own figures where nothing was fetched (offline).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ollamads.catalog import CatalogEntry, load_catalog
from ollamads.errors import HubError
from ollamads.hub import repo_commit, tree
from ollamads.paths import ollamads_home, read_record, write_record
from ollamads.units import GIB

LISTING_RECORD = "hub-listing.json"


@dataclass(frozen=True)
class KnownEntry:
    """A catalog entry with the best figures known for it, and where they came from."""

    entry: CatalogEntry
    size_bytes: int | None
    shards: int | None
    #: True/False when the Hub was asked; None when only the catalog speaks.
    on_hub: bool | None
    #: ``"hub"`` (with ``fetched``) or ``"catalog"``.
    source: str
    fetched: str | None = None

    @property
    def size_gib(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / GIB


def _record_path() -> Any:
    return ollamads_home() / LISTING_RECORD


def _quant_files(entry: CatalogEntry, files: dict[str, int]) -> dict[str, int]:
    chosen = entry.select(files)
    if not chosen:  # layout unpublished or moved: the file names decide
        chosen = [p for p in files if entry.is_own_file(PurePosixPath(p).name)]
    return {p: files[p] for p in chosen}


def refresh(report: Callable[[str], None] = lambda line: None) -> int:
    """Ask the Hub for every catalog repo's files and keep what it said; returns how many repos
    answered. A repo that cannot be read keeps its earlier listing (or the catalog's figures)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    repos = dict(read_record(_record_path()).get("repos", {}))
    answered = 0
    for model in load_catalog().models:
        try:
            commit = repo_commit(model.repo)
            files = {f.path: f.size for f in tree(model.repo, commit) if f.path.endswith(".gguf")}
        except HubError as exc:
            report(f"{model.repo}: not refreshed ({exc.message})")
            continue
        repos[model.repo] = {"commit": commit, "fetched": now, "files": files}
        answered += 1
        report(f"{model.repo}: {len(files)} GGUF files at {commit[:12]}")
    write_record(_record_path(), {"repos": repos})
    return answered


def known_entries(entries: Iterable[CatalogEntry] | None = None) -> list[KnownEntry]:
    """Every entry (or the given ones) with the Hub's figures where they were fetched."""
    repos = read_record(_record_path()).get("repos", {})
    known = []
    for entry in entries if entries is not None else load_catalog().entries():
        listing = repos.get(entry.repo)
        if isinstance(listing, dict) and isinstance(listing.get("files"), dict):
            files = _quant_files(entry, listing["files"])
            known.append(KnownEntry(
                entry, sum(files.values()) if files else None, len(files) or None,
                bool(files), "hub", str(listing.get("fetched")),
            ))
            continue
        published = entry.quant.size_gib
        known.append(KnownEntry(
            entry, int(published * GIB) if published else None, entry.quant.shards, None, "catalog",
        ))
    return known


__all__ = ["KnownEntry", "known_entries", "refresh"]
