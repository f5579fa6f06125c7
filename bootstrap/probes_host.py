"""Memory and CPU probes: RAM, swap, container limits, cores, instruction-set features.

Linux reads ``/proc/meminfo``, ``/proc/cpuinfo``, ``/proc/self/cgroup`` + ``/proc/self/mountinfo``
(to find this process's cgroup, v1 or v2) and the cgroup's limit files; every path is taken under
``root`` so tests read real-format copies from a folder. Windows asks kernel32
(``GlobalMemoryStatusEx``, ``IsProcessorFeaturePresent``) through ctypes; tests pass a stand-in
kernel32. Like every probe: plain data back, nothing raised for "cannot tell" (None instead).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as 9223372036854771712; anything this big is none
ROOT = Path("/")


@dataclass(frozen=True)
class CgroupMemory:
    """The memory limit of the cgroup this process is in (the tightest level that has one)."""

    version: int  # 1 or 2
    path: str  # the cgroup folder whose limit binds
    limit_bytes: int
    usage_bytes: int  # memory.current / memory.usage_in_bytes (page cache included)
    inactive_file_bytes: int  # page cache the kernel reclaims first: not counted as used (kubelet does the same)
    swap_limit_bytes: Optional[int] = None  # swap this cgroup may use; None: no limit of its own
    swap_used_bytes: int = 0

    @property
    def available_bytes(self) -> int:
        return max(0, self.limit_bytes - max(0, self.usage_bytes - self.inactive_file_bytes))


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int  # physical RAM of the machine
    available_bytes: int  # what the OS can give without swapping (MemAvailable / ullAvailPhys)
    swap_total_bytes: int
    swap_free_bytes: int
    source: str  # where the numbers come from
    cgroup: Optional[CgroupMemory] = None

    @property
    def usable_total_bytes(self) -> int:
        return min(self.total_bytes, self.cgroup.limit_bytes) if self.cgroup else self.total_bytes

    @property
    def usable_available_bytes(self) -> int:
        return min(self.available_bytes, self.cgroup.available_bytes) if self.cgroup else self.available_bytes

    @property
    def usable_swap_free_bytes(self) -> int:
        if self.cgroup is None or self.cgroup.swap_limit_bytes is None:
            return self.swap_free_bytes
        return max(0, min(self.swap_free_bytes, self.cgroup.swap_limit_bytes - self.cgroup.swap_used_bytes))

    @property
    def available_gb(self) -> float:
        """RAM this process can still use, in GB (1e9): what ``precision.pick(ram_available_gb=)`` takes."""
        return self.usable_available_bytes / 1e9


@dataclass(frozen=True)
class CpuInfo:
    arch: str  # platform.machine()
    model: Optional[str]
    logical_cpus: Optional[int]  # os.cpu_count()
    usable_cpus: Optional[float]  # the affinity mask, capped by a cgroup CPU quota
    quota_cpus: Optional[float]  # cgroup cpu.max / cfs quota in CPUs; None: no quota
    flags: FrozenSet[str]  # Linux's names (x86 "flags", aarch64 "Features"), SSE3 as "sse3"
    source: str
    absent_is_certain: bool = True  # False: the OS may not know a feature it reports as absent
    extra: Dict[str, Any] = field(default_factory=dict)


# -- Linux: /proc/meminfo --------------------------------------------------------------------


def parse_meminfo(text: str) -> Dict[str, int]:
    """``/proc/meminfo`` as {key: bytes} (the kernel writes kB = 1024 bytes)."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def _read_int(path: Path) -> Optional[int]:
    """An integer file; "max" and v1's huge "no limit" are None."""
    text = _read(path)
    if text is None:
        return None
    word = text.strip().split()[0] if text.strip() else ""
    if not re.fullmatch(r"-?\d+", word):
        return None
    value = int(word)
    return None if value < 0 or value >= UNLIMITED else value


def _stat_value(path: Path, *keys: str) -> int:
    """The first of ``keys`` found in a memory.stat file, else 0."""
    stats: Dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return next((stats[k] for k in keys if k in stats), 0)


