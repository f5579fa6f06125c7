"""Memory and CPU probes against real-format files: /proc/meminfo, /proc/cpuinfo, cgroup v1 and v2 trees.

Each Linux scenario is a folder under tests/fixtures/cgroup laid out like the root of the machine
(proc/self/cgroup, proc/self/mountinfo, sys/fs/cgroup/...), copied into tmp_path with a meminfo and a
cpuinfo from tests/fixtures/{meminfo,cpuinfo}; the real probes read it through their ``root``
argument. Windows: kernel32 cannot run here, so a stand-in answers GlobalMemoryStatusEx and
IsProcessorFeaturePresent from tests/fixtures/windows, through the real ctypes structure.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
from helpers_host import StandInKernel32, machine_root

from bootstrap import probes_host
from bootstrap.probes_host import (
    cgroup_cpu_quota,
    cgroup_dirs,
    cgroup_memory,
    linux_cpu,
    linux_memory,
    memory_from_meminfo,
    parse_cpuinfo,
    parse_meminfo,
    windows_cpu,
    windows_memory,
)
from helpers_core import CPUINFO_DIR, MEMINFO_DIR

KB = 1024
GIB = 1024**3


# -- /proc/meminfo --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, total_kb, available_kb, swap_total_kb, swap_free_kb",
    [("vm-24g-noswap", 24683584, 22307332, 0, 0),  # captured on the development VM
     ("desktop-16g-swap", 16318480, 9387216, 2097148, 1818620),
     ("laptop-8g-swap", 7997312, 3911208, 4194300, 3120884),
     ("workstation-64g", 65776184, 60218844, 8388604, 8388604),
     # no MemAvailable before Linux 3.14: MemFree + Buffers + Cached
     ("kernel-3.2-no-memavailable", 32872236, 10218800 + 811200 + 15120440, 16777212, 16777212)],
)
def test_meminfo(name: str, total_kb: int, available_kb: int, swap_total_kb: int, swap_free_kb: int) -> None:
    info = memory_from_meminfo((MEMINFO_DIR / f"{name}.txt").read_text(encoding="utf-8"))
    assert info is not None
    assert (info.total_bytes, info.available_bytes) == (total_kb * KB, available_kb * KB)
    assert (info.swap_total_bytes, info.swap_free_bytes) == (swap_total_kb * KB, swap_free_kb * KB)
    assert info.cgroup is None and info.usable_available_bytes == info.available_bytes
    assert info.available_gb == pytest.approx(available_kb * KB / 1e9)


def test_meminfo_units() -> None:
    values = parse_meminfo((MEMINFO_DIR / "vm-24g-noswap.txt").read_text(encoding="utf-8"))
    assert values["Hugepagesize"] == 2048 * KB  # "kB" lines are bytes x 1024
    assert values["HugePages_Total"] == 0  # a count, no unit
    assert values["VmallocTotal"] == 34359738367 * KB


@pytest.mark.parametrize("text", ["", "garbage\n", "MemFree: 12 kB\n"])
def test_meminfo_without_a_total_is_unknown(text: str) -> None:
    assert memory_from_meminfo(text) is None


# -- cgroups ----------------------------------------------------------------------------------------


def test_hybrid_v1_without_limits(tmp_path: Path) -> None:
    """The development VM: memory on a v1 hierarchy, an empty cgroup2 beside it, no limit anywhere."""
    root = machine_root(tmp_path, "vm-24g-noswap", "v1-hybrid-unlimited")
    version, chain = cgroup_dirs(root, "memory")
    memory = root / "sys/fs/cgroup/memory"
    assert (version, chain) == (1, [memory / "jobs/756b0e83", memory / "jobs", memory])
    assert cgroup_memory(root) is None
    assert cgroup_cpu_quota(root) is None
    info = linux_memory(root)
    assert info is not None and info.cgroup is None
    assert info.usable_total_bytes == 24683584 * KB


def test_docker_on_cgroup_v1(tmp_path: Path) -> None:
    """docker run --memory 8g --cpus 2, cgroup v1: the mount's root is the container's cgroup."""
    root = machine_root(tmp_path, "desktop-16g-swap", "v1-docker-8g")
    cg = cgroup_memory(root)
    assert cg is not None
    assert (cg.version, cg.path) == (1, str(root / "sys/fs/cgroup/memory"))
    assert cg.limit_bytes == 8 * GIB
    # 3 GiB charged, 1.5 GiB of it inactive page cache: 1.5 GiB in use, 6.5 GiB left
    assert cg.available_bytes == 8 * GIB - (3 * GIB - 1_610_612_736)
    assert cg.swap_limit_bytes == 8 * GIB  # memsw 16 GiB - memory 8 GiB
    assert cgroup_cpu_quota(root) == 2.0  # cfs 200000 / 100000, on the "cpu,cpuacct" mount
    info = linux_memory(root)
    assert info is not None and info.cgroup == cg
    assert info.usable_total_bytes == 8 * GIB  # the host has 16 GB, the container may use 8
    assert info.usable_available_bytes == cg.available_bytes  # tighter than the host's 9.4 GB
    assert info.usable_swap_free_bytes == 1818620 * KB  # the host's free swap is the tighter one


def test_docker_on_cgroup_v2_with_a_namespace(tmp_path: Path) -> None:
    """docker run --memory 4g --cpus 1.5, cgroup v2: the container sees itself as "/"."""
    root = machine_root(tmp_path, "laptop-8g-swap", "v2-docker-4g")
    assert cgroup_dirs(root, "memory") == (2, [root / "sys/fs/cgroup"])
    cg = cgroup_memory(root)
    assert cg is not None and cg.version == 2 and cg.limit_bytes == 4 * GIB
    assert cg.available_bytes == 4 * GIB - (1_610_612_736 - 805_306_368)  # 3.25 GiB
    assert cg.swap_limit_bytes == 4 * GIB and cg.swap_used_bytes == 0
    assert cgroup_cpu_quota(root) == 1.5
    info = linux_memory(root)
    assert info is not None
    assert info.usable_available_bytes == cg.available_bytes  # the laptop has 4.0 GB free, the container 3.5
    assert info.available_gb == pytest.approx(3.25 * GIB / 1e9)


def test_systemd_scope_limited_by_its_slice(tmp_path: Path) -> None:
    """No namespace: the process's scope has no limit, the app.slice two levels up does."""
    root = machine_root(tmp_path, "desktop-16g-swap", "v2-systemd-nested")
    version, chain = cgroup_dirs(root, "memory")
    assert version == 2 and chain[0].name == "app-llama-bootstrap-1234.scope"
    assert chain[-1] == root / "sys/fs/cgroup" and len(chain) == 6
    cg = cgroup_memory(root)
    assert cg is not None and cg.path.endswith("/app.slice")
    assert cg.limit_bytes == 6 * GIB
    assert cg.available_bytes == 6 * GIB - (4_831_838_208 - 4_831_838_208 // 4)
    assert cg.swap_limit_bytes is None  # "max"
    assert cgroup_cpu_quota(root) == 3.0  # CPUQuota=300% on the slice; the scope's "max" is no quota


def test_cgroup_outside_the_visible_mount_is_ignored(tmp_path: Path) -> None:
    root = machine_root(tmp_path, cgroup="v1-docker-8g")
    (root / "proc/self/cgroup").write_text("5:memory:/somewhere/else\n4:cpu,cpuacct:/somewhere/else\n")
    assert cgroup_dirs(root, "memory") == (0, [])
    assert cgroup_memory(root) is None and cgroup_cpu_quota(root) is None


def test_mountinfo_escapes_are_decoded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = root / "srv/cgroup v2/job"
    folder.mkdir(parents=True)
    (folder / "memory.max").write_text("1073741824\n")
    (folder / "memory.current").write_text("0\n")
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("0::/job\n")
    (root / "proc/self/mountinfo").write_text("30 21 0:26 / /srv/cgroup\\040v2 rw,relatime - cgroup2 cgroup2 rw\n")
    cg = cgroup_memory(root)
    assert cg is not None and cg.path == str(folder) and cg.limit_bytes == GIB


def test_nothing_readable_means_unknown(tmp_path: Path) -> None:
    assert linux_memory(tmp_path) is None
    assert linux_cpu(tmp_path) is None
    assert cgroup_memory(tmp_path) is None and cgroup_cpu_quota(tmp_path) is None


# -- /proc/cpuinfo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, model, has, lacks",
    [
        ("xeon-emerald-rapids-vm", "Intel(R) Xeon(R) Processor",  # the development VM
         {"sse4_2", "avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_bf16"}, {"amx_bf16"}),
        ("core-i3-7100u", "Intel(R) Core(TM) i3-7100U CPU @ 2.40GHz", {"sse4_2", "avx2", "fma"}, {"avx512f"}),
        ("ryzen-9-5950x", "AMD Ryzen 9 5950X 16-Core Processor", {"avx2", "fma", "sse4a"}, {"avx512f"}),
        ("xeon-e5-2670-vm", "Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz", {"sse4_2", "avx"}, {"avx2", "fma"}),
        ("core2-duo-e6550", "Intel(R) Core(TM)2 Duo CPU     E6550  @ 2.33GHz", {"ssse3", "sse3"}, {"sse4_1"}),
        ("qemu64-vm", "QEMU Virtual CPU version 1.5.3", {"sse2", "sse3"}, {"ssse3", "sse4_1", "sse4_2"}),
        ("rpi4-cortex-a72", "Raspberry Pi 4 Model B Rev 1.1", {"asimd", "fp"}, {"sve"}),
        ("graviton3-neoverse-v1", None, {"asimd", "sve", "bf16"}, set()),
    ],
)
def test_cpuinfo(name: str, model: Optional[str], has: set, lacks: set) -> None:
    got_model, flags = parse_cpuinfo((CPUINFO_DIR / f"{name}.txt").read_text(encoding="utf-8"))
    assert got_model == model
    assert has <= flags and not lacks & flags
    assert "pni" not in flags  # Linux's name for SSE3 is normalised


