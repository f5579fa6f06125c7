"""Probes: the only places ``check`` touches the machine. Tests inject their own.

Each probe returns plain data (parsed from the real tool's real output format) and raises nothing
for "not there": a missing nvidia-smi is ``None``, not an exception.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from bootstrap.probes_host import CpuInfo, MemoryInfo, host_cpu, host_memory

NVIDIA_SMI_QUERY = "index,name,memory.total,memory.free,driver_version,compute_cap"
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int
    driver_version: str
    compute_capability: Optional[str]  # "8.6"; None when the driver is too old to say


@dataclass(frozen=True)
class GpuReport:
    gpus: List[Gpu]
    cuda_driver_version: Optional[str]  # highest CUDA the driver supports, e.g. "12.2"


@dataclass(frozen=True)
class TorchInfo:
    version: str
    cuda_version: Optional[str]  # torch.version.cuda; None for a CPU-only build
    cuda_available: bool
    arch_list: List[str] = field(default_factory=list)  # torch.cuda.get_arch_list(), e.g. ["sm_80", ...]
    device_capabilities: List[Tuple[int, int]] = field(default_factory=list)
    error: Optional[str] = None  # import failed with this message
    cpu_capability: Optional[str] = None  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...


def run_command(argv: Sequence[str], timeout: float = PROBE_TIMEOUT_S) -> Optional[CommandResult]:
    """Run argv (a list, never a shell string). None when the program is missing or hangs."""
    try:
        proc = subprocess.run(  # noqa: S603 - argument list, no shell
            list(argv), capture_output=True, text=True, timeout=timeout, check=False,
            encoding="utf-8", errors="replace",
        )
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired, OSError):
        return None
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def parse_nvidia_smi_csv(text: str) -> List[Gpu]:
    """Parse ``nvidia-smi --query-gpu=NVIDIA_SMI_QUERY --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 5 or not cells[0].isdigit():
            continue
        cap = cells[5] if len(cells) > 5 and cells[5] and cells[5][0].isdigit() else None
        try:
            total, free = int(float(cells[2])), int(float(cells[3]))
        except ValueError:
            continue
        gpus.append(Gpu(int(cells[0]), cells[1], total, free, cells[4], cap))
    return gpus


def parse_cuda_driver_version(text: str) -> Optional[str]:
    """The ``CUDA Version`` line of ``nvidia-smi -q`` (or the banner of plain ``nvidia-smi``)."""
    for line in text.splitlines():
        if "CUDA Version" in line:
            tail = line.split("CUDA Version", 1)[1].lstrip(" :").split()
            if tail:
                return tail[0].strip("|")
    return None


def nvidia_smi(run: Callable[..., Optional[CommandResult]] = run_command) -> Optional[GpuReport]:
    """GPUs through nvidia-smi (ships with every NVIDIA driver, Linux and Windows). None: no driver."""
    query = run(["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"])
    if query is None:
        return None
    if query.returncode != 0:
        # Drivers before 510 do not know compute_cap: ask again without it.
        old = NVIDIA_SMI_QUERY.rsplit(",", 1)[0]
        query = run(["nvidia-smi", f"--query-gpu={old}", "--format=csv,noheader,nounits"])
        if query is None or query.returncode != 0:
            return GpuReport([], None)
    detail = run(["nvidia-smi", "-q"])
    cuda = parse_cuda_driver_version(detail.stdout) if detail and detail.returncode == 0 else None
    return GpuReport(parse_nvidia_smi_csv(query.stdout), cuda)


def torch_info() -> Optional[TorchInfo]:
    """Import torch (slow: only ``check`` and ``smoke`` call this). None when not installed."""
    try:
        import torch  # noqa: PLC0415 - deliberately lazy
    except ImportError:
        return None
    except Exception as exc:  # a broken install (missing CUDA libs, ABI mismatch) is a finding, not a crash
        return TorchInfo(version="?", cuda_version=None, cuda_available=False, error=f"{type(exc).__name__}: {exc}")
    available = bool(torch.cuda.is_available())
    caps: List[Tuple[int, int]] = []
    arch: List[str] = []
    if available:
        arch = list(torch.cuda.get_arch_list())
        caps = [tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    capability = getattr(getattr(torch, "backends", None), "cpu", None)
    try:
        cpu_capability = str(capability.get_cpu_capability()) if capability is not None else None
    except Exception:  # noqa: BLE001 - an old torch without it says nothing
        cpu_capability = None
    return TorchInfo(torch.__version__, torch.version.cuda, available, arch, caps, cpu_capability=cpu_capability)


def disk_free(path: Path) -> Tuple[Path, int]:
    """(the existing folder measured, free bytes) for ``path`` or its nearest existing parent."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def folder_problem(path: Path) -> Tuple[Path, Optional[str]]:
    """Can a folder be created and written at ``path``? (the entry looked at, None or what is wrong).

    Walks up to the nearest existing entry without creating anything. What is wrong: "not a folder"
    (a file, or a link to one, where a folder must be), "read-only file system" (EROFS: e.g. a
    read-only mount) or "permission denied" (EACCES for this user).
    """
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            return probe, "not a folder"
        if hasattr(os, "statvfs") and os.statvfs(probe).f_flag & os.ST_RDONLY:
            return probe, "read-only file system"
        effective = os.access in os.supports_effective_ids
        if not os.access(probe, os.W_OK | os.X_OK, effective_ids=effective):
            return probe, "permission denied"
    except PermissionError:
        return probe, "permission denied"
    except OSError as exc:
        return probe, exc.strerror or type(exc).__name__
    return probe, None


def reachable(url: str, timeout: float = 5.0) -> Tuple[bool, str]:
    """Can we open a TLS connection and get any HTTP answer from ``url``? (no body is read)."""
    import urllib.error
    import urllib.request

    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "llama-bootstrap-check"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - https/loopback checked by caller
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:  # any HTTP answer means the host is reachable
        return True, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


@dataclass
class Probes:
    """Everything ``check`` needs from the machine; tests replace any of these."""

    run: Callable[..., Optional[CommandResult]] = run_command
    which: Callable[[str], Optional[str]] = shutil.which
    gpus: Optional[Callable[[], Optional[GpuReport]]] = None
    torch: Callable[[], Optional[TorchInfo]] = torch_info
    disk_free: Callable[[Path], Tuple[Path, int]] = disk_free
    folder_problem: Callable[[Path], Tuple[Path, Optional[str]]] = folder_problem
    memory: Callable[[], Optional[MemoryInfo]] = host_memory
    cpu: Callable[[], Optional[CpuInfo]] = host_cpu
    reachable: Callable[[str, float], Tuple[bool, str]] = reachable
    system: Callable[[], str] = platform.system
    machine: Callable[[], str] = platform.machine
    python_version: Tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def gpu_report(self) -> Optional[GpuReport]:
        if self.gpus is not None:
            return self.gpus()
        return nvidia_smi(self.run)
