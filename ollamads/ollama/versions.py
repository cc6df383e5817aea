"""Which Ollama a server is, and what its version can do.

Three lines of Ollama are in use and they do different things with a GGUF:

* up to v0.24 llama.cpp is linked into the server; a split GGUF cannot be loaded, so shards
  must be merged into one file first (``merge``);
* v0.30.0-v0.34.0 run ``llama-server``, accept the shards and rewrite them into one blob with
  ``llama-quantize ... COPY`` at create time (``rewrite``);
* from v0.34.1 the server stores a GGUF as it is and keeps split shards as one layer each
  (``layers``).

Everything that depends on the line is decided here, from ``GET /api/version``. Each line was
proven by the tests on the release pinned for it (``pins.toml``); a server newer than all of
them is treated like the newest and its result is checked after registration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from ollamads.errors import ServerError
from ollamads.pins import pin

DEFAULT_HOST = "http://127.0.0.1:11434"
#: ``think`` request field and the ``.Think`` template variable.
MIN_THINK_VERSION = (0, 9, 0)
#: First release that accepts split GGUFs in ``/api/create``.
SPLIT_GGUF_VERSION = (0, 30, 0)
#: First release that stores GGUFs as they are, split shards as one model layer each: its
#: source adds server/create_split_gguf.go and drops server/quantization.go (v0.34.0 still
#: rewrites with ``llama-quantize COPY``).
SHARDS_AS_LAYERS_VERSION = (0, 34, 1)
#: First release that refuses ``typical_p`` in requests and in create's parameters.
TYPICAL_P_REFUSED_VERSION = (0, 34, 1)
#: First release with both names ``RENDERER deepseek3.1`` and ``PARSER deepseek3``.
DEEPSEEK_RENDERER_VERSION = (0, 13, 5)
#: ``renderer`` / ``parser`` fields in ``/api/create``.
CREATE_RENDERER_FIELD_VERSION = (0, 12, 0)
#: Control calls are quick; model loads and generation are not, and get no timeout.
CONTROL_TIMEOUT_S = 10.0

#: What a line does with the GGUF files of ``/api/create``.
GgufHandling = Literal["merge", "rewrite", "layers"]
#: The releases the test suite runs against, one per line (pins.toml).
TESTED_RELEASE_PINS = ("OLLAMA_OLD_LINE", "OLLAMA_NEW_LINE", "OLLAMA_NEWEST_LINE")

# Tensor types (ggml ids) without a size in the server's GGUF reader, read from fs/gguf/tensor.go
# of each tested release: TQ1_0 34, TQ2_0 35 (and on v0.32.15 MXFP4 39, NVFP4 40, Q1_0 41), and
# Q2_0 42, which no release knows yet.
REWRITE_LINE_UNREADABLE_TYPES = frozenset({34, 35, 39, 40, 41, 42})
LAYERS_LINE_UNREADABLE_TYPES = frozenset({34, 35, 42})
MERGED_LINE_UNREADABLE_TYPES: frozenset[int] = frozenset()

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"0.33.0-rc2"`` -> ``(0, 33, 0)``. A development build reports 0.0.0."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise ServerError(
            f"Ollama reported an unreadable version {text!r}",
            "use a released Ollama build",
        )
    return int(match[1]), int(match[2]), int(match[3])


def normalize_host(host: str | None) -> str:
    """Accept what OLLAMA_HOST accepts (``127.0.0.1:11434``, ``:8080``, ``http://h:p``)."""
    host = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    if rest.startswith(":"):
        rest = "127.0.0.1" + rest
    if rest.startswith("0.0.0.0"):
        rest = "127.0.0.1" + rest[len("0.0.0.0"):]
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest += ":11434"
    return f"{scheme}://{rest}"


@dataclass(frozen=True)
class ServerInfo:
    """What a running server can do, derived from its version."""

    host: str
    version: str

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def accepts_split_gguf(self) -> bool:
        return self.version_tuple >= SPLIT_GGUF_VERSION

    @property
    def line(self) -> str:
        """``"merged"`` (<= v0.24, needs one GGUF file) or ``"split"`` (>= v0.30): the prompt
        format and engine line, which the Modelfiles follow."""
        return "split" if self.accepts_split_gguf else "merged"

    @property
    def gguf_handling(self) -> GgufHandling:
        """What this server does with a model's GGUF files at create time."""
        if not self.accepts_split_gguf:
            return "merge"
        return "layers" if self.version_tuple >= SHARDS_AS_LAYERS_VERSION else "rewrite"

    @property
    def tested(self) -> bool:
        """A release the test suite runs against."""
        return self.version_tuple in tested_releases()

    @property
    def newer_than_tested(self) -> bool:
        return self.version_tuple > max(tested_releases())

    @property
    def refuses_typical_p(self) -> bool:
        return self.version_tuple >= TYPICAL_P_REFUSED_VERSION

    @property
    def unreadable_tensor_types(self) -> frozenset[int]:
        """ggml tensor types this server's GGUF reader cannot size (fs/gguf's typeSize is 0):
        v0.34.1+ refuses such a model at create ("size overflows"), v0.30-v0.34.0 registers it
        and then fails every /api/show and load."""
        if not self.accepts_split_gguf:
            return MERGED_LINE_UNREADABLE_TYPES
        if self.gguf_handling == "layers":
            return LAYERS_LINE_UNREADABLE_TYPES
        return REWRITE_LINE_UNREADABLE_TYPES

    def untested_note(self) -> str | None:
        """One line for ``doctor`` and ``create`` when this release was never tested."""
        if self.tested:
            return None
        newest = ".".join(map(str, max(tested_releases())))
        if self.newer_than_tested:
            return (f"Ollama {self.version} is newer than any release ollamads was tested with "
                    f"(newest: {newest}); it is treated like {newest} and each model is checked "
                    "after registration")
        return (f"Ollama {self.version} is not a release ollamads was tested with; it is treated "
                f"as its line ({self.gguf_handling}) and each model is checked after registration")

    @property
    def supports_think(self) -> bool:
        return self.version_tuple >= MIN_THINK_VERSION

    @property
    def has_deepseek_renderer(self) -> bool:
        return self.version_tuple >= DEEPSEEK_RENDERER_VERSION

    def require_think(self) -> None:
        if not self.supports_think:
            raise ServerError(
                f"Ollama {self.version} at {self.host} is too old for thinking mode",
                "upgrade Ollama to v0.9.0 or newer",
            )


def tested_release_names() -> tuple[str, ...]:
    """``("v0.24.0", "v0.32.15", "v0.34.4")``: one release per line, oldest first."""
    return tuple(pin(name) for name in TESTED_RELEASE_PINS)


def tested_releases() -> tuple[tuple[int, int, int], ...]:
    return tuple(parse_version(name) for name in tested_release_names())


# --- KV cache and flash attention, as each line applies them to a DeepSeek (MLA) model --------

#: What llama-server's ``--cache-type-k/-v`` accept (common/arg.cpp); the >= v0.30 line passes
#: OLLAMA_KV_CACHE_TYPE through unchecked, so these are what that line accepts.
LLAMA_SERVER_KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
#: What the <= v0.24 line accepts (fs/ggml SupportsKVCacheType); anything else is ignored.
MERGED_LINE_KV_TYPES = ("f16", "q8_0", "q4_0")
_UNQUANTIZED_KV = ("f32", "f16", "bf16")
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def kv_types_for(line: str) -> tuple[str, ...]:
    """Cache types a line (``merged``, ``split`` or ``llama.cpp``) accepts."""
    return MERGED_LINE_KV_TYPES if line == "merged" else LLAMA_SERVER_KV_TYPES


def go_bool(value: str) -> bool:
    """Ollama's envconfig.Bool: strconv.ParseBool, and any other non-empty value is true."""
    return value.strip().strip("\"'") not in _GO_FALSE


@dataclass(frozen=True)
class AppliedKV:
    """The KV cache type and flash attention a server line really uses for a DeepSeek model."""

    cache_type: str
    flash_attention: str  # "on", "off" or "auto" (llama-server turns auto on where supported)
    #: Set when the server will refuse to load the model with these settings.
    error: str | None = None
    #: Why the applied values differ from what was asked, when they do.
    note: str | None = None


def applied_kv(line: str, kv_type: str | None, flash_attention: str | None) -> AppliedKV:
    """What ``OLLAMA_KV_CACHE_TYPE`` / ``OLLAMA_FLASH_ATTENTION`` values become for DeepSeek.

    * <= v0.24 runs DeepSeek on Ollama's own engine, which turns flash attention off for it
      (its K and V head sizes, 576 and 512, differ: fs/ggml SupportsFlashAttention), and without
      flash attention the engine keeps the KV cache at f16 whatever the variable says.
    * >= v0.30 passes both to llama-server: ``--flash-attn on|off`` when the variable is set,
      ``auto`` otherwise; ``--cache-type-k/-v`` as given. llama-server refuses a quantized
      cache with flash attention off, and an unknown type."""
    wanted = (kv_type or "").strip().strip("\"'").lower()
    fa_set = flash_attention is not None and flash_attention.strip() != ""
    if line == "merged":
        note = None
        if wanted and wanted != "f16":
            note = (f"OLLAMA_KV_CACHE_TYPE={wanted} has no effect on DeepSeek here: Ollama <= 0.24 "
                    "turns flash attention off for it (K/V head sizes 576/512), so the cache stays f16")
        return AppliedKV("f16", "off", note=note)
    fa = ("on" if go_bool(flash_attention or "") else "off") if fa_set else "auto"
    cache = wanted or "f16"
    if cache not in LLAMA_SERVER_KV_TYPES:
        return AppliedKV(cache, fa, error=(
            f"llama-server refuses OLLAMA_KV_CACHE_TYPE={cache} (Unsupported cache type); "
            f"use one of {', '.join(LLAMA_SERVER_KV_TYPES)}"))
    if cache not in _UNQUANTIZED_KV and fa == "off":
        return AppliedKV(cache, fa, error=(
            f"llama-server refuses a {cache} cache with flash attention off (quantized V cache "
            "requires flash_attn); unset OLLAMA_FLASH_ATTENTION or set it to 1"))
    return AppliedKV(cache, fa)
