"""install.sh through the life of an install, run for real by bash with the STAND-IN conda (it places envs like
conda and records its calls; tests/installers/fixtures/standin-conda): what the receipt records, an update
built next to the env and switched in only after its test, --rollback, pruning, --init-shell, and
--uninstall, which hands off to the REAL CLI (the stand-in env python runs the real interpreter for it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, installer_run, tree

pytestmark = installer_run


def entries(sandbox) -> dict:
    doc = json.loads((sandbox.repo / ".llama-bootstrap" / "receipt.json").read_text())
    return {e["path"]: e for e in doc["entries"]}


def env_id(conda_lock: Path, pip_lock: Path) -> str:
    conda, pip = (hashlib.sha256(lock.read_bytes()).hexdigest() for lock in (conda_lock, pip_lock))
    return hashlib.sha256(f"{conda}\n{pip}\n".encode()).hexdigest()[:12]


def change(path: Path) -> None:
    path.write_text(path.read_text() + "# changed by a newer checkout\n")


@pytest.fixture
def installed(sandbox):
    sandbox.add_standin_conda()
    result = sandbox.run("--yes")
    assert result.returncode == 0, result.stderr
    sandbox.standin_log.unlink()
    return sandbox


def _locks(sandbox):
    return sandbox.repo / "conda-linux-64.lock", sandbox.repo / "requirements" / "linux-64-cpu.txt"


def test_a_fresh_install_records_what_it_created(installed) -> None:
    sb = installed
    env = sb.conda_base / "envs" / "myenv"
    got = entries(sb)
    conda_lock, pip_lock = _locks(sb)
    assert (got[str(env)]["kind"], got[str(env)]["status"], got[str(env)]["by"]) == ("env", "created", "installer")
    assert got[str(env)]["conda_lock"] == str(conda_lock) and got[str(env)]["pip_lock"] == str(pip_lock)
    assert got[str(sb.repo / ".llama-bootstrap")]["kind"] == "state"
    logs = [p for p, e in got.items() if e["kind"] == "log"]
    assert len(logs) == 1 and Path(logs[0]).parent == sb.home / ".local/state/llama-bootstrap/logs"
    assert {got[str(sb.home / p)]["kind"] for p in (".local", ".local/state", ".local/state/llama-bootstrap")} == \
        {"folder"}
    stamp = (env / "conda-meta" / "llama-bootstrap-pip-lock.sha256").read_text().split()[0]
    assert stamp == hashlib.sha256(pip_lock.read_bytes()).hexdigest()
    # a second run: the env is kept, the receipt still says created (the first record wins)
    again = sb.run()
    assert again.returncode == 0, again.stderr
    assert entries(sb)[str(env)]["status"] == "created"
    assert len([e for e in entries(sb).values() if e["kind"] == "log"]) == 2


def test_a_dry_run_and_a_found_env_are_never_recorded_as_created(sandbox) -> None:
    sandbox.add_standin_conda()
    env = sandbox.make_env(stamp_lock=sandbox.repo / "conda-linux-64.lock")  # there before: found
    dry = sandbox.run("--dry-run")
    assert dry.returncode == 0 and not (sandbox.repo / ".llama-bootstrap").exists()
    result = sandbox.run()
    assert result.returncode == 0, result.stderr
    assert entries(sandbox)[str(env)]["status"] == "found"


def test_an_update_is_built_next_to_the_env_and_switched_in_after_its_test(installed) -> None:
    sb = installed
    conda_lock, pip_lock = _locks(sb)
    name = sb.conda_base / "envs" / "myenv"
    old_id = env_id(conda_lock, pip_lock)
    change(conda_lock)
    new = name.parent / f"myenv-{env_id(conda_lock, pip_lock)}"
    plan = sb.run("--dry-run")
    assert f"built next to it as {new}" in plan.stdout

    failed = sb.run(STANDIN_HANDOFF_EXIT="1")  # the new env's test (the hand-off) fails: no switch
    assert failed.returncode == 1
    assert f"the new env {new} was NOT switched in: {name} still leads to {name}" in failed.stderr
    assert name.is_dir() and not name.is_symlink() and new.is_dir()
    calls = sb.standin_calls()
    assert f"conda create --yes --prefix {new} --file {conda_lock}" in calls
    assert "python -c import bootstrap.cli, torch, transformers" in calls
    assert not [c for c in calls if c.startswith("conda remove")]

    sb.standin_log.unlink()
    fixed = sb.run()  # the test passes now: the slot built before is used again, then switched in
    assert fixed.returncode == 0, fixed.stderr
    assert not [c for c in sb.standin_calls() if c.startswith("conda create")]
    parked = name.parent / f"myenv-{old_id}"
    assert name.is_symlink() and Path(os.path.realpath(name)) == new
    assert parked.is_dir() and (parked / "conda-meta" / "llama-bootstrap-home").read_text().strip() == str(name)
    assert (new / "conda-meta" / "llama-bootstrap-previous").read_text().strip() == old_id
    got = entries(sb)
    assert got[str(new)]["status"] == "created" and got[str(parked)]["status"] == "created"
    assert got[str(new)]["name"] == str(name)
    # kept: the next run changes nothing and uses the slot's own prefix (pip writes that into scripts)
    sb.standin_log.unlink()
    kept = sb.run("--install-only")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.splitlines()[-1] == str(new / "bin" / "python")
    assert not [c for c in sb.standin_calls() if c.startswith(("conda create", "conda remove"))]


def test_rollback_switches_back_and_forth_and_reverted_locks_reuse_the_old_env(installed) -> None:
    sb = installed
    conda_lock, pip_lock = _locks(sb)
    name = sb.conda_base / "envs" / "myenv"
    first = env_id(conda_lock, pip_lock)
    original = pip_lock.read_text()
    change(pip_lock)  # a changed pip lock is a changed lock too
    second = env_id(conda_lock, pip_lock)
    assert sb.run().returncode == 0
    assert os.path.realpath(name) == str(name.parent / f"myenv-{second}")

    dry = sb.run("--rollback", "--dry-run")
    assert dry.returncode == 0 and name.is_symlink()
    back = sb.run("--rollback")
    assert back.returncode == 0, back.stderr
    assert name.is_dir() and not name.is_symlink() and not (name.parent / f"myenv-{first}").exists()
    assert back.stdout.strip() == str(name / "bin" / "python")
    forth = sb.run("--rollback")
    assert forth.returncode == 0, forth.stderr
    assert os.path.realpath(name) == str(name.parent / f"myenv-{second}")

    pip_lock.write_text(original)  # the locks go back: the env made for them is switched back in, not rebuilt
    sb.standin_log.unlink()
    assert sb.run().returncode == 0
    assert name.is_dir() and not name.is_symlink()
    assert not [c for c in sb.standin_calls() if c.startswith("conda create")]


def test_an_older_env_is_removed_the_previous_one_kept(installed) -> None:
    sb = installed
    conda_lock, pip_lock = _locks(sb)
    name = sb.conda_base / "envs" / "myenv"
    ids = [env_id(conda_lock, pip_lock)]
    for _ in range(2):
        change(conda_lock)
        ids.append(env_id(conda_lock, pip_lock))
        result = sb.run()
        assert result.returncode == 0, result.stderr
    assert os.path.realpath(name) == str(name.parent / f"myenv-{ids[2]}")
    assert (name.parent / f"myenv-{ids[1]}").is_dir()  # the previous one, for --rollback
    assert not (name.parent / f"myenv-{ids[0]}").exists()  # two updates old: removed
    assert f"removing {name.parent / f'myenv-{ids[0]}'}" in result.stderr


def test_rollback_without_a_previous_env_says_so(installed) -> None:
    result = installed.run("--rollback")
    assert result.returncode == 1
    assert "no previous env is recorded" in result.stderr


def test_uninstall_removes_what_was_created_and_leaves_the_machine_as_it_was(sandbox) -> None:
    sandbox.add_standin_conda()
    (sandbox.home / ".bashrc").write_text("export MINE=1\n")  # found: survives untouched
    (sandbox.home / ".local").mkdir()
    before = {"home": tree(sandbox.home), "release": tree(sandbox.repo)}
    assert sandbox.run().returncode == 0
    conda_lock, _ = _locks(sandbox)
    change(conda_lock)
    assert sandbox.run().returncode == 0  # an update: two envs, a symlink, a parked env
    real = {"STANDIN_REAL_PYTHON": sys.executable, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    listing = tree(sandbox.root)
    dry = sandbox.run("--uninstall", "--dry-run", **real)
    assert dry.returncode == 0, dry.stderr
    assert tree(sandbox.root) == {**listing, **{k: v for k, v in tree(sandbox.root).items() if "standin-calls" in k}}
    refused = sandbox.run("--uninstall", **real)  # no --yes, no terminal
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = sandbox.run("--uninstall", "--yes", **real)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "freed" in done.stdout
    assert tree(sandbox.home) == before["home"]
    release = tree(sandbox.repo)
    assert set(release) == set(before["release"])
    assert not (sandbox.conda_base).exists()  # the stand-in's base folder was made by our env creation
    again = sandbox.run("--uninstall", "--yes", **real)
    assert again.returncode == 1 and "no install receipt at" in again.stderr


def test_init_shell_with_a_new_miniforge_is_undone_exactly(sandbox) -> None:
    """Miniforge's download and sha256 (pinned: no local file can match it) are replaced by an installer that
    lays out a prefix whose bin/conda is a stand-in that also does `init bash` like conda."""
    prefix = sandbox.prefix
    (sandbox.home / ".bashrc").write_text("export MINE=1\n")
    installer = (f'mkdir -p "${{@: -1}}/bin" "${{@: -1}}/conda-meta"; '
                 f'cp {FIXTURES / "standin-conda-init"} "${{@: -1}}/bin/conda"')
    script = f"""
        cd '{sandbox.repo}'  # the release folder: install.sh finds its files from there when sourced
        eval "orig_$(declare -f detect_platform)"
        detect_platform() {{ orig_detect_platform; MINIFORGE_SHA256=pinned; }}
        downloader() {{ printf '%s\\n' '{installer}' > "$2"; }}
        eval "orig_$(declare -f sha256_of)"
        sha256_of() {{ case "$1" in *.part) echo pinned ;; *) orig_sha256_of "$1" ;; esac; }}
        main --yes --init-shell
    """
    standins = Path(__file__).resolve().parents[1] / "installers" / "fixtures"
    env = {"STANDIN_CONDA": str(standins / "standin-conda"), "STANDIN_CONDA_BASE": str(prefix)}
    shutil.copy2(standins / "standin-python", sandbox.bin / "standin-python")
    before = tree(sandbox.home)
    proc = sandbox.call(script, **env)
    assert proc.returncode == 0, proc.stderr
    rc = (sandbox.home / ".bashrc").read_text()
    assert rc.startswith("export MINE=1\n\n# >>> conda initialize >>>") and rc.endswith("# <<< conda initialize <<<\n")
    got = entries(sandbox)
    assert got[str(prefix)]["kind"] == "miniforge" and got[str(prefix)]["status"] == "created"
    edit = got[str(sandbox.home / ".bashrc")]
    assert edit["kind"] == "shell-startup-edit" and edit["file_existed"] is True
    assert edit["sha256_before"] == hashlib.sha256(b"export MINE=1\n").hexdigest()
    real = {"STANDIN_REAL_PYTHON": sys.executable, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **env}
    keep = sandbox.run("--uninstall", "--yes", **real)
    assert keep.returncode == 0, keep.stdout + keep.stderr
    assert (sandbox.home / ".bashrc").read_text() == "export MINE=1\n"
    assert tree(sandbox.home) == before  # Miniforge, its env, the logs and the rc edit: all gone
