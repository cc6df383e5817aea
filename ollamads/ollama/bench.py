"""How fast a registered model runs on a server: load time, prompt and generation tokens/s.

Every figure comes from Ollama's own counters in the last event of ``/api/generate``
(``load_duration``, ``prompt_eval_count`` / ``prompt_eval_duration``, ``eval_count`` /
``eval_duration``, all nanoseconds), except the time to first token, which is the time this
client waited for the first streamed piece of text. Each prompt length runs ``runs`` times after
one warm-up request; results are medians.

Requests are raw (no template) and greedy. Each prompt starts with a different word so that
Ollama's prompt cache cannot reuse an earlier run's prefix: every run evaluates its whole
prompt.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ollamads.errors import OllamadsError
from ollamads.ollama.api import OllamaAPI
from ollamads.progress import Progress, ProgressEvent, no_progress

NS = 1e9
DEFAULT_PROMPT_TOKENS = (128,)
DEFAULT_GENERATE_TOKENS = 64
DEFAULT_RUNS = 3
#: Common words that DeepSeek's tokenizer (and the built-in tiny model's) keeps as one token each.
_WORDS = ("the", "of", "and", "to", "in", "is", "that", "it", "for", "on", "with", "as", "was",
          "at", "by", "from", "this", "be", "or", "an")
#: Distinct first words: no run shares a prompt prefix with another.
_OPENERS = ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
            "Juliet", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo")


@dataclass(frozen=True)
class BenchSettings:
    prompt_tokens: tuple[int, ...] = DEFAULT_PROMPT_TOKENS
    generate_tokens: int = DEFAULT_GENERATE_TOKENS
    runs: int = DEFAULT_RUNS
    #: Request options on top of the model's own (num_thread, num_batch, num_ctx...).
    options: Mapping[str, object] = field(default_factory=dict)
    #: Unload the model first, so the warm-up request measures a load.
    measure_load: bool = True

    def check(self) -> None:
        if self.runs < 1:
            raise OllamadsError(f"--runs must be at least 1 (got {self.runs})", "e.g. --runs 3")
        if self.generate_tokens < 1:
            raise OllamadsError(f"--generate must be at least 1 token (got {self.generate_tokens})",
                                "e.g. --generate 64")
        if not self.prompt_tokens or min(self.prompt_tokens) < 1:
            raise OllamadsError("each --prompt length must be at least 1 token", "e.g. --prompt 128")


@dataclass(frozen=True)
class RunTiming:
    """One request's counters."""

    prompt_tokens: int
    prompt_s: float
    generated_tokens: int
    generation_s: float
    load_s: float
    first_token_s: float | None

    @property
    def prompt_tokens_per_s(self) -> float | None:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 and self.prompt_tokens else None

    @property
    def generation_tokens_per_s(self) -> float | None:
        # Ollama's eval counters cover the tokens after the first (which the prompt step makes)
        return (self.generated_tokens / self.generation_s
                if self.generation_s > 0 and self.generated_tokens else None)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class LengthResult:
    """Every run at one requested prompt length, and their medians."""

    requested: int
    runs: tuple[RunTiming, ...]

    @property
    def prompt_tokens(self) -> int:
        return int(statistics.median(r.prompt_tokens for r in self.runs))

    @property
    def prompt_tokens_per_s(self) -> float | None:
        return _median([r.prompt_tokens_per_s for r in self.runs])

    @property
    def generation_tokens_per_s(self) -> float | None:
        return _median([r.generation_tokens_per_s for r in self.runs])

    @property
    def first_token_s(self) -> float | None:
        return _median([r.first_token_s for r in self.runs])


@dataclass(frozen=True)
class BenchResult:
    model: str
    host: str
    version: str
    settings: BenchSettings
    #: The warm-up request's load_duration (after an unload when ``measure_load``).
    load_s: float | None
    lengths: tuple[LengthResult, ...]
    #: What ``/api/ps`` said once the model was loaded: its size in memory, and how much of
    #: it is in GPU memory (0 on a machine without one).
    size: int | None = None
    size_vram: int | None = None

    @property
    def generation_tokens_per_s(self) -> float | None:
        """The median over every run at every length."""
        return _median([r.generation_tokens_per_s for length in self.lengths for r in length.runs])

    @property
    def prompt_tokens_per_s(self) -> float | None:
        return _median([r.prompt_tokens_per_s for length in self.lengths for r in length.runs])


def prompt_text(tokens: int, run: int) -> str:
    """About ``tokens`` tokens of plain words, opened by a word no other run starts with."""
    opener = f"{_OPENERS[run % len(_OPENERS)]}{run // len(_OPENERS) or ''}"
    words = [opener] + [_WORDS[i % len(_WORDS)] for i in range(max(tokens - 1, 0))]
    return " ".join(words)


