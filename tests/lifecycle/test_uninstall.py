"""`uninstall`: exactly what the receipt says was created, in a safe order, symlinks not followed; found
paths, kept groups and paths that changed shape survive; conda's shell block and nothing else; real files
in tmp_path, the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from bootstrap import errors, uninstall
from bootstrap.receipt import CREATED, FOUND, Entry, Receipt

from .conftest import REPO, tree

BLOCK = ("# >>> conda initialize >>>\n# !! Contents within this block are managed by 'conda init' !!\n"
         "__conda_setup=\"$('/opt/mf/bin/conda' 'shell.bash' 'hook' 2> /dev/null)\"\n"
         "eval \"$__conda_setup\"\nunset __conda_setup\n# <<< conda initialize <<<\n")


class Install:
    """A made-up install under tmp_path: folders and files with a receipt that says who made them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "proj" / ".llama-bootstrap"
        self.receipt = Receipt(self.state / "receipt.json")

    def make(self, rel: str, kind: str, status: str = CREATED, *, inside: Optional[List[str]] = None,
             file: bool = False, record: bool = True, **extra) -> Path:
        path = self.root / rel
        if file:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{rel}\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            for name in inside or []:
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                (path / name).write_bytes(os.urandom(3000))
        if record:
            self.receipt.add(str(path), kind, status, "installer", **extra)
        return path

    def save(self) -> None:
        self.receipt.save()


@pytest.fixture
def install(tmp_path: Path) -> Install:
    inst = Install(tmp_path)
    inst.make("proj/.llama-bootstrap", "state", inside=["state.json", "logs/run.log"])
    inst.make("home/miniforge3", "miniforge", inside=["conda-meta/history", "bin/conda"])
    inst.make("home/miniforge3/envs/myenv", "env", inside=["conda-meta/history", "bin/python"])
    inst.make("proj/models", "folder")
    inst.make("proj/models/Org/model", "weights", inside=["model.safetensors"])
    inst.make("proj/models/Org", "folder")
    inst.make("proj/Llama2-Chinese", "source-checkout", inside=[".git/HEAD", "README.md"])
    inst.make("home/.local/state/llama-bootstrap/logs/install-1.log", "log", file=True)
    inst.make("home/.local/state/llama-bootstrap/logs", "folder")
    inst.make("home/.local/state/llama-bootstrap", "folder")
    inst.make("home/.local", "folder", FOUND)  # was there before: never removed
    inst.make("home/existing-cache", "cache", FOUND, inside=["a"])
    inst.save()
    return inst


def test_the_plan_keeps_found_paths_and_orders_safely(install: Install) -> None:
    plan = uninstall.plan(install.receipt.path)
    order = [Path(i.entry.path).relative_to(install.root).as_posix() for i in plan.items]
    assert order == [
        "proj/models/Org/model", "proj/Llama2-Chinese",  # weights and the checkout first
        "home/miniforge3/envs/myenv",  # then the env, then Miniforge
        "home/miniforge3",
        "home/.local/state/llama-bootstrap/logs/install-1.log",
        "proj/.llama-bootstrap",  # the state folder holding the receipt, last of the trees
        "home/.local/state/llama-bootstrap/logs", "home/.local/state/llama-bootstrap", "proj/models/Org",
        "proj/models",  # empty folders last, deepest first
    ]
    kept = {Path(i.entry.path).name: i.reason for i in plan.kept}
    assert set(kept) == {".local", "existing-cache"} and all(r.startswith("found") for r in kept.values())
    assert plan.bytes >= 4 * 3000


def test_dry_run_changes_nothing_and_the_real_run_removes_exactly_what_was_created(install: Install) -> None:
    before = tree(install.root)
    result = uninstall.run(uninstall.plan(install.receipt.path), dry_run=True)
    assert tree(install.root) == before
    assert result.dry_run and len(result.removed) == 10 and not result.receipt_left
    logged: List[str] = []
    result = uninstall.run(uninstall.plan(install.receipt.path), log=logged.append)
    assert result.failed == [] and not result.receipt_left
    assert result.bytes_freed == sum(i.bytes for i in result.removed) > 0
    left = sorted(tree(install.root))
    assert left == ["home", "home/.local", "home/.local/state", "home/existing-cache", "home/existing-cache/a",
                    "proj"]
    assert any("removed the empty folder" in line for line in logged)


