from __future__ import annotations

import json

import pytest

from ollamads._resources import modelfiles_dir
from ollamads.catalog import load_catalog
from ollamads.catalog.rendered import render_all, stale
from ollamads.ollama.modelfile import THINKING_DECLARATION
from tests.support.cli import run_cli
from ollamads.hardware import total_ram


run = run_cli


def test_checked_in_modelfiles_match_a_fresh_rendering() -> None:
    assert stale(modelfiles_dir()) == [], "run `ollamads modelfiles --write` and commit"
    entries = load_catalog().entries()
    hybrid = [e for e in entries if e.prompt_family.thinking == "hybrid"]
    assert hybrid and len(render_all()) == 2 * (len(entries) + len(hybrid))


def test_list_json_covers_the_catalog_and_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    records = json.loads(out)
    assert len(records) == len(load_catalog().entries())
    assert {r["model"] for r in records} == {
        "deepseek-v3.1", "deepseek-v3.1-terminus", "deepseek-v3-0324", "deepseek-r1", "deepseek-r1-0528"
    }
    tq1 = next(r for r in records if r["model"] == "deepseek-v3.1" and r["quant"] == "TQ1_0")
    assert tq1["size_gb"] == 170 and tq1["moe_bits"] == 1.66 and tq1["shards"] == 1
    # 170 GiB against this machine's RAM (+ no GPU here): the verdict follows the numbers.
    assert tq1["fits_memory"] == (total_ram() >= 170 * (1 << 30))


def test_show_json_has_both_modelfiles(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "r1:iq1_s", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["repo"] == "unsloth/DeepSeek-R1-GGUF" and record["thinking"] == "always"
    old, new = record["modelfiles"]["ollama-0.24"], record["modelfiles"]["ollama-0.30+"]
    assert "FROM DeepSeek-R1-UD-IQ1_S.gguf" in old and "TEMPLATE" in old
    assert [l for l in new.splitlines() if l.startswith("FROM")] == [
        f"FROM DeepSeek-R1-UD-IQ1_S-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    assert "PARAMETER min_p 0.05" in new


def test_show_v31_has_a_thinking_name_on_the_same_blobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "v3.1-terminus:TQ1_0", "--json")
    assert code == 0
    modelfiles = json.loads(out)["modelfiles"]
    name = "deepseek-v3.1-terminus:tq1_0"
    assert set(modelfiles) == {"ollama-0.24", "ollama-0.30+", f"ollama-0.24 {name}-think",
                               f"ollama-0.30+ {name}-think"}
    for line in ("ollama-0.24", "ollama-0.30+"):
        plain, thinking = modelfiles[line], modelfiles[f"{line} {name}-think"]
        assert "TEMPLATE" in plain and "\nRENDERER" not in plain
        assert THINKING_DECLARATION not in plain and THINKING_DECLARATION in thinking
        assert [l for l in thinking.splitlines() if l.startswith("FROM")] == [f"FROM {name}"]


def test_show_unknown_quant(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "r1:q9_k")
    assert code == 1 and err.count("\n") == 1 and "no quant" in err
