"""Regenerate every lock file of the kit: the core of ``llama-bootstrap lock``.

Two layers, two tools:

* the conda layer (``environment.yml`` -> ``conda-lock.yml`` and the rendered
  ``conda-<platform>.lock`` explicit files) with ``conda-lock``;
* the pip layer (``requirements/<variant>.in`` -> ``requirements/<platform>-<variant>.txt``,
  hash-pinned) with ``uv pip compile``.

Both tools need the network (conda-forge, the package index, PyTorch's wheel index), so this
runs on a maintainer's machine, never during an install. Every command is an argument list run
through an injected ``runner`` (``subprocess.run`` by default) and every tool is looked up
through an injected ``which``: tests pass fakes for both. Nothing happens at import time.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from bootstrap.errors import StepFailed, ToolMissing

ENVIRONMENT_FILE = "environment.yml"
CONDA_LOCK_FILE = "conda-lock.yml"
EXPLICIT_TEMPLATE = "conda-{platform}.lock"
CONDA_PLATFORMS = ("linux-64", "win-64")

PYTHON_VERSION = "3.9"
# uv's --python-platform target for each conda platform.
UV_PLATFORMS = {
    "linux-64": "x86_64-unknown-linux-gnu",
    "win-64": "x86_64-pc-windows-msvc",
}
# PyTorch's own wheel indexes (a vendor host, not the package index). The Windows CUDA build
# and the Linux CPU-only build of torch are published only there; the CLI exposes both as
# options whose defaults are these constants.
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# (input stem under requirements/, conda platform, variant, which torch index it needs).
# The .in files are owned by the requirements layer; this list is the only place that names them.
REQUIREMENT_INPUTS: Tuple[Tuple[str, str, str, Optional[str]], ...] = (
    ("cuda", "linux-64", "cuda", None),
    ("cpu-linux", "linux-64", "cpu", "cpu"),
    ("cpu", "win-64", "cpu", None),
    ("win-cuda", "win-64", "cuda", "cuda"),
)

COMPILE_COMMAND = "llama-bootstrap lock"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
Which = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class PipLock:
    """One ``uv pip compile`` run: ``in_file`` -> ``out_file`` for ``platform``."""

    in_file: str  # relative to the repo root, e.g. requirements/cuda.in
    platform: str  # conda platform name, e.g. linux-64
    out_file: str  # e.g. requirements/linux-64-cuda.txt
    extra_index_url: Optional[str] = None


def pip_lock_table(
    torch_cuda_index: str = TORCH_CUDA_INDEX, torch_cpu_index: str = TORCH_CPU_INDEX
) -> List[PipLock]:
    """The (in-file, platform, out-file) table, built from :data:`REQUIREMENT_INPUTS`."""
    indexes = {"cuda": torch_cuda_index, "cpu": torch_cpu_index}
    table = []
    for stem, platform, variant, index in REQUIREMENT_INPUTS:
        table.append(
            PipLock(
                in_file=f"requirements/{stem}.in",
                platform=platform,
                out_file=f"requirements/{platform}-{variant}.txt",
                extra_index_url=indexes[index] if index else None,
            )
        )
    return table


def conda_lock_commands(conda_lock: str) -> List[List[str]]:
    """Solve ``environment.yml`` for every platform, then render the explicit files."""
    lock = [conda_lock, "lock", "--file", ENVIRONMENT_FILE]
    render = [conda_lock, "render", "--kind", "explicit"]
    for platform in CONDA_PLATFORMS:
        lock += ["--platform", platform]
        render += ["--platform", platform]
    lock += ["--lockfile", CONDA_LOCK_FILE]
    render += ["--filename-template", EXPLICIT_TEMPLATE, CONDA_LOCK_FILE]
    return [lock, render]


def uv_compile_command(uv: str, pip_lock: PipLock) -> List[str]:
    """``uv pip compile`` for one row of the table, hashes on, no index URL in the output."""
    argv = [
        uv, "pip", "compile", pip_lock.in_file,
        "--python-version", PYTHON_VERSION,
        "--python-platform", UV_PLATFORMS[pip_lock.platform],
        "--generate-hashes",
        "--no-emit-index-url",
        "--custom-compile-command", COMPILE_COMMAND,
        "-o", pip_lock.out_file,
    ]
    if pip_lock.extra_index_url:
        argv += ["--extra-index-url", pip_lock.extra_index_url]
    return argv


def _need(which: Which, tool: str, remedy: str) -> str:
    found = which(tool)
    if not found:
        raise ToolMissing(tool, remedy=remedy)
    return found


def _run(runner: Runner, argv: Sequence[str], cwd: Path) -> None:
    try:
        result = runner(list(argv), cwd=str(cwd), check=False, capture_output=True, text=True)
    except OSError as exc:
        raise StepFailed(f"command failed: {' '.join(argv)} ({exc})") from exc
    if result.returncode != 0:
        tail = (result.stderr or "").strip().splitlines()[-5:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        raise StepFailed(
            f"command failed (exit {result.returncode}): {' '.join(argv)}{detail}",
            remedy="Fix the error above (network, channel or index access) and run "
            "`llama-bootstrap lock` again.",
        )


def relock(
    repo_root: Path,
    runner: Runner = subprocess.run,
    which: Which = shutil.which,
    torch_cuda_index: str = TORCH_CUDA_INDEX,
    torch_cpu_index: str = TORCH_CPU_INDEX,
) -> List[Path]:
    """Regenerate conda-lock.yml, the explicit renders and the pip locks; return the files written.

    Raises :class:`~bootstrap.errors.ToolMissing` if ``conda-lock`` or ``uv`` is not on PATH
    (checked before anything runs) and :class:`~bootstrap.errors.StepFailed` if an input is
    missing or a command fails.
    """
    repo_root = Path(repo_root)
    conda_lock = _need(which, "conda-lock", "pip install -r requirements/conda-lock-tests.in")
    uv = _need(which, "uv", "pip install uv")

    table = pip_lock_table(torch_cuda_index, torch_cpu_index)
    inputs = [ENVIRONMENT_FILE] + [row.in_file for row in table]
    missing = [name for name in inputs if not (repo_root / name).is_file()]
    if missing:
        raise StepFailed(
            f"lock inputs missing under {repo_root}: {', '.join(missing)}",
            remedy="Run `llama-bootstrap lock` from a full checkout of the repository.",
        )

    written: List[Path] = []
    for argv in conda_lock_commands(conda_lock):
        _run(runner, argv, repo_root)
    written.append(repo_root / CONDA_LOCK_FILE)
    written.extend(repo_root / EXPLICIT_TEMPLATE.format(platform=p) for p in CONDA_PLATFORMS)

    for row in table:
        _run(runner, uv_compile_command(uv, row), repo_root)
        written.append(repo_root / row.out_file)
    return written
