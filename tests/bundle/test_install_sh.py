"""`install.sh --from-bundle`, run for real by bash from a fresh HOME, on small bundles: every unsafe or
damaged bundle is refused before anything changes (HOME and TMPDIR compared before/after), the disk is
checked first (a real tmpfs), and the conda path with the installers' STAND-IN conda (no real conda here):
packages from the bundle, offline, then pip and the hand-off; a second run only hands off."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, NamedTuple

import pytest

from bootstrap import bundle

from .conftest import (
    FIXTURES,
    INSTALLER_FIXTURES,
    REPO,
    Run,
    entry,
    flip_byte,
    run_installer,
    small_bundle,
    tree,
    with_extra_members,
)

#: What install.sh runs before and while it verifies, and mount for the tmpfs test: a PATH of only these (no
#: conda, no python).
TOOLS = ("bash", "sh", "env", "uname", "mktemp", "date", "dirname", "basename", "tar", "grep", "sort", "uniq",
         "head", "tail", "cut", "sed", "awk", "wc", "tr", "df", "mkdir", "mv", "rm", "rmdir", "comm", "sha256sum",
         "ls", "tee", "cat", "cp", "chmod", "readlink", "touch", "gzip", "true", "false", "find", "mount")
STANDIN_INDEX = {"python": "3.9", "model": "m", "manifest": "manifest.yaml", "weights_lock": "weights.lock.yaml",
                 "pip_lock": "requirements/linux-64-cpu.txt", "wheels": "bundle/wheels", "conda": "included",
                 "conda_reason": "", "conda_lock": "conda-linux-64.lock", "conda_packages": "bundle/conda",
                 "miniforge": ""}


class Box(NamedTuple):
    root: Path
    home: Path
    tmp: Path
    bin: Path
    env: Dict[str, str]

    def run(self, *args: str, prefix: tuple = ()) -> Run:
        return run_installer(args, self.env, self.root, prefix=prefix, timeout=300)

    @property
    def state(self) -> Path:
        return self.home / ".local" / "state" / "llama-bootstrap"


@pytest.fixture
def box(tmp_path: Path) -> Box:
    """A fresh HOME and TMPDIR, and a PATH of symlinks to the tools install.sh needs (no conda, no python)."""
    home, tmp, bin_dir = tmp_path / "home", tmp_path / "tmp", tmp_path / "bin"
    for folder in (home, tmp, bin_dir):
        folder.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if k in ("LANG", "TERM")}
    env.update(HOME=str(home), TMPDIR=str(tmp), PATH=str(bin_dir), LC_ALL="C")
    return Box(tmp_path, home, tmp, bin_dir, env)


def _standin_bundle(path: Path, **index: object) -> Path:
    files = {
        "manifest.yaml": b"# stand-in manifest: the stand-in python never reads it\n",
        "conda-linux-64.lock": (INSTALLER_FIXTURES / "conda-linux-64.lock").read_bytes(),
        "requirements/linux-64-cpu.txt": b"# stand-in pip lock\n",
        "bundle/conda/linux-64/python-3.9.18-h0755675_1_cpython.conda": b"stand-in python package",
        "bundle/conda/noarch/pip-23.3.2-pyhd8ed1ab_0.conda": b"stand-in pip package",
        "bundle/wheels/x-1.0-py3-none-any.whl": b"stand-in wheel",
    }
    return small_bundle(path, files, **{**STANDIN_INDEX, **index})


# -- refused before anything changes --------------------------------------------------------------------------
def _damaged(kind: str, good: Path, out: Path) -> Path:
    if kind in ("symlink", "hardlink", "device", "folder", "absolute", "dotdot", "unlisted"):
        extra = {"symlink": entry("manifest.yaml.link", tarfile.SYMTYPE, linkname="/etc/passwd"),
                 "hardlink": entry("x", tarfile.LNKTYPE, linkname="manifest.yaml"),
                 "device": entry("x", tarfile.CHRTYPE), "folder": entry("x", tarfile.DIRTYPE),
                 "absolute": entry("/tmp/evil"), "dotdot": entry("../evil"), "unlisted": entry("zz.txt")}[kind]
        return with_extra_members(good, out, [extra])
    if kind == "flipped":
        shutil.copy2(good, out)
        flip_byte(out, "bundle/wheels/x-1.0-py3-none-any.whl")
        return out
    if kind == "not-a-tar":
        out.write_bytes(b"this is not a tar archive\n" * 100)
        return out
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, says", [
    ("symlink", "something other than a regular file"),
    ("hardlink", "something other than a regular file"),
    ("device", "something other than a regular file"),
    ("folder", "something other than a regular file"),
    ("absolute", "unsafe member name '/tmp/evil'"),
    ("dotdot", "unsafe member name '../evil'"),
    ("unlisted", "member 'zz.txt' is not both in the archive and in SHA256SUMS"),
    ("flipped", "bundle member bundle/wheels/x-1.0-py3-none-any.whl does not match its sha256"),
    ("not-a-tar", "not a readable tar archive"),
])
def test_a_bad_bundle_is_refused_and_nothing_changes(box: Box, kind: str, says: str) -> None:
    good = _standin_bundle(box.root / "good.tar")
    bad = _damaged(kind, good, box.root / f"{kind}.tar")
    before = tree(box.home, box.tmp)
    result = box.run("--from-bundle", str(bad))
    assert result.returncode == 1, result.stderr
    assert says in result.stderr
    assert "nothing was changed" in result.stderr
    assert tree(box.home, box.tmp) == before


def test_a_bundle_for_another_platform_is_refused(box: Box) -> None:
    path = _standin_bundle(box.root / "win.tar", platform="win-64")
    before = tree(box.home, box.tmp)
    result = box.run("--from-bundle", str(path))
    assert result.returncode == 1 and "the bundle is for win-64, this machine is linux-64" in result.stderr
    assert tree(box.home, box.tmp) == before


def test_the_disk_is_checked_before_anything_is_unpacked(box: Box) -> None:
    """HOME on a real 64 KiB tmpfs (in a private mount namespace), a bundle of ~400 KiB."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a small tmpfs needs root and unshare")
    files = {"bundle/weights/o/n/big.bin": os.urandom(400_000), **{"manifest.yaml": b"m\n"}}
    path = small_bundle(box.root / "big.tar", files, **STANDIN_INDEX)
    script = 'mount -t tmpfs -o size=64k tiny "$HOME" || exit 99; bash "$@"; rc=$?; ' \
             'echo "left in HOME: $(find "$HOME" -mindepth 1 | wc -l)"; exit $rc'
    unshare = shutil.which("unshare") or "unshare"
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [unshare, "--mount", "--propagation", "private", "--", "bash", "-c", script, "_", str(REPO / "install.sh"),
         "--from-bundle", str(path)], env=box.env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 1, proc.stderr
    assert "not enough disk" in proc.stderr and "nothing was changed" in proc.stderr
    assert "left in HOME: 0" in proc.stdout


