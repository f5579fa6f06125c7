"""`install.sh --demo` end to end on this machine: no conda, Miniforge unreachable, so the loud venv
fallback really creates a Python 3.11 venv, really installs requirements/demo-linux-64.txt with
--require-hashes (torch 2.13.0+cpu from the local wheel folder), really `pip install`s the
bootstrapper and runs `llama-bootstrap demo`. Slow (a few minutes, mostly pip)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, closed_port, system_bin

CLI = REPO / "bootstrap" / "cli.py"


def _has_demo_command() -> bool:
    return CLI.exists() and re.search(r"""command\(\s*["']demo["']|def demo\b""", CLI.read_text()) is not None


def _python311() -> str | None:
    for name in ("python3.11", "python3"):
        path = shutil.which(name)
        if path:
            out = subprocess.run(  # noqa: S603 - fixed argv
                [path, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.stdout.strip() == "True":
                return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(not _has_demo_command(), reason="bootstrap/cli.py has no `demo` command yet")
@pytest.mark.skipif(_python311() is None, reason="the venv fallback needs Python 3.11 (requirements/demo-linux-64.txt)")
def test_demo_runs_end_to_end_in_the_venv_fallback(tmp_path: Path) -> None:
    release = tmp_path / "release"
    shutil.copytree(
        REPO,
        release,
        ignore=shutil.ignore_patterns(
            ".git",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".ruff_cache",
            ".venv*",
            "models",
            "Llama2-Chinese",
            "demo-run",
            ".llama-bootstrap",
        ),
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLAMA_BOOTSTRAP_", "CONDA_", "HF_", "XDG_")) and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp_path),
        # No conda from this machine (the fallback is what this test runs), the rest of the system's commands.
        PATH=str(system_bin(tmp_path)),
        LLAMA_BOOTSTRAP_MINIFORGE_URL=f"http://127.0.0.1:{closed_port()}",
    )
    proc = subprocess.run(  # noqa: S603 - fixed argv
        ["bash", str(release / "install.sh"), "--demo", "--yes"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert "NO CONDA: --demo falls back to a plain Python venv" in proc.stderr
    venv = home / ".local" / "state" / "llama-bootstrap" / "venvs" / "myenv-demo"
    assert (venv / "bin" / "python").exists()
    assert (venv / "bin" / "llama-bootstrap").exists()
    assert not (home / "miniforge3").exists()
