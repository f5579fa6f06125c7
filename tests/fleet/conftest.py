"""A fleet on one machine for the Ansible tests: hosts that are folders, reached with ``ansible_connection: local``.

Each host has its own project folder, HOME and XDG_STATE_HOME (so its own state and its own venv from
the installer). The installer's pip installs the hashed demo lock from one local wheelhouse, downloaded
once per test session (``PIP_FIND_LINKS`` + ``PIP_NO_INDEX``; pip still checks every hash), and skips
byte-compiling (``PIP_COMPILE=0``). Stand-ins, and why:

- Miniforge's download is answered 404 by a server on 127.0.0.1, as when the release site is blocked:
  the installer then takes its documented ``--demo`` fallback (a venv). Conda channels cannot be
  reached from here, so a real Miniforge could not build the env anyway.
- The hosts' PATH leaves out ``conda``/``mamba``/``micromamba``: a host of this fleet has no conda
  (the developer's machine may have one, or a stand-in some other test left behind).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_DIR = REPO_ROOT / "deploy" / "ansible"
CONDA_NAMES = ("conda", "mamba", "micromamba")


def ansible_playbook() -> Path:
    exe = Path(sys.executable).parent / "ansible-playbook"
    if not exe.is_file():
        pytest.skip("ansible-core is not installed in this environment (the test layer has it)")
    return exe


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_error(404, "no Miniforge here")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def blocked_miniforge() -> Iterator[str]:
    """A base URL where every Miniforge download is answered 404."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/miniforge"
    server.shutdown()
    server.server_close()


def path_without_conda(shadow: Path) -> str:
    """PATH with every folder that holds a conda replaced by a mirror of it without one."""
    parts = []
    for i, folder in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if folder and any((Path(folder) / name).exists() for name in CONDA_NAMES):
            mirror = shadow / f"{i}"
            mirror.mkdir(parents=True, exist_ok=True)
            for entry in Path(folder).iterdir():
                if entry.name not in CONDA_NAMES and not (mirror / entry.name).exists():
                    (mirror / entry.name).symlink_to(entry)
            folder = str(mirror)
        parts.append(folder)
    return os.pathsep.join(parts)


@pytest.fixture(scope="session")
def demo_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheels of requirements/demo-linux-64.txt, fetched once per session (checked against its hashes)."""
    folder = tmp_path_factory.mktemp("demo-wheelhouse")
    lock = REPO_ROOT / "requirements" / "demo-linux-64.txt"
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--require-hashes", "--only-binary", ":all:", "-r", str(lock), "-d", str(folder)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)  # noqa: S603
    if out.returncode != 0:
        pytest.fail(f"could not fetch the demo lock's wheels for the fleet's hosts:\n{out.stderr[-3000:]}")
    return folder


class Fleet(NamedTuple):
    root: Path
    inventory: Path
    reports: Path
    hosts: Dict[str, Path]  # host -> its project folder

    def run(self, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "LLAMA_BOOTSTRAP_", "HF_"))}
        env.update({
            "ANSIBLE_CONFIG": str(PLAYBOOK_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.root / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
            "ANSIBLE_REMOTE_TMP": str(self.root / "ansible-remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PYTHONNOUSERSITE": "1",
        })
        return subprocess.run([str(ansible_playbook()), "-i", str(self.inventory), "site.yml", *extra],  # noqa: S603
                              cwd=str(PLAYBOOK_DIR), env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def report(self) -> Dict[str, Any]:
        return json.loads((self.reports / "fleet-report.json").read_text(encoding="utf-8"))

    def share_record(self, host: str) -> Dict[str, Any]:
        return json.loads((self.hosts[host] / ".fleet" / "share.json").read_text(encoding="utf-8"))

    def stop_shares(self) -> None:
        """Stop the shares the plays started in the background (their pids are in the hosts' records)."""
        for host in self.hosts:
            try:
                pid = self.share_record(host)["pid"]
            except (OSError, ValueError, KeyError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def recap(output: str) -> Dict[str, Dict[str, int]]:
    """The PLAY RECAP counters per host."""
    out: Dict[str, Dict[str, int]] = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            out[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return out


def make_fleet(root: Path, miniforge_url: str, wheelhouse: Path, hosts: Dict[str, Dict[str, Any]],
               share: Optional[str] = None) -> Fleet:
    """An inventory of ``hosts`` (name -> extra host vars), all local, in demo mode; ``share`` in llama_share."""
    path = path_without_conda(root / "path-shadow")
    folders: Dict[str, Path] = {}
    host_vars: Dict[str, Dict[str, Any]] = {}
    for name, extra in hosts.items():
        base = root / "hosts" / name
        (base / "home").mkdir(parents=True, exist_ok=True)
        folders[name] = base / "project"
        host_vars[name] = {
            "llama_bootstrap_dir": str(folders[name]),
            "llama_bootstrap_environment": {"HOME": str(base / "home"), "XDG_STATE_HOME": str(base / "state"),
                                            "PATH": path},
            **extra,
        }
    inventory = {"all": {
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "llama_bootstrap_demo": True,
            "llama_bootstrap_src": str(REPO_ROOT),
            "llama_bootstrap_report_dir": str(root / "reports"),
            "llama_bootstrap_pack_dir": str(root / "pack"),
            "llama_bootstrap_installer_env": {
                "LLAMA_BOOTSTRAP_MINIFORGE_URL": miniforge_url,
                "PIP_FIND_LINKS": str(wheelhouse),
                "PIP_NO_INDEX": "1",
                "PIP_COMPILE": "0",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            },
        },
        "children": {
            "llama_share": {"hosts": {share: host_vars[share]} if share else {}},
            "workers": {"hosts": {n: v for n, v in host_vars.items() if n != share}},
        },
    }}
    inventory_path = root / "inventory.yml"
    inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    return Fleet(root, inventory_path, root / "reports", folders)


def share_log_lines(project: Path) -> List[str]:
    """The request log lines of every share run from the demo project of ``project``."""
    lines: List[str] = []
    for log in sorted((project / "llama-bootstrap-demo" / ".llama-bootstrap" / "logs").glob("share-*.log")):
        lines += log.read_text(encoding="utf-8").splitlines()
    return lines


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
