"""``ollamads doctor``: everything a DeepSeek setup depends on, each with a fix.

Each check returns :class:`Finding` s (ok, info, warn or fail, a one-line summary, a fix for
anything not ok, and details for ``--json``). Nothing here prints; nothing is changed, except
that finding the server's store writes and removes one probe blob (as ``create`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollamads.units import GIB

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
#: Worst first is last: the exit code follows the worst finding.
SEVERITY = (OK, INFO, WARN, FAIL)
#: ``ollamads doctor`` exits with these (1 and 2 keep their meaning: an error, a usage error).
EXIT_CODES = {OK: 0, INFO: 0, WARN: 3, FAIL: 4}
LLAMA_CPP_TOOLS = ("llama-server", "llama-gguf-split", "llama-quantize")
OPEN_WEBUI_ENV = "OLLAMADS_OPEN_WEBUI"
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def worst(findings: list[Finding]) -> str:
    return max((f.status for f in findings), key=SEVERITY.index, default=OK)


def exit_code(findings: list[Finding]) -> int:
    return EXIT_CODES[worst(findings)]


# --- the server ----------------------------------------------------------------------------


def check_server(host: str | None) -> tuple[list[Finding], Any]:
    from ollamads.errors import ServerError
    from ollamads.ollama.api import probe
    from ollamads.ollama.versions import tested_release_names

    try:
        server = probe(host, timeout=PROBE_TIMEOUT_S)
    except ServerError as exc:
        return [Finding("server", FAIL, exc.message, exc.hint)], None
    features = {
        "split_gguf": server.accepts_split_gguf,
        "renderer": server.has_deepseek_renderer,
        "think": server.supports_think,
    }
    line = {
        "merge": "<= 0.24, shards are merged first",
        "rewrite": "0.30-0.34.0, takes split GGUFs and rewrites them",
        "layers": ">= 0.34.1, keeps GGUFs and shards as they are",
    }[server.gguf_handling]
    words = ", ".join(f"{name.replace('_', ' ')} {'yes' if on else 'no'}" for name, on in features.items())
    summary = f"Ollama {server.version} at {server.host} ({line}; {words})"
    details = {"host": server.host, "version": server.version, "line": server.line,
               "gguf_handling": server.gguf_handling, "tested": server.tested, **features}
    untested = server.untested_note()
    if untested:
        return [Finding("server", WARN, f"{summary}; {untested}",
                        "use a tested release for certainty: "
                        + ", ".join(v.removeprefix("v") for v in tested_release_names()),
                        details)], server
    if not server.supports_think:
        return [Finding("server", WARN, summary, "upgrade Ollama to v0.9.0 or newer for thinking mode",
                        details)], server
    return [Finding("server", OK, summary, None, details)], server


def server_process_environment(server_url: str) -> dict[str, str] | None:
    """The environment of the ``ollama serve`` process answering at ``server_url``, when it
    runs on this machine and this user may read it (Linux /proc); None otherwise."""
    from ollamads.ollama.local_server import server_process

    process = server_process(server_url)
    return process.environ if process is not None else None


def check_kv_cache(server: Any) -> list[Finding]:
    from ollamads.ollama.versions import applied_kv

    if server is None:
        return [Finding("KV cache", INFO, "no server to ask", "start the server, then run doctor again")]
    env = server_process_environment(server.host)
    where = "the server's environment"
    if env is None:
        env, where = dict(os.environ), "this shell's environment (the server's is not readable here)"
    kv, fa = env.get("OLLAMA_KV_CACHE_TYPE"), env.get("OLLAMA_FLASH_ATTENTION")
    applied = applied_kv(server.line, kv, fa)
    offload = {k: v for k, v in env.items() if k.startswith("LLAMA_ARG_")}
    details = {"OLLAMA_KV_CACHE_TYPE": kv, "OLLAMA_FLASH_ATTENTION": fa, "from": where,
               "cache_type": applied.cache_type, "flash_attention": applied.flash_attention,
               "llama_server_variables": offload}
    summary = (f"DeepSeek's KV cache will be {applied.cache_type}, flash attention "
               f"{applied.flash_attention} (OLLAMA_KV_CACHE_TYPE={kv or 'unset'}, "
               f"OLLAMA_FLASH_ATTENTION={fa or 'unset'}, from {where})")
    if offload and server.line == "split":
        summary += "; llama-server gets " + " ".join(f"{k}={v}" for k, v in sorted(offload.items()))
    restart = "restart the server with OLLAMA_KV_CACHE_TYPE=q8_0 OLLAMA_FLASH_ATTENTION=1 (`ollamads serve` does)"
    if applied.error:
        return [Finding("KV cache", FAIL, applied.error, restart, details)]
    if applied.note:
        return [Finding("KV cache", WARN, applied.note,
                        "plan with `ollamads plan --server-line merged` (it counts f16), or use "
                        "Ollama >= 0.30, where q8_0 applies", details)]
    if applied.cache_type.startswith("q4") or applied.cache_type == "iq4_nl":
        return [Finding("KV cache", WARN, summary + ": the guides say a 4-bit cache is clearly worse",
                        restart, details)]
    if applied.cache_type in ("f16", "f32", "bf16"):
        return [Finding("KV cache", WARN, summary + ": q8_0 would halve it",
                        restart, details)]
    return [Finding("KV cache", OK, summary, None, details)]


# --- the store and this machine --------------------------------------------------------------


def smallest_quant_bytes() -> int:
    from ollamads.catalog import load_catalog

    sizes = [q.size_gib for m in load_catalog().models for q in m.quants if q.size_gib]
    return int(min(sizes) * GIB)


def check_store(server: Any) -> list[Finding]:
    from ollamads.ollama.serve import default_ollama_models
    from ollamads.ollama.store import find_store
    from ollamads.units import disk_free, format_bytes

    need = smallest_quant_bytes()
    if server is None:
        root, found, reason = default_ollama_models(), False, "no server to ask"
    else:
        checked = find_store(server)
        found = checked.store is not None
        root = checked.store.root if checked.store else default_ollama_models()
        reason = checked.reason
    free = disk_free(root)
    details = {"path": str(root), "confirmed": found, "reason": reason, "free": free}
    room = f"{format_bytes(free)} free"
    if server is None:
        return [Finding("store", INFO, f"no server to confirm its store; {room} at {root} "
                        "(where `ollamads serve` keeps it)", "start the server, then run doctor again",
                        details)]
    if not found:
        if checked.server_store is not None:
            root, free = checked.server_store, disk_free(checked.server_store)
            details.update(path=str(root), free=free)
            return [Finding("store", WARN, f"{reason}; {format_bytes(free)} free there",
                            checked.fix, details)]
        return [Finding("store", WARN, f"the server's store is not one this user can write ({reason}); "
                        f"{room} at {root}",
                        "run the server with `ollamads serve` (its store is yours), or set "
                        "OLLAMA_MODELS to the server's store; create then uploads instead", details)]
    if free < need:
        return [Finding("store", WARN, f"{root} is writable, but {room}: less than the smallest "
                        f"quant ({format_bytes(need)})",
                        "free disk space, or move the store (OLLAMA_MODELS) to a larger disk",
                        details)]
    return [Finding("store", OK, f"{root}, writable, {room}", None, details)]


def check_memory() -> list[Finding]:
    from ollamads.catalog import load_catalog
    from ollamads.hardware import this_machine
    from ollamads.plan.family import family_fits, largest_fitting
    from ollamads.plan.recommend import PlanRequest

    machine = this_machine()
    model = load_catalog().models[0]
    best = largest_fitting(family_fits(model, machine, PlanRequest(ctx=16384)))
    details = {"ram": machine.ram, "unified": machine.unified,
               "gpus": [{"name": g.name, "memory": g.total, "kind": g.kind} for g in machine.gpus],
               "largest_fitting": best.entry.spec if best else None}
    if best is None:
        return [Finding("memory", WARN, f"{machine.describe()}: no quant runs from memory here "
                        "(llama.cpp would page from disk: slow)",
                        "add RAM or a GPU; `ollamads plan MODEL:QUANT` shows what each needs", details)]
    how = "" if best.exact else " (estimated from its published size)"
    return [Finding("memory", OK, f"{machine.describe()}: up to {best.entry.spec} fits{how}",
                    None, details)]


# --- tools -----------------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = 20.0) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout + done.stderr).strip()


def check_llama_cpp() -> list[Finding]:
    from ollamads.gguf.merge import ENV_GGUF_SPLIT

    found: dict[str, str] = {}
    for tool in LLAMA_CPP_TOOLS:
        path = shutil.which(tool) or (os.environ.get(ENV_GGUF_SPLIT) if tool == "llama-gguf-split" else None)
        if path and shutil.which(path):
            found[tool] = path
    missing = [t for t in LLAMA_CPP_TOOLS if t not in found]
    version = _run([found["llama-server"], "--version"]) if "llama-server" in found else None
    details = {"found": found, "missing": missing, "llama_server_version": version}
    if missing:
        return [Finding("llama.cpp", INFO, f"not found: {', '.join(missing)}"
                        + (f"; found {', '.join(found)}" if found else ""),
                        "only needed to run llama-server yourself (`ollamads plan` prints its "
                        "command line); merging has a built-in fallback. Put llama.cpp's tools on PATH",
                        details)]
    first = (version or "").splitlines()
    line = next((text for text in first if "version" in text), first[0] if first else "")
    return [Finding("llama.cpp", OK, f"{', '.join(found.values())}" + (f" ({line})" if line else ""),
                    None, details)]


def check_hub() -> list[Finding]:
    import requests
    from huggingface_hub import get_token

    from ollamads.catalog import load_catalog
    from ollamads.hub.api import auth_headers, hub_endpoint, public_headers

    endpoint = hub_endpoint()
    repo = load_catalog().models[0].repo
    try:
        response = requests.get(f"{endpoint}/api/models/{repo}", headers=public_headers(),
                                timeout=(PROBE_TIMEOUT_S, 2 * PROBE_TIMEOUT_S))
        reachable = response.status_code == 200
        why = f"answered {response.status_code} for {repo}"
    except requests.RequestException as exc:
        reachable, why = False, type(exc).__name__
    findings = []
    if reachable:
        findings.append(Finding("Hub", OK, f"{endpoint} answers ({repo} is listed)", None,
                                {"endpoint": endpoint}))
    else:
        findings.append(Finding("Hub", FAIL, f"cannot reach the Hub at {endpoint} ({why})",
                                "check the network (and HF_ENDPOINT, proxy settings); pull and "
                                "plan need it, cached headers and local files do not",
                                {"endpoint": endpoint}))
    token = get_token()
    if not token:
        findings.append(Finding("Hub token", INFO, "no token set (Unsloth's repos are public)", None))
    elif reachable:
        try:
            answer = requests.get(f"{endpoint}/api/whoami-v2", headers=auth_headers(),
                                  timeout=(PROBE_TIMEOUT_S, 2 * PROBE_TIMEOUT_S))
        except requests.RequestException as exc:
            answer = None
            why = type(exc).__name__
        if answer is not None and answer.status_code == 200:
            name = answer.json().get("name", "?")
            findings.append(Finding("Hub token", OK, f"the token is valid (user {name})", None))
        else:
            status = answer.status_code if answer is not None else why
            findings.append(Finding("Hub token", FAIL, f"the Hub refused the token ({status})",
                                    "set HF_TOKEN to a valid access token, or unset it "
                                    "(public repos need none)"))
    return findings


def check_open_webui() -> list[Finding]:
    from ollamads.pins import pin

    binary = os.environ.get(OPEN_WEBUI_ENV) or shutil.which("open-webui")
    tested = pin("OPEN_WEBUI_VERSION")
    if not binary or not Path(binary).is_file():
        return [Finding("Open WebUI", INFO, "not installed",
                        f"optional: install open-webui {tested} in its own virtual environment, "
                        "then `OLLAMA_BASE_URL=<server> open-webui serve`")]
    version = _open_webui_version(Path(binary))
    details = {"path": binary, "version": version, "tested": tested}
    if version is None:
        return [Finding("Open WebUI", WARN, f"{binary} found, but its version could not be read",
                        "reinstall open-webui", details)]
    if version != tested:
        return [Finding("Open WebUI", INFO, f"{binary}, version {version} (ollamads is tested with "
                        f"{tested})", None, details)]
    return [Finding("Open WebUI", OK, f"{binary}, version {version}", None, details)]


def _open_webui_version(binary: Path) -> str | None:
    """Asked of the interpreter the script runs with, without importing Open WebUI (slow)."""
    try:
        first = binary.read_bytes()[:512].split(b"\n", 1)[0].decode()
    except OSError:
        return None
    python = first[2:].strip().split()[0] if first.startswith("#!") else None
    if not python:
        return None
    out = _run([python, "-c", "import importlib.metadata as m; print(m.version('open-webui'))"])
    return out.splitlines()[-1].strip() if out else None


def check_engine_speed(server: Any) -> list[Finding]:
    """On the <= 0.24 line: what the newer line's engine gives, and what the upgrade costs."""
    if server is None or server.line != "merged":
        return []
    from ollamads.plan.speed import MERGED_ENGINE_SHARE

    return [Finding(
        "speed", INFO,
        f"Ollama {server.version} runs DeepSeek with its own engine: measured at "
        f"{MERGED_ENGINE_SHARE:.1f}x llama.cpp's generation speed; Ollama >= 0.30 runs llama-server "
        f"(about {1 / MERGED_ENGINE_SHARE:.1f}x faster) and takes split shards as they are, so the "
        "merged copy (as large as the model) is no longer needed",
        "upgrade Ollama to v0.30 or newer, then `ollamads create` the model again (no merge); "
        "`ollamads bench MODEL` measures the difference",
        {"engine_share": MERGED_ENGINE_SHARE},
    )]


# --- all of them ---------------------------------------------------------------------------


def run_checks(host: str | None = None) -> list[Finding]:
    server_findings, server = check_server(host)
    checks: list[Callable[[], list[Finding]]] = [
        lambda: check_kv_cache(server),
        lambda: check_engine_speed(server),
        lambda: check_store(server),
        check_memory,
        check_llama_cpp,
        check_hub,
        check_open_webui,
    ]
    findings = list(server_findings)
    for check in checks:
        findings += check()
    return findings


__all__ = [
    "EXIT_CODES",
    "FAIL",
    "INFO",
    "OK",
    "WARN",
    "Finding",
    "exit_code",
    "run_checks",
    "server_process_environment",
    "worst",
]
