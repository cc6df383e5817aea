"""What a model registered with Ollama consists of, as a Modelfile and as an /api/create body.

One :class:`ModelDefinition` renders both, so the Modelfile a user reads is exactly what the tool
registered. Go chat templates are read as plain text and handed to Jinja as data: Jinja never
parses Go template syntax.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import jinja2

from ollamads import __version__
from ollamads._resources import templates_dir
from ollamads.errors import OllamadsError
from ollamads.catalog.families import PromptFamily
from ollamads.ollama.versions import ServerInfo

TemplateMode = Literal["renderer", "template"]
MODELFILE_TEMPLATE = "modelfile/Modelfile.jinja"
#: Written first, so a Modelfile diff reads in a stable order.
PARAMETER_ORDER = ("temperature", "top_p", "min_p", "top_k", "num_ctx", "num_gpu", "seed", "stop")


@cache
def go_template(filename: str) -> str:
    text = (templates_dir() / "go" / filename).read_text(encoding="utf-8")
    return text.rstrip("\n")


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def choose_template_mode(
    family: PromptFamily, server: ServerInfo | None, override: TemplateMode | None = None
) -> TemplateMode:
    """Ollama's built-in DeepSeek renderer on v0.30+, else a Go TEMPLATE; a flag overrides."""
    if override == "renderer":
        if not family.renderer:
            raise OllamadsError(
                f"Ollama has no built-in renderer for the {family.name} prompt format",
                "use --template-mode template",
            )
        if server and not server.has_deepseek_renderer:
            raise OllamadsError(
                f"Ollama {server.version} has no `RENDERER {family.renderer}`",
                "upgrade Ollama to v0.13.5 or newer, or use --template-mode template",
            )
        return "renderer"
    if override == "template":
        return "template"
    # The renderer writes BOS itself: v0.30+ strips it, but v0.13.5-v0.24 tokenize it and add
    # another (measured: one prompt token more than the TEMPLATE, and a warning in the log).
    # So below v0.30 the Go TEMPLATE, which renders the same bytes, is the default.
    if family.renderer and (server is None or server.accepts_split_gguf):
        return "renderer"
    return "template"


def format_parameter(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if (" " in value or "<" in value) else value
    return str(value)


def parameter_lines(parameters: Mapping[str, object]) -> list[tuple[str, str]]:
    """(name, value) pairs, one per PARAMETER line; a list value gives one line per item."""
    order = {name: i for i, name in enumerate(PARAMETER_ORDER)}
    lines: list[tuple[str, str]] = []
    for key in sorted(parameters, key=lambda k: (order.get(k, len(order)), k)):
        value = parameters[key]
        items = value if isinstance(value, (list, tuple)) else [value]
        lines.extend((key, format_parameter(item)) for item in items)
    return lines


def parse_parameters(items: Sequence[str]) -> dict[str, object]:
    """``["num_ctx=32768", "stop=<x>"]`` -> ``{"num_ctx": 32768, "stop": ["<x>"]}``."""
    parsed: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw:
            raise OllamadsError(
                f"bad parameter {item!r}", "write it as NAME=VALUE, e.g. --parameter num_ctx=32768"
            )
        value: object = raw
        for convert in (int, float):
            try:
                value = convert(raw)
                break
            except ValueError:
                pass
        if key == "stop":
            stops = parsed.setdefault("stop", [])
            assert isinstance(stops, list)
            stops.append(raw)
        else:
            parsed[key] = value
    return parsed


@dataclass(frozen=True)
class ModelDefinition:
    """A model as Ollama stores it: GGUF files plus prompt format and parameters."""

    name: str
    family: PromptFamily
    files: tuple[Path, ...]
    mode: TemplateMode
    parameters: Mapping[str, object] = field(default_factory=dict)
    system: str | None = None
    title: str = ""

    @classmethod
    def for_family(
        cls,
        name: str,
        family: PromptFamily,
        files: Sequence[Path],
        *,
        server: ServerInfo | None,
        mode: TemplateMode | None = None,
        parameters: Mapping[str, object] | None = None,
        system: str | None = None,
        title: str = "",
    ) -> ModelDefinition:
        merged = {**family.parameters, **(parameters or {})}
        return cls(
            name=name,
            family=family,
            files=tuple(Path(f) for f in files),
            mode=choose_template_mode(family, server, mode),
            parameters=merged,
            system=system,
            title=title or name,
        )

    @property
    def template(self) -> str | None:
        return go_template(self.family.go_template) if self.mode == "template" else None

    @property
    def renderer(self) -> str | None:
        return self.family.renderer if self.mode == "renderer" else None

    @property
    def parser(self) -> str | None:
        return self.family.parser if self.mode == "renderer" else None

    def modelfile(self, server_line: str = "Ollama") -> str:
        """The Modelfile text; FROM lines name the files relative to the Modelfile's folder."""
        return _environment().get_template(MODELFILE_TEMPLATE).render(
            title=self.title,
            ollamads_version=__version__,
            server_line=server_line,
            files=[f.name for f in self.files],
            renderer=self.renderer,
            parser=self.parser,
            template=self.template,
            system=self.system,
            parameters=parameter_lines(self.parameters),
        )

    def with_files(self, files: Sequence[Path]) -> ModelDefinition:
        """The same model made from other files (a merged file instead of the shards)."""
        from dataclasses import replace

        return replace(self, files=tuple(Path(f) for f in files))

    def parameters_json(self) -> dict[str, object]:
        """The parameters as the create request (and the server's params blob) holds them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters.items()}

    def create_request(self, digests: Mapping[str, str]) -> dict[str, object]:
        """The ``/api/create`` body; ``digests`` maps each file's name to ``sha256:<hex>``."""
        body: dict[str, object] = {
            "model": self.name,
            "files": {f.name: digests[f.name] for f in self.files},
            "parameters": self.parameters_json(),
            "stream": True,
        }
        if self.mode == "renderer":
            body["renderer"] = self.renderer
            body["parser"] = self.parser
        else:
            body["template"] = self.template
        if self.system:
            body["system"] = self.system
        return body
