"""ollamads: run DeepSeek's 671B dynamic-quant GGUFs in a local Ollama.

The public API: every name here is a function or a class, imported on first use so that
``ollamads --help`` stays instant. (Subpackages — ``ollamads.hub``, ``ollamads.gguf``,
``ollamads.ollama``, ``ollamads.catalog`` — are for code that needs more.)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    # the pipeline
    "create": "ollamads.pipeline",
    "plan_create": "ollamads.pipeline",
    "pull": "ollamads.quant_pull:pull_quant",
    "plan_pull": "ollamads.quant_pull:plan_quant_pull",
    "CreatePlan": "ollamads.pipeline",
    "CreateResult": "ollamads.pipeline",
    # the catalog
    "resolve": "ollamads.catalog.entries",
    "load_catalog": "ollamads.catalog.entries",
    "CatalogEntry": "ollamads.catalog.entries",
    # GGUF files
    "merge": "ollamads.gguf.merge",
    "read_gguf": "ollamads.gguf.format",
    "apply_fixed_template": "ollamads.gguf.retemplate",
    "rewrite_chat_template": "ollamads.gguf.retemplate",
    # the Ollama server
    "OllamaAPI": "ollamads.ollama.api",
    "register": "ollamads.registration",
    "ModelDefinition": "ollamads.ollama.modelfile",
    # chatting
    "DeepSeekClient": "ollamads.chat",
    "Answer": "ollamads.chat",
    "ThinkingDelta": "ollamads.chat",
    "ContentDelta": "ollamads.chat",
    "ToolCall": "ollamads.chat",
    "Done": "ollamads.chat",
    # progress and errors
    "ProgressEvent": "ollamads.progress",
    "OllamadsError": "ollamads.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ollamads' has no attribute {name!r}")
    import importlib

    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # later lookups (and `from ollamads import x`) skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
