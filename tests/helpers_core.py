"""Plain helpers for the core tests (manifest, plan, checks, probes, CLI). No pytest fixtures here.

- manifests: the shipped one as text/data, edited copies written into a test's own folder
- plans: built through the real loader and resolver (``build_plan``), never hand-assembled
- probes: a fake ``nvidia-smi`` that serves the real-format outputs in tests/fixtures/nvidia-smi,
  and a :class:`~bootstrap.probes.Probes` whose every part is injected (nothing touches the machine)
- subprocesses: a clean environment for running ``python -m bootstrap``
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from bootstrap.plan import Overrides, Plan, build_plan
from bootstrap.probes import CommandResult, GpuReport, Probes, TorchInfo, nvidia_smi
from bootstrap.probes_host import CpuInfo, MemoryInfo, cpu_from_cpuinfo, memory_from_meminfo
from bootstrap.settings import from_env

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MANIFEST = REPO / "manifest.yaml"
SCHEMA_FILE = REPO / "manifest.schema.json"
FIXTURES = REPO / "tests" / "fixtures"
SMI_DIR = FIXTURES / "nvidia-smi"
BAD_DIR = FIXTURES / "manifests" / "bad"
MEMINFO_DIR = FIXTURES / "meminfo"
CPUINFO_DIR = FIXTURES / "cpuinfo"

DEFAULT_MODEL = "llama2-chinese-7b-chat"
LORA_7B = "llama2-chinese-7b-chat-lora"
MODEL_KEYS = ("llama2-chinese-7b-chat", "llama2-chinese-13b-chat", "llama2-chinese-7b-chat-lora",
              "llama2-chinese-13b-chat-lora")
HEAVY_MODULES = ("torch", "transformers", "huggingface_hub", "accelerate", "bitsandbytes")
GB = 10**9
MIB = 1024 * 1024

# -- manifests ----------------------------------------------------------------------------


def shipped_text() -> str:
    return SHIPPED_MANIFEST.read_text(encoding="utf-8")


def manifest_data() -> Dict[str, Any]:
    """The shipped manifest as plain data (a fresh copy each call)."""
    return copy.deepcopy(yaml.safe_load(shipped_text()))


def set_dotted(data: Dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "requirements.gpu", "none")``; keys may contain '-' but not '.'."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value


def write_manifest(folder: Path, changes: Optional[Mapping[str, Any]] = None, *, text: Optional[str] = None,
                   name: str = "manifest.yaml") -> Path:
    """Write the shipped manifest (or ``text``) into ``folder``, with dotted-key ``changes`` applied."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if text is None and not changes:
        text = shipped_text()
    if text is None:
        data = manifest_data()
        for dotted, value in (changes or {}).items():
            set_dotted(data, dotted, value)
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def make_plan(folder: Path, changes: Optional[Mapping[str, Any]] = None, *, env: Optional[Mapping[str, str]] = None,
              model: Optional[str] = None, profile: Optional[str] = None, endpoint: Optional[str] = None,
              cwd: Optional[Path] = None) -> Plan:
    """A plan from a manifest written into ``folder``, through the real loader and resolver."""
    path = write_manifest(folder, changes)
    overrides = Overrides(manifest=path, model=model, profile=profile, endpoint=endpoint)
    return build_plan(overrides, from_env(dict(env or {})), cwd=cwd)


# -- a fake nvidia-smi over the real-format outputs ------------------------------------------


@dataclass
class FakeNvidiaSmi:
    """Answers like the real nvidia-smi would, from fixture files; records every call.

    ``knows_compute_cap=False`` is a driver before 510: asking for ``compute_cap`` exits 2 with the
    real error text. ``broken=True`` is a loaded nvidia-smi without a working kernel driver (exit 9).
    """

    csv: Optional[str] = None
    q: Optional[str] = None
    knows_compute_cap: bool = True
    broken: bool = False
    q_fails: bool = False
    calls: List[List[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], timeout: float = 10.0) -> Optional[CommandResult]:
        argv = list(argv)
        self.calls.append(argv)
        if Path(argv[0]).name != "nvidia-smi":
            return None
        if self.broken:
            return CommandResult(9, (SMI_DIR / "no-driver.txt").read_text(encoding="utf-8"), "")
        query = [a for a in argv if a.startswith("--query-gpu=")]
        if query:
            fields = query[0].split("=", 1)[1].split(",")
            if "compute_cap" in fields and not self.knows_compute_cap:
                text = (SMI_DIR / "old-driver-compute-cap-error.txt").read_text(encoding="utf-8")
                return CommandResult(2, text, "")
            return CommandResult(0, (SMI_DIR / self.csv).read_text(encoding="utf-8"), "")  # type: ignore[operator]
        if argv[1:] == ["-q"]:
            if self.q_fails:
                return CommandResult(15, "", "Unable to determine the device handle for GPU0000:01:00.0: Unknown Error")
            return CommandResult(0, (SMI_DIR / self.q).read_text(encoding="utf-8"), "")  # type: ignore[operator]
        return CommandResult(2, "", f"Invalid combination of input arguments: {argv[1:]}")


