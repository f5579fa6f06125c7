"""The CLI never crashes on its output encoding: the real CLI with a cp1252 stdout (what Python 3.9
gives a redirected stream on an en-US Windows), directly and behind install.sh's hand-off (the
stand-in conda's env python runs the real bootstrapper there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, Sandbox

CHINESE = "中文模型"


def _interpreters() -> list[str]:
    found = [sys.executable]
    py39 = REPO / ".venv-py39" / "bin" / "python"  # built by scripts/run-tests.sh for the 3.9 gate
    if py39.exists():
        found.append(str(py39))
    return found


@pytest.mark.parametrize("python", _interpreters(), ids=lambda p: Path(p).parent.parent.name)
def test_the_cli_writes_chinese_to_a_cp1252_stdout_without_crashing(python: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_BOOTSTRAP_", "PYTHON"))}
    env["PYTHONIOENCODING"] = "cp1252"
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [python, "-m", "bootstrap", "models", "--json", "--manifest", str(REPO / "manifest.yaml"), "--model", CHINESE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    stdout, stderr = proc.stdout.decode("cp1252"), proc.stderr.decode("cp1252")
    assert proc.returncode == 2, stderr  # bad input, not a crash (that was exit 1 with a traceback)
    assert "Traceback" not in stderr and "UnicodeEncodeError" not in stderr
    doc = json.loads(stdout)  # \uXXXX is what the stream could not encode, and valid JSON
    assert CHINESE in doc["error"]["message"] and doc["error"]["exit_code"] == 2
    assert "\\u4e2d\\u6587" in stderr


def _handoff_sandbox(sandbox: Sandbox) -> dict[str, str]:
    sandbox.add_standin_conda()
    manifest = sandbox.root / "manifest.yaml"
    manifest.write_text((REPO / "manifest.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return {"STANDIN_REAL_PYTHON": sys.executable, "LLAMA_BOOTSTRAP_MANIFEST": str(manifest)}


def test_the_hand_off_survives_a_cp1252_stream_and_passes_the_exit_code_on(sandbox: Sandbox) -> None:
    result = sandbox.run("--model", CHINESE, PYTHONIOENCODING="cp1252", **_handoff_sandbox(sandbox))
    assert result.returncode == 2, result.stderr  # the CLI's "bad input", passed through
    assert "Traceback" not in result.stderr
    assert "'\\u4e2d\\u6587\\u6a21\\u578b' is not a model in the manifest" in result.stderr
    assert "llama-bootstrap run failed (exit 2: bad input)" in result.stderr


def test_the_hand_off_writes_utf8_whatever_the_locale(sandbox: Sandbox) -> None:
    result = sandbox.run("--model", CHINESE, LANG="C", LC_ALL="C", **_handoff_sandbox(sandbox))
    assert result.returncode == 2, result.stderr
    assert f"'{CHINESE}' is not a model in the manifest" in result.stderr  # PYTHONUTF8=1 from install.sh
