"""The whole life of an install, for real, on this machine: `install.sh --demo` (no conda, Miniforge
unreachable: the venv fallback really builds a Python 3.11 venv from requirements/demo-linux-64.txt and runs
`llama-bootstrap demo`), then `status`, `--uninstall --dry-run`, an update from a checkout whose demo lock
changed (a second venv built next to the first, tested by the demo, switched in), `--rollback`, and
`--uninstall --yes`, after which HOME, the project folder and the release folder are as they were.
Slow: two real venvs (~4 min each here)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import clean_env, copy_release, installer_run, run, tree

STATE = Path(".local") / "state" / "llama-bootstrap"


def _python311() -> str | None:
    for name in ("python3.11", "python3"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 11))"],
                                   check=False).returncode == 0:
            return path
    return None


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _system_path(root: Path) -> str:
    """The system's commands without any conda (the venv fallback is what this test runs)."""
    folder = root / "sysbin"
    folder.mkdir()
    for system in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in sorted(os.listdir(system)) if os.path.isdir(system) else []:
            if tool not in ("conda", "mamba", "micromamba") and not (folder / tool).exists():
                (folder / tool).symlink_to(os.path.join(system, tool))
    return str(folder)


def _pip_stamp(venv: Path) -> str:
    return (venv / "llama-bootstrap-pip-lock.sha256").read_text().split()[0]


@pytest.mark.slow
@installer_run
@pytest.mark.skipif(_python311() is None, reason="the venv fallback needs Python 3.11 (requirements/demo-linux-64.txt)")
def test_install_status_update_rollback_uninstall_leaves_the_machine_as_it_was(tmp_path: Path) -> None:
    release = copy_release(tmp_path / "release")
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    (home / ".local").mkdir()
    (home / ".local" / "mine.txt").write_text("the user's own file: ~/.local was there, so it stays\n")
    before = {"home": tree(home), "project": tree(project), "release": tree(release)}
    env = clean_env(home, tmp_path, _system_path(tmp_path),
                    LLAMA_BOOTSTRAP_MINIFORGE_URL=f"http://127.0.0.1:{_closed_port()}")
    install = ["bash", str(release / "install.sh")]
    venv = home / STATE / "venvs" / "myenv-demo"
    receipt_file = release / ".llama-bootstrap" / "receipt.json"

    # 1. install
    first = run([*install, "--demo", "--yes"], env, project)
    assert first.returncode == 0, first.stderr[-6000:]
    assert "NO CONDA: --demo falls back to a plain Python venv" in first.stderr
    receipt = {e["path"]: e for e in json.loads(receipt_file.read_text())["entries"]}
    assert receipt[str(venv)]["kind"] == "venv" and receipt[str(venv)]["status"] == "created"
    assert receipt[str(project / "llama-bootstrap-demo")]["status"] == "created"
    assert str(home / ".local") not in receipt  # it was there: only what this install made is listed
    assert receipt[str(home / ".local" / "state")]["status"] == "created"
    assert receipt[str(release / ".llama-bootstrap")]["kind"] == "state"
    assert all(receipt[str(release / name)]["kind"] == "build" for name in ("build", "llama_bootstrap.egg-info"))
    old_id = hashlib.sha256(f"\n{_pip_stamp(venv)}\n".encode()).hexdigest()[:12]

    # 2. status: from the receipt and the env's metadata, nothing imported from it
    status = run([str(venv / "bin" / "llama-bootstrap"), "status", "--json", "--manifest",
                  str(release / "manifest.yaml")], env, project)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    (current,) = [e for e in report["envs"] if e["role"] == "current"]
    assert current["path"] == str(venv) and current["python"].startswith("3.11.")
    assert current["versions"]["torch"].startswith("2.13.0") and current["versions"]["llama-bootstrap"] == "0.1.0"
    assert current["versions"]["transformers"] and current["matches_lock"] is True
    demo = run([str(venv / "bin" / "llama-bootstrap"), "status", "--json", "--manifest",
                str(project / "llama-bootstrap-demo" / "manifest.yaml")], env, project)
    assert demo.returncode == 0, demo.stderr
    (weights,) = json.loads(demo.stdout)["weights"]
    assert weights["pinned_by_lock"] and weights["verified"] and weights["files_verified"] > 0
    assert json.loads(demo.stdout)["smoke"]["passed"] is True

    # 3. uninstall --dry-run: lists, changes nothing
    snapshot = {name: tree(folder) for name, folder in (("home", home), ("project", project), ("release", release))}
    dry = run([*install, "--uninstall", "--dry-run"], env, project)
    assert dry.returncode == 0, dry.stderr
    assert str(venv) in dry.stdout and "would free" in dry.stdout
    assert {name: tree(folder) for name, folder in (("home", home), ("project", project),
                                                    ("release", release))} == snapshot

    # 4. an update from a checkout whose demo lock changed: built next to it, tested by the demo, switched in
    lock = release / "requirements" / "demo-linux-64.txt"
    lock.write_text(lock.read_text() + "# a newer checkout: the demo lock changed\n")
    update = run([*install, "--demo", "--yes"], env, project)
    assert update.returncode == 0, update.stderr[-6000:]
    new_id = hashlib.sha256(f"\n{hashlib.sha256(lock.read_bytes()).hexdigest()}\n".encode()).hexdigest()[:12]
    slot, parked = venv.parent / f"myenv-demo-{new_id}", venv.parent / f"myenv-demo-{old_id}"
    assert venv.is_symlink() and Path(os.path.realpath(venv)) == slot
    assert parked.is_dir() and not parked.is_symlink()  # the old venv, moved aside, kept for --rollback
    assert _pip_stamp(slot) == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert "switched:" in update.stderr and "demo passed" in update.stdout  # the demo ran with the new venv
    roles = {e["path"]: e["role"] for e in json.loads(run([str(venv / "bin" / "llama-bootstrap"), "status", "--json",
                                                           "--manifest", str(release / "manifest.yaml")],
                                                          env, project).stdout)["envs"]}
    assert roles == {str(slot): "current", str(parked): "previous"}

    # 5. --rollback: the old venv is back at its own prefix; the new one is kept
    back = run([*install, "--demo", "--rollback"], env, project)
    assert back.returncode == 0, back.stderr
    assert venv.is_dir() and not venv.is_symlink() and not parked.exists() and slot.is_dir()
    assert _pip_stamp(venv) != _pip_stamp(slot)
    works = run([str(venv / "bin" / "llama-bootstrap"), "--version"], env, project)
    assert works.returncode == 0, works.stderr

    # 6. uninstall: everything recorded as created goes; found paths survive
    gone = run([*install, "--uninstall", "--yes"], env, project)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "freed" in gone.stdout
    assert tree(home) == before["home"]
    assert tree(project) == before["project"]
    after_release = tree(release)
    assert set(after_release) == set(before["release"])
    changed = {p for p in after_release if after_release[p] != before["release"][p]}
    assert changed == {"requirements/demo-linux-64.txt"}  # the "newer checkout" itself
