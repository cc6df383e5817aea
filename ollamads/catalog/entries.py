"""The catalog: which Hub repo and files make each DeepSeek model at each dynamic quant.

The data lives in ``catalog.toml`` next to this module, one table per model with the figures
Unsloth publishes and where each was read. This module loads and checks it, and turns what a
user types (``v3.1-terminus:TQ1_0``, ``deepseek-r1:UD-IQ1_S``, ``r1:iq1_s``) into a
:class:`CatalogEntry`.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomllib arrived in 3.11
    import tomli as tomllib

from ollamads.catalog.families import FAMILIES, PromptFamily, get_family
from ollamads.errors import OllamadsError
from ollamads.shardnames import parse_shard_name

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
MODEL_PREFIX = "deepseek-"
#: Unsloth marks its dynamic quants with this prefix on the Hub.
UD_PREFIX = "UD-"
_QUANT_NAME_RE = re.compile(r"^[A-Z0-9_]+$")
#: Users paste Hub references too: ``hf.co/unsloth/DeepSeek-R1-GGUF:UD-IQ1_S``.
_HUB_HOST_PREFIXES = ("hf.co/", "huggingface.co/")

_MODEL_KEYS = {
    "title",
    "repo",
    "file_prefix",
    "family",
    "thinking",
    "source",
    "parameters",
    "quants",
}
_QUANT_KEYS = {
    "name",
    "hub_name",
    "path",
    "shards",
    "size_gib",
    "moe_bits",
    "detail",
    "source",
    "confirmed",
    "parameters",
    "gpu_layers",
}


@dataclass(frozen=True)
class CatalogQuant:
    """One published quantisation of a model."""

    name: str
    hub_name: str
    #: ``"X.gguf"`` (one file), ``"FOLDER/"`` (the shards' folder), or None (layout unpublished).
    path: str | None
    source: str
    shards: int | None = None
    #: Published disk size in GiB (Unsloth's "GB" are GiB); None when nobody published one.
    size_gib: float | None = None
    moe_bits: float | None = None
    detail: str = ""
    confirmed: bool = True
    parameters: Mapping[str, object] = field(default_factory=dict)
    gpu_layers: Mapping[str, int] = field(default_factory=dict)

    @property
    def is_single_file(self) -> bool:
        return self.path is not None and not self.path.endswith("/")

    @property
    def folder(self) -> str | None:
        return self.path.rstrip("/") if self.path and self.path.endswith("/") else None


@dataclass(frozen=True)
class CatalogModel:
    """One DeepSeek model as Unsloth uploads it (a Hub repo of GGUFs)."""

    key: str
    title: str
    repo: str
    file_prefix: str
    family: str
    thinking: str
    source: str
    quants: tuple[CatalogQuant, ...]
    parameters: Mapping[str, object] = field(default_factory=dict)

    @property
    def short_name(self) -> str:
        """``v3.1-terminus`` for ``deepseek-v3.1-terminus``."""
        return self.key.removeprefix(MODEL_PREFIX)

    @property
    def prompt_family(self) -> PromptFamily:
        return get_family(self.family)

    def quant(self, name: str) -> CatalogQuant:
        wanted = normalize_quant(name)
        for quant in self.quants:
            if quant.name == wanted:
                return quant
        names = [q.name for q in self.quants]
        close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
        hint = (
            f"did you mean {_or_list(close)}?"
            if close
            else f"{self.key} comes in {', '.join(names)}"
        )
        raise OllamadsError(f"{self.key} has no quant {name!r}", hint)


@dataclass(frozen=True)
class CatalogEntry:
    """A model at one quant: everything needed to fetch it and register it with Ollama."""

    model: CatalogModel
    quant: CatalogQuant

    @property
    def repo(self) -> str:
        return self.model.repo

    @property
    def spec(self) -> str:
        """Canonical form of what the user typed: ``deepseek-v3.1-terminus:TQ1_0``."""
        return f"{self.model.key}:{self.quant.name}"

    @property
    def ollama_name(self) -> str:
        """Default Ollama model name: ``deepseek-v3.1-terminus:tq1_0``."""
        return f"{self.model.key}:{self.quant.name.lower()}"

    @property
    def prompt_family(self) -> PromptFamily:
        return self.model.prompt_family

    @property
    def parameters(self) -> Mapping[str, object]:
        """Family defaults, then the model's overrides, then the quant's."""
        merged = {**self.prompt_family.parameters, **self.model.parameters, **self.quant.parameters}
        return MappingProxyType(merged)

    @property
    def file_prefix(self) -> str:
        """``DeepSeek-V3.1-UD-TQ1_0``: what this quant's file names start with."""
        return f"{self.model.file_prefix}-{self.quant.hub_name}"

    def is_own_file(self, file_name: str) -> bool:
        """``<prefix>.gguf`` or one of llama.cpp's split names ``<prefix>-NNNNN-of-NNNNN.gguf``."""
        shard = parse_shard_name(file_name)
        return file_name == f"{self.file_prefix}.gguf" or (shard is not None and shard[0] == self.file_prefix)

    def select(self, repo_paths: Iterable[str]) -> list[str]:
        """This quant's GGUF files among a repo listing, sorted (shard 1 first)."""
        if self.quant.is_single_file:
            chosen = [p for p in repo_paths if p == self.quant.path]
        elif self.quant.folder:
            prefix = self.quant.folder + "/"
            chosen = [p for p in repo_paths if p.startswith(prefix) and p.endswith(".gguf")]
        else:
            chosen = [p for p in repo_paths if self.is_own_file(PurePosixPath(p).name)]
        return sorted(chosen)


