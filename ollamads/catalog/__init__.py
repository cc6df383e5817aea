"""The catalog: DeepSeek models, their Hub repos and quants, and their prompt families.

``catalog.toml`` holds the data; ``entries`` loads and resolves it; ``families`` names the three
prompt formats and their special tokens. It sits below ``hub``, ``gguf`` and ``ollama`` and
imports none of them (``ollamads.rendered`` renders each entry's Modelfiles, above them all).
"""

from __future__ import annotations

from ollamads.catalog.entries import (
    Catalog,
    CatalogEntry,
    CatalogModel,
    CatalogQuant,
    load_catalog,
    normalize_quant,
    resolve,
)
from ollamads.catalog.families import FAMILIES, PromptFamily, get_family

__all__ = [
    "FAMILIES",
    "Catalog",
    "CatalogEntry",
    "CatalogModel",
    "CatalogQuant",
    "PromptFamily",
    "get_family",
    "load_catalog",
    "normalize_quant",
    "resolve",
]
