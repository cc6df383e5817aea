"""Options and arguments shared by several commands, and the choices they offer.

Choices are enums, so ``--help`` lists them and a wrong value is a usage error (exit 2).
"""

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ollamads.ollama.modelfile import TemplateMode


class TemplateModeChoice(str, Enum):
    renderer = "renderer"
    template = "template"


class MergeMethodChoice(str, Enum):
    auto = "auto"
    builtin = "builtin"
    llama_gguf_split = "llama-gguf-split"


class ServerLineChoice(Enum):
    # Not a str: a member named `split` would hide str.split.
    split = "split"
    merged = "merged"


class KVTypeChoice(str, Enum):
    # llama-server's --cache-type-k/-v values; which a server line accepts is checked later.
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    q8_0 = "q8_0"
    q4_0 = "q4_0"
    q4_1 = "q4_1"
    iq4_nl = "iq4_nl"
    q5_0 = "q5_0"
    q5_1 = "q5_1"


class FamilyChoice(str, Enum):
    v3_1 = "v3.1"
    r1 = "r1"
    v3 = "v3"


ModelArg = Annotated[
    str, typer.Argument(help="Catalog model and quant, e.g. v3.1-terminus:TQ1_0 or r1:UD-IQ1_S.")
]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Ollama server URL (default: OLLAMA_HOST or 127.0.0.1:11434)."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RevisionOpt = Annotated[
    str | None,
    typer.Option("--revision", help="Branch, tag or commit of the Hub repo (default: main)."),
]
ConnectionsOpt = Annotated[
    int | None,
    typer.Option(
        "--connections", min=1, max=64,
        help="Parallel HTTP connections for downloads (default: OLLAMADS_CONNECTIONS, else 16).",
    ),
]
TemplateModeOpt = Annotated[
    TemplateModeChoice | None,
    typer.Option(help="renderer (Ollama's built-in DeepSeek renderer) or template (Go TEMPLATE)."),
]
ParameterOpt = Annotated[
    list[str] | None,
    typer.Option("--parameter", "-p", help="Override a PARAMETER, e.g. -p num_ctx=32768 (repeatable)."),
]
OllamaBinaryOpt = Annotated[str | None, typer.Option("--ollama", help="The `ollama` binary to start.")]
ModelsDirOpt = Annotated[
    Path | None,
    typer.Option("--models", help="Ollama's model store (default: OLLAMA_MODELS, else ~/.local/share/ollamads/ollama)."),
]


RamOpt = Annotated[
    str | None, typer.Option("--ram", help="RAM to plan for, e.g. 128G (default: this machine's).")
]
VramOpt = Annotated[
    list[str] | None,
    typer.Option("--vram", help="Memory of each GPU, e.g. --vram 24G --vram 24G or --vram 24G,24G; "
                                "0 for none (default: this machine's GPUs)."),
]
CtxOpt = Annotated[
    int | None, typer.Option("--ctx", help="Context length in tokens (default: the catalog's num_ctx).")
]
KVTypeOpt = Annotated[
    KVTypeChoice, typer.Option("--kv-type", help="KV cache type (the guides: q8_0, never 4-bit).")
]
ServerLineOpt = Annotated[
    ServerLineChoice | None,
    typer.Option("--server-line", help="split (Ollama >= 0.30) or merged (<= 0.24) "
                                       "(default: the running server's, else split)."),
]


def choice_value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)


def template_mode_value(choice: TemplateModeChoice | None) -> "TemplateMode | None":
    if choice is None:
        return None
    return "renderer" if choice is TemplateModeChoice.renderer else "template"
