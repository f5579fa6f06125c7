"""Fixtures for the bundle tests: small bundles written by the real writer, a byte flipper, file-tree
snapshots, a fresh-HOME environment for the installer, the air gap (a network namespace with pip's
configuration and the local package folders hidden), and the demo bundle built once per session."""

from __future__ import annotations

import configparser
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import pytest

from bootstrap import bundle
from bootstrap.bundle_build import _write
from bootstrap.bundle_layers import Member
from tests.installers.conftest import file_server  # noqa: F401 - a fixture: a folder served on 127.0.0.1

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INSTALLER_FIXTURES = REPO / "tests" / "installers" / "fixtures"
#: The demo pip layer pins this local wheel (requirements/demo-linux-64.txt); the package index has no such file.
TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
#: Variables of the developer's shell that would change what the installer does.
LEAKY_PREFIXES = ("LLAMA_BOOTSTRAP_", "CONDA", "MAMBA_", "PIP_", "HF_", "XDG_", "PYTHON", "VIRTUAL_ENV")


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def small_bundle(path: Path, files: Mapping[str, bytes], **index: object) -> Path:
    """A valid bundle of ``files`` written by the real writer, with BUNDLE.json scalars ``index``."""
    doc: Dict[str, object] = {"format": bundle.FORMAT, "platform": "linux-64", "model": "m", "demo": False}
    doc.update(index)
    _write(path, [Member(name, data=data) for name, data in files.items()], doc, lambda _: None)
    return path


def with_extra_members(src: Path, dst: Path, extra: Sequence[Tuple[tarfile.TarInfo, Optional[bytes]]]) -> Path:
    """``src`` rewritten with ``extra`` members (links, devices, odd names, ...) in front of its own."""
    with tarfile.open(src) as old, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as new:
        for info, data in extra:
            new.addfile(info, io.BytesIO(data) if data is not None else None)
        for info in old.getmembers():
            new.addfile(info, old.extractfile(info))
    return dst


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: Optional[bytes] = b"x",
          linkname: str = "") -> Tuple[tarfile.TarInfo, Optional[bytes]]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"")
        return info, data
    return info, None


def flip_byte(path: Path, member: str, at: int = 0) -> None:
    """Flip one bit of one byte of ``member``'s data inside the tar at ``path`` (its header stays intact)."""
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
        offset = info.offset_data + min(at, info.size - 1)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


def tree(*roots: Path) -> List[Tuple[str, int, int]]:
    """Every path under the roots with size and mtime: a file or folder made, changed or removed shows up here.
    (The roots' own mtimes are left out: a temp folder made and removed inside one changes it.)"""
    out = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            st = path.lstat()
            out.append((str(path), st.st_size, st.st_mtime_ns))
    return out


def python311_dir() -> Optional[str]:
    """A folder holding a real python3.11 (the demo layer's Python) that works without this HOME."""
    for folder in ("/usr/local/bin", "/usr/bin"):
        if os.access(os.path.join(folder, "python3.11"), os.X_OK):
            return folder
    real = os.path.realpath(sys.executable)
    return os.path.dirname(real) if sys.version_info[:2] == (3, 11) else None


def clean_env(home: Path, tmp: Path, extra_path: Iterable[str] = ()) -> Dict[str, str]:
    """A fresh HOME, no pip/conda/HF/llama-bootstrap variables, a PATH of system folders only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    env.update(HOME=str(home), TMPDIR=str(tmp), LC_ALL="C.UTF-8",
               PATH=os.pathsep.join([*extra_path, "/usr/local/bin", "/usr/bin", "/bin"]))
    return env


def run_installer(args: Sequence[str], env: Mapping[str, str], cwd: Path, *, prefix: Sequence[str] = (),
                  timeout: float = 1800) -> Run:
    proc = subprocess.run(  # noqa: S603 - fixed argv: our own script
        [*prefix, "bash", str(REPO / "install.sh"), *args], env=dict(env), cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


# -- the air gap ------------------------------------------------------------------------------------------


def pip_config_paths() -> List[str]:
    """The pip configuration files of this machine and the local folders they name (find-links, file://
    indexes): what the air gap hides so that only the bundle can provide a package."""
    candidates = ["/etc/pip.conf", "/etc/xdg/pip", os.path.expanduser("~/.pip"), os.path.expanduser("~/.config/pip")]
    for folder in os.environ.get("XDG_CONFIG_DIRS", "").split(":"):
        if folder:
            candidates.append(os.path.join(folder, "pip"))
    out = [p for p in candidates if os.path.exists(p)]
    files = [p for p in out if os.path.isfile(p)] + \
        [str(f) for p in out if os.path.isdir(p) for f in Path(p).glob("*.conf")]
    for conf in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(conf)
        except configparser.Error:
            continue
        for section in parser.sections():
            for key in ("find-links", "index-url", "extra-index-url"):
                for value in parser.get(section, key, fallback="").split():
                    local = value[len("file://"):] if value.startswith("file://") else value
                    if local.startswith("/"):
                        top = "/".join(local.rstrip("/").split("/")[:3])  # /opt/pypi/simple -> /opt/pypi
                        if os.path.isdir(top) and top not in out:
                            out.append(top)
    for value in os.environ.get("PIP_FIND_LINKS", "").split():
        if value.startswith("/") and os.path.isdir(value) and value not in out:
            out.append(value)
    return out


def airgap_prefix() -> List[str]:
    hide: List[str] = []
    for path in pip_config_paths():
        hide += ["--hide", path]
    return ["unshare", "--net", "--mount", "--", str(FIXTURES / "airgap.sh"), *hide, "--"]


def airgap_problem() -> Optional[str]:
    """Why the air gap cannot be made here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if os.geteuid() != 0:
        return "unshare --net --mount needs root (CAP_SYS_ADMIN); run the tests as root"
    proc = subprocess.run([*airgap_prefix(), "true"], capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        return f"cannot create a network + mount namespace here: {proc.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def airgap() -> List[str]:
    """The command prefix that runs a command in the air gap; skips (with the reason) where it cannot."""
    why = airgap_problem()
    if why:
        pytest.skip(why)
    return airgap_prefix()


# -- the demo bundle --------------------------------------------------------------------------------------


class DemoBundle(NamedTuple):
    path: Path
    report: Dict[str, object]


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> DemoBundle:
    """`llama-bootstrap bundle --demo` run once per session (a CLI subprocess, real pip download); its work
    folder starts with the session's tiny model in cache/, as a reused `--workdir` would."""
    if not TORCH_WHEEL.exists():
        pytest.skip(f"the demo pip layer pins the local wheel {TORCH_WHEEL.name}, which is not on this machine")
    folder = tmp_path_factory.mktemp("demo-bundle")
    out, workdir = folder / "llama-demo.tar", folder / "demo-project"
    shutil.copytree(tiny_model_dir, workdir / "cache" / tiny_model_dir.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_BOOTSTRAP_", "HF_"))}
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "bootstrap", "bundle", "--demo", "--output", str(out), "--workdir", str(workdir),
         "--find-links", str(TORCH_WHEEL.parent), "--json"], env=env, cwd=folder, capture_output=True, text=True,
        timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return DemoBundle(out, json.loads(proc.stdout))
