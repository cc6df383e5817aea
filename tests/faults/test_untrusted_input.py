"""Input ollamads does not control: file names in the Hub's listing, chat templates inside GGUFs,
text that ends up in a Modelfile, the Hub token, and where ``ollamads serve`` listens.

* A hostile listing (absolute paths, ``..``, backslashes, NUL) is refused before a byte is
  fetched, and nothing is written outside the models folder.
* No GGUF's chat template is ever rendered by the package: the one Jinja environment it has
  loads only its own files; a template that would run code when rendered passes through every
  command inert (DeepSeek's templates are rendered only in the tests, in jinja2's sandbox).
* Parameters and system prompts with quotes, line breaks and ``\"\"\"`` come back from the real
  ``ollama create -f`` exactly as given, with no extra directive; what no Modelfile can hold is
  refused before anything is downloaded.
* ``HF_TOKEN`` appears in no output, error, record, Modelfile, store file or server log, on
  success or failure.
* ``ollamads serve`` listens on loopback unless told otherwise, and warns when told.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ollamads.catalog import resolve
from ollamads.catalog.families import get_family
from ollamads.cli._errors import error_line
from ollamads.errors import OllamadsError
from ollamads.gguf.format import KEY_CHAT_TEMPLATE, read_gguf
from ollamads.gguf.retemplate import rewrite_chat_template
from ollamads.ollama.modelfile import ModelDefinition, go_template
from ollamads.ollama.serve import serve_settings
from ollamads.ollama.store import LocalStore, ModelName
from ollamads.paths import ollamads_home, repo_dir
from ollamads.quant_pull import pull_quant
from ollamads.tiny import write_tiny_model, write_tiny_shards
from tests.support.cli import run_cli
from tests.support.faults import FaultServer, one_line
from tests.support.hubstub import HubStub
from tests.support.serve_command import ServeCommand
from tests.support.servers import ollama_binary
from tests.support.synthetic import tiny_repo

PACKAGE = Path(__file__).resolve().parents[2] / "ollamads"
TINY = {"num_predict": 8, "num_ctx": 1024}

Hub = Callable[..., HubStub]
Server = Callable[..., FaultServer]


# --- file names from the Hub ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        "{abs}/DeepSeek-V3.1-UD-TQ1_0.gguf",  # absolute, into the test's own folder
        "../../../../escaped/DeepSeek-V3.1-UD-TQ1_0.gguf",
        "ok/../../../escaped/DeepSeek-V3.1-UD-TQ1_0.gguf",
        "..\\..\\escaped\\DeepSeek-V3.1-UD-TQ1_0.gguf",
        "evil\\..\\DeepSeek-V3.1-UD-TQ1_0.gguf/DeepSeek-V3.1-UD-TQ1_0.gguf",
        "nul\0dir/DeepSeek-V3.1-UD-TQ1_0.gguf",
    ],
)
def test_hostile_file_names_in_the_listing_are_refused(
    hub: Hub, tmp_path: Path, hostile: str
) -> None:
    entry = resolve("v3.1:TQ1_0")
    (data,) = tiny_repo(entry, tmp_path / "src").values()
    name = hostile.format(abs=tmp_path / "escaped")
    stub = hub({entry.repo: {name: data, "README.md": b"x"}})
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(OllamadsError) as err:
        pull_quant(entry)
    assert "\n" not in error_line(err.value)
    assert stub.downloads() == [], "a hostile path was fetched"
    after = {p for p in tmp_path.rglob("*")} - before
    models = ollamads_home() / "models"
    assert [p for p in after if models not in p.parents and p != models] == []
    assert not (tmp_path / "escaped").exists()
    assert not repo_dir(entry.repo).exists() or not any(repo_dir(entry.repo).rglob("*.gguf"))


# --- chat templates from GGUFs -------------------------------------------------------------------

#: A chat template that runs a shell command when rendered outside a sandbox.
HOSTILE_TEMPLATE = (
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}"
    "{% for c in ().__class__.__base__.__subclasses__() %}{% endfor %}"
)


def test_the_package_renders_no_template_but_its_own() -> None:
    """The only Jinja in the package: one environment that loads the package's own templates."""
    environments, renders = [], []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("Environment", "SandboxedEnvironment", "ImmutableSandboxedEnvironment", "Template",
                            "NativeEnvironment"):
                    environments.append((path.relative_to(PACKAGE).as_posix(), ast.unparse(node)))
                if name in ("from_string", "compile_expression"):
                    renders.append((path.relative_to(PACKAGE).as_posix(), ast.unparse(node)))
    assert renders == [], "a template built from a string could be a GGUF's"
    assert [where for where, _ in environments] == ["ollama/modelfile.py"]
    (_, call), = environments
    assert "loader=jinja2.FileSystemLoader(templates_dir())" in call