# -- Linux: which cgroup this process is in -----------------------------------------------------


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def cgroup_dirs(root: Path, controller: str) -> Tuple[int, List[Path]]:
    """(cgroup version, this process's cgroup folder and its ancestors up to the mount) for ``controller``.

    A v1 hierarchy that has the controller wins over the v2 one (hybrid hosts bind the controller
    to v1). (0, []) when this process is in no such cgroup or it cannot be read.
    """
    membership = _read(root / "proc/self/cgroup") or ""
    mounts = _read(root / "proc/self/mountinfo") or ""
    v1_path = v2_path = None
    for line in membership.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif controller in parts[1].split(","):
            v1_path = parts[2]
    for version, cg_path in ((1, v1_path), (2, v2_path)):
        if cg_path is None:
            continue
        for line in mounts.splitlines():
            left, sep, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if not sep or len(fields) < 5 or len(tail) < 3:
                continue
            fstype, options = tail[0], tail[2].split(",")
            if (version == 2 and fstype != "cgroup2") or (version == 1 and (fstype != "cgroup" or
                                                                            controller not in options)):
                continue
            mount_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
            if not (cg_path == mount_root or cg_path.startswith(mount_root.rstrip("/") + "/")):
                continue  # not visible through this mount
            base = root / mount_point.lstrip("/")
            rel = cg_path[len(mount_root.rstrip("/")):].strip("/")
            folder = base / rel if rel else base
            if not folder.is_dir():
                folder = base  # a cgroup namespace shows "/" while the mount is the container's own
            chain = [folder]
            while chain[-1] != base and base in chain[-1].parents:
                chain.append(chain[-1].parent)
            return version, chain
    return 0, []


def cgroup_memory(root: Path = ROOT) -> Optional[CgroupMemory]:
    """The tightest memory limit over this process's cgroup and its visible ancestors; None: no limit."""
    version, chain = cgroup_dirs(root, "memory")
    best: Optional[CgroupMemory] = None
    for folder in chain:
        if version == 2:
            limit = _read_int(folder / "memory.max")
            usage = _read_int(folder / "memory.current")
            inactive = _stat_value(folder / "memory.stat", "inactive_file")
            swap_limit = _read_int(folder / "memory.swap.max")
            swap_used = _read_int(folder / "memory.swap.current") or 0
        else:
            limit = _read_int(folder / "memory.limit_in_bytes")
            hierarchical = _stat_value(folder / "memory.stat", "hierarchical_memory_limit")
            if 0 < hierarchical < UNLIMITED:
                limit = hierarchical if limit is None else min(limit, hierarchical)
            usage = _read_int(folder / "memory.usage_in_bytes")
            inactive = _stat_value(folder / "memory.stat", "total_inactive_file", "inactive_file")
            memsw, memsw_used = (_read_int(folder / "memory.memsw.limit_in_bytes"),
                                 _read_int(folder / "memory.memsw.usage_in_bytes"))
            swap_limit = None if memsw is None or limit is None else max(0, memsw - limit)
            swap_used = max(0, (memsw_used or 0) - (usage or 0))
        if limit is None:
            continue
        found = CgroupMemory(version, str(folder), limit, usage or 0, inactive, swap_limit, swap_used)
        if best is None or found.available_bytes < best.available_bytes:
            best = found
    return best


def cgroup_cpu_quota(root: Path = ROOT) -> Optional[float]:
    """The tightest CPU quota (in CPUs) over this process's cgroup and its ancestors; None: no quota."""
    version, chain = cgroup_dirs(root, "cpu")
    quotas = []
    for folder in chain:
        if version == 2:
            words = (_read(folder / "cpu.max") or "").split()
            quota = int(words[0]) if len(words) == 2 and words[0].isdigit() else None
            period = int(words[1]) if len(words) == 2 and words[1].isdigit() else None
        else:
            quota, period = _read_int(folder / "cpu.cfs_quota_us"), _read_int(folder / "cpu.cfs_period_us")
        if quota and period:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def memory_from_meminfo(text: str, cgroup: Optional[CgroupMemory] = None) -> Optional[MemoryInfo]:
    info = parse_meminfo(text)
    if "MemTotal" not in info:
        return None
    available = info.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    return MemoryInfo(info["MemTotal"], available, info.get("SwapTotal", 0), info.get("SwapFree", 0),
                      "/proc/meminfo", cgroup)


def linux_memory(root: Path = ROOT) -> Optional[MemoryInfo]:
    text = _read(root / "proc/meminfo")
    return None if text is None else memory_from_meminfo(text, cgroup_memory(root))


# -- Linux: /proc/cpuinfo ---------------------------------------------------------------------


