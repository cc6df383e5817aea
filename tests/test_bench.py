"""``ollamads bench``: Ollama's own counters on every line, and ``--sweep`` on servers of its own
that never touches the server it was pointed at."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ollamads.ollama.api import OllamaAPI
from ollamads.ollama.bench import BenchSettings, prompt_text
from ollamads.ollama.serve import OllamaServe, free_port
from ollamads.ollama.sweep import MARGIN, UBATCH_CHOICES, thread_choices
from ollamads.tiny import write_tiny_model
from tests.support.cli import run_cli
from tests.support.servers import ollama_binary, upload_model

NAME = "bench-tiny:test"


def register_tiny(serve: OllamaServe, directory: Path) -> str:
    api = OllamaAPI(serve.url)
    if api.show(NAME) is None:
        model = write_tiny_model(directory / "tiny.gguf", "v3.1")
        upload_model(api, model, NAME)
    return NAME


def ollamads(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ollamads", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


# --- without a server ----------------------------------------------------------------------


def test_prompts_never_share_a_first_word() -> None:
    firsts = {prompt_text(16, run).split()[0] for run in range(100)}
    assert len(firsts) == 100
    assert len(prompt_text(16, 3).split()) == 16


@pytest.mark.parametrize(("args", "message"), [
    (["--runs", "0"], "--runs"), (["--generate", "0"], "--generate"), (["--prompt", "0"], "--prompt"),
])
def test_bad_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "bench", "m:t", *args)
    assert code == 2 and out == "" and message in err


def test_settings_refuse_nonsense() -> None:
    from ollamads.errors import OllamadsError

    for settings in (BenchSettings(runs=0), BenchSettings(generate_tokens=0), BenchSettings(prompt_tokens=())):
        with pytest.raises(OllamadsError):
            settings.check()


def test_no_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "bench", "m:t", "--host", f"127.0.0.1:{free_port()}")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no Ollama server answers" in err


# --- on real servers -------------------------------------------------------------------------


@pytest.mark.integration
def test_bench_reads_ollamas_counters(ollama_server: OllamaServe, tmp_path: Path) -> None:
    name = register_tiny(ollama_server, tmp_path)
    result = ollamads("bench", name, "--host", ollama_server.url, "--json", "--runs", "2",
                      "--prompt", "16", "--prompt", "48", "--generate", "8")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["server_version"] == ollama_server.info.version  # type: ignore[union-attr]
    assert record["load_s"] > 0
    # /api/ps: no GPU here, so nothing in GPU memory; v0.24 reports the size in RAM, the
    # llama-server lines (v0.30+) report 0 without a GPU.
    assert record["size_vram"] == 0
    assert (record["size"] > 0) == (ollama_server.info.line == "merged")  # type: ignore[union-attr]
    short, long = record["lengths"]
    for length, requested in ((short, 16), (long, 48)):
        assert length["prompt_tokens_requested"] == requested
        for run in length["runs"]:
            # The whole prompt is evaluated every run (no prompt-cache reuse): its words, BOS,
            # and the opening word, which the tiny tokenizer may cut into a few pieces.
            assert requested <= run["prompt_tokens"] <= requested + 6, run
            assert 1 <= run["generated_tokens"] <= 8 and run["generation_s"] > 0
            assert run["first_token_s"] > 0
        rates = [r["generated_tokens"] / r["generation_s"] for r in length["runs"]]
        assert length["generation_tokens_per_s"] == pytest.approx(statistics.median(rates), rel=0.01)
        prompt_rates = [r["prompt_tokens"] / r["prompt_s"] for r in length["runs"]]
        assert length["prompt_tokens_per_s"] == pytest.approx(statistics.median(prompt_rates), rel=0.01)
    every = [r["generated_tokens"] / r["generation_s"] for n in record["lengths"] for r in n["runs"]]
    assert record["generation_tokens_per_s"] == pytest.approx(statistics.median(every), rel=0.01)
    assert record["prompt_tokens_per_s"] > 0
    # Progress off a terminal: a line per state.
    assert "bench: prompt 16 + 8 tokens run 1/2" in result.stderr
    assert "load: bench-tiny:test loaded" in result.stderr

    text = ollamads("bench", name, "--host", ollama_server.url, "--runs", "1", "--prompt", "8",
                    "--generate", "4")
    assert text.returncode == 0, text.stderr
    assert "generation tok/s" in text.stdout and "load:" in text.stdout


@pytest.mark.integration
def test_a_missing_model_is_one_line(layers_line_server: OllamaServe, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "bench", "no-such:model", "--host", layers_line_server.url)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "has no model no-such:model" in err


def serve_processes(store: Path) -> set[int]:
    """``ollama serve`` processes over ``store`` (from each process's environment)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 2 and argv[1] == b"serve" and f"OLLAMA_MODELS={store}".encode() in environ:
            found.add(int(entry.name))
    return found


@pytest.mark.integration
def test_sweep_restarts_only_its_own_servers(layers_line_server: OllamaServe, tmp_path: Path) -> None:
    serve = layers_line_server
    name = register_tiny(serve, tmp_path)
    assert serve.process is not None
    before = serve_processes(serve.models_dir)
    assert before == {serve.process.pid}
    requests.post(f"{serve.url}/api/generate", json={"model": name, "prompt": "hi", "stream": False,
                                                     "options": {"num_predict": 1}}, timeout=120).raise_for_status()
    result = ollamads("bench", name, "--sweep", "--host", serve.url, "--json", "--runs", "1",
                      "--prompt", "16", "--generate", "4", "--ollama", serve.binary,
                      "--models", str(serve.models_dir), env={"OLLAMADS_HOME": os.environ["OLLAMADS_HOME"]})
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    factors = [p["factor"] for p in record["points"]]
    assert factors == ["threads"] * len(thread_choices()) + ["flash attention"] + ["micro-batch"] * len(UBATCH_CHOICES)
    assert all(p["error"] is None and p["generation_tokens_per_s"] > 0 for p in record["points"]), record["points"]
    assert [p["options"]["num_thread"] for p in record["points"][: len(thread_choices())]] == thread_choices()
    assert record["points"][len(thread_choices())]["environment"]["OLLAMA_FLASH_ATTENTION"] == "0"
    # Each factor keeps its default unless its fastest point beats it by MARGIN.
    threads = record["points"][: len(thread_choices())]
    fastest = max(threads, key=lambda p: p["generation_tokens_per_s"])
    default = threads[-1]  # every core: llama-server's own default
    chosen = record["best"]["options"].get("num_thread", max(thread_choices()))
    if fastest["generation_tokens_per_s"] >= MARGIN * default["generation_tokens_per_s"]:
        assert chosen == fastest["options"]["num_thread"]
    else:
        assert chosen == max(thread_choices()) and "num_thread" not in record["parameters"]
    assert record["serve"].startswith("ollamads serve")
    assert f"unloaded {name} from the server at {serve.url}" in record["notes"][0]
    # The user's server was never restarted, and the sweep's own servers are gone.
    assert serve.process.poll() is None and serve_processes(serve.models_dir) == before
    assert OllamaAPI(serve.url).info().version == serve.info.version  # type: ignore[union-attr]
    assert "sweep: bench-tiny:test" in result.stderr


@pytest.mark.integration
def test_sweep_refuses_another_release(layers_line_server: OllamaServe, tmp_path: Path) -> None:
    name = register_tiny(layers_line_server, tmp_path)
    result = ollamads("bench", name, "--sweep", "--host", layers_line_server.url,
                      "--ollama", ollama_binary("merged"), "--models", str(layers_line_server.models_dir), env={"OLLAMADS_HOME": os.environ["OLLAMADS_HOME"]})
    assert result.returncode == 1
    assert "pass --ollama with the binary of the running release" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.integration
def test_serve_env_reaches_the_server(tmp_path: Path) -> None:
    """The line `bench --sweep` prints: `ollamads serve --env NAME=VALUE` sets it for ollama serve."""
    import signal

    from tests.support.workers import running

    port = free_port()
    args = ["serve", "--models", str(tmp_path / "store"), "--host", f"127.0.0.1:{port}",
            "--ollama", ollama_binary("layers"), "--env", "OLLAMA_FLASH_ATTENTION=0",
            "--env", "LLAMA_ARG_THREADS=1"]
    with running(args, {"HOME": str(tmp_path)}) as started:
        (child,) = started.children()
        environ = dict(item.decode().split("=", 1) for item in
                       Path(f"/proc/{child}/environ").read_bytes().split(b"\0") if b"=" in item)
        assert environ["OLLAMA_FLASH_ATTENTION"] == "0" and environ["LLAMA_ARG_THREADS"] == "1"
        assert started.stop(signal.SIGINT) == 130
    bad = ollamads("serve", "--env", "NOEQUALS", "--models", str(tmp_path / "s2"))
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


@pytest.mark.integration
def test_doctor_tells_the_old_line_what_the_new_one_gives(merged_line_server: OllamaServe,
                                                          layers_line_server: OllamaServe,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from ollamads.plan.speed import MERGED_ENGINE_SHARE

    _, out, _ = run_cli(capsys, "doctor", "--json", "--host", merged_line_server.url)
    (speed,) = [f for f in json.loads(out)["findings"] if f["check"] == "speed"]
    assert speed["status"] == "info" and speed["details"]["engine_share"] == MERGED_ENGINE_SHARE
    assert f"{MERGED_ENGINE_SHARE:.1f}x llama.cpp" in speed["summary"] and "no longer needed" in speed["summary"]
    assert "upgrade Ollama to v0.30" in speed["fix"]
    _, out, _ = run_cli(capsys, "doctor", "--json", "--host", layers_line_server.url)
    assert not [f for f in json.loads(out)["findings"] if f["check"] == "speed"]
