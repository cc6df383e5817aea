"""Bad input through the CLI: one line on stderr, exit code 1, nothing left behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.ollama.serve import free_port
from ollamads.tiny import write_tiny_shards
from tests.support.cli import run_cli

run = run_cli


def remove_second(shards: list[Path]) -> None:
    shards[1].unlink()


def truncate_last(shards: list[Path]) -> None:
    data = shards[-1].read_bytes()
    shards[-1].write_bytes(data[: len(data) // 2])


def lfs_pointer(shards: list[Path]) -> None:
    shards[1].write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
    )


def not_gguf(shards: list[Path]) -> None:
    shards[2].write_bytes(b"<html>rate limited</html>" * 10)


def extra_shard(shards: list[Path]) -> None:
    (shards[0].parent / shards[0].name.replace("-00001-of-00003", "-00004-of-00003")).write_bytes(
        shards[0].read_bytes()
    )


def count_mismatch(shards: list[Path]) -> None:
    # A shard from a 4-way split of the same model in the 3-way set's place.
    other = write_tiny_shards(shards[0].parent / "other", "v3.1", n_shards=4)
    shards[2].write_bytes(other[2].read_bytes())


def duplicate_shard(shards: list[Path]) -> None:
    shards[2].write_bytes(shards[1].read_bytes())


BAD_SETS: dict[str, tuple[Callable[[list[Path]], None], str]] = {
    "missing": (remove_second, "missing"),
    "truncated": (truncate_last, "truncated"),
    "lfs-pointer": (lfs_pointer, "git-LFS pointer"),
    "not-gguf": (not_gguf, "not a GGUF"),
    "extra": (extra_shard, "00004-of-00003"),
    "count-mismatch": (count_mismatch, "split.count"),
    "duplicate": (duplicate_shard, "split.no"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETS))
def test_bad_shard_sets(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path / "in", "v3.1", n_shards=3)
    spoil, expected = BAD_SETS[case]
    spoil(shards)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(capsys, "merge", str(shards[0]), str(out_dir / "m.gguf"), "--method", "builtin")
    assert code == 1
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert expected in err
    assert list(out_dir.iterdir()) == [], "a failed merge left files behind"


def test_output_exists_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path, "v3.1", n_shards=2)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "merge", str(shards[0]), str(out))
    assert code == 1 and "--force" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    code, _, _ = run(capsys, "merge", str(shards[0]), str(out), "--force", "--method", "builtin")
    assert code == 0 and out.read_bytes()[:4] == b"GGUF"


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path, "r1", n_shards=3)
    out = tmp_path / "m.gguf"
    code, stdout, _ = run(capsys, "merge", str(shards[0]), str(out), "--dry-run", "--method", "builtin")
    assert code == 0 and not out.exists()
    assert "would write" in stdout and "builtin" in stdout


def test_unknown_merge_method_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path, "v3", n_shards=2)
    code, _, err = run(capsys, "merge", str(shards[0]), str(tmp_path / "o.gguf"), "--method", "cat")
    assert code == 2
    assert "Invalid value for '--method'" in err
    assert "'cat' is not one of 'auto', 'builtin', 'llama-gguf-split'" in err
    assert "Usage: ollamads merge" in err and not (tmp_path / "o.gguf").exists()


def test_register_with_server_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path, "v3.1", n_shards=2)
    host = f"127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "register", "x:y", *map(str, shards), "--host", host)
    assert code == 1 and err.count("\n") == 1
    assert "no Ollama server answers" in err and "ollamads serve" in err


def test_register_bad_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path, "v3.1", n_shards=2)
    code, _, err = run(capsys, "register", "x:y", *map(str, shards), "-p", "num_ctx")
    assert code == 1 and "NAME=VALUE" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["merge"], "Missing argument 'first_shard'"),
        (["merge", "a.gguf", "--bogus"], "No such option: --bogus"),
        (["register", "m:t", "a.gguf", "--template-mode", "jinja"], "'jinja' is not one of 'renderer', 'template'"),
        (["register", "m:t", "a.gguf", "--family", "r2"], "'r2' is not one of 'v3.1', 'r1', 'v3'"),
        (["create", "r1:IQ1_S", "--connections", "0"], "0 is not in the range 1<=x<=64"),
        (["pull", "r1:IQ1_S", "--connections", "many"], "'many' is not a valid int"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_exit_2_with_the_usage_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert says in err and "Usage: ollamads" in err
    assert "unexpected" not in err and "OLLAMADS_DEBUG" not in err and out == ""


def test_help_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "merge", "--help")
    assert code == 0 and "auto" in out and "llama-gguf-split" in out and "builtin" in out


def test_merge_fix_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ollamads.gguf.format import KEY_CHAT_TEMPLATE, read_gguf
    from ollamads.gguf.retemplate import fixed_template_for, rewrite_chat_template

    shards = write_tiny_shards(tmp_path / "in", "v3.1", n_shards=3)
    rewrite_chat_template(shards[0], shards[0], "{{ messages }}", force=True)
    out = tmp_path / "fixed.gguf"
    code, _, err = run(capsys, "merge", str(shards[0]), str(out), "--fix-template", "--method", "builtin")
    assert code == 0, err
    assert read_gguf(out).value(KEY_CHAT_TEMPLATE) == fixed_template_for("v3.1")


def test_fix_template_refuses_other_families(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path, "r1", n_shards=2)
    code, _, err = run(capsys, "merge", str(shards[0]), str(tmp_path / "o.gguf"), "--fix-template")
    assert code == 1 and "V3.1" in err and not (tmp_path / "o.gguf").exists()


def test_help_imports_nothing_heavy() -> None:
    """`ollamads --help` stays instant: only typer, none of the libraries the commands use."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ollamads.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = loaded.stdout.splitlines()[-1].split()
    heavy = ("rich", "requests", "huggingface_hub", "ollama", "httpx", "jinja2", "numpy", "pydantic")
    assert [m for m in modules if m.split(".")[0] in heavy] == []