def test_a_dry_run_verifies_everything_and_changes_nothing(box: Box) -> None:
    path = _standin_bundle(box.root / "b.tar")
    before = tree(box.home, box.tmp)
    result = box.run("--from-bundle", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "every member matches SHA256SUMS" in result.stderr and "dry run" in result.stderr
    assert tree(box.home, box.tmp) == before


# -- the conda path, with the stand-in conda ---------------------------------------------------------------
def test_conda_from_the_bundle_offline_then_pip_and_hand_off_and_a_second_run_only_hands_off(box: Box) -> None:
    shutil.copy2(FIXTURES / "conda", box.bin / "conda")
    (box.bin / "python3").symlink_to(sys.executable)  # for stand-ins written in Python
    log = box.root / "standin.log"
    box.env.update(STANDIN_LOG=str(log), STANDIN_CONDA_BASE=str(box.root / "conda-base"),
                   STANDIN_CONDA=str(INSTALLER_FIXTURES / "standin-conda"),
                   PIP_INDEX_URL="https://index.invalid/simple", PIP_FIND_LINKS="/somewhere/else")
    path = _standin_bundle(box.root / "b.tar")
    result = box.run("--from-bundle", str(path))
    assert result.returncode == 0, result.stderr
    with tarfile.open(path) as tar:
        sums = tar.extractfile(bundle.SUMS).read()  # type: ignore[union-attr]
    target = box.state / "bundles" / hashlib.sha256(sums).hexdigest()[:16]
    calls = log.read_text().splitlines()
    creates = [c for c in calls if c.startswith("conda create ")]
    assert len(creates) == 1 and re.match(r"conda create --yes (--name myenv|--prefix \S+) --file \S+$", creates[0])
    assert "CONDA_OFFLINE=true conda create" in (box.root / "standin.log.conda-env").read_text()
    packages = [line for line in Path(f"{log}.lock").read_text().splitlines() if "://" in line]
    assert packages and all(line.startswith(f"file://{target}/bundle/conda/") for line in packages)
    for line in packages:  # the rewritten URLs name files that are in the unpacked bundle
        assert Path(line[len("file://"):].split("#")[0]).is_file()
    python = [c for c in calls if c.startswith("python -m ")]
    pip, bootstrapper, hand_off = python
    assert pip.startswith("python -m pip install") and "--require-hashes" in pip
    assert pip.endswith(f"-r {target}/requirements/linux-64-cpu.txt")
    assert bootstrapper.endswith(f"--no-index {target}")
    assert hand_off == f"python -m bootstrap run --manifest {target}/manifest.yaml --profile bundle --model m"
    assert (target / ".llama-bootstrap-installed").is_file()

    again = box.run("--from-bundle", str(path))
    assert again.returncode == 0, again.stderr
    assert "nothing to install" in again.stderr
    assert log.read_text().splitlines()[len(calls):] == [hand_off]


def test_the_bundles_miniforge_installer_is_checked_against_the_pin_before_it_runs(box: Box) -> None:
    name = "Miniforge3-25.3.1-0-Linux-x86_64.sh"
    files = {"manifest.yaml": b"m\n", "conda-linux-64.lock": (INSTALLER_FIXTURES / "conda-linux-64.lock").read_bytes(),
             "requirements/linux-64-cpu.txt": b"#\n",
             f"bundle/conda/{name}": b"#!/bin/sh\ntouch \"$HOME/ran\"\n"}
    path = small_bundle(box.root / "b.tar", files, **{**STANDIN_INDEX, "miniforge": f"bundle/conda/{name}"})
    result = box.run("--from-bundle", str(path))
    assert result.returncode == 1
    assert f"checksum mismatch for the bundle's {name}" in result.stderr and "want: 376b160e" in result.stderr
    assert not (box.home / "ran").exists() and not (box.home / "miniforge3").exists()
