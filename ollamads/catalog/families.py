"""The three DeepSeek prompt families and what each needs from Ollama.

V3.1 and V3.1-Terminus share one hybrid format (thinking on request); R1 and R1-0528 always
reason; V3 and V3-0324 never do. Every family accepts tools (described in V3.1's documented
format, templates/go/deepseek-tools.gotmpl). Sampling defaults are the ones Unsloth's guides and
DeepSeek's model cards recommend (the guides are listed in catalog.toml's [sources]). The special
tokens use U+FF5C and U+2581, never ASCII ``|`` or ``_``: copy them from here, not from web pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ollamads.errors import OllamadsError

ThinkingMode = Literal["hybrid", "always", "none"]

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

#: Belt and braces beside the GGUF's EOS: a role marker in the output means the turn is over.
STOP_TOKENS = (EOS, USER, ASSISTANT)


@dataclass(frozen=True)
class PromptFamily:
    name: str
    #: templates/go/: the Go TEMPLATE that renders this format for Ollama.
    go_template: str
    #: templates/chat/: DeepSeek's own Jinja chat template, as the GGUFs carry it.
    chat_template: str
    thinking: ThinkingMode
    #: Ollama's built-in prompt renderer / output parser for this format, if it has one.
    renderer: str | None = None
    parser: str | None = None
    parameters: Mapping[str, object] = field(default_factory=dict)

    @property
    def can_think(self) -> bool:
        return self.thinking != "none"


#: Every sampling value a model gets, set explicitly: Ollama v0.33+ takes a GGUF's
#: ``general.sampling.*`` keys as defaults for any it is not given, and the lines differ in their
#: own defaults (repeat_penalty 1.1 up to v0.24, 1.0 later). These are llama.cpp's defaults,
#: which the guides run with; each family sets its own temperature, top_p and min_p on top.
SAMPLING_DEFAULTS: Mapping[str, object] = MappingProxyType({
    "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "repeat_last_n": 64,
    "presence_penalty": 0.0, "frequency_penalty": 0.0,
})


def _params(**values: object) -> Mapping[str, object]:
    return MappingProxyType({**SAMPLING_DEFAULTS, **values, "stop": list(STOP_TOKENS)})


FAMILIES: Mapping[str, PromptFamily] = MappingProxyType(
    {
        # Unsloth V3.1 guide: temperature 0.6, top_p 0.95, min_p 0.01; examples use 16K context.
        "v3.1": PromptFamily(
            name="v3.1",
            go_template="deepseek-v3.1.gotmpl",
            chat_template="deepseek-v3.1.jinja",
            thinking="hybrid",
            renderer="deepseek3.1",
            parser="deepseek3",
            parameters=_params(temperature=0.6, top_p=0.95, min_p=0.01, num_ctx=16384),
        ),
        # Unsloth R1 guide: temperature 0.6, min_p 0.05 (suppresses rare tokens at 1.58 bit),
        # DeepSeek's card: top_p 0.95. Its examples use an 8K context, but Open WebUI's built-in
        # tool definitions alone take about 7K tokens: 16K, like V3.1 (MLA caches 576 values a
        # token and layer, so 16K stays around a gigabyte at q8_0).
        "r1": PromptFamily(
            name="r1",
            go_template="deepseek-r1.gotmpl",
            chat_template="deepseek-r1.jinja",
            thinking="always",
            parameters=_params(temperature=0.6, top_p=0.95, min_p=0.05, num_ctx=16384),
        ),
        # DeepSeek's V3-0324 card: temperature 0.3; Unsloth: min_p 0.01 works well. 16K as R1.
        "v3": PromptFamily(
            name="v3",
            go_template="deepseek-v3.gotmpl",
            chat_template="deepseek-v3.jinja",
            thinking="none",
            parameters=_params(temperature=0.3, min_p=0.01, num_ctx=16384),
        ),
    }
)


def get_family(name: str) -> PromptFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise OllamadsError(
            f"unknown prompt family {name!r}", f"use one of: {', '.join(FAMILIES)}"
        ) from None


def guess_family(model_name: str) -> str | None:
    """The prompt family from a GGUF's ``general.name`` (``DeepSeek-V3.1-Terminus`` -> v3.1)."""
    name = model_name.lower()
    if "v3.1" in name:
        return "v3.1"
    if "r1" in name:
        return "r1"
    if "v3" in name:
        return "v3"
    return None
