"""Helpers for the fault suite (tests/reliability).

Everything is real: LocalHub on 127.0.0.1 (bootstrap.demo.hubserver) with its fault injection, real git,
the real huggingface_hub download code, a real tmpfs for a full disk, and the CLI as a subprocess
(``python -m bootstrap``). The only stand-ins are two PATH wrappers, written into a folder named
``test-wrappers`` and marked as such in their first lines, that make one step slow so that a signal
lands inside it: ``git`` (runs the real git, then sleeps while "clone" is still running) and
``nvidia-smi`` (hangs like a wedged driver).

Signals go to the subprocess's own process group (it is started with ``start_new_session=True``), the
way a terminal sends Ctrl-C to the foreground job, so a wrapper child never outlives the test.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence

import pytest

from bootstrap.demo.scenario import DEMO_REPO_ID
from tests.pipeline.helpers import write_manifest  # noqa: F401 - re-exported for the fault tests

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
#: pull fetches big files in ranges of this size (bootstrap.fetch.PIECE_SIZE).
PIECE = 8 * MiB
BIG = "model.safetensors"
BIG_SIZE = 25 * MiB
SMALL_FILES = {"config.json": json.dumps({"model_type": "llama", "hidden_size": 64}) + "\n",
               "tokenizer_config.json": json.dumps({"model_max_length": 256}) + "\n"}
#: Variables of the developer's shell that would change what the CLI does.
_LEAKY_PREFIXES = ("LLAMA_BOOTSTRAP_", "HF_", "HUGGING_FACE_", "CONDA_", "PYTHON")

posix_only = pytest.mark.skipif(os.name != "posix", reason="signals, process groups and tmpfs are POSIX")


# -- content -----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_model_folder(folder: Path, big_bytes: int = BIG_SIZE) -> Path:
    """A model-like folder: ``model.safetensors`` of random bytes plus small config files."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / BIG, "wb") as fh:
        left = big_bytes
        while left:
            n = min(left, 4 * MiB)
            fh.write(os.urandom(n))
            left -= n
    for name, text in SMALL_FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@dataclass
class Project:
    """A project folder: the manifest, what the tool writes next to it, and the served upstream files."""

    manifest: Path
    upstream: Path

    @property
    def root(self) -> Path:
        return self.manifest.parent

    @property
    def state_dir(self) -> Path:
        return self.root / ".llama-bootstrap"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / DEMO_REPO_ID

    @property
    def download_dir(self) -> Path:
        """Where pull keeps partial downloads (``<key>.incomplete`` + ``<key>.json``)."""
        return self.model_dir / ".partial"

    @property
    def source_dir(self) -> Path:
        return self.root / "Llama2-Chinese"

    def plan(self, token: Optional[str] = None):
        from bootstrap.plan import Overrides, build_plan
        from bootstrap.settings import Settings

        return build_plan(Overrides(manifest=self.manifest), Settings(hf_token=token))

    def state(self) -> Dict[str, Any]:
        """The state file, parsed (it must parse: a torn write would fail here)."""
        path = self.state_dir / "state.json"
        if not path.exists():
            return {"steps": {}}
        return json.loads(path.read_text(encoding="utf-8"))

    def recorded(self) -> List[str]:
        return sorted(self.state()["steps"])

    def partials(self) -> List[Path]:
        return sorted(self.download_dir.glob("*.incomplete")) if self.download_dir.is_dir() else []

    def partial_bytes(self) -> int:
        """Bytes of the big file that its partial download records as written (what a re-run keeps)."""
        for meta in sorted(self.download_dir.glob("*.json")) if self.download_dir.is_dir() else []:
            try:
                doc = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if doc.get("name") == BIG:
                return sum(doc.get("written", {}).values())
        return 0

    def big_is_right(self) -> bool:
        path = self.model_dir / BIG
        return path.is_file() and sha256_of(path) == sha256_of(self.upstream / BIG)

    def logs(self) -> str:
        folder = self.state_dir / "logs"
        return "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(folder.glob("*.log"))) \
            if folder.is_dir() else ""


# -- hub requests ----------------------------------------------------------------------------


def body_gets(hub: Any, name: str = BIG) -> List[Optional[str]]:
    """The Range header of every GET of ``name``'s body, in order (None: the whole file)."""
    return [r.range for r in hub.file_requests("GET") if r.path.endswith("/" + name)]


