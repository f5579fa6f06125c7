"""No tracebacks for the world's ordinary file-system failures (issue 10, point 6).

Real conditions: a read-only bind mount (``mount --bind -o ro``, root only; skipped with the reason where
mounting is not permitted), ``chmod 0500`` (only when not root: root writes anyway), files, symlinks,
named pipes (``os.mkfifo``) and folders where the tool expects something else. Each case runs the CLI as a
subprocess and checks the exit code, that the message names the path and gives a remedy, that stderr has
no traceback, and that nothing half-done is left behind.

The state file's own damage (empty, not JSON, the wrong shape) is not an error: the state file is a cache
of verified work, so it is set aside with a warning and the steps are checked again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

from bootstrap.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

from .conftest import Result, fill_disk, leftovers, write_manifest

posix = pytest.mark.skipif(os.name != "posix", reason="symlinks, FIFOs and modes as on POSIX")
pytestmark = posix


@pytest.fixture
def read_only() -> Iterator:
    """``read_only(folder)`` bind-mounts ``folder`` onto itself read-only (EROFS); unmounted at teardown."""
    mounted: List[Path] = []

    def mount(folder: Path) -> Path:
        if not sys.platform.startswith("linux"):
            pytest.skip("a read-only bind mount needs Linux")
        if os.geteuid() != 0:
            pytest.skip("a read-only bind mount needs root (run the suite as root, e.g. in the CI container)")
        if shutil.which("mount") is None:
            pytest.skip("mount is not installed")
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"bind mounts are not permitted here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(folder)
        if not os.statvfs(folder).f_flag & os.ST_RDONLY:  # an older mount(8) ignores ro on --bind
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, check=False)
        assert os.statvfs(folder).f_flag & os.ST_RDONLY, "the bind mount is not read-only"
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.fixture
def kit(local_hub, source_repo, tmp_path) -> Path:
    """A project folder with a manifest (the local hub, the local git source); returns the manifest."""
    return write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                          requirements__disk_margin_gb=0)


def refused(result: Result, code: int, path: Path, *words: str) -> None:
    """The command failed the way a user can act on: code, the path, the words, a hint, no traceback."""
    err = result.stderr
    assert result.code == code, f"exit {result.code}:\n{err[-3000:]}"
    assert "Traceback" not in err, err
    assert "error: " in err and "hint: " in err, err
    assert str(path) in err, f"{path} not named in:\n{err}"
    for word in words:
        assert word in err, f"{word!r} not in:\n{err}"


def no_leftovers(root: Path) -> None:
    assert leftovers(root) == [], leftovers(root)


# -- the state folder, the state file, the run lock, the logs -----------------------------------------


def test_a_read_only_state_folder(cli, kit, read_only):
    state = read_only(kit.parent / ".llama-bootstrap")
    for extra in ((), ("--json",)):
        result = cli("clone", "--manifest", str(kit), *extra)
        refused(result, EXIT_FAILED, state, "the state folder", "read-only file system", "LLAMA_BOOTSTRAP_STATE_DIR")
        if extra:
            assert result.doc["error"]["kind"] == "PathError"
    assert not (kit.parent / "Llama2-Chinese").exists()  # nothing done before the state could be kept


def test_a_state_folder_to_be_made_on_a_read_only_disk(cli, kit, read_only, tmp_path):
    disk = read_only(tmp_path / "ro-disk")
    wanted = disk / "state"
    result = cli("clone", "--manifest", str(kit), env={**cli.env, "LLAMA_BOOTSTRAP_STATE_DIR": str(wanted)})
    refused(result, EXIT_FAILED, wanted, "read-only file system")
    assert not (kit.parent / "Llama2-Chinese").exists()


@pytest.mark.skipif(os.name == "posix" and os.geteuid() == 0, reason="root writes into a 0500 folder anyway")
def test_an_unwritable_state_folder(cli, kit):
    state = kit.parent / ".llama-bootstrap"
    state.mkdir()
    state.chmod(0o500)
    try:
        result = cli("clone", "--manifest", str(kit))
    finally:
        state.chmod(0o700)
    refused(result, EXIT_FAILED, state, "permission denied")


@pytest.mark.parametrize("how", ["file", "symlink-to-file", "file-above", "dangling-symlink"])
def test_something_else_where_the_state_folder_should_be(how, cli, kit, tmp_path):
    state = kit.parent / ".llama-bootstrap"
    other = tmp_path / "someone-elses-file"
    other.write_text("keep me\n", encoding="utf-8")
    blocker = state
    if how == "file":
        state.write_text("not a folder\n", encoding="utf-8")
    elif how == "symlink-to-file":
        state.symlink_to(other)
    elif how == "dangling-symlink":
        state.symlink_to(tmp_path / "nowhere")
    else:  # the state folder is set below a file
        blocker = other
        state = other / "state"
    result = cli("clone", "--manifest", str(kit), env={**cli.env, "LLAMA_BOOTSTRAP_STATE_DIR": str(state)})
    kind = {"file": "is a file", "symlink-to-file": "is a symlink to a file", "file-above": "is a file",
            "dangling-symlink": "is a dangling symlink"}[how]
    refused(result, EXIT_FAILED, blocker, "the state folder", kind, "move")
    assert other.read_text(encoding="utf-8") == "keep me\n"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("content", [b"", b"\n  \n", b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]",
                                     b'{"version": 1, "steps": []}', b'{"version": 99, "steps": {}}',
                                     b'{"version": 1, "steps": {"clone": 5, "pull": {"fingerprint": 1}}}',
                                     b"[" * 100_000 + b"]" * 100_000],
                         ids=["empty", "blank", "not-json", "binary", "a-list", "steps-a-list", "version-99",
                              "records-wrong-shape", "nested-100000-deep"])
def test_a_damaged_state_file_is_set_aside_and_the_run_goes_on(content, cli, kit):
    state_file = kit.parent / ".llama-bootstrap" / "state.json"
    state_file.parent.mkdir()
    state_file.write_bytes(content)
    result = cli("clone", "--manifest", str(kit))
    assert result.code == EXIT_OK, result.stderr
    assert "Traceback" not in result.stderr
    assert f"warning: the state file {state_file}" in result.stderr and "checked again" in result.stderr
    doc = json.loads(state_file.read_text(encoding="utf-8"))  # replaced by a good one
    assert doc["version"] == 1 and "clone" in doc["steps"]
    again = cli("clone", "--manifest", str(kit))  # and it counts from now on
    assert again.code == EXIT_OK and "warning" not in again.stderr, again.stderr
    no_leftovers(kit.parent)


@pytest.mark.parametrize("what", ["folder", "fifo"])
def test_a_state_file_that_is_not_a_file_is_never_replaced(what, cli, kit):
    state_file = kit.parent / ".llama-bootstrap" / "state.json"
    state_file.parent.mkdir()
    if what == "folder":
        state_file.mkdir()
        (state_file / "inside.txt").write_text("keep me\n", encoding="utf-8")
    else:
        os.mkfifo(state_file)
    result = cli("clone", "--manifest", str(kit), timeout=60)  # a FIFO must not be waited on
    refused(result, EXIT_FAILED, state_file, "the state file", "a folder" if what == "folder" else "named pipe",
            "move")
    if what == "folder":
        assert (state_file / "inside.txt").read_text(encoding="utf-8") == "keep me\n"
    assert not (kit.parent / "Llama2-Chinese").exists()


@pytest.mark.parametrize("what", ["folder", "symlink"])
def test_a_run_lock_that_is_not_a_file(what, cli, kit, tmp_path):
    lock = kit.parent / ".llama-bootstrap" / "run.lock"
    lock.parent.mkdir()
    victim = tmp_path / "victim.txt"  # the lock library would truncate whatever a symlink points to
    victim.write_text("keep me\n", encoding="utf-8")
    if what == "folder":
        lock.mkdir()
    else:
        lock.symlink_to(victim)
    result = cli("clone", "--manifest", str(kit))
    refused(result, EXIT_FAILED, lock, "the run lock", "a folder" if what == "folder" else "a symlink", "move")
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    assert lock.is_dir() if what == "folder" else lock.is_symlink()


def test_a_file_where_the_log_folder_should_be(cli, kit):
    logs = kit.parent / ".llama-bootstrap" / "logs"
    logs.parent.mkdir()
    logs.write_text("not a folder\n", encoding="utf-8")
    refused(cli("clone", "--manifest", str(kit)), EXIT_FAILED, logs, "the log folder", "is a file")


# -- source.dir ---------------------------------------------------------------------------------------


def test_source_dir_under_a_read_only_folder(cli, local_hub, source_repo, tmp_path, read_only):
    disk = read_only(tmp_path / "ro-disk")
    manifest = write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                              source__dir=str(disk / "src" / "Llama2-Chinese"))
    refused(cli("clone", "--manifest", str(manifest)), EXIT_FAILED, disk / "src", "source.dir",
            "read-only file system")
    no_leftovers(tmp_path / "proj")
    assert "clone" not in json.loads((tmp_path / "proj" / ".llama-bootstrap" / "state.json").read_text()
                                     if (tmp_path / "proj" / ".llama-bootstrap" / "state.json").exists()
                                     else '{"steps": {}}')["steps"]


def test_source_dir_that_is_an_empty_mount_point(cli, kit, read_only):
    target = read_only(kit.parent / "Llama2-Chinese")  # the clone cannot be moved onto a mount point
    refused(cli("clone", "--manifest", str(kit)), EXIT_FAILED, target, "source.dir", "mount point")
    no_leftovers(kit.parent)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("how", ["file", "symlink-to-file", "file-above"])
def test_something_else_where_source_dir_should_be(how, cli, local_hub, source_repo, tmp_path):
    other = tmp_path / "someone-elses-file"
    other.write_text("keep me\n", encoding="utf-8")
    target = tmp_path / "proj" / "Llama2-Chinese"
    named = target
    if how == "file-above":
        target, named = other / "Llama2-Chinese", other
    manifest = write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                              source__dir=str(target))
    if how == "file":
        target.write_text("not a folder\n", encoding="utf-8")
    elif how == "symlink-to-file":
        target.symlink_to(other)
    result = cli("clone", "--manifest", str(manifest))
    refused(result, EXIT_FAILED, named, "source.dir", "is a file" if how != "symlink-to-file" else "not a folder")
    assert other.read_text(encoding="utf-8") == "keep me\n"
    no_leftovers(tmp_path / "proj")


# -- the manifest -------------------------------------------------------------------------------------


def test_a_manifest_nested_a_thousand_levels_deep_in_block_style(cli, tmp_path):
    """Block-style nesting needs a line per level (flow style on one line is in tests/test_bad_input.py)."""
    lines = ["version: 1", "model: x", "source:"] + [" " * (i + 1) + "a:" for i in range(1200)] + [" " * 1202 + "b: 1"]
    manifest = tmp_path / "deep.yaml"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("models", "--manifest", str(manifest))
    refused(result, EXIT_USAGE, manifest, "nested more than 32 levels")
    assert re.search(r"deep\.yaml:\d+: ", result.stderr), result.stderr  # the line where it gets too deep


# -- weights.dir --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["read-only", "file", "file-above"])
def test_weights_dir_that_cannot_be_written(how, cli, kit, served, read_only):
    weights = kit.parent / "models"
    named = weights
    if how == "read-only":
        read_only(weights)
    elif how == "file":
        weights.write_text("not a folder\n", encoding="utf-8")
    else:
        weights.mkdir()
        named = weights / "FlagAlpha"  # the owner's folder of weights.dir/owner/name
        named.write_text("not a folder\n", encoding="utf-8")
    words = ("read-only file system",) if how == "read-only" else ("is a file, not a folder",)
    refused(cli("pull", "--manifest", str(kit), "--retries", "0"), EXIT_FAILED, named, "weights.dir", *words)
    checked = cli("check", "--manifest", str(kit), "--offline", "--json")
    assert checked.code == EXIT_FAILED, checked.stderr
    disk = next(c for c in checked.doc["checks"] if c["name"] == "disk")
    assert disk["status"] == "fail" and str(named) in disk["detail"] and words[0] in disk["detail"], disk
    ran = cli("run", "--manifest", str(kit), "--offline", "--skip", "smoke")  # check stops the run before work
    refused(ran, EXIT_FAILED, named, "disk")
    assert not (kit.parent / "Llama2-Chinese").exists()
    no_leftovers(kit.parent)


def test_a_state_folder_on_a_full_disk(cli, kit, small_disk):
    """The log cannot be written (the run goes on and says so) and the state file cannot (the step fails)."""
    disk = small_disk("1m")
    fill_disk(disk)
    state = disk / "state"
    result = cli("clone", "--manifest", str(kit), env={**cli.env, "LLAMA_BOOTSTRAP_STATE_DIR": str(state)})
    refused(result, EXIT_FAILED, state / "state.json", "the state file", "no space left")
    assert "Logging error" not in result.stderr  # logging's own traceback for a log it cannot write
    assert "warning: the log file" in result.stderr and "could not be written" in result.stderr
    assert not (state / "state.json").exists()
    no_leftovers(disk)  # no temp state file
    no_leftovers(kit.parent)  # the clone (on another disk) is whole: moved into place, or not there
