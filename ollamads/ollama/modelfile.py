"""What a model registered with Ollama consists of, as a Modelfile and as an /api/create body.

One :class:`ModelDefinition` renders both, so the Modelfile a user reads is exactly what the tool
registered. Go chat templates are read as plain text and handed to Jinja as data: Jinja never
parses Go template syntax.

A hybrid-thinking model (V3.1) is registered under two names on the same blobs. Ollama turns
thinking on for every thinking-capable model whose request has no ``think`` (v0.12.4 and later,
every client that does not ask: ``ollama run``, Open WebUI, the API), and a template cannot tell
"not asked" from "asked to think". DeepSeek's default is not to think. So ``NAME`` gets the
template without Ollama's thinking capability (the prompt ends ``</think>``; ``think: true`` is
refused by the server), and ``NAME-think`` (:func:`thinking_name`) the one with it, created
``from`` ``NAME``: a second manifest, no second copy or rewrite of the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal

import jinja2

from ollamads import __version__
from ollamads._resources import templates_dir
from ollamads.catalog.families import PromptFamily
from ollamads.errors import OllamadsError
from ollamads.ollama.versions import ServerInfo

TemplateMode = Literal["renderer", "template"]
MODELFILE_TEMPLATE = "modelfile/Modelfile.jinja"
#: Written first, so a Modelfile diff reads in a stable order.
PARAMETER_ORDER = ("temperature", "top_p", "min_p", "top_k", "repeat_penalty", "repeat_last_n",
                   "presence_penalty", "frequency_penalty", "num_ctx", "num_gpu", "seed", "stop")


#: The family templates include the tools block (one copy for all three) at this line.
TOOLS_INCLUDE = "{{- /* the tools block: deepseek-tools.gotmpl */ -}}\n"
TOOLS_TEMPLATE = "deepseek-tools.gotmpl"
#: The line that gives a template Ollama's thinking capability (thinking.InferTags: .Thinking
#: between tags inside ``range .Messages``); it never renders anything.
THINKING_DECLARATION = "{{- if false }}<think>{{ .Thinking }}</think>{{ end }}\n"
#: Names the tag Ollama's tool parser waits for (tools/template.go takes the first text in the
#: ``.ToolCalls`` branch); it never renders anything. Ollama v0.24 writes the tag's U+2581 as
#: spaces in its output (measured), so the Modelfiles of that line name it that way.
TOOL_TAG_DECLARATION = "{{- if false }}<｜tool▁calls▁begin｜>{{ end }}"
MERGED_LINE_TOOL_TAG_DECLARATION = TOOL_TAG_DECLARATION.replace("\u2581", " ")
#: The second name of a hybrid model: ``deepseek-v3.1:tq1_0`` -> ``deepseek-v3.1:tq1_0-think``.
THINKING_TAG_SUFFIX = "-think"
THINKING_TAG = "think"


def _read_go(filename: str) -> str:
    return (templates_dir() / "go" / filename).read_text(encoding="utf-8")


@cache
def go_template(filename: str, *, thinking: bool = True, line: str = "split") -> str:
    """The Go TEMPLATE of a family for a server line (``ServerInfo.line``), tools block
    included; ``thinking=False`` drops the line that makes Ollama see it as thinking-capable."""
    text = _read_go(filename).replace(TOOLS_INCLUDE, _read_go(TOOLS_TEMPLATE))
    if not thinking:
        text = text.replace(THINKING_DECLARATION, "")
    if line == "merged":
        text = text.replace(TOOL_TAG_DECLARATION, MERGED_LINE_TOOL_TAG_DECLARATION)
    return text.rstrip("\n")


def thinking_name(name: str) -> str:
    """The name a hybrid model thinks under by default: its tag plus ``-think``."""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return name + THINKING_TAG_SUFFIX
    return f"{name}:{THINKING_TAG}"


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
    """The Go TEMPLATE, on every line; Ollama's built-in renderer only on request.

    One prompt format everywhere: the TEMPLATEs render what DeepSeek's templates render (tests/
    test_conformance.py), win over a GGUF's own template on v0.30+ (they reference .Suffix), and
    do not add a second BOS on v0.13.5-v0.24 as the renderer does. The renderer (with PARSER
    deepseek3, which also reads DeepSeek's tool-call syntax back into tool_calls) is what
    ``override="renderer"`` gives the thinking name of a V3.1 model.
    """
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
    """A model as Ollama stores it: GGUF files (or a registered model's blobs, ``base``) plus
    prompt format and parameters."""

    name: str
    family: PromptFamily
    files: tuple[Path, ...]
    mode: TemplateMode
    parameters: Mapping[str, object] = field(default_factory=dict)
    system: str | None = None
    title: str = ""
    #: Ollama sees this name as thinking-capable: a request without ``think`` reasons.
    thinking: bool = False
    #: The registered model whose blobs this one is made from (``/api/create`` ``from``).
    base: str | None = None
    #: Further names on the same blobs, registered after this one (V3.1's thinking name).
    companions: tuple[ModelDefinition, ...] = ()
    #: The server line the TEMPLATE is written for (``ServerInfo.line``).
    line: str = "split"

    def __post_init__(self) -> None:
        # Refused when the definition is made, before anything is downloaded or registered:
        # text that no Modelfile can hold exactly, or that would add a directive to it.
        self._arguments()

    def _arguments(self) -> dict[str, object]:
        """Every argument of the Modelfile, quoted as Ollama's parser reads it back."""
        return {
            "files": [modelfile_argument(self.base, "a model name")] if self.base
            else [modelfile_argument(f.name, "a file name") for f in self.files],
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
        """The definition of ``name``; for a hybrid family with its thinking companion."""
        if server is not None and parameters and "typical_p" in parameters and server.refuses_typical_p:
            raise OllamadsError(
                f"Ollama {server.version} refuses the parameter typical_p (removed in v0.34.1)",
                "drop -p typical_p; min_p and top_p shape the sampling instead",
            )
        chosen = choose_template_mode(family, server, mode)
        title = title or name
        plain = cls(
            name=name, family=family, line=server.line if server is not None else "split",
            files=tuple(Path(f) for f in files), mode=chosen,
            parameters={**family.parameters, **(parameters or {})}, system=system, title=title,
            thinking=family.can_think,
        )
        if family.thinking != "hybrid":
            return plain
        thinker = replace(plain, name=thinking_name(name), thinking=True, base=name,
                          title=f"{title}, thinking unless asked not to")
        # Only a TEMPLATE can be non-thinking by default and still take tools: a renderer
        # without its parser declares no capability at all.
        return replace(plain, mode="template", thinking=False, title=f"{title}, thinking only on request",
                       companions=(thinker,))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *(c.name for c in self.companions))

    @property
    def template(self) -> str | None:
        if self.mode != "template":
            return None
        return go_template(self.family.go_template, thinking=self.thinking, line=self.line)

    @property
    def renderer(self) -> str | None:
        return self.family.renderer if self.mode == "renderer" else None

    @property
    def parser(self) -> str | None:
        return self.family.parser if self.mode == "renderer" else None

    def modelfile(self, server_line: str = "Ollama") -> str:
        """The Modelfile text; FROM lines name the files relative to the Modelfile's folder, or
        the registered model this one is made from."""
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
        paths = tuple(Path(f) for f in files)
        return replace(self, files=paths, companions=tuple(replace(c, files=paths) for c in self.companions))

    def parameters_json(self) -> dict[str, object]:
        """The parameters as the create request (and the server's params blob) holds them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters.items()}

    def create_request(self, digests: Mapping[str, str] | None = None) -> dict[str, object]:
        """The ``/api/create`` body; ``digests`` maps each file's name to ``sha256:<hex>``
        (none for a model made ``from`` another)."""
        body: dict[str, object] = {"model": self.name}
        if self.base:
            # The base's layers are reused as they are: no upload, and no llama-quantize rewrite
            # on v0.30+ (only files are rewritten).
            body["from"] = self.base
        else:
            body["files"] = {f.name: (digests or {})[f.name] for f in self.files}
        body["parameters"] = self.parameters_json()
        body["stream"] = True
        if self.mode == "renderer":
            body["renderer"] = self.renderer
            body["parser"] = self.parser
        else:
            body["template"] = self.template
        if self.system:
            body["system"] = self.system
        return body
