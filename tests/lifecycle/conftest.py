"""Fixtures for the life-of-an-install tests: a release folder, a fresh HOME and a project folder under
tmp_path; the installers' own Sandbox (tests/installers/conftest.py) for the STAND-IN conda runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: The installer-driven tests run once, in the Python 3.11 run: the 3.9 gate of scripts/run-tests.sh is for
#: the bootstrapper's own code (it skips tests/installers for the same reason).
installer_run = pytest.mark.skipif(sys.version_info < (3, 11), reason="installer tests run in the Python 3.11 run")


def tree(root: Path) -> Dict[str, Tuple[str, int]]:
    """Every path under ``root`` (symlinks not followed): its type and, for files, size."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            out[str(path.relative_to(root))] = (kind, st.st_size if kind == "file" else 0)
    return out


#: What is not part of a release (build products, caches, local envs and the pipeline's own outputs).
NOT_RELEASED = (".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv*",
                "venv-new*", "models", "Llama2-Chinese", "llama-bootstrap-demo", ".llama-bootstrap")


def copy_release(target: Path) -> Path:
    """The repository's files as an unpacked release."""
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*NOT_RELEASED), symlinks=True)
    return target


def clean_env(home: Path, tmp: Path, path: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLAMA_BOOTSTRAP_", "CONDA_", "HF_", "XDG_", "MAMBA_"))
           and k not in ("PYTHONPATH", "PYTHONHOME", "NO_COLOR")}
    env.update(HOME=str(home), TMPDIR=str(tmp), PATH=path, **extra)
    return env


def run(argv: List[str], env: Dict[str, str], cwd: Path, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def sandbox(tmp_path: Path):
    """The installers' sandbox: a release copy, HOME and a PATH without conda under tmp_path (stand-ins on demand)."""
    from tests.installers.conftest import Sandbox

    (tmp_path / "sandbox").mkdir()
    return Sandbox(tmp_path / "sandbox")