def test_a_hostile_chat_template_stays_inert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], split_line_server: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "pwned"
    template = HOSTILE_TEMPLATE.replace("{marker}", str(marker))
    shards = write_tiny_shards(tmp_path / "in", "v3.1", n_shards=3)
    rewrite_chat_template(shards[0], shards[0], template, force=True)
    # DeepSeek's templates are rendered only in jinja2's sandbox (tests/support/reference.py,
    # as Hugging Face does): this one is refused there.
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    with pytest.raises(SecurityError):
        ImmutableSandboxedEnvironment().from_string(template).render()
    assert not marker.exists()

    server = split_line_server
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))  # type: ignore[attr-defined]
    runs = [
        ("register", "hostile:x", *map(str, shards), "--dry-run", "--host", server.url),  # type: ignore[attr-defined]
        ("register", "hostile:x", *map(str, shards), "--host", server.url),  # type: ignore[attr-defined]
        ("merge", str(shards[0]), str(tmp_path / "merged.gguf"), "--method", "builtin", "--fix-template"),
    ]
    for argv in runs:
        code, _, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
    assert read_gguf(shards[0]).value(KEY_CHAT_TEMPLATE) == template  # carried, never rendered
    assert not marker.exists(), "a GGUF's chat template was rendered outside a sandbox"


# --- Modelfile text ------------------------------------------------------------------------------

HOSTILE_STOPS = [
    'x"\nFROM /etc/passwd',
    "a\nADAPTER\t/etc/hostname",
    "cr\rSYSTEM pwned",
    " lead and trail ",
    '"quoted"',
    'back\\slash "and" <x>',
    "\ttab first",
    'ends with a quote"',
    "<｜end▁of▁sentence｜>",
]
HOSTILE_SYSTEM = (
    'Be brief.\nFROM /etc/passwd\nPARAMETER num_ctx 1\nADAPTER /etc/hostname\n'
    '"quoted" and \\"escaped\\" and ""two"" and a last quote"'
)


@pytest.mark.integration
def test_hostile_parameters_and_system_text_add_no_directive(
    ollama_server: object, tmp_path: Path
) -> None:
    """Rendered into a Modelfile, then read by the real `ollama create -f`: the params and system
    blobs hold exactly what was given, and the model has no layer it was not given."""
    server = ollama_server
    model = write_tiny_model(tmp_path / "m" / "hostile.gguf", "r1", seed=31)
    parameters = {**TINY, "stop": HOSTILE_STOPS, "temperature": 0.25}
    definition = ModelDefinition.for_family(
        "hostile:mf", get_family("r1"), [model], server=server.info,  # type: ignore[attr-defined]
        parameters=parameters, system=HOSTILE_SYSTEM,
    )
    text = definition.modelfile()
    modelfile = model.parent / "Modelfile"
    modelfile.write_text(text, encoding="utf-8")
    env = {**os.environ, "OLLAMA_HOST": server.bind, "HOME": str(tmp_path)}  # type: ignore[attr-defined]
    made = subprocess.run([server.binary, "create", "hostile:mf", "-f", str(modelfile)],  # type: ignore[attr-defined]
                          capture_output=True, text=True, timeout=300, env=env)
    assert made.returncode == 0, made.stderr

    store = LocalStore(server.models_dir)  # type: ignore[attr-defined]
    manifest = json.loads(ModelName.parse("hostile:mf").manifest_path(store.root).read_bytes())
    kinds = [layer["mediaType"].rsplit(".", 1)[-1] for layer in manifest["layers"]]
    assert sorted(kinds) == ["model", "params", "system", "template"], kinds
    blob = {k: store.blob_path(layer["digest"]).read_bytes() for k, layer in zip(kinds, manifest["layers"])}
    params = json.loads(blob["params"])
    assert params["stop"] == HOSTILE_STOPS
    assert {k: v for k, v in params.items() if k != "stop"} == {
        k: v for k, v in definition.parameters_json().items() if k != "stop"}
    assert blob["system"].decode() == HOSTILE_SYSTEM
    assert blob["template"].decode() == go_template(get_family("r1").go_template, line=server.info.line)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("parameters", "system", "words"),
    [
        ({"stop": ['"""\nSYSTEM pwned']}, None, 'contains """'),
        ({"stop": ["\x1b[31mred"]}, None, "control character"),
        ({"stop\nFROM /etc/passwd": ["x"]}, None, "bad parameter name"),
        ({"num ctx": 5}, None, "bad parameter name"),
        ({}, 'hi"""\nFROM /etc/passwd\nSYSTEM """x', 'contains """'),
        ({}, "bell\x07", "control character"),
    ],
)
def test_what_no_modelfile_can_hold_is_refused_up_front(
    parameters: dict[str, object], system: str | None, words: str
) -> None:
    with pytest.raises(OllamadsError) as err:
        ModelDefinition.for_family(
            "x:y", get_family("v3"), [Path("/m/x.gguf")], server=None, parameters=parameters, system=system
        )
    assert words in err.value.message and "\n" not in error_line(err.value)