def test_cpuinfo_keeps_only_what_every_core_has() -> None:
    """A CPU whose cores differ (or a VM that hides a feature on one vCPU): the common set counts."""
    text = (CPUINFO_DIR / "core-i3-7100u.txt").read_text(encoding="utf-8")
    blocks = text.split("\n\n")
    blocks[1] = blocks[1].replace(" avx2 ", " ")
    _, flags = parse_cpuinfo("\n\n".join(blocks))
    assert "avx2" not in flags and "fma" in flags


def test_linux_cpu_cores_are_capped_by_the_quota(tmp_path: Path) -> None:
    root = machine_root(tmp_path, cgroup="v2-docker-4g", cpuinfo="ryzen-9-5950x")
    cpu = linux_cpu(root, machine=lambda: "x86_64", affinity=lambda: 8.0, cpu_count=lambda: 32)
    assert cpu is not None
    assert (cpu.logical_cpus, cpu.usable_cpus, cpu.quota_cpus) == (32, 1.5, 1.5)
    root2 = machine_root(tmp_path / "b", cgroup="v1-hybrid-unlimited")
    cpu = linux_cpu(root2, machine=lambda: "x86_64", affinity=lambda: 8.0, cpu_count=lambda: 32)
    assert cpu is not None and (cpu.usable_cpus, cpu.quota_cpus) == (8.0, None)  # taskset to 8 of 32