def range_start(value: Optional[str]) -> int:
    if not value:
        return 0
    return int(value.split("=", 1)[1].split("-", 1)[0])


def api_gets(hub: Any, suffix: str = "/revision/main") -> int:
    return sum(1 for r in hub.requests if r.method == "GET" and r.path.startswith("/api/models/")
               and r.path.endswith(suffix))


# -- leftovers -------------------------------------------------------------------------------


def leftovers(root: Path) -> List[str]:
    """Temporary files under ``root``: partial downloads, atomic-write temps, clone temps."""
    bad = []
    for path in root.rglob("*"):
        name = path.name
        if name.endswith(".incomplete") or name.endswith(".tmp") or ".tmp-" in name or name.startswith(".tmp"):
            bad.append(str(path.relative_to(root)))
    return sorted(bad)


def unexpected_files(root: Path, expected: Sequence[str]) -> List[str]:
    """Files under ``root`` that are not in ``expected`` (relative paths, folders end in /)."""
    out = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if any(rel == e or (e.endswith("/") and rel.startswith(e)) for e in expected):
            continue
        out.append(rel)
    return sorted(out)


# -- the CLI as a subprocess -------------------------------------------------------------------


def cli_env(hf_home: Path, *, path_prefix: Optional[Path] = None, **extra: str) -> Dict[str, str]:
    """os.environ without the developer's LLAMA_BOOTSTRAP_/HF_/CONDA_/PYTHON* settings, this checkout
    on PYTHONPATH, a private HF_HOME, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env.update({
        "PYTHONPATH": str(REPO_ROOT), "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1", "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    })
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class Result(NamedTuple):
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def doc(self) -> Dict[str, Any]:
        """The --json document on stdout."""
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def steps(self) -> Dict[str, str]:
        return {s["step"]: s["status"] for s in self.doc.get("steps", [])}


def bootstrap_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "bootstrap", *args]


class Running:
    """A CLI subprocess in its own process group; stdout/stderr go to files (no pipe can fill up)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], out_dir: Path, cwd: Optional[Path] = None,
                 umask: Optional[int] = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.monotonic_ns()}"
        self.out_path, self.err_path = out_dir / f"{stamp}.out", out_dir / f"{stamp}.err"
        self.started = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            old = os.umask(umask) if umask is not None else None  # inherited by the child
            try:
                self.proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=dict(env),  # noqa: S603
                                             cwd=str(cwd) if cwd else None, start_new_session=os.name == "posix")
            finally:
                if old is not None:
                    os.umask(old)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the subprocess's process group (like a terminal's Ctrl-C / a killed job)."""
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float = 90) -> Result:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"{' '.join(self.proc.args)} did not finish within {timeout}s (a hang); "
                        f"stderr:\n{self.err_path.read_text(errors='replace')[-3000:]}")
        return Result(code, self.out_path.read_text(encoding="utf-8", errors="replace"),
                      self.err_path.read_text(encoding="utf-8", errors="replace"), time.monotonic() - self.started)

    def kill_quietly(self) -> None:
        if self.alive():
            try:
                self.signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


class Cli:
    """Runs ``python -m bootstrap`` subprocesses for one test; kills any still running at teardown."""

    def __init__(self, env: Dict[str, str], out_dir: Path) -> None:
        self.env, self.out_dir = env, out_dir
        self.running: List[Running] = []

    def start(self, *args: str, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None,
              umask: Optional[int] = None) -> Running:
        proc = Running(bootstrap_argv(*args), dict(env or self.env), self.out_dir, cwd=cwd, umask=umask)
        self.running.append(proc)
        return proc

    def __call__(self, *args: str, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None,
                 timeout: float = 90, umask: Optional[int] = None) -> Result:
        return self.start(*args, env=env, cwd=cwd, umask=umask).finish(timeout)

    def cleanup(self) -> None:
        for proc in self.running:
            proc.kill_quietly()


@pytest.fixture
def cli(tmp_path: Path, isolated_hf_env: Path) -> Iterator[Cli]:
    """``cli("pull", "--manifest", m, "--json")`` -> Result; ``cli.start(...)`` -> Running."""
    runner = Cli(cli_env(isolated_hf_env), tmp_path / "cli-output")
    yield runner
    runner.cleanup()


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = 60, proc: Optional[Running] = None,
             interval: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy; fail if ``proc`` exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and not proc.alive():
            result = proc.finish()
            pytest.fail(f"the process ended (exit {result.code}) before {what}; stderr:\n{result.stderr[-3000:]}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


# -- fixtures: a served model and a project ------------------------------------------------------


@pytest.fixture
def served(local_hub: Any, tmp_path: Path) -> Path:
    """A 25 MiB ``model.safetensors`` + config files, served by LocalHub as the demo repo."""
    folder = make_model_folder(tmp_path / "upstream-model")
    local_hub.add_repo(DEMO_REPO_ID, folder)
    return folder


@pytest.fixture
def project(local_hub: Any, served: Path, source_repo: Any, tmp_path: Path) -> Project:
    """A manifest pointing at LocalHub and the local git source; no disk margin."""
    manifest = write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                              requirements__disk_margin_gb=0)
    return Project(manifest, served)


# -- PATH wrappers that make a step slow ----------------------------------------------------------

_GIT_WRAPPER = '''#!{python}
# TEST WRAPPER, NOT GIT. Written by tests/reliability/conftest.py and put first on PATH so that
# `git clone` stays running: it runs the real git ({real}), then writes {marker} and sleeps
# {seconds}s before exiting with git's status. Every other git command execs the real git at once.
import os, subprocess, sys, time
args = sys.argv[1:]
if "clone" not in args:
    os.execv({real!r}, [{real!r}] + args)
code = subprocess.call([{real!r}] + args)
with open({marker!r}, "w") as fh:
    fh.write(str(os.getpid()))
time.sleep({seconds})
sys.exit(code)
'''

_SMI_WRAPPER = '''#!{python}
# TEST WRAPPER, NOT nvidia-smi. Written by tests/reliability/conftest.py and put first on PATH so that
# `check` stays running: it writes {marker} and hangs like a wedged driver.
import time
with open({marker!r}, "w") as fh:
    fh.write("started")
time.sleep(60)
raise SystemExit(9)
'''


@dataclass
class Wrappers:
    git_folder: Path  # put first on PATH: `git clone` keeps running after cloning
    smi_folder: Path  # put first on PATH: `nvidia-smi` hangs
    git_marker: Path  # exists once the wrapped `git clone` has cloned and is sleeping
    smi_marker: Path  # exists once `check` is waiting on nvidia-smi


@pytest.fixture
def wrappers(tmp_path: Path) -> Wrappers:
    if os.name != "posix":
        pytest.skip("the PATH wrappers are POSIX scripts")
    real_git = shutil.which("git")
    if real_git is None:
        pytest.skip("git is not installed")
    root = tmp_path / "test-wrappers"
    w = Wrappers(root / "slow-git", root / "hanging-nvidia-smi", tmp_path / "slow-git-is-sleeping",
                 tmp_path / "hanging-nvidia-smi-started")
    for folder, name, template, marker in ((w.git_folder, "git", _GIT_WRAPPER, w.git_marker),
                                           (w.smi_folder, "nvidia-smi", _SMI_WRAPPER, w.smi_marker)):
        folder.mkdir(parents=True)
        path = folder / name
        path.write_text(template.format(python=sys.executable, real=real_git, marker=str(marker), seconds=60),
                        encoding="utf-8")
        path.chmod(0o755)
    return w


# -- a small real disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """``small_disk("2m")`` mounts a tmpfs of that size and returns its folder; unmounted at teardown."""
    mounted: List[Path] = []

    def mount(size: str) -> Path:
        if not sys.platform.startswith("linux"):
            pytest.skip("a tmpfs small disk needs Linux")
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (run the suite as root, e.g. in the CI container)")
        if shutil.which("mount") is None or shutil.which("umount") is None:
            pytest.skip("mount/umount are not installed")
        where = tmp_path / f"small-disk-{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill_disk(folder: Path) -> Path:
    """Write a file in ``folder`` until the filesystem is full (ENOSPC); return it."""
    filler = folder / "filler-from-another-program.bin"
    block = b"\0" * (64 * 1024)
    fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                for size in (4096, 512, 1):  # the last pages
                    try:
                        while True:
                            os.write(fd, b"\0" * size)
                    except OSError:
                        pass
                return filler
    finally:
        os.close(fd)


# -- in-process helpers ---------------------------------------------------------------------------


class SleepRecorder:
    """A stand-in for a module's ``time``: ``sleep`` is recorded (and shortened to ``cap`` seconds)."""

    def __init__(self, cap: float = 0.0) -> None:
        self.cap = cap
        self.sleeps: List[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
