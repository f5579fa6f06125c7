"""Fixtures for the installer tests: a copy of the release files in tmp_path, a redirected HOME, and
a STAND-IN conda (tests/installers/fixtures/standin-conda) that records its calls instead of
installing anything, and places envs where real conda would. Nothing here touches the real HOME,
/root/miniforge3 or the network."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Variables from the developer's shell that would change what the installers do.
_LEAKY = (
    "CONDA_EXE",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "MAMBA_EXE",
    "MAMBA_ROOT_PREFIX",
    "XDG_STATE_HOME",
    "PYTHONPATH",
    "PYTHONHOME",
    "NO_COLOR",
)


#: What find_conda looks for on PATH: never taken from the machine running the tests.
_CONDAS = ("conda", "mamba", "micromamba")


def system_bin(root: Path, hide: tuple[str, ...] = ()) -> Path:
    """A folder under root of links to the system's commands, without any conda (one on this machine
    must not change what the tests see) and without the `hide`n ones: the system part of a PATH."""
    folder = root / ("sysbin-" + "-".join(hide) if hide else "sysbin")
    folder.mkdir()
    for system in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(system):
            continue
        for tool in sorted(os.listdir(system)):
            if tool not in _CONDAS + hide and not (folder / tool).exists():
                (folder / tool).symlink_to(os.path.join(system, tool))
    return folder


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class Sandbox:
    """A release folder + HOME under tmp_path, and a PATH holding only tmp bin/ and the system dirs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "release"
        self.home = root / "home"
        self.bin = root / "bin"
        self.conda_base = root / "standin-conda-base"
        self.standin_log = root / "standin-calls.log"
        self.home.mkdir()
        self.bin.mkdir()
        self.repo.mkdir()
        shutil.copy2(REPO / "install.sh", self.repo / "install.sh")
        shutil.copy2(REPO / "pyproject.toml", self.repo / "pyproject.toml")
        shutil.copytree(REPO / "requirements", self.repo / "requirements")
        shutil.copy2(FIXTURES / "conda-linux-64.lock", self.repo / "conda-linux-64.lock")
        shutil.copy2(FIXTURES / "manifest.yaml", self.repo / "manifest.yaml")
        self.env: dict[str, str] = {k: v for k, v in os.environ.items() if k not in _LEAKY}
        self.env.update(
            HOME=str(self.home),
            PATH=os.pathsep.join([str(self.bin), str(self.system_bin())]),
            TMPDIR=str(root),
            STANDIN_LOG=str(self.standin_log),
            STANDIN_CONDA_BASE=str(self.conda_base),
        )
        for key in [k for k in self.env if k.startswith("LLAMA_BOOTSTRAP_")]:
            del self.env[key]

    def system_bin(self, hide: tuple[str, ...] = ()) -> Path:
        return system_bin(self.root, hide)

    @property
    def prefix(self) -> Path:
        """The default Miniforge prefix: $HOME/miniforge3 (inside tmp_path)."""
        return self.home / "miniforge3"

    def add_tool(self, fixture: str, name: str) -> Path:
        target = self.bin / name
        shutil.copy2(FIXTURES / fixture, target)
        target.chmod(0o755)
        return target

    def add_standin_conda(self) -> None:
        """Put the stand-in conda on PATH; the env's python it creates is the stand-in python."""
        self.add_tool("standin-conda", "conda")
        shutil.copy2(FIXTURES / "standin-python", self.bin / "standin-python")

    def standin_calls(self) -> list[str]:
        if not self.standin_log.exists():
            return []
        return self.standin_log.read_text().splitlines()

    def make_env(self, name: str = "myenv", stamp_lock: Path | None = None, envs_dir: Path | None = None) -> Path:
        """An existing env as the stand-in conda would have made it (optionally stamped with a lock)."""
        env = (envs_dir or self.conda_base / "envs") / name
        (env / "conda-meta").mkdir(parents=True)
        (env / "bin").mkdir()
        shutil.copy2(FIXTURES / "standin-python", env / "bin" / "python")
        if stamp_lock is not None:
            import hashlib

            digest = hashlib.sha256(stamp_lock.read_bytes()).hexdigest()
            (env / "conda-meta" / "llama-bootstrap-lock.sha256").write_text(f"{digest}  {stamp_lock.name}\n")
        return env

    def run(self, *args: str, timeout: float = 120, **env: str) -> Run:
        full_env = dict(self.env)
        full_env.update(env)
        proc = subprocess.run(  # noqa: S603 - fixed argv, our own script
            ["bash", str(self.repo / "install.sh"), *args],
            env=full_env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def call(self, script: str, **env: str) -> Run:
        """Run bash with install.sh's functions loaded (everything but its last line, `main "$@"`)
        followed by `script`: for the functions that need a state only a real download could reach."""
        full_env = dict(self.env)
        full_env.update(env)
        lines = (self.repo / "install.sh").read_text().rstrip("\n").splitlines()
        assert lines[-1] == 'main "$@" || exit 1'
        proc = subprocess.run(  # noqa: S603 - fixed argv, our own script
            ["bash", "-c", "\n".join(lines[:-1]) + "\n" + script],
            env=full_env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def tree_listing(root: Path) -> list[tuple[str, int, int]]:
    """Every path under root with its size and mtime: what a run changed shows up here."""
    out = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return out


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()

    def handler(*args: object, **kwargs: object) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
