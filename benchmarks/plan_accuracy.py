"""How close `ollamads plan`'s byte counts are to what llama.cpp itself allocates.

For each model, the plan's prediction (from the GGUF header alone) is set against llama-server
loading the same file, CPU-only, with mmap, no warmup, no repacking, no --fit, at log verbosity 4
(tests/support/llama_buffers.py): the model buffers, the KV cache and the compute buffer it
reports. The file size, which `list` compared with RAM + VRAM before, is shown as the baseline.

* tiny: the built-in tiny DeepSeek (ollamads.tiny), Q8_0, tied output, f16 cache;
* synthetic 2.5 GB: DeepSeek-shaped, 12 layers x 56 experts, a mix of K- and IQ-quants, random
  data, split in 3 shards (one CPU_Mapped buffer per file), q8_0 cache;
* DeepSeek 671B shape: the real V3/R1 header (61 layers, 256 experts, vocab 129280) with an
  Unsloth-like mix (IQ1_S/IQ1_M/IQ2_XXS/TQ1_0 experts, Q4_K-Q6_K attention), sparse data
  (truncated file: ~3.4 MB on disk for 144 GB), q8_0 cache.

With ``--rpc`` (default when ggml-rpc-server is built) the 2.5 GB model is also loaded with an
RPC worker as a GPU stand-in and ``-ngl 99 --n-cpu-moe 6``: the plan's bytes on that device and
on the CPU are set against its ``RPC0[...]`` buffers.

    .venv/bin/python benchmarks/plan_accuracy.py [--dir /tmp] [--ctx 4096] [--no-rpc]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ollamads.gguf.deepseek2 import DeepSeek2Dims, Role, TensorSlot
from ollamads.gguf.format import GGMLQuantizationType as Q
from ollamads.ollama.serve import free_port
from ollamads.plan.memory import compute_bytes, kv_bytes, kv_layer_bytes
from ollamads.plan.placement import Offload, device_loads
from ollamads.plan.sources import local_source
from ollamads.tiny import write_tiny_model
from tests.support.llama_buffers import MIB, measure
from tests.support.synthetic import (
    deepseek_v3_sparse,
    fitting,
    write_synthetic,
)
from tests.support.toolchain import built_llama_cpp_tool

MID_DIMS = DeepSeek2Dims(
    n_layer=12, n_dense_lead=1, n_embd=2048, n_ff=8192, n_head=16, q_lora_rank=768,
    kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    n_expert=56, n_expert_shared=2, n_ff_exp=1024, n_vocab=32000,
)


def mid_types(slot: TensorSlot) -> Q:
    if len(slot.shape) == 1 or "ffn_gate_inp" in slot.name:
        return Q.F32
    if slot.role == Role.ROUTED_EXPERTS:
        return fitting(Q.Q5_K if "down" in slot.name else Q.IQ4_XS, slot)
    if slot.name == "output.weight":
        return Q.Q6_K
    return fitting(Q.Q4_K, slot)


def pct(predicted: float, reported: float) -> str:
    return f"{100 * (predicted - reported) / reported:+.3f}%"


def row(name: str, files: list[Path], ctx: int, cache: str, binary: Path, log: Path) -> list[str]:
    memory = local_source(files[0]).memory
    reported = measure(binary, files[0], ctx=ctx, cache_type=cache, log_path=log)
    model, kv = memory.weights, kv_bytes(memory.shape, ctx, cache)
    compute = compute_bytes(memory.shape, ctx)
    size = sum(f.stat().st_size for f in files)
    return [
        name, f"{size / 1e9:.2f} GB", f"{len(files)}", f"{ctx} {cache}",
        f"{model / MIB:.2f}", f"{reported.model / MIB:.2f}", pct(model, reported.model),
        f"{size / reported.model:.4f}",
        f"{kv / MIB:.2f}", f"{reported.kv / MIB:.2f}", pct(kv, reported.kv),
        f"{compute / MIB:.1f}", f"{reported.compute / MIB:.1f}", pct(compute, reported.compute),
    ]


def rpc_rows(files: list[Path], ctx: int, binary: Path, rpc_server: Path, tmp: Path) -> list[list[str]]:
    memory = local_source(files[0]).memory
    port = free_port()
    with open(tmp / "rpc.log", "wb") as out:
        worker = subprocess.Popen([str(rpc_server), "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        rows = []
        for k in (0, 6):
            reported = measure(binary, files[0], ctx=ctx, cache_type="q8_0", log_path=tmp / f"rpc{k}.log",
                               extra=["--rpc", f"127.0.0.1:{port}", "-ngl", "99", "--n-cpu-moe", str(k)])
            loads = device_loads(memory, Offload(memory.shape.n_layer + 1, k), ["RPC0"], [1.0],
                                 kv_layer=kv_layer_bytes(memory.shape, ctx, "q8_0"),
                                 compute_main=0, compute_other=0)
            rpc_model = sum(v for b, v in reported.buffers["model"].items() if b.startswith("RPC0"))
            rpc_kv = sum(v for b, v in reported.buffers["KV"].items() if b.startswith("RPC0"))
            rows.append([
                f"--n-cpu-moe {k}", f"{loads[0].weights / MIB:.2f}", f"{rpc_model / MIB:.2f}",
                pct(loads[0].weights, rpc_model), f"{loads[0].kv / MIB:.2f}", f"{rpc_kv / MIB:.2f}",
                pct(loads[0].kv, rpc_kv), f"{loads[1].weights / MIB:.2f}",
                f"{reported.buffers['model'].get('CPU_Mapped', 0) / MIB:.2f}",
            ])
        return rows
    finally:
        worker.terminate()
        worker.wait(timeout=10)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the temp models go")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--no-rpc", action="store_true", help="skip the RPC split check")
    args = parser.parse_args()
    binary = built_llama_cpp_tool("llama-server")
    if binary is None:
        sys.exit("llama-server not found: run scripts/toolchain.sh (or set OLLAMADS_LLAMA_CPP_BIN)")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="plan-accuracy-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.monotonic()
        tiny = [write_tiny_model(tmp / "tiny.gguf")]
        mid = write_synthetic(tmp / "mid", "synthetic-2.5GB", MID_DIMS, mid_types, shards=3,
                              data="random")
        v3 = deepseek_v3_sparse(tmp / "v3")
        rows = [
            row("tiny (ollamads.tiny)", tiny, args.ctx, "f16", binary, tmp / "tiny.log"),
            row("synthetic 2.5 GB", mid, args.ctx, "q8_0", binary, tmp / "mid.log"),
            row("DeepSeek 671B shape, sparse", v3, args.ctx, "q8_0", binary, tmp / "v3.log"),
        ]
        header = ["model", "file", "files", "ctx, KV type", "model MiB predicted", "llama.cpp",
                  "diff", "file size / llama.cpp (old `fits`)", "KV MiB predicted", "llama.cpp",
                  "diff", "compute MiB estimated", "llama.cpp", "diff"]
        print(table(header, rows))
        rpc_server = built_llama_cpp_tool("ggml-rpc-server")
        if not args.no_rpc and rpc_server is not None:
            print(f"\nsynthetic 2.5 GB on an RPC worker (GPU stand-in), -ngl 99, ctx {args.ctx}, q8_0:")
            print(table(["offload", "RPC0 model MiB predicted", "llama.cpp", "diff",
                         "RPC0 KV MiB predicted", "llama.cpp", "diff", "CPU weights MiB predicted",
                         "CPU_Mapped span"],
                        rpc_rows(mid, args.ctx, binary, rpc_server, tmp)))
        print(f"\n({time.monotonic() - started:.0f} s; llama-server {binary})")


if __name__ == "__main__":
    main()
