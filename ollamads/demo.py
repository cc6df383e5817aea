"""``ollamads demo``: the whole pipeline on the built-in tiny DeepSeek V3.1, no downloads.

Split shards -> a real ``ollama serve`` with ``ollamads serve``'s settings (or the one at
OLLAMA_HOST) -> Modelfile -> register by the cheapest route the server allows (merging if its
line needs one file), under both V3.1 names -> chat with each, neither sending ``think``: the
plain name answers, the thinking name reasons. The tiny model has random weights, so the words
are gibberish; every step is real.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ollama

from ollamads.catalog.families import get_family
from ollamads.ollama.api import answers
from ollamads.ollama.modelfile import ModelDefinition, thinking_name
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe
from ollamads.ollama.versions import ServerInfo
from ollamads.registration import plan_registration, register_files
from ollamads.tiny import write_tiny_shards

DEMO_MODEL = "ollamads-demo:tiny-v3.1"
DEMO_THINKING_MODEL = thinking_name(DEMO_MODEL)
DEMO_PROMPT = "Why is the sky blue?"
#: The tiny model is a few hundred KB; a small context keeps its KV cache trivial.
DEMO_PARAMETERS = {"num_ctx": 2048, "num_predict": 24, "seed": 3407}
DEMO_SHARDS = 3

Report = Callable[[str], None]


@dataclass(frozen=True)
class ChatTurn:
    model: str
    think: bool  # whether that name thinks when the request does not say
    thinking: str
    content: str


@dataclass(frozen=True)
class DemoResult:
    server: ServerInfo
    model: str
    files: tuple[Path, ...]
    modelfile: Path
    turns: tuple[ChatTurn, ...]


@contextlib.contextmanager
def _server(workdir: Path, report: Report, ollama_binary: str | None) -> Iterator[ServerInfo]:
    existing = answers() if os.environ.get("OLLAMA_HOST") else None
    if existing:
        report(f"using the Ollama {existing.version} server at {existing.host} (OLLAMA_HOST)")
        yield existing
        return
    serve = OllamaServe(workdir / "models", binary=ollama_binary, log_path=workdir / "serve.log",
                        env=MODEL_ENVIRONMENT)
    report(f"starting `{serve.binary} serve` on {serve.url} with OLLAMA_MODELS={serve.models_dir}")
    with serve:
        assert serve.info is not None
        report(f"Ollama {serve.info.version} answers ({serve.info.line} line)")
        yield serve.info


def run_demo(
    report: Report = lambda line: None,
    *,
    workdir: Path | None = None,
    ollama_binary: str | None = None,
) -> DemoResult:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ollamads-demo-")))
        family = get_family("v3.1")
        shards = write_tiny_shards(workdir / "hub", "v3.1", n_shards=DEMO_SHARDS)
        size = sum(p.stat().st_size for p in shards)
        report(f"wrote the tiny DeepSeek V3.1 as {len(shards)} shards ({size:,} bytes): {shards[0].name} ...")

        server = stack.enter_context(_server(workdir, report, ollama_binary))
        server.require_think()
        files: list[Path] = list(shards)
        definition = ModelDefinition.for_family(
            DEMO_MODEL, family, files, server=server, parameters=DEMO_PARAMETERS,
            title="ollamads demo: tiny DeepSeek V3.1 (random weights)",
        )
        modelfile = files[0].parent / "Modelfile"
        modelfile.write_text(definition.modelfile(f"Ollama {server.version}"), encoding="utf-8")
        prompt_format = f"RENDERER {definition.renderer}" if definition.renderer else "Go TEMPLATE"
        report(f"rendered {modelfile} ({prompt_format}, {len(definition.parameters)} parameters)")

        plan = plan_registration(server, files, merged_path=workdir / "merged" / "demo.gguf")
        if plan.merged_path is not None:
            plan.merged_path.parent.mkdir(parents=True, exist_ok=True)
        registered = register_files(plan, definition, report=report)
        report(
            f"registered {DEMO_MODEL} and {DEMO_THINKING_MODEL} by the {registered.route} route "
            f"({registered.bytes_written:,} bytes written into the store, "
            f"{registered.bytes_uploaded:,} uploaded)"
        )

        client = ollama.Client(host=server.host)
        turns = []
        # As `ollama run` and Open WebUI ask by default: no "think" in the request.
        for model, think in ((DEMO_THINKING_MODEL, True), (DEMO_MODEL, False)):
            response = client.chat(model=model, messages=[{"role": "user", "content": DEMO_PROMPT}])
            turn = ChatTurn(model, think, response.message.thinking or "", response.message.content or "")
            turns.append(turn)
            report(
                f"chat with {model} (thinking {'on' if think else 'off'} by default): "
                f"thinking={turn.thinking[:60]!r} content={turn.content[:60]!r}"
            )
        return DemoResult(server, DEMO_MODEL, tuple(files), modelfile, tuple(turns))
    raise AssertionError("unreachable")
