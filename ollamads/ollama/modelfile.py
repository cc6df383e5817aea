"""What a model registered with Ollama consists of, as a Modelfile and as an /api/create body.

One :class:`ModelDefinition` renders both, so the Modelfile a user reads is exactly what the tool
registered. Go chat templates are read as plain text and handed to Jinja as data: Jinja never
parses Go template syntax.
"""

from __future__ import annotations

import re
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


# How Ollama's Modelfile parser reads an argument (parser/parser.go, the same in v0.24 and
# v0.32): it ends at the first line break where what was read so far is whole: a bare word, a
# closed "..." or a closed """...""". There are no escapes, and characters that are not
# printable are dropped. So a value is written bare, in "...", or in """...""", whichever holds
# it exactly; one that none can hold is refused, never written so that it adds a directive.
_BLOCK = '"""'
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]+")


def _check_printable(text: str, what: str) -> None:
    bad = next((c for c in text if not (c.isprintable() or c in "\t\n\r")), None)
    if bad is not None:
        raise OllamadsError(
            f"{what} contains the control character {bad!r}, which a Modelfile cannot hold",
            "remove it",
        )


def quote_block(text: str, what: str) -> str:
    """``text`` (a TEMPLATE, a SYSTEM prompt) as a triple-quoted Modelfile argument."""
    _check_printable(text, what)
    if _BLOCK in text:
        raise OllamadsError(
            f'{what} contains """, which would end it early in a Modelfile: {text[:60]!r}',
            'remove or change the """',
        )
    return _BLOCK + text + _BLOCK


def modelfile_argument(text: str, what: str, *, quoted: bool = False) -> str:
    """``text`` as a one-line Modelfile argument Ollama reads back exactly: bare when it can be
    (or in "..." when ``quoted``), else in \"\"\"...\"\"\"."""
    _check_printable(text, what)
    if '"' in text or "\n" in text or "\r" in text:
        return quote_block(text, what)
    if quoted or not text or text != text.strip():
        return f'"{text}"'
    return text


def format_parameter(value: object, name: str = "value") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return modelfile_argument(value, f"PARAMETER {name}", quoted=" " in value or "<" in value)
    return str(value)


def check_parameter_name(name: str) -> str:
    """A PARAMETER name as Ollama's parser reads one: letters, digits and underscores."""
    if not _PARAMETER_NAME.fullmatch(name):
        raise OllamadsError(
            f"bad parameter name {name!r}", "use a name like num_ctx (letters, digits, underscores)"
        )
    return name


def parameter_lines(parameters: Mapping[str, object]) -> list[tuple[str, str]]:
    """(name, value) pairs, one per PARAMETER line; a list value gives one line per item."""
    order = {name: i for i, name in enumerate(PARAMETER_ORDER)}
    lines: list[tuple[str, str]] = []
    for key in sorted(parameters, key=lambda k: (order.get(k, len(order)), k)):
        value = parameters[key]
        items = value if isinstance(value, (list, tuple)) else [value]
        lines.extend((check_parameter_name(key), format_parameter(item, key)) for item in items)
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
        check_parameter_name(key)
        format_parameter(raw, key)  # refused now if no Modelfile can hold it
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

    def __post_init__(self) -> None:
        # Refused when the definition is made, before anything is downloaded or registered:
        # text that no Modelfile can hold exactly, or that would add a directive to it.
        self._arguments()

    def _arguments(self) -> dict[str, object]:
        """Every argument of the Modelfile, quoted as Ollama's parser reads it back."""
        return {
            "files": [modelfile_argument(f.name, "a file name") for f in self.files],
            "template": None if self.template is None else quote_block(self.template, "the TEMPLATE"),
            "system": quote_block(self.system, "the SYSTEM prompt") if self.system else None,
            "parameters": parameter_lines(self.parameters),
        }

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
            # A comment ends at the line's end: the title stays on its line.
            title=" ".join(self.title.split()),
            ollamads_version=__version__,
            server_line=" ".join(server_line.split()),
            renderer=self.renderer,
            parser=self.parser,
            **self._arguments(),
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
