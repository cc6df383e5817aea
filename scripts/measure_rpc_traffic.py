"""Bytes per generated token between the head and each RPC worker, measured on loopback.

Two capped workers (``ollamads worker --mem``: its relay counts every byte, per direction and
per RPC command), a real Ollama v0.32.15 with ``LLAMA_ARG_RPC`` and ``ollamads serve``'s
settings, and the test suite's split model (tests/support/workers.py). After a warm-up that
loads the model, two generations of different lengths run with the same prompt; the difference
of the byte counts divided by the difference of the token counts is the traffic per token,
without the model load and the prompt. The baseline, measured in the same run's model, is
what one token's hidden state weighs (n_embd x 4 bytes, f32): the ratio says how many of those
cross the network per token.

Run from the repository root: ``.venv/bin/python scripts/measure_rpc_traffic.py``.
Optional: ``--embd 256`` for a wider model (the traffic that scales with the model shows).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ollamads.ollama.serve import MODEL_ENVIRONMENT, OllamaServe, free_port  # noqa: E402
from ollamads.rpc.relay import Traffic  # noqa: E402
from ollamads.rpc.worker import RpcWorker, worker_settings  # noqa: E402
from ollamads.tiny import tokenizer_vocab, write_tiny_model  # noqa: E402
from tests.support.toolchain import component_path  # noqa: E402
from tests.support.workers import SPLIT_MODEL_SPEC, SPLIT_PARAMETERS, WORKER_CAP, ollamads_command  # noqa: E402

SHORT, LONG = 8, 72
#: Per model width, a cap below the model's size, so that Ollama cannot put it all on one worker.
CAPS = {SPLIT_MODEL_SPEC.n_embd: WORKER_CAP, 256: "4MiB"}


def generate(url: str, model: str, tokens: int, prompt: str, ctx: int) -> tuple[int, int]:
    """(tokens generated, prompt tokens)."""
    answer = requests.post(f"{url}/api/generate", timeout=300, json={
        "model": model, "prompt": prompt, "stream": False, "raw": True,
        "options": {"num_predict": tokens, "temperature": 0, "seed": 1, "num_ctx": ctx},
    })
    if not answer.ok:
        raise SystemExit(f"Ollama answered {answer.status_code}: {answer.text}")
    body = answer.json()
    return int(body["eval_count"]), int(body.get("prompt_eval_count", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embd", type=int, choices=sorted(CAPS), default=SPLIT_MODEL_SPEC.n_embd)
    parser.add_argument("--cap", help="each worker's --mem (default: below the model's size)")
    parser.add_argument("--ctx", type=int, default=256, help="num_ctx (default 256, as in the tests)")
    parser.add_argument("--prompt-words", type=int, default=5, help="prompt length, in words")
    args = parser.parse_args()
    prompt = " ".join(["sky"] * args.prompt_words)
    spec = dataclasses.replace(SPLIT_MODEL_SPEC, n_embd=args.embd)
    cap = args.cap or CAPS[args.embd]
    rpc_server = str(component_path("OLLAMADS_RPC_SERVER"))
    with tempfile.TemporaryDirectory(prefix="rpc-traffic-") as scratch:
        root = Path(scratch)
        model_file = write_tiny_model(root / "model.gguf", spec=spec)
        model_size = model_file.stat().st_size
        workers = [
            RpcWorker(worker_settings(binary=rpc_server, port=free_port(), memory_cap=cap), root / f"worker{i}.log")
            for i in range(2)
        ]
        for worker in workers:
            worker.start()
        rpc = ",".join(f"127.0.0.1:{w.settings.port}" for w in workers)
        serve = OllamaServe(
            root / "models", binary=str(component_path("OLLAMADS_OLLAMA_NEW")), log_path=root / "serve.log",
            env={**MODEL_ENVIRONMENT, "HOME": str(root), "LLAMA_ARG_RPC": rpc},
        )
        try:
            with serve:
                subprocess.run(
                    [*ollamads_command(), "register", "measure:rpc", str(model_file), "--host", serve.url, *SPLIT_PARAMETERS],
                    check=True, capture_output=True, env={**os.environ, "HOME": str(root)},
                )
                _, prompt_tokens = generate(serve.url, "measure:rpc", 4, prompt, args.ctx)  # loads the model
                loaded = [w.relay.traffic_now() for w in workers]  # type: ignore[union-attr]
                counts: list[tuple[int, list[Traffic]]] = []
                for tokens in (SHORT, LONG):
                    before = [w.relay.traffic_now() for w in workers]  # type: ignore[union-attr]
                    made, _ = generate(serve.url, "measure:rpc", tokens, prompt, args.ctx)
                    after = [w.relay.traffic_now() for w in workers]  # type: ignore[union-attr]
                    counts.append((made, [_minus(a, b) for a, b in zip(after, before)]))
        finally:
            for worker in workers:
                worker.stop()
    (short_made, short), (long_made, long) = counts
    extra = long_made - short_made
    baseline = spec.n_embd * 4
    n_vocab = len(tokenizer_vocab()[0])
    print(f"model: {spec.n_layer} layers, n_embd {spec.n_embd}, n_vocab {n_vocab}, {model_size:,} bytes; "
          f"workers capped at {cap}; num_ctx {args.ctx}, a {prompt_tokens}-token prompt; "
          f"{short_made} and {long_made} tokens generated")
    print(f"baseline: one token's hidden state, n_embd x 4 = {baseline} bytes; logits, n_vocab x 4 = {n_vocab * 4} bytes")
    for i, load in enumerate(loaded):
        print(f"worker {i}: loading the model and the first 4 tokens: {load.from_head:,} bytes head->worker, "
              f"{load.to_head:,} worker->head (the model file: {model_size:,} bytes)")
    for i, (s, l) in enumerate(zip(short, long)):
        to_worker = (l.from_head - s.from_head) / extra
        to_head = (l.to_head - s.to_head) / extra
        print(f"worker {i}: {to_worker:,.0f} B/token head->worker ({to_worker / baseline:.1f}x baseline), "
              f"{to_head:,.0f} B/token worker->head ({to_head / baseline:.1f}x baseline)")
        per_command = {k: (l.by_command.get(k, 0) - s.by_command.get(k, 0)) / extra for k in l.by_command}
        print("  by command, both ways: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(per_command.items()) if v))


def _minus(a: Traffic, b: Traffic) -> Traffic:
    return Traffic(a.from_head - b.from_head, a.to_head - b.to_head,
                   {k: a.by_command.get(k, 0) - b.by_command.get(k, 0) for k in a.by_command})


if __name__ == "__main__":
    main()
