"""The Modelfile every catalog entry gets on each Ollama line, for `show` and `modelfiles/`.

The checked-in copies under modelfiles/ are regenerated with `ollamads modelfiles --write` and
compared with a fresh rendering by the tests, so a change to a template, a parameter or the
catalog shows up as a diff in review.
"""

from __future__ import annotations

from pathlib import Path

from ollamads.catalog import CatalogEntry, load_catalog
from ollamads.ollama.modelfile import THINKING_TAG_SUFFIX, ModelDefinition
from ollamads.ollama.versions import ServerInfo
from ollamads.pins import pin
from ollamads.shardnames import shard_name

#: The tested release of each line (pins.toml); only the line matters for the Modelfile.
LINES = {"ollama-0.24": ServerInfo("http://127.0.0.1:11434", pin("OLLAMA_OLD_LINE")),
         "ollama-0.30+": ServerInfo("http://127.0.0.1:11434", pin("OLLAMA_NEW_LINE"))}


def entry_files(entry: CatalogEntry, server: ServerInfo) -> list[Path]:
    """The files `create` registers: the shards on v0.30+, one merged (or single) file before."""
    prefix = entry.file_prefix
    if entry.quant.is_single_file and entry.quant.path:
        return [Path(Path(entry.quant.path).name)]
    count = entry.quant.shards
    if server.accepts_split_gguf and count and count > 1:
        return [Path(shard_name(prefix, i, count)) for i in range(1, count + 1)]
    # Merged by `create` for v0.24; on v0.30+ with an unpublished shard count the merged name
    # stands in (v0.30+ accepts one merged file as well).
    return [Path(f"{prefix}.gguf")]


def entry_definition(entry: CatalogEntry, server: ServerInfo) -> ModelDefinition:
    return ModelDefinition.for_family(
        entry.ollama_name, entry.prompt_family, entry_files(entry, server), server=server,
        parameters=dict(entry.parameters),
        title=f"{entry.model.title} {entry.quant.hub_name} ({entry.repo})",
    )


def render_all() -> dict[str, str]:
    """``{"deepseek-r1/IQ1_S.ollama-0.24.Modelfile": text, ...}`` for every entry and line; a
    V3.1 quant's thinking name as ``<QUANT>-think.<line>.Modelfile``."""
    rendered = {}
    for entry in load_catalog().entries():
        for line_name, server in LINES.items():
            header = f"Ollama {line_name.removeprefix('ollama-')}"
            definition = entry_definition(entry, server)
            rendered[f"{entry.model.key}/{entry.quant.name}.{line_name}.Modelfile"] = definition.modelfile(header)
            for companion in definition.companions:
                key = f"{entry.model.key}/{entry.quant.name}{THINKING_TAG_SUFFIX}.{line_name}.Modelfile"
                rendered[key] = companion.modelfile(header)
    return rendered


def write_all(directory: Path) -> list[Path]:
    written = []
    for relative, text in render_all().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Relative paths whose checked-in copy differs from (or is missing for) a fresh rendering."""
    fresh = render_all()
    on_disk = {str(p.relative_to(directory)) for p in directory.rglob("*.Modelfile")}
    changed = [r for r, text in fresh.items()
               if not (directory / r).is_file() or (directory / r).read_text(encoding="utf-8") != text]
    return sorted(changed + sorted(on_disk - fresh.keys()))