def test_create_refuses_a_hostile_parameter_before_downloading(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str], split_line_server: object
) -> None:
    entry = resolve("r1:IQ1_S")
    stub = hub({entry.repo: tiny_repo(entry, tmp_path / "src")})
    code, _, err = run_cli(capsys, "create", "r1:IQ1_S", "--host", split_line_server.url,  # type: ignore[attr-defined]
                           "-p", 'stop=a"""\nFROM /etc/passwd')
    assert code == 1 and 'contains """' in one_line(err)
    code, _, err = run_cli(capsys, "create", "r1:IQ1_S", "--host", split_line_server.url,  # type: ignore[attr-defined]
                           "-p", "stop\nFROM /etc/passwd=x")
    assert code == 1 and "bad parameter name" in one_line(err)
    assert stub.bytes_served() == 0


# --- the Hub token --------------------------------------------------------------------------------

TOKEN = "hf_" + "Sec7ret" * 5
WRONG = "hf_" + "Wr0ngT0ken" * 3


@pytest.mark.integration
def test_the_hub_token_appears_nowhere(
    hub: Hub, tmp_path: Path, fault_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = "r1:IQ1_S"
    entry = resolve(spec)
    stub = hub({entry.repo: tiny_repo(entry, tmp_path / "src")}, token=TOKEN, private={entry.repo},
               redirect=True)
    # The server runs with the token in its environment, as `HF_TOKEN=… ollamads serve` does.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server = fault_server("split")
    monkeypatch.setenv("OLLAMA_MODELS", str(server.models_dir))
    outputs = []

    def cli(*argv: str, token: str = TOKEN, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "ollamads", *argv], capture_output=True, text=True, timeout=300,
            env={**os.environ, "HF_TOKEN": token, **env},
        )
        outputs.append(done.stdout + done.stderr)
        return done

    assert cli("pull", spec, token=WRONG).returncode == 1  # a refused token
    assert cli("create", spec, "--host", server.url, token=WRONG, OLLAMADS_DEBUG="1").returncode == 1
    stub.fail_next(403, 100, where="cdn")  # the CDN refusing every URL, with the right token
    failed = cli("create", spec, "--host", server.url, OLLAMADS_CONNECTIONS="1")
    assert failed.returncode == 1 and "(403)" in failed.stderr, failed.stderr
    stub.clear_faults()
    done = cli("create", spec, "--host", server.url, "-p", "num_predict=8")
    assert done.returncode == 0, done.stderr
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in stub.log)  # it was used

    for secret in (TOKEN, WRONG):
        for text in outputs:
            assert secret not in text
        for root in (ollamads_home(), server.models_dir, server.root):
            for path in root.rglob("*"):
                if path.is_file() and path.stat().st_size < 10 << 20:
                    assert secret.encode() not in path.read_bytes(), f"{secret[:6]}… in {path}"
        assert secret not in server.log_path.read_text(errors="replace")


# --- ollamads serve --------------------------------------------------------------------------------


def test_serve_listens_on_loopback_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    settings = serve_settings(tmp_path / "store")
    assert settings.bind == "127.0.0.1:11434" and not settings.reachable_from_other_machines
    for bind, exposed in [("0.0.0.0:1234", True), (":1234", True), ("[::]:1234", True),
                          ("192.168.1.5:1234", True), ("somehost:1234", True), ("localhost:1234", False),
                          ("[::1]:1234", False), ("127.0.0.1:1234", False)]:
        assert serve_settings(tmp_path / "store", bind).reachable_from_other_machines is exposed, bind


@pytest.mark.integration
@pytest.mark.parametrize(("bind", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serve_says_so_when_it_listens_beyond_loopback(tmp_path: Path, bind: str, warned: bool) -> None:
    from ollamads.ollama.serve import free_port

    port = free_port()
    served = ServeCommand(tmp_path / "store", ollama_binary("merged"), home=tmp_path, bind=f"{bind}:{port}")
    try:
        served.start()
        text = served.said
        assert ("warning: listening on " in text) is warned, text
        if warned:
            assert f"listening on {bind}:{port}, not only on loopback" in text
            assert "anyone who can reach this machine" in text
        assert _listening_address(port) == ("any" if warned else "loopback")
    finally:
        served.stop()


def _listening_address(port: int) -> str:
    """Where a socket LISTENs at ``port``: "any" (every interface), "loopback", or ""."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                if set(address) == {"0"}:
                    return "any"
                if len(address) == 8 and bytes.fromhex(address)[::-1][0] == 127:
                    return "loopback"
                return address
    return ""
