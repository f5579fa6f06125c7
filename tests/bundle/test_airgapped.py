"""The whole path, for real: `llama-bootstrap bundle --demo` builds the demo bundle here (real pip download,
real git bundle, the tiny model pinned and pulled), then `install.sh --from-bundle` installs it from a fresh
HOME inside an air gap: a network namespace with no usable interface (loopback is down too) and a mount
namespace where pip's configuration files and the local package folders they name are hidden, with no PIP_*
variable in the environment. It ends with the demo's answer; a second install changes nothing; a flipped byte
is refused before anything changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, NamedTuple, Tuple

import pytest

from bootstrap import bundle, bundle_layers
from bootstrap.cli import run_cli

from .conftest import DemoBundle, Run, clean_env, flip_byte, python311_dir, tree

pytestmark = [pytest.mark.slow, pytest.mark.torch]
WEIGHTS_FILE = "bundle/weights/FlagAlpha/Llama2-Chinese-tiny-demo/model.safetensors"


def _env(root: Path) -> Dict[str, str]:
    folder = python311_dir()
    if folder is None:
        pytest.skip("the demo layer's venv needs a Python 3.11 that works without this HOME")
    home, tmp = root / "home", root / "tmp"
    home.mkdir()
    tmp.mkdir()
    return clean_env(home, tmp, [] if folder in ("/usr/local/bin", "/usr/bin") else [folder])


def _install_sh(bundle_path: Path, into: Path) -> Path:
    """What a user does on the target: take install.sh out of the bundle."""
    subprocess.run(["tar", "-xf", str(bundle_path), "-C", str(into), "install.sh"], check=True)  # noqa: S603,S607
    return into / "install.sh"


class Installed(NamedTuple):
    root: Path
    env: Dict[str, str]
    script: Path
    target: Path
    result: Run


@pytest.fixture(scope="module")
def installed(demo_bundle: DemoBundle, airgap: list, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("airgapped")
    env = _env(root)
    script = _install_sh(demo_bundle.path, root)
    result = _run(script, env, root, airgap, demo_bundle.path)
    target = Path(env["HOME"]) / ".local/state/llama-bootstrap/bundles" / str(demo_bundle.report["id"])[:16]
    return Installed(root, env, script, target, result)


def _run(script: Path, env: Dict[str, str], cwd: Path, airgap: list, bundle_path: Path) -> Run:
    proc = subprocess.run(  # noqa: S603 - fixed argv: our own script inside the air gap
        [*airgap, "bash", str(script), "--from-bundle", str(bundle_path)], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=1800, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_the_demo_bundle_carries_every_layer(demo_bundle: DemoBundle) -> None:
    info = bundle.verify(demo_bundle.path)
    report, index = demo_bundle.report, info.index
    assert report["id"] == info.id and report["bytes"] == demo_bundle.path.stat().st_size
    file_sha = hashlib.sha256(demo_bundle.path.read_bytes()).hexdigest()
    assert report["sha256"] == file_sha
    assert Path(f"{demo_bundle.path}.sha256").read_text() == f"{file_sha}  {demo_bundle.path.name}\n"
    assert (index["platform"], index["python"], index["demo"]) == ("linux-64", "3.11", True)
    with tarfile.open(demo_bundle.path) as tar:
        names = tar.getnames()
        lock = tar.extractfile(bundle.WEIGHTS_LOCK).read().decode()  # type: ignore[union-attr]
    wheels = [n for n in names if n.startswith(bundle.WHEELS + "/")]
    wanted = bundle_layers.hashed_requirements((Path(__file__).parents[2] / index["pip_lock"]).read_text())
    assert sorted(bundle_layers.normal_name(w.split("/")[-1].split("-")[0]) for w in wheels) == sorted(wanted)
    for repo in index["repos"]:
        pinned = [n for n in names if n.startswith(f"{bundle.WEIGHTS}/{repo['repo_id']}/")]
        assert len(pinned) == repo["files"] and repo["commit"] in lock
    for name in (bundle.SOURCE, bundle.MANIFEST, "install.sh", "install.ps1", "pyproject.toml",
                 "bootstrap/bundle.py", index["pip_lock"], index["conda_lock"]):
        assert name in names
    conda = [n for n in names if n.startswith(bundle.CONDA + "/")]
    assert (index["conda"] == "included") == bool(conda)
    if not conda:  # as on these machines: the channel is unreachable, and the index says so
        assert "unreachable" in index["conda_reason"]


def test_the_air_gap_has_no_network_and_no_pip_configuration(airgap: list, tmp_path: Path) -> None:
    env = clean_env(tmp_path, tmp_path)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = ("import socket, subprocess, sys\n"
                 f"for addr in (('127.0.0.1', {port}), ('1.1.1.1', 443), ('8.8.8.8', 53)):\n"
                 "    try:\n"
                 "        socket.create_connection(addr, timeout=3).close(); print('REACHED', addr)\n"
                 "    except OSError as exc:\n"
                 "        print('unreachable', addr, exc.errno)\n"
                 "out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True,\n"
                 "                     text=True)\n"
                 "print('pip config:', repr(out.stdout.strip()))\n")
        inside = subprocess.run([*airgap, sys.executable, "-c", probe], env=env, capture_output=True,  # noqa: S603
                                text=True, timeout=120, check=False)
        outside = socket.create_connection(("127.0.0.1", port), timeout=3)  # the server does answer out here
        outside.close()
    assert inside.returncode == 0, inside.stderr
    assert "REACHED" not in inside.stdout and inside.stdout.count("unreachable") == 3
    assert "pip config: ''" in inside.stdout
    # here: /etc/pip.conf, /etc/xdg/pip and the local folders they name (see conftest.pip_config_paths)
    hidden = [airgap[i + 1] for i, arg in enumerate(airgap) if arg == "--hide"]
    for path in hidden:
        if os.path.isdir(path):
            listing = subprocess.run([*airgap, "ls", "-A", path], capture_output=True, text=True,  # noqa: S603
                                     check=True)
            assert listing.stdout.strip() == "", path


def test_the_bundle_installs_air_gapped_from_a_fresh_home_and_ends_with_the_demo_answer(
        installed: Installed, demo_bundle: DemoBundle) -> None:
    from bootstrap.demo.tinymodel import CHAT_PAIRS

    result = installed.result
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert "every member matches SHA256SUMS" in result.stderr
    state = json.loads((installed.target / ".llama-bootstrap" / "state.json").read_text())["steps"]
    answer = state["smoke"]["result"]["answer"]
    assert answer.strip() == CHAT_PAIRS[0][1]
    assert result.stdout.strip().splitlines()[-2].startswith("ok    smoke  done")
    assert repr(answer) in result.stdout.strip().splitlines()[-2]
    pulled = state["pull"]["result"]["repos"][0]
    assert pulled["source"].startswith("dir ") and pulled["pinned"] is True
    assert pulled["local_dir"] == str(installed.target / "models" / "FlagAlpha" / "Llama2-Chinese-tiny-demo")
    checkout = installed.target / "Llama2-Chinese"
    git = ["git", "-C", str(checkout)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)  # noqa: S603
    origin = subprocess.run([*git, "config", "--get", "remote.origin.url"], capture_output=True,  # noqa: S603
                            text=True, check=True)
    index = bundle.verify(demo_bundle.path).index
    assert head.stdout.strip() == index["source"]["ref"]
    assert origin.stdout.strip() == str(installed.target / bundle.SOURCE)
    venv = Path(installed.env["HOME"]) / ".local/state/llama-bootstrap/venvs/myenv-demo"
    assert (venv / "bin" / "llama-bootstrap").exists()
    if index["conda"] == "missing":
        assert "the bundle has no conda layer" in result.stderr and "NO CONDA" in result.stderr


def _files(root: Path) -> Dict[str, Tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_a_second_install_is_a_no_op(installed: Installed, demo_bundle: DemoBundle, airgap: list) -> None:
    assert installed.result.returncode == 0
    home = Path(installed.env["HOME"])
    before = _files(home)
    again = _run(installed.script, installed.env, installed.root, airgap, demo_bundle.path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already unpacked" in again.stderr and "nothing to install" in again.stderr
    steps = [line.split()[1:3] for line in again.stdout.splitlines() if line.startswith("ok ")][:4]
    assert steps == [["check", "cached"], ["clone", "cached"], ["pull", "cached"], ["smoke", "cached"]]
    after = _files(home)
    new = set(after) - set(before)
    assert new and all("/logs/" in name for name in new)  # the installer's and the run's logs
    changed = {name for name in before if before[name] != after.get(name)}
    # the run's state file (rewritten atomically every run) and git's index (refreshed by `git status`)
    assert changed <= {str(installed.target / ".llama-bootstrap" / "state.json"),
                       str(installed.target / ".llama-bootstrap" / "receipt.json"),  # records the new logs
                       str(installed.target / "Llama2-Chinese" / ".git" / "index")}


def test_a_flipped_byte_is_refused_before_anything_changes(demo_bundle: DemoBundle, airgap: list, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    env = _env(tmp_path)
    damaged = tmp_path / "usb" / demo_bundle.path.name
    damaged.parent.mkdir()
    shutil.copyfile(demo_bundle.path, damaged)
    flip_byte(damaged, WEIGHTS_FILE, at=4096)
    script = _install_sh(damaged, tmp_path)
    home, tmp = Path(env["HOME"]), Path(env["TMPDIR"])
    before = tree(home, tmp)
    result = _run(script, env, tmp_path, airgap, damaged)
    assert result.returncode == 1
    assert f"bundle member {WEIGHTS_FILE} does not match its sha256" in result.stderr
    assert "nothing was changed" in result.stderr
    assert tree(home, tmp) == before and list(home.iterdir()) == []
    assert run_cli(["bundle", "--verify", str(damaged)]) == 1
    assert f"member {WEIGHTS_FILE} does not match its sha256" in capsys.readouterr().err
