"""The command line: in-process through click's CliRunner (wrapping ``bootstrap.cli.main``, which owns the
error mapping), and as a real ``python -m bootstrap`` subprocess where the process matters (imports, exit
codes, the issue's acceptance check on this machine).
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import click
import pytest
from click.testing import CliRunner, Result

from bootstrap import __version__, checks, errors, exits
from bootstrap.cli import cli, run_cli
from bootstrap.manifest import json_schema
from helpers_core import (
    BAD_DIR,
    HEAVY_MODULES,
    LORA_7B,
    MODEL_KEYS,
    REPO,
    SHIPPED_MANIFEST,
    bootstrap_cmd,
    clean_env,
    make_probes,
    shipped_text,
    torch_cpu,
)

TIMEOUT_S = 60


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def via_main(args: List[str]) -> None:
    """Run the real entry point (error mapping, exit codes) under CliRunner."""
    sys.exit(run_cli(list(args)))


def _runner() -> CliRunner:
    # click < 8.2 mixes stderr into stdout unless told not to; 8.2 removed the switch and always separates
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    return CliRunner()


def invoke(*args: str, env: Dict[str, str] = None) -> Result:  # type: ignore[assignment]
    return _runner().invoke(via_main, list(args), env=env, catch_exceptions=True)


@pytest.fixture(autouse=True)
def _no_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LLAMA_BOOTSTRAP_MANIFEST", "LLAMA_BOOTSTRAP_MODEL", "LLAMA_BOOTSTRAP_PROFILE",
                "LLAMA_BOOTSTRAP_STATE_DIR", "LLAMA_BOOTSTRAP_DEBUG", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``check`` sees a Linux box with CPU-only torch and no nvidia-smi (whatever this machine is)."""
    monkeypatch.setattr(checks, "Probes", lambda: make_probes(gpu=None, torch=torch_cpu()))


def preferred_manifest(folder: Path) -> Path:
    """A copy of the shipped manifest with ``requirements.gpu: preferred`` (comments and all)."""
    text = shipped_text()
    assert text.count("gpu: required") == 1
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(text.replace("gpu: required", "gpu: preferred"), encoding="utf-8")
    return path


# -- in-process ------------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = _runner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("check", "doctor", "models", "schema"):
        assert command in result.stdout
    assert "LLAMA_BOOTSTRAP_DEBUG" in result.stdout


def test_help_through_main_exits_0() -> None:
    result = invoke("-h")
    assert result.exit_code == 0 and "Usage:" in result.stdout


def test_models_text() -> None:
    result = invoke("models", "--manifest", str(SHIPPED_MANIFEST))
    assert result.exit_code == 0, result.stderr
    for key in MODEL_KEYS:
        assert key in result.stdout
    assert "* llama2-chinese-7b-chat " in result.stdout  # the default is marked
    assert "FlagAlpha/Llama2-Chinese-13b-Chat" in result.stdout


def test_models_json() -> None:
    result = invoke("models", "--json", "--manifest", str(SHIPPED_MANIFEST))
    assert result.exit_code == 0, result.stderr
    rows = {r["key"]: r for r in json.loads(result.stdout)["models"]}
    assert tuple(rows) == MODEL_KEYS
    assert [k for k, r in rows.items() if r["default"]] == ["llama2-chinese-7b-chat"]
    assert rows[LORA_7B]["gated"] is True and rows["llama2-chinese-7b-chat"]["gated"] is False
    assert rows[LORA_7B]["total_gb"] == pytest.approx(0.1 + 13.5)
    assert rows["llama2-chinese-7b-chat"]["revision"] == "main"


