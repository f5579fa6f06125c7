"""The playbook and the role's helpers, without provisioning anything (fast).

``ansible-playbook --syntax-check`` is real ansible-core; the Windows task files are syntax-checked
when the ansible.windows collection is installed (the full ``ansible`` package has it), and checked for
structure always: Windows itself cannot run here, so that is all that is tested of it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from tests.fleet.conftest import PLAYBOOK_DIR, REPO_ROOT, ansible_playbook

ROLE = PLAYBOOK_DIR / "roles" / "llama_bootstrap"
FILES = ROLE / "files"
PHASES = ("install", "share", "provision")


def _env(tmp_path: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_CONFIG": str(PLAYBOOK_DIR / "ansible.cfg"), "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
                "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"})
    return env


def _tasks(path: Path) -> List[Dict[str, Any]]:
    """Every task of a task file, blocks flattened."""
    out: List[Dict[str, Any]] = []

    def walk(items: Any) -> None:
        for task in items or []:
            out.append(task)
            for key in ("block", "rescue", "always"):
                walk(task.get(key))

    walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return out


def _module(task: Dict[str, Any]) -> str:
    keywords = {"name", "when", "register", "vars", "loop", "loop_control", "changed_when", "failed_when",
                "environment", "block", "rescue", "always", "become", "tags", "no_log", "delegate_to", "run_once"}
    modules = [k for k in task if k not in keywords]
    assert len(modules) <= 1, task
    return modules[0] if modules else ""


def test_site_syntax_check(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "llama_share": {"hosts": {"gpu-01": {"ansible_host": "192.0.2.1"}}},
        "gpus": {"hosts": {"gpu-02": {}, "gpu-03": {}}},
    }}}))
    out = subprocess.run([str(ansible_playbook()), "-i", str(inventory), "--syntax-check", "site.yml"],  # noqa: S603
                         cwd=str(PLAYBOOK_DIR), env=_env(tmp_path), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    listed = subprocess.run([str(ansible_playbook()), "-i", str(inventory), "--list-hosts", "site.yml"],  # noqa: S603
                            cwd=str(PLAYBOOK_DIR), env=_env(tmp_path), capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    plays = [set(p.split("hosts (", 1)[1].split()[1:]) for p in listed.stdout.split("play #")[1:]]
    assert plays == [{"localhost"}, {"gpu-01", "gpu-02", "gpu-03"}, {"gpu-01"}, {"gpu-01", "gpu-02", "gpu-03"},
                     {"localhost"}]  # pack, install everywhere, share from the first llama_share host, pull, report


def _has_windows_collection() -> bool:
    try:
        return importlib.util.find_spec("ansible_collections.ansible.windows") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _has_windows_collection(),
                    reason="the ansible.windows collection is not installed (deploy/ansible/requirements.yml)")
def test_windows_task_files_syntax_check(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"win-01": {
        "ansible_connection": "winrm", "ansible_host": "192.0.2.21", "ansible_port": 5986}}}}))
    playbook = tmp_path / "windows.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Windows phases, imported statically so every task is parsed", "hosts": "all",
        "gather_facts": False,
        "tasks": [{"name": f"{phase} on Windows", "ansible.builtin.import_role": {
            "name": "llama_bootstrap", "tasks_from": f"{phase}_windows"}} for phase in PHASES],
    }], sort_keys=False))
    env = _env(tmp_path)
    env["ANSIBLE_ROLES_PATH"] = str(PLAYBOOK_DIR / "roles")
    for flag in ("--syntax-check", "--list-tasks"):
        out = subprocess.run([str(ansible_playbook()), "-i", str(inventory), flag, str(playbook)],  # noqa: S603
                             env=env, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
    assert "Windows installer | run install.ps1 unattended" in out.stdout


def test_every_phase_has_a_linux_and_a_windows_side_and_only_fqcn_modules() -> None:
    for phase in PHASES:
        posix, windows = _tasks(ROLE / "tasks" / f"{phase}_posix.yml"), _tasks(ROLE / "tasks" / f"{phase}_windows.yml")
        for task in posix + windows:
            assert task.get("name"), task
            module = _module(task)
            assert module == "" or module.startswith(("ansible.builtin.", "ansible.windows.")), module
            assert module not in ("ansible.builtin.shell", "ansible.builtin.raw"), task["name"]
        assert not [t["name"] for t in posix if _module(t).startswith("ansible.windows.")]
        assert [t for t in windows if _module(t).startswith("ansible.windows.")] or phase == "share"
    uses = (ROLE / "tasks" / "install_windows.yml").read_text()
    assert "install.ps1" in uses and "-Yes" in uses and "-Demo" in uses


def test_argument_specs_cover_every_default() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs)
    for name in ("llama_bootstrap_src", "llama_bootstrap_dir", "llama_bootstrap_demo", "llama_bootstrap_report_dir",
                 "llama_bootstrap_endpoint"):
        assert name in defaults


# -- the role's helpers -------------------------------------------------------------------------------------


def _run(script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FILES / script), *args], input=stdin,  # noqa: S603
                          capture_output=True, text=True, check=False)


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)  # noqa: S603, S607


def test_pack_is_reproducible_and_rewritten_only_on_change(tmp_path: Path) -> None:
    src = tmp_path / "project"
    (src / "bootstrap").mkdir(parents=True)
    (src / "install.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "install.sh", 0o755)
    (src / "pyproject.toml").write_text("[project]\n")
    (src / "bootstrap" / "cli.py").write_text("print()\n")
    (src / ".gitignore").write_text("ignored.txt\n/reports/\n")
    (src / "ignored.txt").write_text("no\n")
    (src / ".venv-test").mkdir()
    (src / ".venv-test" / "python").write_text("no\n")
    _git(src, "init", "-q")
    _git(src, "add", "install.sh", "pyproject.toml", ".gitignore")  # bootstrap/cli.py: untracked, not ignored
    dest = tmp_path / "pack" / "p.tar.gz"

    first = json.loads(_run("pack.py", str(src), str(dest)).stdout)
    assert first["changed"] is True
    data = dest.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {".gitignore", "bootstrap/cli.py", "install.sh", "pyproject.toml"}
    assert members["install.sh"].mode == 0o755 and members["pyproject.toml"].mode == 0o644
    assert {m.uid for m in members.values()} == {0}

    again = json.loads(_run("pack.py", str(src), str(dest)).stdout)
    assert again == {**first, "changed": False} and dest.read_bytes() == data
    (src / "bootstrap" / "cli.py").write_text("print('changed')\n")
    third = json.loads(_run("pack.py", str(src), str(dest)).stdout)
    assert third["changed"] is True and third["digest"] != first["digest"]

    dest.unlink()
    (src / "bootstrap" / "cli.py").write_text("print()\n")
    assert json.loads(_run("pack.py", str(src), str(dest)).stdout)["digest"] == first["digest"]
    assert dest.read_bytes() == data  # the same content packs to the same bytes


def test_pack_refuses_a_folder_that_is_not_the_project(tmp_path: Path) -> None:
    out = _run("pack.py", str(tmp_path), str(tmp_path / "p.tar.gz"))
    assert out.returncode == 1 and "not a llama-bootstrap project" in json.loads(out.stdout)["msg"]


def test_fleet_report_document_and_table(tmp_path: Path) -> None:
    check = {"schema": 1, "status": "ok", "checks": [{"name": "gpu", "status": "ok", "detail": "", "remedy": None,
             "data": {"gpus": [{"name": "NVIDIA GeForce RTX 3060", "memory_total_mib": 12288}]}}]}
    run = {"status": "ok", "steps": [{"step": "smoke", "status": "cached", "result": {"precision": "int8",
                                                                                    "tokens_per_s": 17.5}}]}
    hosts = {"gpu-01": {"status": "ok", "check": check, "run": run, "failed_task": ""},
             "gpu-02": {"status": "fail", "reason": "not enough disk", "check": None, "run": None}}
    out = _run("fleet_report.py", str(tmp_path), stdin=json.dumps({"hosts": hosts}))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    assert report == {"hosts": {"gpu-01": {"status": "ok", "check": check, "run": run},
                                "gpu-02": {"status": "fail", "check": None, "run": None,
                                           "reason": "not enough disk"}}}
    assert json.loads((tmp_path / "hosts" / "gpu-01" / "run.json").read_text()) == run
    assert not (tmp_path / "hosts" / "gpu-02").exists()
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["HOST", "GPU", "VRAM", "PRECISION", "TOK/S", "STATUS"]
    assert lines[1].split() == ["gpu-01", "NVIDIA", "GeForce", "RTX", "3060", "12.0", "GiB", "int8", "17.5", "ok"]
    assert lines[2].split()[:2] == ["gpu-02", "none"] and lines[2].endswith("fail: not enough disk")


def test_role_helpers_run_on_python_39_syntax() -> None:
    for script in ("pack.py", "share_service.py", "fleet_report.py"):
        compile((FILES / script).read_text(), script, "exec")
    assert REPO_ROOT.is_dir()


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    lint = Path(sys.executable).parent / "ansible-lint"
    if not lint.is_file():
        pytest.skip("ansible-lint is not installed in this environment")
    out = subprocess.run([str(lint), "--offline", "--nocolor", "--profile", "production", "site.yml",  # noqa: S603
                          "roles/llama_bootstrap"], cwd=str(PLAYBOOK_DIR), env=_env(tmp_path),
                         capture_output=True, text=True, check=False, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
