"""From a model's bytes and a machine's memory to settings: where each part goes, and how to ask.

Three ways to run the model, each with its own knobs:

* **Ollama >= 0.30** runs llama-server with ``-ngl`` only when ``num_gpu`` is set, and hands it
  the server's whole environment. With ``num_gpu`` unset, ``LLAMA_ARG_N_CPU_MOE`` /
  ``LLAMA_ARG_OVERRIDE_TENSOR`` in the environment of ``ollama serve`` keep the routed experts of
  chosen blocks on the CPU while every layer's attention goes to the GPU: the guides' setup.
  (A user-set override also makes llama-server's ``--fit`` leave the layout alone.)
* **Ollama <= 0.24** has only whole layers: ``num_gpu``. Its own engine keeps a DeepSeek KV cache
  at f16 with K and V rows, and refuses to load when the CPU's share exceeds free RAM + swap.
* **llama.cpp**: the same placement as the first, on llama-server's command line.

A verdict says where the bytes end up: all on GPUs, GPUs + RAM, RAM only, or more than RAM
(llama.cpp then pages weights from disk through mmap), with the guides' words on speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ollamads.errors import OllamadsError
from ollamads.gguf.format import GGML_QUANT_SIZES
from ollamads.hardware import Machine
from ollamads.ollama.versions import kv_types_for
from ollamads.plan.memory import (
    DEFAULT_UBATCH,
    KV_CACHE_TYPES,
    ModelMemory,
    compute_bytes,
    kv_bytes,
    kv_layer_bytes,
)
from ollamads.plan.placement import CPU, DeviceLoad, Offload, device_loads
from ollamads.units import GIB

#: Left free on every GPU: llama-server's own --fit target (1024 MiB), which also covers the
#: CUDA/ROCm context.
GPU_RESERVE = 1 * GIB
#: Left to the OS and everything else: the larger of these.
RAM_RESERVE_MIN = 2 * GIB
RAM_RESERVE_SHARE = 0.05
#: The guides' regex for "every routed expert on the CPU" (-ot ".ffn_.*_exps.=CPU").
ALL_EXPERTS_ON_CPU = ".ffn_.*_exps.=CPU"
LINES = ("split", "merged")

FIT_GPU = "gpu"
FIT_GPU_RAM = "gpu+ram"
FIT_RAM = "ram"
FIT_DISK = "disk"
FIT_NO_LOAD = "no-load"
#: Better first.
FIT_ORDER = (FIT_GPU, FIT_GPU_RAM, FIT_RAM, FIT_DISK, FIT_NO_LOAD)

SPEED = {
    FIT_GPU: "everything in GPU memory: the fastest way to run it",
    FIT_GPU_RAM: ("attention on the GPU, routed experts in RAM: the guides' setup (a 24 GB GPU "
                  "+ 128 GB RAM runs the 1-2 bit quants at about 5 tokens/s; RAM + VRAM at "
                  "least the quant's size is their condition for 5+ tokens/s)"),
    FIT_RAM: ("CPU only, all in RAM: RAM at least the quant's size meets the guides' condition "
              "for usable speed, but without a GPU it is slower than their 5 tokens/s"),
    FIT_DISK: ("more than RAM + VRAM can hold: llama.cpp reads the rest from disk as it goes "
               "(mmap); the guides: it works, but slowly"),
    FIT_NO_LOAD: ("Ollama <= 0.24 counts the CPU's share in full against free RAM + swap "
                  "(mmap does not count there) and refuses when it is larger"),
}


@dataclass(frozen=True)
class PlanRequest:
    ctx: int
    kv_type: str = "q8_0"
    #: "split" (Ollama >= 0.30) or "merged" (<= 0.24); the llama.cpp line is always planned.
    line: str = "split"
    n_ubatch: int = DEFAULT_UBATCH
    gpu_reserve: int = GPU_RESERVE
    #: None: the larger of RAM_RESERVE_MIN and RAM_RESERVE_SHARE of the RAM.
    ram_reserve: int | None = None


@dataclass(frozen=True)
class Layout:
    """One way to place the model, and what it costs each device."""

    offload: Offload
    loads: tuple[DeviceLoad, ...]
    fit: str
    kv_type: str
    kv_bytes: int

    @property
    def gpu_loads(self) -> tuple[DeviceLoad, ...]:
        return tuple(load for load in self.loads if load.name != CPU)

    @property
    def cpu_load(self) -> DeviceLoad:
        return next(load for load in self.loads if load.name == CPU)


@dataclass(frozen=True)
class Plan:
    memory: ModelMemory
    machine: Machine
    request: PlanRequest
    #: llama.cpp's placement: what llama-server does with the environment or command line below.
    llama: Layout
    #: Ollama <= 0.24: whole layers on the GPU (``num_gpu``), its own engine's KV cache.
    merged: Layout
    environment: Mapping[str, str]
    parameters: Mapping[str, object]
    llama_server: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def layout(self) -> Layout:
        """The layout of the server line this plan is for."""
        return self.merged if self.request.line == "merged" else self.llama

    @property
    def fit(self) -> str:
        return self.layout.fit

    @property
    def speed(self) -> str:
        return SPEED[self.fit]


# --- budgets -------------------------------------------------------------------------------


def ram_budget(machine: Machine, request: PlanRequest) -> int:
    reserve = request.ram_reserve
    if reserve is None:
        reserve = max(RAM_RESERVE_MIN, int(machine.ram * RAM_RESERVE_SHARE))
    return machine.ram - reserve


def gpu_budgets(machine: Machine, request: PlanRequest) -> list[int]:
    return [max(0, gpu.total - request.gpu_reserve) for gpu in machine.gpus]


def check_kv_rows(memory: ModelMemory, kv_type: str) -> None:
    """llama.cpp refuses a quantized cache whose K rows are not whole blocks of the type
    ("K cache type q8_0 with block size 32 does not divide n_embd_head_k")."""
    block = KV_CACHE_TYPES[kv_type]
    size = GGML_QUANT_SIZES[block][0]
    if memory.shape.key_length % size:
        raise OllamadsError(
            f"llama.cpp refuses a {kv_type} KV cache for {memory.name}: its K rows of "
            f"{memory.shape.key_length} are not whole {size}-element blocks",
            "use --kv-type f16 (or bf16, f32)",
        )


def check_request(memory: ModelMemory, machine: Machine, request: PlanRequest) -> None:
    """Bad figures get a one-line error before any arithmetic."""
    if machine.ram <= 0:
        raise OllamadsError(f"RAM must be more than zero (got {machine.ram} bytes)",
                            "pass the machine's RAM, e.g. --ram 128G")
    for gpu in machine.gpus:
        if gpu.total < 0:
            raise OllamadsError(f"GPU memory cannot be negative ({gpu.name})",
                                "pass each GPU's memory, e.g. --vram 24G")
    if request.ctx <= 0:
        raise OllamadsError(f"the context must be at least 1 token (got {request.ctx})",
                            "pass --ctx, e.g. --ctx 16384")
    trained = memory.shape.n_ctx_train
    if request.ctx > trained:
        raise OllamadsError(
            f"a context of {request.ctx} tokens is more than {memory.name} was trained for "
            f"({trained})", f"use --ctx {trained} or less")
    if request.line not in LINES:
        raise OllamadsError(f"unknown server line {request.line!r}", f"use one of {', '.join(LINES)}")
    accepted = kv_types_for(request.line)
    if request.kv_type not in accepted:
        which = "Ollama <= 0.24" if request.line == "merged" else "llama-server (Ollama >= 0.30)"
        raise OllamadsError(f"{which} does not accept the KV cache type {request.kv_type!r}",
                            f"use --kv-type with one of {', '.join(accepted)}")
    if request.line != "merged":  # <= 0.24 uses f16 for DeepSeek whatever was asked
        check_kv_rows(memory, request.kv_type)


# --- the llama.cpp placement (Ollama >= 0.30, llama-server) ------------------------------------


def _loads(memory: ModelMemory, machine: Machine, request: PlanRequest, offload: Offload,
           *, kv_type: str, engine: str, flash_attention: bool) -> list[DeviceLoad]:
    shape = memory.shape
    def compute(logits: bool) -> int:
        return compute_bytes(shape, request.ctx, n_ubatch=request.n_ubatch,
                             flash_attention=flash_attention, logits=logits)

    gpus = [f"GPU{i}" for i in range(len(machine.gpus))]
    return device_loads(
        memory, offload, gpus, gpu_budgets(machine, request) or [1.0],
        kv_layer=kv_layer_bytes(shape, request.ctx, kv_type, engine=engine),
        compute_main=compute(True), compute_other=compute(False),
    )


def _gpus_fit(loads: Sequence[DeviceLoad], budgets: Sequence[int]) -> bool:
    # ``loads`` ends with the CPU's, which has no budget here: zip stops at the last GPU.
    return all(load.total <= budget for load, budget in zip(loads, budgets, strict=False))


def _verdict(layout_loads: Sequence[DeviceLoad], offload: Offload, memory: ModelMemory,
             machine: Machine, request: PlanRequest) -> str:
    cpu = layout_loads[-1]
    gpu_used = sum(load.total for load in layout_loads[:-1])
    ram = ram_budget(machine, request) - (gpu_used if machine.unified else 0)
    in_ram = cpu.total <= ram
    if offload.gpu_layers == 0:
        return FIT_RAM if in_ram else FIT_DISK
    everything = offload.gpu_layers >= memory.shape.n_layer + 1 and offload.cpu_moe_layers == 0
    if not in_ram:
        return FIT_DISK
    return FIT_GPU if everything else FIT_GPU_RAM


def llama_layout(memory: ModelMemory, machine: Machine, request: PlanRequest) -> Layout:
    """The least CPU share that fits every GPU: all layers with the experts of as few leading
    blocks as possible in RAM; else fewer layers with every expert in RAM; else CPU only."""
    budgets = gpu_budgets(machine, request)
    n_layer = memory.shape.n_layer
    kv_type = request.kv_type

    def loads(offload: Offload) -> list[DeviceLoad]:
        return _loads(memory, machine, request, offload, kv_type=kv_type, engine="llama.cpp",
                      flash_attention=True)

    chosen = Offload(0, 0)
    if budgets and max(budgets) > 0:
        moe_blocks = [layer.index for layer in memory.layers if layer.routed_experts]
        # --n-cpu-moe K moves blocks 0..K-1: only Ks that end just after an MoE block matter.
        candidates = [0] + [index + 1 for index in moe_blocks]
        for k in candidates:
            if _gpus_fit(loads(Offload(n_layer + 1, k)), budgets):
                chosen = Offload(n_layer + 1, k)
                break
        else:
            for ngl in range(n_layer, 0, -1):
                if _gpus_fit(loads(Offload(ngl, n_layer)), budgets):
                    chosen = Offload(ngl, n_layer)
                    break
    final = loads(chosen)
    return Layout(chosen, tuple(final), _verdict(final, chosen, memory, machine, request),
                  kv_type, kv_bytes(memory.shape, request.ctx, kv_type))


# --- Ollama <= 0.24: whole layers, its own engine ------------------------------------------


#: What Ollama <= 0.24's engine uses for DeepSeek whatever OLLAMA_KV_CACHE_TYPE says (it turns
#: flash attention off for K/V head sizes that differ).
MERGED_LINE_KV = "f16"


def merged_layout(memory: ModelMemory, machine: Machine, request: PlanRequest) -> Layout:
    budgets = gpu_budgets(machine, request)
    n_layer = memory.shape.n_layer

    def loads(ngl: int) -> list[DeviceLoad]:
        return _loads(memory, machine, request, Offload(ngl, 0), kv_type=MERGED_LINE_KV,
                      engine="ollama", flash_attention=False)

    chosen = 0
    if budgets and max(budgets) > 0:
        for ngl in range(n_layer + 1, 0, -1):
            if _gpus_fit(loads(ngl), budgets):
                chosen = ngl
                break
    final = loads(chosen)
    offload = Offload(chosen, 0)
    fit = _verdict(final, offload, memory, machine, request)
    if fit == FIT_DISK:
        # Its memory check counts CPU weights in full against free RAM + swap (mmap or not)
        # and refuses: "model requires more system memory ... than is available".
        fit = FIT_NO_LOAD
    kv = kv_bytes(memory.shape, request.ctx, MERGED_LINE_KV, engine="ollama")
    return Layout(offload, tuple(final), fit, MERGED_LINE_KV, kv)


# --- what to set ---------------------------------------------------------------------------


def server_environment(layout: Layout, memory: ModelMemory, request: PlanRequest) -> dict[str, str]:
    """The ``ollama serve`` environment for >= 0.30 (llama-server inherits it)."""
    env = {"OLLAMA_CONTEXT_LENGTH": str(request.ctx), "OLLAMA_KV_CACHE_TYPE": request.kv_type}
    if request.kv_type not in ("f32", "f16", "bf16"):
        env["OLLAMA_FLASH_ATTENTION"] = "1"
    offload, n_layer = layout.offload, memory.shape.n_layer
    if offload.gpu_layers == 0:
        return env
    if offload.gpu_layers < n_layer + 1:
        env["LLAMA_ARG_N_GPU_LAYERS"] = str(offload.gpu_layers)
    if offload.cpu_moe_layers >= n_layer:
        env["LLAMA_ARG_OVERRIDE_TENSOR"] = ALL_EXPERTS_ON_CPU
    elif offload.cpu_moe_layers:
        env["LLAMA_ARG_N_CPU_MOE"] = str(offload.cpu_moe_layers)
    return env


def modelfile_parameters(plan_line: str, llama: Layout, merged: Layout, request: PlanRequest,
                         memory: ModelMemory) -> dict[str, object]:
    """PARAMETERs for the line: num_ctx always; num_gpu on <= 0.24; use_mmap where needed."""
    parameters: dict[str, object] = {"num_ctx": request.ctx}
    if plan_line == "merged":
        parameters["num_gpu"] = merged.offload.gpu_layers
    elif llama.offload.gpu_layers == 0 and llama.fit == FIT_DISK:
        # >= 0.30 turns mmap off when no GPU is used, which would make the weights anonymous
        # memory larger than the RAM; with mmap the kernel pages them from disk instead.
        parameters["use_mmap"] = True
    return parameters


def llama_server_command(layout: Layout, memory: ModelMemory, request: PlanRequest,
                         model_path: str, sampling: Mapping[str, object]) -> list[str]:
    argv = ["llama-server", "--model", model_path, "--jinja", "-c", str(request.ctx)]
    offload, n_layer = layout.offload, memory.shape.n_layer
    if offload.gpu_layers:
        argv += ["-ngl", "99" if offload.gpu_layers >= n_layer + 1 else str(offload.gpu_layers)]
        if offload.cpu_moe_layers >= n_layer:
            argv += ["-ot", ALL_EXPERTS_ON_CPU]
        elif offload.cpu_moe_layers:
            argv += ["--n-cpu-moe", str(offload.cpu_moe_layers)]
    else:
        argv += ["-ngl", "0"]
    argv += ["-ctk", request.kv_type, "-ctv", request.kv_type]
    if request.kv_type not in ("f32", "f16", "bf16"):
        argv += ["-fa", "on"]
    flags = {"temperature": "--temp", "top_p": "--top-p", "min_p": "--min-p", "top_k": "--top-k",
             "repeat_penalty": "--repeat-penalty", "seed": "--seed"}
    for key, flag in flags.items():
        if key in sampling:
            argv += [flag, str(sampling[key])]
    return argv


def make_plan(
    memory: ModelMemory,
    machine: Machine,
    request: PlanRequest,
    *,
    model_path: str = "MODEL.gguf",
    sampling: Mapping[str, object] | None = None,
) -> Plan:
    check_request(memory, machine, request)
    llama = llama_layout(memory, machine, request)
    merged = merged_layout(memory, machine, request)
    notes = []
    if request.kv_type.startswith("q4") or request.kv_type == "iq4_nl":
        notes.append("the guides: a 4-bit KV cache is clearly worse; use q8_0")
    if request.line == "merged" and request.kv_type != MERGED_LINE_KV:
        notes.append("Ollama <= 0.24 keeps DeepSeek's KV cache at f16 whatever "
                     "OLLAMA_KV_CACHE_TYPE says: the plan counts f16 for that line")
    notes += free_memory_notes(llama, machine)
    if memory.source == "published size":
        notes.append("the tensor table was not read: bytes are estimated from the published "
                     "size; run `ollamads plan` with network access for exact figures")
    return Plan(
        memory=memory, machine=machine, request=request, llama=llama, merged=merged,
        environment=server_environment(llama, memory, request),
        parameters=modelfile_parameters(request.line, llama, merged, request, memory),
        llama_server=tuple(llama_server_command(llama, memory, request, model_path, sampling or {})),
        notes=tuple(notes),
    )


def free_memory_notes(layout: Layout, machine: Machine) -> list[str]:
    """A detected GPU with less free memory now than the plan puts on it. llama-server's fit,
    which measures free memory at load time, gives up when LLAMA_ARG_N_CPU_MOE or
    LLAMA_ARG_OVERRIDE_TENSOR is set, so such a load overruns the device and fails (measured
    with a capped worker: tests/test_plan_fit.py)."""
    notes = []
    for gpu, load in zip(machine.gpus, layout.gpu_loads, strict=False):
        if gpu.free is not None and load.total > gpu.free:
            notes.append(
                f"{gpu.name} has {gpu.free / GIB:.1f} GiB free now, and the plan puts "
                f"{load.total / GIB:.1f} GiB there: with the experts variable set, llama-server "
                f"does not shrink the layout (its fit gives up), so the load would fail; free the "
                f"GPU, or plan for what is free with --vram {gpu.free / GIB:.1f}G")
    return notes


def better(fit_a: str, fit_b: str) -> bool:
    return FIT_ORDER.index(fit_a) < FIT_ORDER.index(fit_b)


def fits_machine(fit: str) -> bool:
    """Runs from memory (GPU, GPU + RAM or RAM), not from disk."""
    return fit in (FIT_GPU, FIT_GPU_RAM, FIT_RAM)


__all__ = [
    "ALL_EXPERTS_ON_CPU",
    "FIT_DISK",
    "FIT_GPU",
    "FIT_GPU_RAM",
    "FIT_NO_LOAD",
    "FIT_ORDER",
    "FIT_RAM",
    "GPU_RESERVE",
    "LINES",
    "SPEED",
    "Layout",
    "Plan",
    "PlanRequest",
    "better",
    "check_request",
    "fits_machine",
    "free_memory_notes",
    "gpu_budgets",
    "llama_layout",
    "make_plan",
    "merged_layout",
    "ram_budget",
]
