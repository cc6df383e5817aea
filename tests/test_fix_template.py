"""Rewriting a GGUF's chat template: only that key changes, tensor data stays byte-identical, and
the real llama.cpp (``llama-server --jinja``) renders Unsloth's fixed V3.1 template."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gguf import GGUFReader

from ollamads.errors import OllamadsError, OutputExistsError
from ollamads.gguf.format import KEY_CHAT_TEMPLATE, GGUFFile, read_gguf
from ollamads.gguf.merge import merge
from ollamads.gguf.retemplate import apply_fixed_template, fixed_template_for, rewrite_chat_template
from ollamads.tiny import write_tiny_model, write_tiny_shards
from tests.support.llama_server import http_json, llama_server
from tests.support.llama_tools import model_kv, model_tensors, write_model
from tests.support.reference import deepseek_original_v31

ASSISTANT = "<｜Assistant｜>"
CHAT = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "<think>old reasoning</think>A1"},
    {"role": "user", "content": "Q2"},
]

def tensor_data(gf: GGUFFile) -> dict[str, bytes]:
    raw = gf.path.read_bytes()
    return {t.name: raw[gf.data_offset + t.offset : gf.data_offset + t.offset + t.nbytes] for t in gf.tensors}


def assert_only_template_changed(before: Path, after: Path, template: str) -> None:
    old, new = read_gguf(before), read_gguf(after)
    assert new.value(KEY_CHAT_TEMPLATE) == template
    assert list(new.kv) == list(old.kv)  # same keys, same order
    assert {k: v for k, v in new.kv.items() if k != KEY_CHAT_TEMPLATE} == {
        k: v for k, v in old.kv.items() if k != KEY_CHAT_TEMPLATE
    }
    assert new.tensors == old.tensors and new.version == old.version
    assert new.data_offset % new.alignment == 0
    # Everything after the header, padding included, is copied as it was.
    assert after.read_bytes()[new.data_offset :] == before.read_bytes()[old.data_offset :]
    assert tensor_data(new) == tensor_data(old)
    # An independent reader agrees.
    ref_old, ref_new = GGUFReader(before), GGUFReader(after)
    assert [f.name for f in ref_new.fields.values()] == [f.name for f in ref_old.fields.values()]
    assert ref_new.fields[KEY_CHAT_TEMPLATE].contents() == template
    for t_old, t_new in zip(ref_old.tensors, ref_new.tensors, strict=True):
        assert (t_new.name, t_new.tensor_type, list(t_new.shape)) == (t_old.name, t_old.tensor_type, list(t_old.shape))
        assert t_new.data.tobytes() == t_old.data.tobytes()


@pytest.fixture
def merged_v31(tmp_path: Path) -> Path:
    """The tiny V3.1 as a merged file, carrying DeepSeek's unfixed template."""
    shards = write_tiny_shards(tmp_path / "hub", "v3.1", n_shards=3)
    merged = merge(shards[0], tmp_path / "merged-fixed.gguf", method="builtin").out
    return rewrite_chat_template(merged, tmp_path / "merged.gguf", deepseek_original_v31())


def test_fixed_template_exists_only_for_v31() -> None:
    fixed = fixed_template_for("v3.1")
    assert fixed and "enable_thinking" in fixed and "split('</think>', 1)" not in fixed
    assert fixed_template_for("r1") is None and fixed_template_for("v3") is None
    with pytest.raises(OllamadsError, match="unknown prompt family"):
        fixed_template_for("v4")


def test_rewrite_changes_only_the_template(merged_v31: Path, tmp_path: Path) -> None:
    fixed = fixed_template_for("v3.1")
    assert fixed
    out = rewrite_chat_template(merged_v31, tmp_path / "out.gguf", fixed)
    assert_only_template_changed(merged_v31, out, fixed)
    assert read_gguf(out).file_size != read_gguf(merged_v31).file_size  # the header did grow


def test_apply_in_place_once(merged_v31: Path, tmp_path: Path) -> None:
    before = tmp_path / "before.gguf"
    before.write_bytes(merged_v31.read_bytes())
    blob = tmp_path / "blob"
    os.link(merged_v31, blob)  # as if Ollama's store held the same inode
    seen: list[tuple[int, int]] = []
    assert apply_fixed_template(merged_v31, "v3.1", progress=lambda d, t: seen.append((d, t))) is True
    assert_only_template_changed(before, merged_v31, fixed_template_for("v3.1") or "")
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 0
    assert blob.read_bytes() == before.read_bytes()  # the rename left the other link alone
    mtime = merged_v31.stat().st_mtime_ns
    assert apply_fixed_template(merged_v31, "v3.1") is False  # already fixed: nothing written
    assert merged_v31.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".*partial*"))