def timed_request(api: OllamaAPI, model: str, prompt: str, options: Mapping[str, object]) -> RunTiming:
    """One streamed raw request; Ollama's counters plus this client's time to first text."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "raw": True, "options": dict(options)}
    start = time.perf_counter()
    first: float | None = None
    last: dict[str, Any] = {}
    for event in api.generate(body):
        if first is None and event.get("response"):
            first = time.perf_counter() - start
        last = event
    if not last.get("done"):
        raise OllamadsError(f"Ollama's answer for {model} ended without its counters",
                            "check the server log")
    return RunTiming(
        prompt_tokens=int(last.get("prompt_eval_count") or 0),
        prompt_s=float(last.get("prompt_eval_duration") or 0) / NS,
        generated_tokens=int(last.get("eval_count") or 0),
        generation_s=float(last.get("eval_duration") or 0) / NS,
        load_s=float(last.get("load_duration") or 0) / NS,
        first_token_s=first,
    )


def request_options(settings: BenchSettings) -> dict[str, object]:
    # Greedy, so every run and every server takes the same path through the model.
    return {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": settings.generate_tokens,
            **settings.options}


def run_bench(model: str, settings: BenchSettings, *, host: str | None = None,
              progress: Progress | None = None) -> BenchResult:
    """Time ``model`` on the server at ``host``: one warm-up (the load), then ``runs`` requests
    per prompt length."""
    settings.check()
    report = progress or no_progress
    api = OllamaAPI(host)
    info = api.info()
    if api.show(model) is None:
        raise OllamadsError(f"the Ollama server at {api.url} has no model {model}",
                            "see `ollama list`; register it with `ollamads create` (or try the "
                            "built-in one: `ollamads demo`)")
    options = request_options(settings)
    report(ProgressEvent("load", model, 0, 1, "loading"))
    if settings.measure_load:
        api.unload(model)
    warm = timed_request(api, model, prompt_text(8, 0), {**options, "num_predict": 2})
    report(ProgressEvent("load", model, 1, 1, "loaded"))
    size, size_vram = _placement(api, model)
    lengths = []
    run_number = 1
    for tokens in settings.prompt_tokens:
        item = f"prompt {tokens} + {settings.generate_tokens} tokens"
        runs = []
        for i in range(settings.runs):
            report(ProgressEvent("bench", item, i, settings.runs, f"run {i + 1}/{settings.runs}"))
            runs.append(timed_request(api, model, prompt_text(tokens, run_number), options))
            run_number += 1
        report(ProgressEvent("bench", item, settings.runs, settings.runs, "done"))
        lengths.append(LengthResult(tokens, tuple(runs)))
    return BenchResult(model, api.url, info.version, settings,
                       warm.load_s if settings.measure_load else None, tuple(lengths), size, size_vram)


def _placement(api: OllamaAPI, model: str) -> tuple[int | None, int | None]:
    for loaded in api.loaded():
        if model in (loaded.get("name"), loaded.get("model")):
            size, vram = loaded.get("size"), loaded.get("size_vram")
            return (size if isinstance(size, int) else None, vram if isinstance(vram, int) else None)
    return None, None


def result_record(result: BenchResult) -> dict[str, Any]:
    """``bench --json``."""
    def rate(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "model": result.model,
        "host": result.host,
        "server_version": result.version,
        "runs": result.settings.runs,
        "generate_tokens": result.settings.generate_tokens,
        "options": dict(result.settings.options),
        "load_s": None if result.load_s is None else round(result.load_s, 3),
        "size": result.size,
        "size_vram": result.size_vram,
        "prompt_tokens_per_s": rate(result.prompt_tokens_per_s),
        "generation_tokens_per_s": rate(result.generation_tokens_per_s),
        "lengths": [
            {
                "prompt_tokens_requested": length.requested,
                "prompt_tokens": length.prompt_tokens,
                "prompt_tokens_per_s": rate(length.prompt_tokens_per_s),
                "generation_tokens_per_s": rate(length.generation_tokens_per_s),
                "first_token_s": rate(length.first_token_s),
                "runs": [
                    {"prompt_tokens": r.prompt_tokens, "prompt_s": round(r.prompt_s, 6),
                     "generated_tokens": r.generated_tokens, "generation_s": round(r.generation_s, 6),
                     "first_token_s": rate(r.first_token_s)}
                    for r in length.runs
                ],
            }
            for length in result.lengths
        ],
    }


__all__ = [
    "BenchResult",
    "BenchSettings",
    "LengthResult",
    "RunTiming",
    "prompt_text",
    "result_record",
    "run_bench",
    "timed_request",
]
