"""Tokens per second on this machine: llama.cpp's own, `ollamads bench` on each Ollama line, and
the plan's decode estimate, on one synthetic DeepSeek MoE model.

The model: deepseek2, 10 blocks (1 dense), 256 routed experts with top-8 routing (V3's grouped
routing: 8 groups, 4 used) and one shared expert, n_embd 1024, expert width 512, Q8_0 weights
(random int8 values, finite), an F16 router with random weights so that tokens really pick
different experts: about 4 GB. Settings everywhere: 2 threads, context 4096, micro-batch 512,
flash attention on, greedy, a 128-token prompt and 64 generated tokens.

* llama.cpp: the toolchain's llama-server, started directly with those settings (``-t 2 -c 4096
  -b 512 -ub 512 -fa on -ctk q8_0 -ctv q8_0 --load-mode none``, as Ollama >= 0.30 starts its own without a GPU); its
  ``timings`` (prompt_n/prompt_ms, predicted_n/predicted_ms). llama-bench is not built by the
  toolchain: llama-server's own timings are llama.cpp's figures here.
* each Ollama line: a real ``ollama serve`` with ``ollamads serve``'s environment, the model
  registered through the API, timed by :func:`ollamads.ollama.bench.run_bench` (Ollama's
  counters), requests with ``num_thread 2, num_ctx 4096``.
* the plan: ``plan_model`` on the same file, this machine, context 4096, each line.

Each side also runs generation-only requests (a 2-token prompt, 64 tokens) and counts the CPU
seconds its processes used (llama-server; ``ollama serve`` and everything under it): generated
tokens per CPU-second, which other people's load on a shared machine cannot move as it moves
wall-clock time (with one thread; more threads also spend CPU waiting on each other).

Rounds: every side runs in every round, in turn (each started, warmed up, timed ``--runs``
times, stopped); the table gives the median over all rounds' runs, and the ratios are of those
medians. ``uptime`` is printed before each round: re-run when other load is obvious.

    .venv/bin/python benchmarks/speed.py [--dir /tmp/speed] [--rounds 3] [--runs 3] [--threads 1]
        [--only llama.cpp] [--f16] [--keep]

The README's table: ``--threads 1``; its F16 check: ``--threads 1 --f16 --only llama.cpp``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ollamads.children import stop_child
from ollamads.gguf.deepseek2 import DeepSeek2Dims, TensorSlot
from ollamads.gguf.format import GGMLQuantizationType as Q
from ollamads.hardware import this_machine
from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.bench import BenchSettings, prompt_text, request_options, run_bench, timed_request
from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe, free_port
from ollamads.plan.planner import plan_model
from ollamads.plan.speed import estimate_speed, merged_engine_share
from ollamads.tiny import tokenizer_vocab
from tests.support.synthetic import spec_for, write_synthetic
from tests.support.toolchain import executable, llama_cpp_tool

THREADS = 2
CTX = 4096
UBATCH = 512
PROMPT = 128
GENERATE = 64
NAME = "speed-moe:q8_0"
LINES = {"v0.24.0": ("OLLAMADS_OLLAMA_OLD", "merged"), "v0.32.15": ("OLLAMADS_OLLAMA_NEW", "split"),
         "v0.34.4": ("OLLAMADS_OLLAMA_NEWEST", "split")}


def moe_dims() -> DeepSeek2Dims:
    _, types = tokenizer_vocab()
    return DeepSeek2Dims(
        n_layer=10, n_dense_lead=1, n_embd=1024, n_ff=2048, n_head=8, q_lora_rank=256,
        kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, n_expert=256,
        n_expert_shared=1, n_ff_exp=512, n_vocab=len(types), tied_output=True,
    )


def moe_types(slot: TensorSlot) -> Q:
    if len(slot.shape) == 1:
        return Q.F32
    if "ffn_gate_inp" in slot.name:
        return Q.F16  # random, so the router really chooses
    return Q.Q8_0


def f16_types(slot: TensorSlot) -> Q:
    return Q.F32 if len(slot.shape) == 1 else Q.F16


def write_model(directory: Path, f16: bool = False) -> Path:
    """The Q8_0 model, or (``f16``) its F16 variant with experts half as wide (3.7 GB)."""
    name = "speed-moe-f16" if f16 else "speed-moe"
    path = directory / f"{name}.gguf"
    if path.is_file():
        return path
    dims = replace(moe_dims(), n_ff_exp=256) if f16 else moe_dims()
    weight = Q.F16 if f16 else Q.Q8_0
    spec = spec_for(dims, weight_type=weight, n_expert_used=8, n_expert_groups=8,
                    n_expert_groups_used=4, context_length=CTX)
    return write_synthetic(directory, name, dims, f16_types if f16 else moe_types, spec=spec,
                           data="finite")[0]


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every process under it."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


# --- llama.cpp directly ----------------------------------------------------------------------


def http_json(url: str, body: dict | None = None, timeout: float = 600) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def llama_runs(model: Path, log: Path, runs: int, first_run: int) -> tuple[list[tuple[float, float]], list[float]]:
    """(prompt tok/s, generation tok/s) of ``runs`` completions on a fresh llama-server, and
    generated tokens per CPU-second of generation-only requests."""
    port = free_port()
    argv = [str(llama_cpp_tool("llama-server")), "-m", str(model), "--host", "127.0.0.1",
            "--port", str(port), "-c", str(CTX), "-np", "1", "-t", str(THREADS), "-b", str(UBATCH),
            "-ub", str(UBATCH), "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0", "--load-mode", "none",
            "--no-webui"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"llama-server exited {proc.returncode}; see {log}")
            try:
                if http_json(base + "/health", timeout=2).get("status") == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"llama-server never became healthy; see {log}")
            time.sleep(0.2)

        def complete(prompt: str, n: int) -> dict:
            return http_json(base + "/completion", {
                "prompt": prompt, "n_predict": n, "temperature": 0, "top_k": 1, "seed": 1,
                "cache_prompt": False})["timings"]

        complete(prompt_text(8, 0), 2)  # warm-up
        figures = []
        for i in range(runs):
            t = complete(prompt_text(PROMPT, first_run + i), GENERATE)
            figures.append((t["prompt_n"] / t["prompt_ms"] * 1e3, t["predicted_n"] / t["predicted_ms"] * 1e3))
        per_cpu = []
        for i in range(runs):
            before = tree_cpu(proc.pid)
            t = complete(prompt_text(2, 500 + first_run + i), GENERATE)
            per_cpu.append(t["predicted_n"] / (tree_cpu(proc.pid) - before))
        return figures, per_cpu
    finally:
        stop_child(proc, timeout=15)


# --- Ollama ------------------------------------------------------------------------------------


def register(binary: str, store: Path, model: Path, digest: str, log: Path) -> None:
    serve = OllamaServe(store, binary=binary, env=dict(MODEL_ENVIRONMENT), log_path=log)
    serve.start()
    try:
        api = OllamaAPI(serve.url)
        if api.show(NAME) is None:
            api.push_blob(model, digest)
            api.create({"model": NAME, "files": {model.name: digest}, "stream": True})
    finally:
        serve.stop()


def ollama_runs(binary: str, store: Path, log: Path, runs: int) -> tuple[list[tuple[float, float]], list[float], float | None]:
    serve = OllamaServe(store, binary=binary, env=dict(MODEL_ENVIRONMENT), log_path=log)
    serve.start()
    try:
        settings = BenchSettings(prompt_tokens=(PROMPT,), generate_tokens=GENERATE, runs=runs,
                                 options={"num_thread": THREADS, "num_ctx": CTX})
        result = run_bench(NAME, settings, host=serve.url)
        runs_ = [r for length in result.lengths for r in length.runs]
        api, per_cpu = OllamaAPI(serve.url), []
        assert serve.process is not None
        for i in range(runs):
            before = tree_cpu(serve.process.pid)
            timing = timed_request(api, NAME, prompt_text(2, 500 + i), request_options(settings))
            per_cpu.append(timing.generated_tokens / (tree_cpu(serve.process.pid) - before))
        figures = [(r.prompt_tokens_per_s or 0.0, r.generation_tokens_per_s or 0.0) for r in runs_]
        return figures, per_cpu, result.load_s
    finally:
        serve.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/ollamads-speed"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", help="sides to run (llama.cpp, v0.24.0, ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--f16", action="store_true", help="the F16 variant of the model")
    parser.add_argument("--keep", action="store_true", help="keep the model and the stores")
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    work: Path = args.dir
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        model = write_model(work / "model", args.f16)
        print(f"threads: {THREADS}")
        print(f"model: {model} {model.stat().st_size / 1e9:.2f} GB ({time.monotonic() - started:.0f} s)", flush=True)
        estimates = {}
        for line in ("split", "merged"):
            result = plan_model(str(model), this_machine(), ctx=CTX, kv_type="q8_0", line=line)
            # The same estimate for the threads the servers run with.
            layout = result.plan.layout
            estimate = estimate_speed(result.plan.memory, result.plan.machine, layout.offload.gpu_layers,
                                      layout.offload.cpu_moe_layers, ctx=CTX, kv_type=layout.kv_type,
                                      engine="ollama" if line == "merged" else "llama.cpp", threads=THREADS)
            result = replace(result, speed=merged_engine_share(estimate) if line == "merged" else estimate)
            assert result.speed is not None
            estimates[line] = result.speed
            print(f"plan ({line}): {result.speed.decode_tokens_per_s:.1f} tok/s; {result.speed.basis()}", flush=True)
        sides = [s for s in ["llama.cpp", *LINES] if not args.only or s in args.only]
        with open(model, "rb") as handle:
            digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
        for side in sides:
            if side in LINES:
                register(str(executable(LINES[side][0], side)), work / side / "models", model, digest,
                         work / side / "serve.log")
                print(f"registered on {side}", flush=True)
        figures: dict[str, list[tuple[float, float]]] = {s: [] for s in sides}
        per_cpu: dict[str, list[float]] = {s: [] for s in sides}
        loads: dict[str, list[float]] = {s: [] for s in sides}
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}: load {uptime()}", flush=True)
            for side in sides:
                if side == "llama.cpp":
                    got, cpu = llama_runs(model, work / "llama-server.log", args.runs, 1 + round_no * args.runs)
                else:
                    got, cpu, load = ollama_runs(str(executable(LINES[side][0], side)), work / side / "models",
                                            work / side / "serve.log", args.runs)
                    if load:
                        loads[side].append(load)
                figures[side] += got
                per_cpu[side] += cpu
                print(f"  {side:9} prompt {[round(p, 1) for p, _ in got]} generation {[round(g, 1) for _, g in got]}"
                      f" per CPU-s {[round(c, 1) for c in cpu]}", flush=True)
        print()
        base = figures.get("llama.cpp")
        base_gen = statistics.median(g for _, g in base) if base else None
        base_prompt = statistics.median(p for p, _ in base) if base else None
        base_cpu = statistics.median(per_cpu["llama.cpp"]) if "llama.cpp" in per_cpu else None
        print("| side | prompt tok/s | generation tok/s | vs llama.cpp (prompt / generation) | generation tokens per CPU-second | vs llama.cpp | plan's decode estimate | estimate / tokens per CPU-s |")
        print("|---|---|---|---|---|---|---|---|")
        for side in sides:
            prompt = statistics.median(p for p, _ in figures[side])
            gen = statistics.median(g for _, g in figures[side])
            ratio = (f"{prompt / base_prompt:.2f} / {gen / base_gen:.2f}" if base_gen and base_prompt else "-")
            line = LINES[side][1] if side in LINES else "split"
            est = estimates[line].decode_tokens_per_s or 0.0
            cpu_rate = statistics.median(per_cpu[side])
            cpu_ratio = f"{cpu_rate / base_cpu:.2f}" if base_cpu else "-"
            print(f"| {side} | {prompt:.1f} | {gen:.1f} | {ratio} | {cpu_rate:.1f} | {cpu_ratio} | {est:.1f} | {est / cpu_rate:.2f} |")
        print(f"\n{len(figures[sides[0]])} runs per side in {args.rounds} rounds; load times (s): "
              + ", ".join(f"{s} {statistics.median(v):.1f}" for s, v in loads.items() if v))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