def parse_cpuinfo(text: str) -> Tuple[Optional[str], FrozenSet[str]]:
    """(model name, the features every processor has) from ``/proc/cpuinfo`` (x86 or aarch64)."""
    model = None
    common: Optional[Set[str]] = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if model is None and value.strip() and (key == "model name" or (key == "model" and
                                                                        not value.strip().isdigit())):
            model = value.strip()  # x86 "model name"; Raspberry Pi "Model" (x86's "model" is a number)
        elif key in ("flags", "features"):
            found = {"sse3" if f == "pni" else f for f in value.split()}
            common = found if common is None else common & found  # a hybrid CPU: only what every core has
    return model, frozenset(common or ())


def cpu_from_cpuinfo(text: str, machine: str, logical: Optional[int], allowed: Optional[float],
                     quota: Optional[float] = None) -> CpuInfo:
    """``allowed``: CPUs in the affinity mask; ``quota``: the cgroup CPU quota, in CPUs."""
    model, flags = parse_cpuinfo(text)
    usable = allowed if quota is None else (quota if allowed is None else min(allowed, quota))
    return CpuInfo(machine, model, logical, usable, quota, flags, "/proc/cpuinfo")


def _affinity() -> Optional[float]:
    try:
        return float(len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def linux_cpu(root: Path = ROOT, machine: Callable[[], str] = platform.machine,
              affinity: Callable[[], Optional[float]] = _affinity,
              cpu_count: Callable[[], Optional[int]] = os.cpu_count) -> Optional[CpuInfo]:
    text = _read(root / "proc/cpuinfo")
    if text is None:
        return None
    count = cpu_count()
    allowed = affinity()
    if allowed is None and count is not None:
        allowed = float(count)
    return cpu_from_cpuinfo(text, machine(), count, allowed, cgroup_cpu_quota(root))


# -- Windows: kernel32 through ctypes -----------------------------------------------------------


def memory_status_struct() -> Any:
    """The MEMORYSTATUSEX structure of GlobalMemoryStatusEx, as a ctypes class (built on first use)."""
    import ctypes

    class MEMORYSTATUSEX(ctypes.Structure):  # noqa: N801 - the Win32 name
        _fields_ = [
            ("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32),  # DWORD: 32 bits everywhere
            ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    return MEMORYSTATUSEX


# IsProcessorFeaturePresent ids (processthreadsapi.h) and the Linux names for them. Ids 36-41 are
# only known to recent Windows 10/11 builds: older ones answer FALSE, so "absent" is not certain.
WINDOWS_FEATURES: Dict[int, str] = {10: "sse2", 13: "sse3", 36: "ssse3", 37: "sse4_1", 38: "sse4_2", 39: "avx",
                                    40: "avx2", 41: "avx512f", 19: "asimd"}


def _kernel32() -> Any:
    import ctypes

    return ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]


def windows_memory(kernel32: Any = None) -> Optional[MemoryInfo]:
    """GlobalMemoryStatusEx. Swap = the page file: commit limit (TotalPageFile) minus physical RAM."""
    import ctypes

    struct = memory_status_struct()
    try:
        k32 = kernel32 if kernel32 is not None else _kernel32()
        status = struct()
        status.dwLength = ctypes.sizeof(struct)
        if not k32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return None
    except (OSError, AttributeError):
        return None
    swap_total = max(0, status.ullTotalPageFile - status.ullTotalPhys)
    swap_free = max(0, min(swap_total, status.ullAvailPageFile - status.ullAvailPhys))
    return MemoryInfo(status.ullTotalPhys, status.ullAvailPhys, swap_total, swap_free, "GlobalMemoryStatusEx")


def windows_cpu(kernel32: Any = None, machine: Callable[[], str] = platform.machine,
                cpu_count: Callable[[], Optional[int]] = os.cpu_count,
                model: Callable[[], str] = platform.processor) -> Optional[CpuInfo]:
    try:
        k32 = kernel32 if kernel32 is not None else _kernel32()
        flags = frozenset(name for number, name in WINDOWS_FEATURES.items() if k32.IsProcessorFeaturePresent(number))
    except (OSError, AttributeError):
        return None
    count = cpu_count()
    return CpuInfo(machine(), model() or None, count, None if count is None else float(count), None, flags,
                   "IsProcessorFeaturePresent", absent_is_certain=False)


# -- dispatch -----------------------------------------------------------------------------------


def _on_this_os(linux: Callable[[], Any], windows: Callable[[], Any]) -> Any:
    return {"Linux": linux, "Windows": windows}.get(platform.system(), lambda: None)()


def host_memory() -> Optional[MemoryInfo]:
    return _on_this_os(linux_memory, windows_memory)


def host_cpu() -> Optional[CpuInfo]:
    return _on_this_os(linux_cpu, windows_cpu)