def test_models_json_follows_the_model_flag_and_env() -> None:
    result = invoke("models", "--json", "--manifest", str(SHIPPED_MANIFEST), "--model", LORA_7B)
    assert [r["key"] for r in json.loads(result.stdout)["models"] if r["default"]] == [LORA_7B]
    result = invoke("models", "--json", "--manifest", str(SHIPPED_MANIFEST),
                    env={"LLAMA_BOOTSTRAP_MODEL": "llama2-chinese-13b-chat"})
    assert [r["key"] for r in json.loads(result.stdout)["models"] if r["default"]] == ["llama2-chinese-13b-chat"]


def test_schema_command_prints_the_schema() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(json.dumps(json_schema()))


def test_doctor_is_check() -> None:
    assert cli.commands["doctor"] is cli.commands["check"]


def test_doctor_runs_the_checks(cpu_machine: None, tmp_path: Path) -> None:
    path = preferred_manifest(tmp_path)
    a = invoke("check", "--json", "--offline", "--manifest", str(path))
    b = invoke("doctor", "--json", "--offline", "--manifest", str(path))
    assert a.exit_code == b.exit_code == 0, (a.stderr, b.stderr)
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_check_exit_codes_follow_the_status(cpu_machine: None, tmp_path: Path) -> None:
    failing = invoke("check", "--offline", "--manifest", str(SHIPPED_MANIFEST))
    assert failing.exit_code == 1
    assert "overall: fail" in failing.stdout and "gpu" in failing.stdout
    warning = invoke("check", "--offline", "--manifest", str(preferred_manifest(tmp_path)))
    assert warning.exit_code == 0
    assert "overall: warn" in warning.stdout


def test_check_human_output_shows_remedies(cpu_machine: None) -> None:
    result = invoke("check", "--offline", "--manifest", str(SHIPPED_MANIFEST))
    lines = result.stdout.splitlines()
    gpu = next(i for i, line in enumerate(lines) if line.split()[:2] == ["FAIL", "gpu"])
    assert lines[gpu + 1].strip().startswith("-> ") and "preferred" in lines[gpu + 1]


def test_unknown_option_exits_2_without_traceback() -> None:
    result = invoke("models", "--bogus")
    assert result.exit_code == 2
    assert "--bogus" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unknown_command_exits_2() -> None:
    result = invoke("frobnicate")
    assert result.exit_code == 2 and "frobnicate" in result.stderr


def test_json_error_document_on_stdout() -> None:
    bad = BAD_DIR / "gpu-maybe.yaml"
    result = invoke("models", "--json", "--manifest", str(bad))
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["status"] == "error"
    assert doc["error"]["kind"] == "ManifestError" and doc["error"]["exit_code"] == 2
    assert "requirements.gpu" in doc["error"]["message"] and doc["error"]["remedy"]
    assert "requirements.gpu" in result.stderr  # and the human message on stderr


def test_json_error_document_for_a_usage_error() -> None:
    result = invoke("check", "--json", "--offline", "--manifest", str(SHIPPED_MANIFEST), "--model", "nope")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["error"]["kind"] == "UsageError" and doc["error"]["message"].startswith("--model:")


def test_json_error_document_for_a_bad_option() -> None:
    result = invoke("models", "--json", "--bogus")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["status"] == "error" and doc["error"]["exit_code"] == 2


