"""The built-in tiny DeepSeek model and the reference chat templates it carries.

The integration tests run the real llama.cpp tools (``llama-cli``, ``llama-server``,
``llama-gguf-split``) from OLLAMADS_LLAMA_CPP_BIN or the toolchain cache; without them they
fail in CI and skip elsewhere.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollamads._resources import templates_dir
from ollamads.catalog.families import get_family
from ollamads.gguf.format import GGMLQuantizationType, GGUFValueType, read_gguf
from ollamads.tiny import (
    DEFAULT_NAMES,
    FAMILIES,
    TinyModelSpec,
    normalize_quant,
    shard_name,
    tokenizer_vocab,
    write_tiny_model,
    write_tiny_shards,
)
from tests.support.llama_server import http_json, llama_server
from tests.support.toolchain import llama_cpp_tool

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
#: MLA's per-head query/key size llama-cli reports (qk_nope + qk_rope).
K_MLA = TinyModelSpec("v3.1").qk_nope_head_dim + TinyModelSpec("v3.1").qk_rope_head_dim
CHAT = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "<think>old reasoning</think>A1"},
    {"role": "user", "content": "Q2"},
]


def template_source(family: str) -> str:
    return (templates_dir() / "chat" / get_family(family).chat_template).read_text(encoding="utf-8")


def render(family: str, messages: list[dict], **kwargs: object) -> str:
    env = ImmutableSandboxedEnvironment()
    return env.from_string(template_source(family)).render(
        messages=messages, bos_token=BOS, eos_token=EOS, add_generation_prompt=True, **kwargs
    )


# --- reference templates ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_templates_use_fullwidth_special_tokens(family: str) -> None:
    src = template_source(family)
    assert USER in src and ASSISTANT in src and EOS in src
    assert "<|" not in src and "|>" not in src  # ASCII look-alikes of ｜ (U+FF5C)
    assert "tool_calls_begin" not in src  # ASCII _ instead of ▁ (U+2581)
    assert not src.endswith("\n")


def test_v31_non_thinking_first_turn_is_the_default() -> None:
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}]
    expected = f"{BOS}SYS{USER}hi{ASSISTANT}</think>"
    assert render("v3.1", messages) == expected
    assert render("v3.1", messages, thinking=False) == expected
    assert render("v3.1", messages, enable_thinking=False) == expected


@pytest.mark.parametrize("kwargs", [{"thinking": True}, {"enable_thinking": True}])
def test_v31_thinking_first_turn(kwargs: dict) -> None:
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}]
    assert render("v3.1", messages, **kwargs) == f"{BOS}SYS{USER}hi{ASSISTANT}<think>"


def test_v31_enable_thinking_wins_over_thinking() -> None:
    # Unsloth's fix checks enable_thinking first; llama-server always sends it.
    messages = [{"role": "user", "content": "hi"}]
    assert render("v3.1", messages, thinking=True, enable_thinking=False).endswith("</think>")
    assert render("v3.1", messages, thinking=False, enable_thinking=True).endswith("<think>")


@pytest.mark.parametrize("thinking", [False, True])
def test_v31_history_drops_reasoning_and_keeps_close_tag(thinking: bool) -> None:
    tail = "<think>" if thinking else "</think>"
    assert render("v3.1", CHAT, thinking=thinking) == (
        f"{BOS}SYS{USER}Q1{ASSISTANT}</think>A1{EOS}{USER}Q2{ASSISTANT}{tail}"
    )


def test_v31_has_unsloths_fixes() -> None:
    src = template_source("v3.1")
    assert "enable_thinking" in src
    assert ".split('</think>', 1)" not in src  # llama.cpp's minja rejects the second argument
    # Same result as DeepSeek's split('</think>', 1)[1]: everything after the first close tag.
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>a</think>b</think>c"},
        {"role": "user", "content": "q2"},
    ]
    assert f"{ASSISTANT}</think>b</think>c{EOS}" in render("v3.1", msgs)


def test_v31_joins_system_messages_and_renders_tool_turns() -> None:
    msgs = [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "get", "arguments": '{"x": 1}'}}],
        },
        {"role": "tool", "content": "sunny"},
    ]
    assert render("v3.1", msgs) == (
        f"{BOS}a\n\nb{USER}weather?{ASSISTANT}</think>"
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get<｜tool▁sep｜>"
        '{"x": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
        f"{EOS}<｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜>"
    )


def test_r1_format() -> None:
    msgs = [
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "<think>easy</think>It's 2."},
        {"role": "user", "content": "Explain more!"},
    ]
    assert render("r1", msgs) == (
        f"{BOS}{USER}What is 1+1?{ASSISTANT}It's 2.{EOS}{USER}Explain more!{ASSISTANT}<think>\n"
    )


def test_v3_format() -> None:
    assert render("v3", CHAT) == (
        f"{BOS}SYS{USER}Q1{ASSISTANT}<think>old reasoning</think>A1{EOS}{USER}Q2{ASSISTANT}"
    )
    assert render("v3", [{"role": "user", "content": "hi"}]) == f"{BOS}{USER}hi{ASSISTANT}"


# --- the tiny model ----------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", "v3.1", seed=7).read_bytes()
    b = write_tiny_model(tmp_path / "b.gguf", "v3.1", seed=7).read_bytes()
    c = write_tiny_model(tmp_path / "c.gguf", "v3.1", seed=8).read_bytes()
    assert a == b
    assert a != c
    shards1 = [p.read_bytes() for p in write_tiny_shards(tmp_path / "s1", "r1", seed=3)]
    shards2 = [p.read_bytes() for p in write_tiny_shards(tmp_path / "s2", "r1", seed=3)]
    assert shards1 == shards2


@pytest.mark.parametrize("family", FAMILIES)
def test_model_is_small_and_carries_its_family_template(tmp_path: Path, family: str) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", family)
    assert path.stat().st_size < 1_000_000
    g = read_gguf(path)
    assert g.value("general.architecture") == "deepseek2"
    assert g.value("tokenizer.chat_template") == template_source(family)
    assert DEFAULT_NAMES[family] in g.value("general.name")
    assert g.value("general.file_type") == 7  # LLAMA_FTYPE_MOSTLY_Q8_0


def test_metadata_llama_cpp_needs(tmp_path: Path) -> None:
    g = read_gguf(write_tiny_model(tmp_path / "m.gguf"))
    spec = TinyModelSpec("v3.1")
    u32 = GGUFValueType.UINT32
    expected = {
        "deepseek2.expert_gating_func": (u32, 2),
        "deepseek2.leading_dense_block_count": (u32, 1),
        "deepseek2.attention.head_count_kv": (u32, 1),
        "deepseek2.attention.q_lora_rank": (u32, spec.q_lora_rank),
        "deepseek2.attention.kv_lora_rank": (u32, spec.kv_lora_rank),
        "deepseek2.attention.key_length": (u32, spec.kv_lora_rank + spec.qk_rope_head_dim),
        "deepseek2.attention.value_length": (u32, spec.kv_lora_rank),
        "deepseek2.attention.key_length_mla": (u32, spec.qk_nope_head_dim + spec.qk_rope_head_dim),
        "deepseek2.attention.value_length_mla": (u32, spec.v_head_dim),
        "deepseek2.expert_count": (u32, 4),
        "deepseek2.expert_used_count": (u32, 2),
        "deepseek2.expert_shared_count": (u32, 1),
        "deepseek2.expert_weights_norm": (GGUFValueType.BOOL, True),
        "deepseek2.rope.scaling.type": (GGUFValueType.STRING, "yarn"),
        "tokenizer.ggml.model": (GGUFValueType.STRING, "gpt2"),
        "tokenizer.ggml.pre": (GGUFValueType.STRING, "deepseek-v3"),
        "tokenizer.ggml.bos_token_id": (u32, 0),
        "tokenizer.ggml.eos_token_id": (u32, 1),
    }
    for key, want in expected.items():
        assert g.kv[key] == want, key
    names = {t.name for t in g.tensors}
    assert {"blk.1.attn_k_b.weight", "blk.1.attn_v_b.weight", "blk.0.ffn_gate.weight"} <= names
    assert {"blk.1.ffn_gate_exps.weight", "blk.1.ffn_down_shexp.weight"} <= names
    assert "blk.0.ffn_gate_exps.weight" not in names and "blk.1.attn_kv_b.weight" not in names
    types = {t.name: t.ggml_type for t in g.tensors}
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert types["blk.0.attn_q_b.weight"] == GGMLQuantizationType.Q8_0


def test_vocabulary_has_every_deepseek_special_token() -> None:
    tokens, types = tokenizer_vocab()
    assert tokens[:3] == [BOS, EOS, "<｜▁pad▁｜>"]
    assert len(tokens) - 3 >= 256
    for special in (USER, ASSISTANT, "<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁output▁end｜>",
                    "<｜tool▁outputs▁begin｜>", "<｜fim▁hole｜>", "<｜search▁begin｜>", "<|EOT|>"):
        assert types[tokens.index(special)] == 3, special  # CONTROL
    # As convert_hf_to_gguf classifies them: not "special-looking", so user-defined.
    assert types[tokens.index("<think>")] == 4
    assert types[tokens.index("</think>")] == 4


def test_gguf_py_reads_the_model(tmp_path: Path) -> None:
    import gguf  # a test dependency (pyproject's [test] extra): missing, the test fails
    path = write_tiny_model(tmp_path / "m.gguf", weight_type=GGMLQuantizationType.F16)
    reader = gguf.GGUFReader(str(path))
    ours = {t.name: t for t in read_gguf(path).tensors}
    assert len(reader.tensors) == len(ours)
    for t in reader.tensors:
        assert tuple(int(d) for d in t.shape) == ours[t.name].shape
        assert int(t.tensor_type) == ours[t.name].ggml_type


def test_shards_are_named_and_split_like_llama_gguf_split(tmp_path: Path) -> None:
    paths = write_tiny_shards(tmp_path, "v3.1", n_shards=3, quant="ud-tq1_0")
    assert [p.name for p in paths] == [
        f"DeepSeek-V3.1-UD-TQ1_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    single = read_gguf(write_tiny_model(tmp_path / "single.gguf"))
    shards = [read_gguf(p) for p in paths]
    split_keys = ["split.no", "split.tensors.count", "split.count"]
    for i, g in enumerate(shards):
        assert list(g.kv)[-3:] == split_keys
        assert g.kv["split.no"] == (GGUFValueType.UINT16, i)
        assert g.kv["split.count"] == (GGUFValueType.UINT16, 3)
        assert g.kv["split.tensors.count"] == (GGUFValueType.INT32, len(single.tensors))
        assert g.tensors, "every shard holds tensors"
    assert list(shards[0].kv)[:-3] == list(single.kv)
    assert all(list(g.kv) == split_keys for g in shards[1:])
    assert [t.name for g in shards for t in g.tensors] == [t.name for t in single.tensors]


def test_shard_names_for_each_family(tmp_path: Path) -> None:
    for family, name in DEFAULT_NAMES.items():
        paths = write_tiny_shards(tmp_path / family, family, n_shards=2, quant="Q2_K_XL")
        assert paths[0].name == f"{name}-UD-Q2_K_XL-00001-of-00002.gguf"
    custom = write_tiny_shards(tmp_path / "c", "v3.1", n_shards=1, name="DeepSeek-V3.1-Terminus")
    assert [p.name for p in custom] == ["DeepSeek-V3.1-Terminus-UD-TQ1_0-00001-of-00001.gguf"]
    assert normalize_quant("UD-IQ1_S") == normalize_quant("iq1_s") == "IQ1_S"
    assert shard_name("X", "tq1_0", 2, 12) == "X-UD-TQ1_0-00002-of-00012.gguf"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="family"):
        write_tiny_model(tmp_path / "m.gguf", "v4")
    with pytest.raises(ValueError, match="n_shards"):
        write_tiny_shards(tmp_path, n_shards=0)
    with pytest.raises(ValueError, match="n_shards"):
        write_tiny_shards(tmp_path, n_shards=10_000)


# --- real llama.cpp -----------------------------------------------------------------------------


def run_cli(model: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(llama_cpp_tool("llama-cli")), "-m", str(model), "-p", "hi", "-n", "8",
           "--single-turn", "--temp", "0", "-c", "512", "-v"]
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=120
    )


@pytest.mark.integration
@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cli_loads_and_generates(tmp_path: Path, family: str) -> None:
    result = run_cli(write_tiny_model(tmp_path / "m.gguf", family))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    for pattern in (r"arch\s+=\s+deepseek2", r"expert_gating_func\s+=\s+sigmoid",
                    r"n_layer_dense_lead\s+=\s+1", rf"n_embd_head_k_mla\s+=\s+{K_MLA}",
                    r"rope scaling\s+=\s+yarn", r"n_expert_groups\s+=\s+2"):
        assert re.search(pattern, log), pattern
    assert re.search(r"Generation:", result.stdout), result.stdout[-2000:]


@pytest.mark.integration
def test_llama_cli_loads_f16_weights(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "m.gguf", weight_type=GGMLQuantizationType.F16)
    result = run_cli(model)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "file type   = F16" in result.stderr


@pytest.mark.integration
def test_llama_gguf_split_agrees_with_our_shards(tmp_path: Path) -> None:
    tool = str(llama_cpp_tool("llama-gguf-split"))
    single = write_tiny_model(tmp_path / "single.gguf")
    ours = write_tiny_shards(tmp_path / "ours", "v3.1", n_shards=3)
    per_shard = len(read_gguf(ours[0]).tensors)
    (tmp_path / "theirs").mkdir()
    subprocess.run(
        [tool, "--split", "--split-max-tensors", str(per_shard), str(single), str(tmp_path / "theirs/x")],
        check=True, capture_output=True, timeout=120,
    )
    theirs = sorted((tmp_path / "theirs").glob("x-*.gguf"))
    assert [p.read_bytes() for p in theirs] == [p.read_bytes() for p in ours]

    merged = tmp_path / "merged.gguf"
    subprocess.run([tool, "--merge", str(ours[0]), str(merged)], check=True, capture_output=True, timeout=120)
    m, s = read_gguf(merged), read_gguf(single)
    assert [(t.name, t.shape, t.ggml_type) for t in m.tensors] == [
        (t.name, t.shape, t.ggml_type) for t in s.tensors
    ]
    mb, sb = merged.read_bytes(), single.read_bytes()
    for tm, ts in zip(m.tensors, s.tensors):
        a, b = m.data_offset + tm.offset, s.data_offset + ts.offset
        assert mb[a : a + tm.nbytes] == sb[b : b + ts.nbytes], tm.name
    assert run_cli(merged).returncode == 0
    assert run_cli(ours[0]).returncode == 0  # llama.cpp also loads the split set directly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




@pytest.mark.integration
@pytest.mark.parametrize("family", FAMILIES)
def test_llama_server_renders_the_template_like_jinja2(tmp_path: Path, family: str) -> None:
    model = write_tiny_model(tmp_path / "m.gguf", family)
    with llama_server(model, tmp_path / "server.log") as base:
        for kwargs in ({"enable_thinking": False}, {"enable_thinking": True}):
            got = http_json(base + "/apply-template", {"messages": CHAT, "chat_template_kwargs": kwargs})
            # llama-server drops the template's leading BOS: the tokenizer adds it.
            assert BOS + got["prompt"] == render(family, CHAT, **kwargs)


@pytest.mark.integration
def test_llama_server_thinking_switch_and_chat(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "m.gguf", "v3.1")
    with llama_server(model, tmp_path / "server.log") as base:

        def prompt(**kwargs: object) -> str:
            return http_json(base + "/apply-template", {"messages": CHAT, "chat_template_kwargs": kwargs})[
                "prompt"
            ]

        history = f"SYS{USER}Q1{ASSISTANT}</think>A1{EOS}{USER}Q2{ASSISTANT}"
        assert prompt(enable_thinking=False) == history + "</think>"
        assert prompt(enable_thinking=True) == history + "<think>"
        assert prompt(thinking=True) == history + "<think>"

        def chat(thinking: bool) -> dict:
            body = {
                "messages": CHAT,
                "max_tokens": 8,
                "temperature": 0,
                "chat_template_kwargs": {"enable_thinking": thinking},
            }
            return http_json(base + "/v1/chat/completions", body)

        thought = chat(True)
        assert thought["usage"]["completion_tokens"] == 8
        # The prompt ends in <think>: llama-server files everything generated as reasoning.
        assert thought["choices"][0]["message"].get("reasoning_content")
        plain = chat(False)
        assert plain["usage"]["completion_tokens"] == 8
        assert not plain["choices"][0]["message"].get("reasoning_content")


def _apply_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Textbook BPE: merge the lowest-ranked adjacent pair until none is in ``ranks``."""
    parts = list(word)
    while True:
        pairs = [(ranks[p], i) for i, p in enumerate(zip(parts, parts[1:])) if p in ranks]
        if not pairs:
            return parts
        _, i = min(pairs)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def test_the_vocabulary_writes_every_listed_word_as_one_token() -> None:
    from ollamads.tiny import ADDED_TOKENS
    from ollamads.tiny_tokenizer import learn_merges, merges, training_words

    learnt = merges()
    assert learnt == learn_merges(training_words())  # deterministic
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(learnt)}
    words = training_words()
    assert all(_apply_bpe(w, ranks) == [w] for w in words)
    assert {"Ġdescription", '":"', "Ġtimestamp"} <= set(words)
    tokens, _ = tokenizer_vocab()
    assert len(tokens) == len(set(tokens)) == 3 + 256 + len(learnt) + len(ADDED_TOKENS)