def smi(scenario: str) -> FakeNvidiaSmi:
    return {
        "rtx3060": lambda: FakeNvidiaSmi("rtx3060.csv", "rtx3060-q.txt"),
        "rtx4090": lambda: FakeNvidiaSmi("rtx4090.csv", "rtx4090-q.txt"),
        "two-gpus": lambda: FakeNvidiaSmi("two-gpus.csv", "two-gpus-q.txt"),
        "gtx1650-4gb": lambda: FakeNvidiaSmi("gtx1650-4gb.csv", "gtx1650-4gb-q.txt"),
        "old-driver": lambda: FakeNvidiaSmi("old-driver.csv", "old-driver-q.txt", knows_compute_cap=False),
        "no-driver": lambda: FakeNvidiaSmi(broken=True),
    }[scenario]()


def no_nvidia_smi(argv: Sequence[str], timeout: float = 10.0) -> Optional[CommandResult]:
    """run_command's answer when the program is not on PATH."""
    return None


# -- torch as torch_info() would report it ---------------------------------------------------

ARCH_CU121 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]  # torch 2.1 cu121 wheels


def torch_cuda(caps: Sequence[Tuple[int, int]] = ((8, 6),), *, version: str = "2.1.2+cu121", cuda: str = "12.1",
               arch: Optional[List[str]] = None, available: bool = True) -> TorchInfo:
    return TorchInfo(version, cuda, available, list(ARCH_CU121 if arch is None else arch), list(caps))


def torch_cpu(version: str = "2.1.2+cpu") -> TorchInfo:
    return TorchInfo(version, None, False, [], [])


# -- probes -----------------------------------------------------------------------------------


def git_runner(argv: Sequence[str], timeout: float = 10.0) -> Optional[CommandResult]:
    if Path(argv[0]).name == "git" and list(argv[1:]) == ["--version"]:
        return CommandResult(0, "git version 2.39.5\n", "")
    return None


def fixture_memory(name: str) -> MemoryInfo:
    """A machine's memory from a real-format /proc/meminfo in tests/fixtures/meminfo (no cgroup limit)."""
    info = memory_from_meminfo((MEMINFO_DIR / f"{name}.txt").read_text(encoding="utf-8"))
    assert info is not None
    return info


def fixture_cpu(name: str, cores: int, machine: str = "x86_64") -> CpuInfo:
    """A machine's CPU from a real-format /proc/cpuinfo in tests/fixtures/cpuinfo, ``cores`` usable."""
    return cpu_from_cpuinfo((CPUINFO_DIR / f"{name}.txt").read_text(encoding="utf-8"), machine, cores, float(cores))


def make_probes(*, gpu: Any = "rtx3060", torch: Any = None, system: str = "Linux", machine: str = "x86_64",
                python: Tuple[int, int, int] = (3, 9, 18), environ: Optional[Mapping[str, str]] = None,
                free_bytes: int = 500 * GB, which: Optional[Mapping[str, str]] = None,
                reachable: Optional[Callable[[str, float], Tuple[bool, str]]] = None,
                memory: Any = "workstation-64g", cpu: Any = ("ryzen-9-5950x", 32)) -> Probes:
    """Probes with every part injected. ``gpu``: a fixture scenario name, a FakeNvidiaSmi, a GpuReport,
    or None (no nvidia-smi on PATH). ``torch``: a TorchInfo or None (not installed). ``memory``: a
    meminfo fixture name, a MemoryInfo or None; ``cpu``: (cpuinfo fixture name, cores), a CpuInfo or None."""
    if isinstance(memory, str):
        memory = fixture_memory(memory)
    if isinstance(cpu, tuple):
        cpu = fixture_cpu(*cpu)
    if isinstance(gpu, str):
        gpu = smi(gpu)
    if isinstance(gpu, FakeNvidiaSmi):
        runner = gpu

        def gpus() -> Optional[GpuReport]:
            return nvidia_smi(runner)
    else:
        report = gpu

        def gpus() -> Optional[GpuReport]:
            return report

    tools = {"git": "/usr/bin/git"} if which is None else dict(which)
    return Probes(
        run=git_runner,
        which=tools.get,
        gpus=gpus,
        torch=lambda: torch,
        disk_free=lambda path: (path, free_bytes),
        memory=lambda: memory,
        cpu=lambda: cpu,
        reachable=reachable or (lambda url, timeout: (True, "HTTP 200")),
        system=lambda: system,
        machine=lambda: machine,
        python_version=python,
        environ=dict({"CONDA_DEFAULT_ENV": "myenv", "CONDA_PREFIX": "/opt/conda/envs/myenv"}
                     if environ is None else environ),
    )


# -- subprocesses -------------------------------------------------------------------------------

#: Variables of the developer's shell that would change what the CLI does.
_LEAKY_PREFIXES = ("LLAMA_BOOTSTRAP_", "HF_", "HUGGING_FACE_", "CONDA_", "PYTHON")


def clean_env(**extra: str) -> Dict[str, str]:
    """os.environ without LLAMA_BOOTSTRAP_*/HF_*/CONDA_*/PYTHON*, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env["PYTHONIOENCODING"] = "utf-8"
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(REPO)  # this checkout, whichever one is installed in the venv
    env.update(extra)
    return env


def bootstrap_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "bootstrap", *args]


def listing(folder: Path) -> List[str]:
    """Every path under ``folder`` (relative, sorted): to show that a command wrote nothing."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
