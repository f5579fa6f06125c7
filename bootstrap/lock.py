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

LINUX = "x86_64-unknown-linux-gnu"  # uv's --python-platform names
WINDOWS = "x86_64-pc-windows-msvc"
# PyTorch's own wheel indexes (a vendor host, not the package index): the Windows CUDA build and
# the CPU builds used by the demo/test locks are published only there.
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
COMPILE_COMMAND = "llama-bootstrap lock"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
Which = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class PipLock:
    """One ``uv pip compile`` run: ``in_file`` -> ``out_file`` for one Python and platform."""

    in_file: str  # relative to the repo root, e.g. requirements/cuda.in
    out_file: str  # e.g. requirements/linux-64-cuda.txt
    python: str  # e.g. "3.9"
    platform: str  # uv's --python-platform
    torch_index: Optional[str] = None  # "cuda" | "cpu": also search that PyTorch index


# Every pip lock of the repository; a test keeps this table and requirements/ in step.
PIP_LOCKS: Tuple[PipLock, ...] = (
    # the product layer of myenv (Python 3.9)
    PipLock("requirements/cuda.in", "requirements/linux-64-cuda.txt", "3.9", LINUX),
    PipLock("requirements/cpu.in", "requirements/linux-64-cpu.txt", "3.9", LINUX),
    PipLock("requirements/cpu.in", "requirements/win-64-cpu.txt", "3.9", WINDOWS),
    PipLock("requirements/win-cuda.in", "requirements/win-64-cuda.txt", "3.9", WINDOWS, "cuda"),
    # the installers' --demo venv fallback (Python 3.11, CPU torch)
    PipLock("requirements/demo-linux.in", "requirements/demo-linux-64.txt", "3.11", LINUX, "cpu"),
    PipLock("requirements/demo-win.in", "requirements/demo-win-64.txt", "3.11", WINDOWS),
    # developers and CI
    PipLock("requirements/test.in", "requirements/test.txt", "3.11", LINUX, "cpu"),
    PipLock("requirements/test-py39.in", "requirements/test-py39.txt", "3.9", LINUX),
    PipLock("requirements/conda-lock-tests.in", "requirements/conda-lock-tests.txt", "3.11", LINUX),
)


def pip_lock_table(
    torch_cuda_index: str = TORCH_CUDA_INDEX, torch_cpu_index: str = TORCH_CPU_INDEX
) -> List[Tuple[PipLock, Optional[str]]]:
    """Each lock with the URL of the PyTorch index it needs (None: the default index only)."""
    indexes = {"cuda": torch_cuda_index, "cpu": torch_cpu_index}
    return [(row, indexes[row.torch_index] if row.torch_index else None) for row in PIP_LOCKS]


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


def uv_compile_command(uv: str, pip_lock: PipLock, extra_index_url: Optional[str] = None) -> List[str]:
    """``uv pip compile`` for one lock: hashes on, no index URL or find-links in the output."""
    argv = [
        uv, "pip", "compile", pip_lock.in_file,
        "--python-version", pip_lock.python,
        "--python-platform", pip_lock.platform,
        "--generate-hashes",
        "--no-emit-index-url",
        "--no-emit-find-links",
        "--custom-compile-command", COMPILE_COMMAND,
        "-o", pip_lock.out_file,
    ]
    if extra_index_url:
        argv += ["--extra-index-url", extra_index_url, "--index-strategy", "unsafe-best-match"]
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
    inputs = [ENVIRONMENT_FILE] + sorted({row.in_file for row, _ in table})
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

    for row, index in table:
        _run(runner, uv_compile_command(uv, row, index), repo_root)
        written.append(repo_root / row.out_file)
    return written