@dataclass(frozen=True)
class Catalog:
    models: tuple[CatalogModel, ...]
    sources: Mapping[str, str]

    def model(self, name: str) -> CatalogModel:
        wanted = _model_key(name)
        for model in self.models:
            if wanted in (model.key, model.repo.lower()):
                return model
        candidates = [m.short_name for m in self.models]
        close = difflib.get_close_matches(
            wanted.removeprefix(MODEL_PREFIX), candidates, n=3, cutoff=0.5
        )
        hint = (
            f"did you mean {_or_list(close)}?"
            if close
            else f"known models: {', '.join(candidates)}"
        )
        raise OllamadsError(f"unknown model {name!r}", hint)

    def resolve(self, spec: str) -> CatalogEntry:
        """``"v3.1-terminus:TQ1_0"`` -> the entry. Case, ``deepseek-`` and ``UD-`` are optional."""
        text = spec.strip()
        name, sep, quant = text.rpartition(":")
        if not sep:
            model = self.model(text)
            raise OllamadsError(
                f"{spec!r} names no quant",
                f"add one, e.g. {model.short_name}:{model.quants[0].name} "
                f"({', '.join(q.name for q in model.quants)})",
            )
        model = self.model(name)
        return CatalogEntry(model, model.quant(quant))

    def entries(self) -> list[CatalogEntry]:
        return [CatalogEntry(m, q) for m in self.models for q in m.quants]


def normalize_quant(name: str) -> str:
    """``ud-tq1_0``, ``UD-TQ1_0``, ``tq1_0`` -> ``TQ1_0``."""
    upper = name.strip().upper()
    return upper[len(UD_PREFIX) :] if upper.startswith(UD_PREFIX) else upper


def _model_key(name: str) -> str:
    """``V3.1-Terminus`` -> ``deepseek-v3.1-terminus``; Hub repo references are kept as repo ids."""
    key = name.strip().lower()
    for host in _HUB_HOST_PREFIXES:
        key = key.removeprefix(host)
    if "/" in key:
        return key
    return key if key.startswith(MODEL_PREFIX) else MODEL_PREFIX + key


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# --- loading -----------------------------------------------------------------------------------


def _bad(where: str, problem: str) -> OllamadsError:
    return OllamadsError(
        f"catalog {where}: {problem}", "fix catalog.toml (a packaging bug if you did not edit it)"
    )


def _check_keys(
    where: str, table: Mapping[str, Any], allowed: set[str], required: set[str]
) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise _bad(where, f"unknown keys {sorted(unknown)}")
    missing = required - set(table)
    if missing:
        raise _bad(where, f"missing keys {sorted(missing)}")


def _quant(where: str, table: Mapping[str, Any]) -> CatalogQuant:
    _check_keys(where, table, _QUANT_KEYS, {"name", "source"})
    name = table["name"]
    if not _QUANT_NAME_RE.match(name) or name.startswith(UD_PREFIX):
        raise _bad(where, f"quant name {name!r} must be upper case without the UD- prefix")
    path = table.get("path")
    if path is not None and not path.endswith(("/", ".gguf")):
        raise _bad(where, f"path {path!r} must be a folder ending in / or a .gguf file")
    return CatalogQuant(
        name=name,
        hub_name=table.get("hub_name", UD_PREFIX + name),
        path=path,
        source=table["source"],
        shards=table.get("shards"),
        size_gib=table.get("size_gib"),
        moe_bits=table.get("moe_bits"),
        detail=table.get("detail", ""),
        confirmed=table.get("confirmed", True),
        parameters=MappingProxyType(dict(table.get("parameters", {}))),
        gpu_layers=MappingProxyType(dict(table.get("gpu_layers", {}))),
    )


def _model(key: str, table: Mapping[str, Any]) -> CatalogModel:
    where = f"model {key!r}"
    _check_keys(where, table, _MODEL_KEYS, _MODEL_KEYS - {"parameters"})
    if not key.startswith(MODEL_PREFIX) or key != key.lower():
        raise _bad(where, f"model keys are lower case and start with {MODEL_PREFIX!r}")
    if table["family"] not in FAMILIES:
        raise _bad(where, f"unknown prompt family {table['family']!r}")
    if table["thinking"] != FAMILIES[table["family"]].thinking:
        raise _bad(where, f"thinking {table['thinking']!r} contradicts family {table['family']!r}")
    quants = tuple(_quant(f"{where} quant #{i + 1}", q) for i, q in enumerate(table["quants"]))
    names = [q.name for q in quants]
    if len(set(names)) != len(names):
        raise _bad(where, "a quant is listed twice")
    return CatalogModel(
        key=key,
        title=table["title"],
        repo=table["repo"],
        file_prefix=table["file_prefix"],
        family=table["family"],
        thinking=table["thinking"],
        source=table["source"],
        quants=quants,
        parameters=MappingProxyType(dict(table.get("parameters", {}))),
    )


def parse_catalog(text: str) -> Catalog:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad("file", f"not valid TOML ({exc})") from exc
    _check_keys("file", data, {"schema", "sources", "models"}, {"schema", "models"})
    if data["schema"] != 1:
        raise _bad("file", f"schema {data['schema']} is not supported")
    models = tuple(_model(key, table) for key, table in data["models"].items())
    return Catalog(models, MappingProxyType(dict(data.get("sources", {}))))


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The catalog shipped with the package (read once per process)."""
    return parse_catalog(CATALOG_PATH.read_text(encoding="utf-8"))


def resolve(spec: str) -> CatalogEntry:
    """``resolve("v3.1-terminus:TQ1_0")`` -> the catalog entry, or an error with suggestions."""
    return load_catalog().resolve(spec)


__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogModel",
    "CatalogQuant",
    "load_catalog",
    "normalize_quant",
    "parse_catalog",
    "resolve",
]