# -- this machine ------------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_this_linux_machine() -> None:
    info = linux_memory()
    assert info is not None
    assert info.total_bytes == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < info.usable_available_bytes <= info.usable_total_bytes <= info.total_bytes
    cpu = linux_cpu()
    assert cpu is not None and cpu.flags
    allowed = len(os.sched_getaffinity(0))
    assert cpu.usable_cpus == (allowed if cpu.quota_cpus is None else min(allowed, cpu.quota_cpus))
    again = probes_host.host_memory()  # the dispatcher reads the same files (free memory moves meanwhile)
    assert again is not None
    assert (again.total_bytes, again.swap_total_bytes) == (info.total_bytes, info.swap_total_bytes)
    assert probes_host.host_cpu() == cpu


@pytest.mark.torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_features_agree_with_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our reading of /proc/cpuinfo against torch's own (cpuinfo library, CPUID)."""
    torch = pytest.importorskip("torch")
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        pytest.skip("this torch has no torch.cpu.get_capabilities()")
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("ATEN_CPU_CAPABILITY overrides torch's choice")
    from bootstrap.checks_host import predicted_capability

    cpu = linux_cpu()
    assert cpu is not None
    theirs = dict(capabilities())
    x86 = {"sse4_1": "sse4_1", "sse4_2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma3",
           "avx512f": "avx512_f", "avx512vl": "avx512_vl", "avx512bw": "avx512_bw", "avx512dq": "avx512_dq",
           "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16"}
    names = x86 if "avx" in theirs else {"asimd": "neon", "sve": "sve"}
    for ours, name in names.items():
        assert (ours in cpu.flags) == bool(theirs.get(name)), ours
    assert predicted_capability(cpu) == torch.backends.cpu.get_cpu_capability().replace("SVE256", "SVE")


# -- Windows, through a stand-in kernel32 ------------------------------------------------------------


def test_memory_status_structure_has_the_windows_layout() -> None:
    struct = probes_host.memory_status_struct()
    assert ctypes.sizeof(struct) == 64  # 2 DWORDs + 7 DWORDLONGs, as on Windows
    assert struct.ullTotalPhys.offset == 8


def test_windows_memory() -> None:
    info = windows_memory(StandInKernel32("win11-i7-12700-16g"))
    assert info is not None and info.source == "GlobalMemoryStatusEx"
    assert (info.total_bytes, info.available_bytes) == (17014452224, 7310221312)
    # the page file: commit limit minus RAM; free commit minus free RAM
    assert info.swap_total_bytes == 19565314048 - 17014452224
    assert info.swap_free_bytes == 8915623936 - 7310221312
    assert info.cgroup is None and info.available_gb == pytest.approx(7.31, abs=0.01)


def test_windows_memory_failure_is_unknown() -> None:
    class Refuses(StandInKernel32):
        def GlobalMemoryStatusEx(self, ref: Any) -> int:  # noqa: N802
            return 0

    assert windows_memory(Refuses("win11-i7-12700-16g")) is None
    assert windows_memory(object()) is None  # no such function


def test_windows_cpu() -> None:
    k32 = StandInKernel32("win11-i7-12700-16g")
    cpu = windows_cpu(k32, machine=lambda: "AMD64", cpu_count=lambda: 20, model=lambda: k32.data["processor"])
    assert cpu is not None
    assert cpu.flags == {"sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2"}
    assert cpu.absent_is_certain is False and cpu.usable_cpus == 20.0
    assert set(k32.asked) == set(probes_host.WINDOWS_FEATURES)


def test_windows_cpu_on_a_build_that_does_not_know_the_new_ids() -> None:
    cpu = windows_cpu(StandInKernel32("win10-old-ryzen-8g"), machine=lambda: "AMD64", cpu_count=lambda: 12,
                      model=lambda: "")
    assert cpu is not None and cpu.flags == {"sse2", "sse3"} and cpu.model is None