def test_families_without_a_fix_are_left_alone(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "r1.gguf", "r1")
    data = model.read_bytes()
    assert apply_fixed_template(model, "r1") is False
    assert model.read_bytes() == data


@pytest.mark.parametrize("alignment", [32, 64, 256])
@pytest.mark.parametrize("extra", [0, 1, 31, 33, 100])
def test_alignment_is_kept(tmp_path: Path, alignment: int, extra: int) -> None:
    src = write_model(tmp_path / "src.gguf", kv=model_kv(alignment=alignment), tensors=model_tensors())
    template = "{{ messages[0]['content'] }}" + "{#" + "x" * extra + "#}"
    out = rewrite_chat_template(src, tmp_path / "out.gguf", template)
    assert read_gguf(out).alignment == alignment
    assert_only_template_changed(src, out, template)


def test_a_file_without_a_template_gets_one_at_the_end(tmp_path: Path) -> None:
    kv = [item for item in model_kv() if item[0] != KEY_CHAT_TEMPLATE]
    src = write_model(tmp_path / "src.gguf", kv=kv)
    out = rewrite_chat_template(src, tmp_path / "out.gguf", "T")
    new = read_gguf(out)
    assert list(new.kv)[-1] == KEY_CHAT_TEMPLATE and new.value(KEY_CHAT_TEMPLATE) == "T"
    assert out.read_bytes()[new.data_offset :] == src.read_bytes()[read_gguf(src).data_offset :]


def test_refusals_leave_nothing_behind(tmp_path: Path) -> None:
    src = write_tiny_model(tmp_path / "m.gguf", "v3.1")
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        rewrite_chat_template(src, out, "T")
    assert out.read_bytes() == b"keep me"
    rewrite_chat_template(src, out, "T", force=True)
    assert read_gguf(out).value(KEY_CHAT_TEMPLATE) == "T"
    with pytest.raises(OllamadsError, match="does not exist"):
        rewrite_chat_template(tmp_path / "nope.gguf", tmp_path / "x.gguf", "T")
    with pytest.raises(OllamadsError, match="output directory"):
        rewrite_chat_template(src, tmp_path / "no" / "x.gguf", "T")
    shards = write_tiny_shards(tmp_path / "hub", "v3.1", n_shards=2)
    with pytest.raises(OllamadsError, match="only the first shard carries the chat template"):
        apply_fixed_template(shards[1], "v3.1")
    # The first shard of a set is fine (Ollama v0.30+ takes shards as they are), and the set
    # still merges.
    rewrite_chat_template(shards[0], shards[0], deepseek_original_v31(), force=True)
    assert apply_fixed_template(shards[0], "v3.1") is True
    merged = merge(shards[0], tmp_path / "merged.gguf", method="builtin").out
    assert read_gguf(merged).value(KEY_CHAT_TEMPLATE) == fixed_template_for("v3.1")

    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rewrite_chat_template(src, tmp_path / "half.gguf", "T", progress=interrupt)
    assert not (tmp_path / "half.gguf").exists()
    assert not list(tmp_path.glob(".*partial*"))


# --- the real llama.cpp ----------------------------------------------------------------------------




def apply_template(base: str, kwargs: dict | None) -> str:
    body: dict = {"messages": CHAT}
    if kwargs is not None:
        body["chat_template_kwargs"] = kwargs
    return http_json(base + "/apply-template", body)["prompt"]


@pytest.mark.integration
def test_llama_server_renders_the_fixed_template(merged_v31: Path, tmp_path: Path) -> None:
    assert apply_fixed_template(merged_v31, "v3.1")
    history = f"SYS<｜User｜>Q1{ASSISTANT}</think>A1<｜end▁of▁sentence｜><｜User｜>Q2{ASSISTANT}"
    with llama_server(merged_v31, tmp_path / "server.log") as base:
        assert apply_template(base, {"thinking": True}) == history + "<think>"
        assert apply_template(base, {"enable_thinking": True}) == history + "<think>"
        assert apply_template(base, {"enable_thinking": False}) == history + "</think>"
        # llama-server itself passes enable_thinking=true unless told otherwise (--reasoning auto).
        assert apply_template(base, None) == history + "<think>"


@pytest.mark.integration
def test_llama_server_ignores_enable_thinking_without_the_fix(merged_v31: Path, tmp_path: Path) -> None:
    # Why the fix matters: DeepSeek's own template only knows `thinking`.
    with llama_server(merged_v31, tmp_path / "server.log") as base:
        assert apply_template(base, {"enable_thinking": True}).endswith(ASSISTANT + "</think>")
        assert apply_template(base, {"thinking": True}).endswith(ASSISTANT + "<think>")
        assert apply_template(base, None).endswith(ASSISTANT + "</think>")
