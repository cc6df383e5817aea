"""``bench --sweep``: try the settings that change speed, one at a time, and keep the fastest.

Settings that a request can carry (``num_thread``, ``num_batch``) are request options; the
ones only a server's environment sets (flash attention, ``LLAMA_ARG_N_CPU_MOE``) need a server
started with them. The sweep never restarts the server it was pointed at: it starts its own
``ollama serve`` (the same Ollama release, over the same model store, on a free loopback port),
restarts that one when the environment changes, and stops it at the end. It only asks the
user's server to unload the model first, so two copies are never in memory at once.

One factor at a time, in this order: threads (by generation speed), flash attention
(generation), micro-batch (prompt speed: use a prompt longer than the largest micro-batch), and
with a GPU the blocks whose experts stay in RAM around the plan's value (generation). A setting
replaces the default only when it is :data:`MARGIN` faster.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ollamads.errors import OllamadsError
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.bench import BenchResult, BenchSettings, run_bench
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe, find_ollama, ollama_version
from ollamads.progress import Progress, ProgressEvent, no_progress

#: Micro-batch sizes tried for prompt speed (Ollama passes num_batch as both -b and -ub).
UBATCH_CHOICES = (128, 512, 1024)
#: Ollama's own default num_batch.
DEFAULT_NUM_BATCH = 512
N_CPU_MOE = "LLAMA_ARG_N_CPU_MOE"
#: A setting replaces the default only when it is this much faster: runs on a busy machine
#: differ by more than a few percent, and a default needs no explaining.
MARGIN = 1.05
FLASH_ATTENTION = "OLLAMA_FLASH_ATTENTION"


@dataclass(frozen=True)
class Setting:
    #: On top of :data:`MODEL_ENVIRONMENT` for the sweep's own server.
    environment: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, object] = field(default_factory=dict)

    def with_env(self, **env: str) -> Setting:
        return replace(self, environment={**self.environment, **env})

    def with_options(self, **options: object) -> Setting:
        return replace(self, options={**self.options, **options})

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.environment.items())]
        parts += [f"{k}={v}" for k, v in sorted(self.options.items())]
        return " ".join(parts) or "defaults"


@dataclass(frozen=True)
class SweepPoint:
    factor: str
    setting: Setting
    result: BenchResult | None
    error: str | None = None

    @property
    def generation(self) -> float:
        value = self.result.generation_tokens_per_s if self.result else None
        return value or 0.0

    @property
    def prompt(self) -> float:
        value = self.result.prompt_tokens_per_s if self.result else None
        return value or 0.0


@dataclass(frozen=True)
class SweepResult:
    model: str
    version: str
    points: tuple[SweepPoint, ...]
    best: Setting
    notes: tuple[str, ...] = ()
    #: ``best`` as it was measured (with the defaults it leaves out spelled out).
    measured: Setting | None = None

    def best_point(self) -> SweepPoint | None:
        """The last measurement of the chosen settings (the last factor's point)."""
        for point in reversed(self.points):
            if point.setting == (self.measured or self.best) and point.result is not None:
                return point
        return None

    def serve_line(self) -> str:
        env = {k: v for k, v in self.best.environment.items() if MODEL_ENVIRONMENT.get(k) != v}
        return " ".join(["ollamads serve", *(f"--env {shlex.quote(f'{k}={v}')}" for k, v in sorted(env.items()))])

    def parameters(self) -> dict[str, object]:
        return dict(self.best.options)


def thread_choices(cpus: int | None = None) -> list[int]:
    n = cpus or os.cpu_count() or 1
    return sorted({max(1, n // 4), max(1, n // 2), n})


class _OwnServer:
    """The sweep's own ``ollama serve``: restarted only when the environment must change."""

    def __init__(self, binary: str, models_dir: Path, log_dir: Path) -> None:
        self.binary, self.models_dir, self.log_dir = binary, models_dir, log_dir
        self.serve: OllamaServe | None = None
        self.environment: dict[str, str] | None = None

    def url_for(self, environment: Mapping[str, str]) -> str:
        wanted = {**MODEL_ENVIRONMENT, **environment}
        if self.serve is None or wanted != self.environment:
            self.stop()
            self.serve = OllamaServe(self.models_dir, binary=self.binary, env=wanted,
                                     log_path=self.log_dir / "ollamads-sweep-serve.log")
            self.serve.start()
            self.environment = wanted
        return self.serve.url

    def stop(self) -> None:
        if self.serve is not None:
            self.serve.stop()
            self.serve = None


@contextmanager
def own_server(binary: str, models_dir: Path, log_dir: Path) -> Iterator[_OwnServer]:
    server = _OwnServer(binary, models_dir, log_dir)
    try:
        yield server
    finally:
        server.stop()


def check_binary(binary: str | None, version: str) -> str:
    """The ``ollama`` to start: it must be the release the user's server runs."""
    found = find_ollama(binary)
    have = ollama_version(found)
    if have != version:
        raise OllamadsError(
            f"the sweep would start {found} (Ollama {have}), but the server runs Ollama {version}",
            "pass --ollama with the binary of the running release",
        )
    return found


def run_sweep(
    model: str,
    settings: BenchSettings,
    *,
    host: str | None,
    models_dir: Path,
    binary: str | None = None,
    cpu_moe_plan: int | None = None,
    threads: list[int] | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Sweep ``model``'s settings on this machine with servers of the sweep's own."""
    report = progress or no_progress
    api = OllamaAPI(host)
    info = api.info()
    if api.show(model) is None:
        raise OllamadsError(f"the Ollama server at {api.url} has no model {model}",
                            "see `ollama list`")
    found = check_binary(binary, info.version)
    notes = []
    if any(m.get("name") == model or m.get("model") == model for m in api.loaded()):
        api.unload(model)
        notes.append(f"unloaded {model} from the server at {api.url} for the sweep")
    points: list[SweepPoint] = []
    steps = len(threads or thread_choices()) + 1 + len(UBATCH_CHOICES) + (4 if cpu_moe_plan is not None else 0)

    with own_server(found, models_dir, models_dir.parent) as server:
        def measure(factor: str, setting: Setting) -> SweepPoint:
            report(ProgressEvent("sweep", model, len(points), steps, f"{factor}: {setting.describe()}"))
            try:
                url = server.url_for(setting.environment)
                result = run_bench(model, replace(settings, options={**settings.options, **setting.options}),
                                   host=url)
                point = SweepPoint(factor, setting, result)
            except OllamadsError as exc:
                point = SweepPoint(factor, setting, None, exc.message)
                server.stop()  # a failed load may leave the server in any state
            points.append(point)
            return point

        def best_of(factor: str, candidates: list[Setting], key: Callable[[SweepPoint], float],
                    default: Setting) -> Setting:
            tried = [measure(factor, c) for c in candidates]
            ok = [p for p in tried if p.result is not None]
            if not ok:
                return default
            fastest = max(ok, key=key)
            base = next((p for p in ok if p.setting == default), None)
            if base is not None and key(fastest) < MARGIN * key(base):
                return default
            return fastest.setting

        def generation(p: SweepPoint) -> float:
            return p.generation

        def prompt(p: SweepPoint) -> float:
            return p.prompt

        best = Setting()
        choices = threads or thread_choices()
        # llama-server's own default: every core (Ollama passes no -t unless num_thread is set).
        best = best_of("threads", [best.with_options(num_thread=n) for n in choices], generation,
                       best.with_options(num_thread=max(choices)))
        flash_off = best.with_env(**{FLASH_ATTENTION: "0", "OLLAMA_KV_CACHE_TYPE": "f16"})
        previous = next(p for p in points if p.setting == best)
        off = measure("flash attention", flash_off)
        if off.result is not None and off.generation > MARGIN * previous.generation:
            best = flash_off
        best = best_of("micro-batch", [best.with_options(num_batch=b) for b in UBATCH_CHOICES], prompt,
                       best.with_options(num_batch=DEFAULT_NUM_BATCH))
        if cpu_moe_plan is not None:
            candidates = sorted({max(0, cpu_moe_plan + d) for d in (-1, 0, 1, 2)})
            best = best_of("experts in RAM", [best.with_env(**{N_CPU_MOE: str(k)}) for k in candidates],
                           generation, best.with_env(**{N_CPU_MOE: str(cpu_moe_plan)}))
    report(ProgressEvent("sweep", model, steps, steps, "done"))
    defaults = {"num_batch": DEFAULT_NUM_BATCH, "num_thread": max(threads or thread_choices())}
    shown = replace(best, options={k: v for k, v in best.options.items() if defaults.get(k) != v})
    return SweepResult(model, info.version, tuple(points), shown, tuple(notes), best)


def record(result: SweepResult) -> dict[str, object]:
    """``bench --sweep --json``."""
    from ollamads.ollama.bench import result_record

    return {
        "model": result.model,
        "server_version": result.version,
        "points": [
            {"factor": p.factor, "environment": dict(p.setting.environment),
             "options": dict(p.setting.options), "error": p.error,
             "generation_tokens_per_s": p.result and p.result.generation_tokens_per_s,
             "prompt_tokens_per_s": p.result and p.result.prompt_tokens_per_s,
             "bench": None if p.result is None else result_record(p.result)}
            for p in result.points
        ],
        "best": {"environment": dict(result.best.environment), "options": dict(result.best.options)},
        "serve": result.serve_line(),
        "parameters": result.parameters(),
        "notes": list(result.notes),
    }


__all__ = ["Setting", "SweepPoint", "SweepResult", "record", "run_sweep", "thread_choices"]
