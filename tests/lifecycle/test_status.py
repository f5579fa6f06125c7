"""`status`: what is installed where, versions from package metadata (nothing heavy imported), the lock
match from the installers' stamps, weights and smoke from the state file; and the real CLI recording what a
run creates, which `uninstall` then removes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

from bootstrap.demo.scenario import DEMO_REPO_ID
from bootstrap.receipt import CREATED, Receipt
from bootstrap.status import env_id, env_infos, package_versions, python_version
from tests.pipeline.helpers import write_manifest
from tests.reliability.conftest import cli_env, make_model_folder

from .conftest import tree

HEAVY = ("torch", "transformers", "huggingface_hub", "requests", "fastapi")


def fake_env(prefix: Path, versions: Dict[str, str], *, venv: bool = True, pip_lock: Path) -> Path:
    """An env as the installers leave it: package metadata, the Python's marker, and the lock stamps."""
    site = prefix / "lib" / "python3.11" / "site-packages"
    for name, version in versions.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    meta = prefix if venv else prefix / "conda-meta"
    meta.mkdir(parents=True, exist_ok=True)
    if venv:
        (prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    else:
        (meta / "python-3.9.18-h0755675_0_cpython.json").write_text("{}")
        (meta / "llama-bootstrap-lock.sha256").write_text("0" * 64 + "  conda-linux-64.lock\n")
    (meta / "llama-bootstrap-pip-lock.sha256").write_text(
        hashlib.sha256(pip_lock.read_bytes()).hexdigest() + f"  {pip_lock.name}\n")
    return prefix


def test_versions_come_from_metadata_and_the_lock_match_from_the_stamps(tmp_path: Path) -> None:
    lock = tmp_path / "demo-linux-64.txt"
    lock.write_text("torch==2.13.0+cpu\n")
    name = fake_env(tmp_path / "venvs" / "myenv-demo", {"torch": "2.13.0+cpu", "transformers": "4.57.6",
                                                        "llama-bootstrap": "0.1.0"}, pip_lock=lock)
    assert python_version(name) == "3.11.7"
    assert package_versions(name) == {"torch": "2.13.0+cpu", "transformers": "4.57.6", "llama-bootstrap": "0.1.0"}
    receipt = Receipt(tmp_path / "receipt.json")
    receipt.add(str(name), "venv", CREATED, "installer", name=str(name), pip_lock=str(lock))
    (info,) = env_infos(receipt.entries)
    assert (info.role, info.python, info.matches_lock) == ("current", "3.11.7", True)
    assert info.id == env_id(name, "venv")
    lock.write_text("torch==2.14.0+cpu\n")  # a newer checkout
    (info,) = env_infos(receipt.entries)
    assert info.matches_lock is False and "demo-linux-64.txt changed since it was built" in info.lock_detail


def test_after_an_update_the_roles_follow_the_symlink_and_the_previous_pointer(tmp_path: Path) -> None:
    lock = tmp_path / "linux-64-cpu.txt"
    lock.write_text("a\n")
    envs = tmp_path / "envs"
    old = fake_env(envs / "myenv-000000000000", {"torch": "2.8.0"}, venv=False, pip_lock=lock)
    lock.write_text("b\n")
    new = fake_env(envs / "myenv-111111111111", {"torch": "2.9.0"}, venv=False, pip_lock=lock)
    other = fake_env(envs / "myenv-222222222222", {"torch": "2.7.0"}, venv=False, pip_lock=lock)
    (envs / "myenv").symlink_to(new)
    (new / "conda-meta" / "llama-bootstrap-previous").write_text(env_id(old, "env") + "\n")
    receipt = Receipt(tmp_path / "receipt.json")
    receipt.add(str(envs / "myenv"), "env", CREATED, "installer", name=str(envs / "myenv"), pip_lock=str(lock))
    for prefix in (new, old, other):
        receipt.add(str(prefix), "env", CREATED, "installer", name=str(envs / "myenv"), pip_lock=str(lock))
    roles = {Path(i.path).name: (i.role, i.versions["torch"], i.python) for i in env_infos(receipt.entries)}
    assert roles == {"myenv-111111111111": ("current", "2.9.0", "3.9.18"),
                     "myenv-000000000000": ("previous", "2.8.0", "3.9.18"),
                     "myenv-222222222222": ("kept", "2.7.0", "3.9.18")}


def _cli(env: Dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bootstrap", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def test_a_run_is_recorded_shown_by_status_and_undone_by_uninstall(local_hub, source_repo, tmp_path: Path,
                                                                    isolated_hf_env: Path) -> None:
    local_hub.add_repo(DEMO_REPO_ID, make_model_folder(tmp_path / "upstream-model", big_bytes=1 << 20))
    manifest = write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                              requirements__disk_margin_gb=0)
    before = tree(manifest.parent)
    env = cli_env(isolated_hf_env)
    run = _cli(env, "run", "--manifest", str(manifest), "--json", "--skip", "smoke", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = {Path(e.path).relative_to(manifest.parent).as_posix(): (e.kind, e.status, e.by)
           for e in Receipt(manifest.parent / ".llama-bootstrap" / "receipt.json").entries}
    assert got == {".llama-bootstrap": ("state", "created", "cli"),
                   "Llama2-Chinese": ("source-checkout", "created", "cli"),
                   "models": ("folder", "created", "cli"), "models/FlagAlpha": ("folder", "created", "cli"),
                   "models/FlagAlpha/Llama2-Chinese-tiny-demo": ("weights", "created", "cli")}

    probe = ("import json, sys\nfrom bootstrap.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             f"    code = e.code\nprint('@@' + json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n")
    status = subprocess.run([sys.executable, "-c", probe, "status", "--json", "--manifest", str(manifest)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    doc_text, marker = status.stdout.rsplit("@@", 1)
    assert json.loads(marker) == [0, []], status.stderr  # exit 0, and nothing heavy imported
    doc = json.loads(doc_text)
    (weights,) = doc["weights"]
    assert weights["pulled"] and weights["verified"] and weights["files_verified"] == 3
    assert weights["pinned_by_lock"] is False and weights["bytes"] >= 1 << 20
    assert doc["smoke"] is None and doc["receipt"]["exists"] and doc["envs"] == []
    assert doc["disk_bytes"] >= 1 << 20 and all(i["exists"] for i in doc["items"])
    text = _cli(env, "status", "--manifest", str(manifest), cwd=tmp_path)
    assert text.returncode == 0 and "files verified by hash" in text.stdout and "NOT pinned" in text.stdout

    os.utime(manifest.parent / "models/FlagAlpha/Llama2-Chinese-tiny-demo/config.json", ns=(1, 1))
    changed = json.loads(_cli(env, "status", "--json", "--manifest", str(manifest), cwd=tmp_path).stdout)
    assert changed["weights"][0]["verified"] is False  # changed since it was verified: said, not re-hashed

    gone = _cli(env, "uninstall", "--yes", "--manifest", str(manifest), cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert tree(manifest.parent) == before
    assert source_repo.path.is_dir()  # the clone's source: never recorded, never touched


def test_status_without_a_receipt_says_so(tmp_path: Path, isolated_hf_env: Path) -> None:
    manifest = write_manifest(tmp_path / "proj", "https://hub.test.invalid")
    proc = _cli(cli_env(isolated_hf_env), "status", "--json", "--manifest", str(manifest), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["receipt"] == {"path": str(manifest.parent / ".llama-bootstrap" / "receipt.json"), "exists": False}
    assert doc["items"] == [] and doc["weights"][0]["pulled"] is False
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["manifest.yaml"]  # status writes nothing