def test_keep_flags_keep_their_group_and_the_receipt_that_lists_them(install: Install) -> None:
    result = uninstall.run(uninstall.plan(install.receipt.path, keep_weights=True, keep_conda=True))
    assert (install.root / "proj/models/Org/model/model.safetensors").exists()
    assert (install.root / "home/miniforge3/bin/conda").exists()
    assert not (install.root / "home/miniforge3/envs/myenv").exists()  # the env is not conda's: it goes
    assert not (install.root / "proj/Llama2-Chinese").exists()
    reasons = {Path(i.entry.path).name: i.reason for i in result.kept}
    assert reasons["model"] == "--keep-weights" and reasons["miniforge3"] == "--keep-conda"
    assert "still lists 2 path(s)" in reasons[".llama-bootstrap"]
    assert result.receipt_left
    # a second uninstall without the flags finishes the job
    again = uninstall.run(uninstall.plan(install.receipt.path))
    assert not again.receipt_left and not (install.root / "proj").joinpath(".llama-bootstrap").exists()
    assert not (install.root / "proj/models").exists() and not (install.root / "home/miniforge3").exists()


def test_symlinks_are_removed_as_links_and_never_followed(tmp_path: Path) -> None:
    inst = Install(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not ours")
    inst.make("proj/.llama-bootstrap", "state")
    slot = inst.make("envs/myenv-0123456789ab", "env", inside=["conda-meta/history"])
    (tmp_path / "envs/myenv").symlink_to(slot)
    inst.receipt.add(str(tmp_path / "envs/myenv"), "env", CREATED, "installer")
    weights = inst.make("proj/models/Org/model", "weights", inside=["config.json"])
    (weights / "link-out").symlink_to(outside)  # inside a tree: the link goes, not its target
    (weights / "file-out").symlink_to(outside / "precious.txt")
    (tmp_path / "proj/demo").symlink_to(outside)  # a recorded path that is now a symlink: only the link
    inst.receipt.add(str(tmp_path / "proj/demo"), "demo", CREATED, "cli")
    inst.save()
    plan = uninstall.plan(inst.receipt.path)
    actions = {Path(i.entry.path).name: i.action for i in plan.items}
    assert actions["myenv"] == "unlink" and actions["demo"] == "unlink" and actions["model"] == "remove"
    uninstall.run(plan)
    assert (outside / "precious.txt").read_text() == "not ours"
    assert not os.path.lexists(tmp_path / "envs/myenv") and not slot.exists() and not weights.exists()
    assert not os.path.lexists(tmp_path / "proj/demo")


def test_paths_that_changed_shape_are_left_alone(tmp_path: Path) -> None:
    inst = Install(tmp_path)
    inst.make("proj/.llama-bootstrap", "state")
    inst.make("envs/myenv", "env", inside=["not-an-env.txt"])  # no conda-meta: someone else's folder now
    inst.make("proj/Llama2-Chinese", "source-checkout", file=True)  # a file where the checkout was
    inst.make("proj/models", "folder", inside=["users-own-model.bin"])  # a created folder the user filled
    inst.save()
    result = uninstall.run(uninstall.plan(inst.receipt.path))
    reasons = {Path(i.entry.path).name: i.reason for i in result.kept}
    assert "no conda-meta" in reasons["myenv"] and "no longer a folder" in reasons["Llama2-Chinese"]
    assert reasons["models"].startswith("not empty")
    assert (tmp_path / "envs/myenv/not-an-env.txt").exists() and (tmp_path / "proj/Llama2-Chinese").is_file()
    assert (tmp_path / "proj/models/users-own-model.bin").exists()
    assert result.receipt_left  # the receipt still lists what was left alone
    assert {Path(e.path).name for e in Receipt(inst.receipt.path).entries} == {
        ".llama-bootstrap", "myenv", "Llama2-Chinese", "models"}


@pytest.mark.parametrize("bad", ["/", "HOME", "relative/path", "/tmp/../etc", "/tmp/x/"])
def test_a_receipt_naming_a_root_home_or_odd_path_is_refused_whole(tmp_path: Path, bad: str) -> None:
    bad = str(Path.home()) if bad == "HOME" else bad
    receipt = Receipt(tmp_path / "receipt.json")
    receipt.add(str(tmp_path / "x"), "demo", CREATED, "cli")
    receipt.entries.append(Entry(bad, "demo", CREATED, "t", "cli"))
    receipt.save()
    (tmp_path / "x").mkdir()
    with pytest.raises(errors.ReceiptError, match="refusing|not a plain absolute path"):
        uninstall.plan(receipt.path)
    assert (tmp_path / "x").is_dir()


def test_bytes_freed_count_a_hard_linked_file_only_when_all_its_links_go(tmp_path: Path) -> None:
    inst = Install(tmp_path)
    inst.make("proj/.llama-bootstrap", "state")
    model = inst.make("proj/models/Org/model", "weights")
    big = os.urandom(1 << 20)
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb/shard.bin").write_bytes(big)
    os.link(tmp_path / "usb/shard.bin", model / "shard.bin")  # `dir=` sources hard-link when they can
    (model / "own.bin").write_bytes(big)
    inst.save()
    (item,) = [i for i in uninstall.plan(inst.receipt.path).items if i.entry.kind == "weights"]
    assert (1 << 20) <= item.bytes < 2 * (1 << 20)


def test_a_failed_removal_stays_in_the_receipt_and_a_second_run_finishes(install: Install, monkeypatch) -> None:
    real = uninstall._rmtree

    def failing(path: str) -> None:
        if path.endswith("Llama2-Chinese"):
            raise PermissionError(13, "Permission denied", path)
        real(path)

    monkeypatch.setattr(uninstall, "_rmtree", failing)
    result = uninstall.run(uninstall.plan(install.receipt.path))
    assert [i.entry.path for i in result.failed] == [str(install.root / "proj/Llama2-Chinese")]
    assert result.receipt_left and (install.state / "receipt.json").exists()
    assert not (install.root / "home/miniforge3").exists()  # the rest went
    left = [Path(e.path).name for e in Receipt(install.state / "receipt.json").entries if e.created]
    assert "Llama2-Chinese" in left and ".llama-bootstrap" in left and "miniforge3" not in left
    assert "could not be removed" in str(uninstall.incomplete(result))
    monkeypatch.setattr(uninstall, "_rmtree", real)
    again = uninstall.run(uninstall.plan(install.receipt.path))
    assert again.failed == [] and not (install.root / "proj/Llama2-Chinese").exists()
    assert not install.state.exists()


def test_what_holds_the_running_python_is_left_marked_for_install_ps1(install: Install) -> None:
    env = str(install.root / "home/miniforge3/envs/myenv")
    busy = lambda path: env.startswith(path)  # noqa: E731 - Windows: the env and the Miniforge around it
    result = uninstall.run(uninstall.plan(install.receipt.path, busy=busy))
    assert {Path(i.entry.path).name for i in result.kept if i.reason == uninstall.BUSY} == {"myenv", "miniforge3"}
    saved = Receipt(install.state / "receipt.json").entries
    marked = [Path(e.path).name for e in saved if e.extra.get(uninstall.LEFT_FOR_INSTALLER)]
    assert marked == ["myenv", "miniforge3"]  # in removal order, as install.ps1 walks them
    assert Path(env, "bin/python").exists() and install.state.exists()


# -- conda's shell start-up block ---------------------------------------------------------------------


def _edit_entry(path: Path, before: Optional[bytes]) -> Entry:
    extra: Dict[str, object] = {"file_existed": before is not None}
    if before is not None:
        extra["sha256_before"] = hashlib.sha256(before).hexdigest()
    return Entry(str(path), "shell-startup-edit", CREATED, "t", "installer", extra)


@pytest.mark.parametrize("original", [b"export A=1\n", b"export A=1\n\n", b"# no newline at the end", b"x\r\ny\r\n"])
def test_taking_out_condas_block_restores_the_file_byte_for_byte(tmp_path: Path, original: bytes) -> None:
    rc = tmp_path / ".bashrc"
    rc.write_bytes(original + b"\n" + BLOCK.encode())  # what `conda init` does: "\n" + block + "\n" appended
    rc.chmod(0o640)
    uninstall.undo_conda_block(_edit_entry(rc, original))
    assert rc.read_bytes() == original and oct(rc.stat().st_mode & 0o777) == "0o640"


def test_lines_the_user_added_later_stay(tmp_path: Path) -> None:
    rc = tmp_path / ".bashrc"
    original = b"export A=1\n"
    rc.write_bytes(original + b"\n" + BLOCK.encode() + b"alias ll='ls -l'\n")
    uninstall.undo_conda_block(_edit_entry(rc, original))
    assert rc.read_bytes() == b"export A=1\n\nalias ll='ls -l'\n"  # the block only; the blank line may be theirs


def test_a_file_the_edit_created_goes_and_a_missing_block_is_fine(tmp_path: Path) -> None:
    rc = tmp_path / ".bashrc"
    rc.write_bytes(b"\n" + BLOCK.encode())
    assert "the file it had created" in uninstall.undo_conda_block(_edit_entry(rc, None))
    assert not rc.exists()
    rc.write_bytes(b"export A=1\n")
    assert "not there any more" in uninstall.undo_conda_block(_edit_entry(rc, b"x"))
    assert rc.read_bytes() == b"export A=1\n"


def test_the_powershell_region_and_a_symlinked_start_up_file(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "profile.ps1"
    original = b"Set-Alias g git\r\n"
    block = (b"#region conda initialize\r\n# !! Contents within this block are managed by 'conda init' !!\r\n"
             b"(& 'C:\\mf\\Scripts\\conda.exe' 'shell.powershell' 'hook') | Out-String | Invoke-Expression\r\n"
             b"#endregion\r\n")
    real.write_bytes(original + b"\r\n" + block)
    link = tmp_path / "profile.ps1"
    link.symlink_to(real)
    uninstall.undo_conda_block(_edit_entry(link, original))
    assert link.is_symlink() and real.read_bytes() == original


# -- the command ------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_BOOTSTRAP_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "bootstrap", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, input=stdin, timeout=120, check=False)


def test_without_a_receipt_it_refuses_and_says_what_it_needs(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text((REPO / "manifest.yaml").read_text())
    proc = _cli("uninstall", "--yes", "--json", cwd=tmp_path)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["error"]["kind"] == "NoReceipt" and str(tmp_path / ".llama-bootstrap" / "receipt.json") in \
        doc["error"]["message"]
    assert "--manifest" in doc["error"]["remedy"] and "LLAMA_BOOTSTRAP_STATE_DIR" in doc["error"]["remedy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.yaml"]


def test_without_yes_and_without_a_terminal_it_refuses_with_exit_2(install: Install) -> None:
    (install.root / "proj/manifest.yaml").write_text("not even read\n")
    before = tree(install.root)
    proc = _cli("uninstall", cwd=install.root / "proj", stdin="y\n")
    assert proc.returncode == 2, proc.stderr
    assert "--yes" in proc.stderr and "--dry-run" in proc.stderr
    assert tree(install.root) == before


def test_the_command_reports_what_it_removed_as_json(install: Install) -> None:
    (install.root / "proj/manifest.yaml").write_text("uninstall does not read the manifest\n")
    dry = _cli("uninstall", "--dry-run", "--json", cwd=install.root / "proj")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["status"] == "dry-run" and (install.state / "receipt.json").exists()
    done = _cli("uninstall", "--yes", "--json", "--keep-weights", cwd=install.root / "proj")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "ok" and doc["bytes_freed"] > 0 and doc["receipt_left"] is True
    assert {Path(k["path"]).name for k in doc["kept"]} >= {"model", ".local", ".llama-bootstrap"}
    assert not (install.root / "home/miniforge3").exists() and (install.root / "proj/models/Org/model").exists()


def test_in_a_state_folder_that_was_found_only_our_files_and_the_receipt_go(tmp_path: Path) -> None:
    inst = Install(tmp_path)
    inst.make("proj/.llama-bootstrap", "state", FOUND, inside=["users-notes.txt"])
    inst.make("proj/.llama-bootstrap/state.json", "state-file", file=True)
    inst.make("proj/.llama-bootstrap/logs", "logs", inside=["run-1.log"])
    inst.make("proj/Llama2-Chinese", "source-checkout", inside=[".git/HEAD"])
    inst.save()
    result = uninstall.run(uninstall.plan(inst.receipt.path))
    assert not result.receipt_left and result.failed == []
    assert sorted(tree(tmp_path / "proj")) == [".llama-bootstrap", ".llama-bootstrap/users-notes.txt"]