def test_unknown_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug shows its traceback (printed by us, scrubbed of secrets) and exits 1, in --json too."""
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(checks, "run_checks", boom)
    result = invoke("check", "--offline", "--json", "--manifest", str(SHIPPED_MANIFEST))
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "RuntimeError: a bug" in result.stderr
    assert json.loads(result.stdout)["error"]["kind"] == "InternalError"


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checks, "run_checks", interrupted)
    result = invoke("check", "--offline", "--json", "--manifest", str(SHIPPED_MANIFEST))
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert json.loads(result.stdout)["error"]["exit_code"] == 130


@pytest.mark.parametrize(
    "exc, code",
    [
        (errors.ManifestError("x", path="m.yaml", line=3), 2),
        (errors.UsageError("x", argument="--model"), 2),
        (errors.LockedError("/tmp/lock"), 3),
        (errors.Interrupted("x"), 130),
        (KeyboardInterrupt(), 130),
        (errors.ChecksFailed(["gpu"]), 1),
        (errors.GatedRepoError("x", repo_id="a/b"), 1),
        (errors.ToolMissing("git"), 1),
    ],
)
def test_exit_code_mapping(exc: BaseException, code: int) -> None:
    out = exits.outcome(exc)
    assert out is not None and out.code == code
    assert out.kind == type(exc).__name__ or isinstance(exc, KeyboardInterrupt)


def test_manifest_error_message_has_path_and_line() -> None:
    out = exits.outcome(errors.ManifestError("bad", path="m.yaml", line=3))
    assert out is not None and out.message == "m.yaml:3: bad"


@pytest.mark.parametrize("exc", [ValueError("x"), OSError("x"), SystemExit(1)])
def test_foreign_exceptions_are_not_mapped(exc: BaseException) -> None:
    assert exits.outcome(exc) is None


# -- real subprocesses -----------------------------------------------------------------------------

_IMPORT_PROBE = """
import json, sys
from bootstrap.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("@@" + json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.mark.parametrize("args", [["--help"], ["check", "--help"], ["models", "--manifest", str(SHIPPED_MANIFEST)],
                                  ["schema"], ["--version"]],
                         ids=["help", "check-help", "models", "schema", "version"])
def test_light_commands_do_not_import_heavy_libraries(tmp_path: Path, args: List[str]) -> None:
    script = _IMPORT_PROBE.format(heavy=HEAVY_MODULES)
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT_S, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@")]
    assert line, proc.stdout + proc.stderr
    result = json.loads(line[-1][2:])
    assert result["code"] == 0, proc.stderr
    assert result["heavy"] == []


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(bootstrap_cmd(*args), cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          encoding="utf-8", timeout=TIMEOUT_S, check=False)


def test_version(tmp_path: Path) -> None:
    proc = _run("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"llama-bootstrap, version {__version__}"
    assert f'version = "{__version__}"' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


def test_models_subprocess_uses_manifest_yaml_in_cwd(tmp_path: Path) -> None:
    shutil.copyfile(SHIPPED_MANIFEST, tmp_path / "manifest.yaml")
    text = _run("models", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert all(key in text.stdout for key in MODEL_KEYS)
    as_json = _run("models", "--json", cwd=tmp_path)
    assert [r["key"] for r in json.loads(as_json.stdout)["models"]] == list(MODEL_KEYS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml"]  # nothing written


def test_subprocess_unknown_option(tmp_path: Path) -> None:
    proc = _run("check", "--no-such-flag", cwd=tmp_path)
    assert proc.returncode == 2 and "--no-such-flag" in proc.stderr and "Traceback" not in proc.stderr


needs_no_gpu = pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                                  reason="the acceptance check is about a machine without an NVIDIA GPU")


@needs_no_gpu
def test_check_on_this_machine_fails_for_the_gpu(tmp_path: Path) -> None:
    """The shipped manifest requires a GPU; this machine has none."""
    shutil.copyfile(SHIPPED_MANIFEST, tmp_path / "manifest.yaml")
    proc = _run("check", "--json", "--offline", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert doc["status"] == "fail"
    assert statuses["gpu"] == "fail" and statuses["network"] == "skip"
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml"]  # check writes nothing


@needs_no_gpu
def test_acceptance_gpu_preferred_is_not_a_failure(tmp_path: Path) -> None:
    """The issue's acceptance check: with requirements.gpu: preferred, a CPU-only machine passes check."""
    path = preferred_manifest(tmp_path / "kit")
    proc = _run("check", "--json", "--offline", "--manifest", str(path), cwd=tmp_path)
    doc = json.loads(proc.stdout)
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert statuses["gpu"] == "warn"
    assert doc["status"] != "fail", [c for c in doc["checks"] if c["status"] == "fail"]
    assert proc.returncode == 0, proc.stderr
