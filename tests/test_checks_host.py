"""The ``memory`` and ``cpu`` checks with injected probes: machines from real-format fixtures.

Memory comes from tests/fixtures/meminfo (and cgroup trees, read by the real probe), CPUs from
tests/fixtures/cpuinfo and tests/fixtures/windows, GPUs from tests/fixtures/nvidia-smi. The 7B chat
model is 13.5 GB of fp16 weights: a GPU load needs ~min(13.5, largest shard or 10) + 1.5 GB of RAM,
the CPU 13.5 x 2 + 1.5 = 28.5 GB in fp32 and 13.5 + 1.5 = 15.0 GB in bf16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
from helpers_host import StandInKernel32, machine_root

from bootstrap.checks import FAIL, OK, SKIP, WARN, CheckResult, run_checks
from bootstrap.checks_host import predicted_capability
from bootstrap.plan import Plan
from bootstrap.probes_host import CpuInfo, linux_memory, windows_cpu
from helpers_core import CPUINFO_DIR, GB, fixture_cpu, make_plan, make_probes, torch_cpu


def run(plan: Plan, **probe_kwargs: Any) -> Dict[str, CheckResult]:
    report = run_checks(plan, make_probes(**probe_kwargs), offline=True)
    return {c.name: c for c in report.checks}


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return make_plan(tmp_path / "kit")


def preferred(tmp_path: Path, **changes: Any) -> Plan:
    return make_plan(tmp_path / "kit", {"requirements.gpu": "preferred", **changes})


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


# -- memory: loading onto a GPU ------------------------------------------------------------------


def test_gpu_load_on_a_big_machine(plan: Plan) -> None:
    c = run(plan, gpu="rtx4090", memory="workstation-64g")["memory"]
    assert c.status == OK and c.remedy is None
    assert (c.data["precision"], c.data["device"], c.data["needed_gb"]) == ("fp16", "cuda", 11.5)
    assert c.data["largest_shard_gb"] is None and "a shard, assumed <= 10 GB until downloaded" in c.detail
    assert c.data["cpu_needed_gb"] == {"fp32": 28.5, "bf16": 15.0}
    assert c.data["usable_available_bytes"] == 60218844 * 1024


def test_gpu_load_with_less_free_ram_than_a_shard_warns(tmp_path: Path) -> None:
    """16 GB desktop with 9.6 GB free: a 10 GB shard + 1.5 GB fits in RAM + swap, not in free RAM."""
    c = run(make_plan(tmp_path), gpu="rtx4090", memory="desktop-16g-swap")["memory"]
    assert c.status == WARN and "close programs" in c.remedy


def test_gpu_load_beyond_ram_and_swap_warns_but_does_not_fail(tmp_path: Path) -> None:
    """8 GB laptop: 8.2 GB RAM + 3.2 GB free swap < 11.5 GB. The estimate is an upper bound (mmap'd
    safetensors are copied tensor by tensor), so it warns; the CPU case below is a failure."""
    c = run(make_plan(tmp_path), gpu="rtx4090", memory="laptop-8g-swap")["memory"]
    assert c.status == WARN and "up to ~11.5 GB" in c.detail and "RAM + swap, 11.4 GB" in c.detail
    assert "add swap (>= 0.1 GB more)" in c.remedy


def test_downloaded_shards_replace_the_assumption(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    folder = plan.model_dir(plan.model.repo_id)
    for i, size in enumerate((5 * GB, 5 * GB, int(3.5 * GB)), 1):
        _sparse(folder / f"model-0000{i}-of-00003.safetensors", size)
    _sparse(folder / "tokenizer.model", 500_000)
    c = run(plan, gpu="rtx4090", memory="laptop-8g-swap")["memory"]
    assert c.data["largest_shard_gb"] == 5.0 and c.data["needed_gb"] == 6.5
    assert c.status == WARN  # 6.5 GB: more than the 4.0 GB free, less than RAM + swap
    assert "largest shard 5.0 GB + 1.5 GB" in c.detail


def test_lora_loads_the_base_shards(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, model="llama2-chinese-7b-chat-lora")
    _sparse(plan.model_dir(plan.model.base) / "model-00001-of-00002.safetensors", int(9.98 * GB))
    _sparse(plan.model_dir(plan.model.repo_id) / "adapter_model.bin", int(0.1 * GB))
    c = run(plan, gpu="rtx4090")["memory"]
    assert c.data["largest_shard_gb"] == 9.98 and c.data["needed_gb"] == 11.5


# -- memory: the CPU fallback --------------------------------------------------------------------


def test_cpu_fallback_in_fp32_when_it_fits(tmp_path: Path) -> None:
    checks = run(preferred(tmp_path), gpu=None, memory="workstation-64g")
    assert checks["memory"].status == OK
    assert (checks["memory"].data["precision"], checks["memory"].data["needed_gb"]) == ("fp32", 28.5)
    assert "auto -> fp32 on cpu (~28.5 GB RAM)" in checks["vram"].detail


def test_cpu_fallback_in_bf16_when_only_that_fits(tmp_path: Path) -> None:
    """The development VM: 24.7 GB RAM, 22.3 GB free: fp32 (28.5) does not fit, bf16 (15.0) does."""
    checks = run(preferred(tmp_path), gpu=None, memory="vm-24g-noswap")
    assert checks["memory"].status == OK and checks["memory"].data["precision"] == "bf16"
    assert "no swap" in checks["memory"].detail
    assert checks["vram"].data["precision"] == "bf16" and "bf16 on cpu (~15.0 GB RAM)" in checks["vram"].detail


def test_no_cpu_fallback_that_cannot_fit(tmp_path: Path) -> None:
    """The issue's acceptance case: no GPU, 16 GB desktop (9.6 GB free): nothing fits, check fails."""
    report = run_checks(preferred(tmp_path), make_probes(gpu=None, torch=torch_cpu(), memory="desktop-16g-swap"),
                        offline=True)
    checks = {c.name: c for c in report.checks}
    c = checks["memory"]
    assert c.status == FAIL and report.failed == ["memory"]
    assert "nothing fits" in c.detail and "fp32 28.5 GB, bf16 15.0 GB" in c.detail and "9.6 GB" in c.detail
    assert ">= 15.0 GB" in c.remedy and "GPU" in c.remedy
    assert c.data["precision"] is None and c.data["needed_gb"] == 15.0
    assert checks["vram"].data["precision"] is None and "auto -> nothing fits" in checks["vram"].detail


def test_gpu_too_small_and_ram_too_small(tmp_path: Path) -> None:
    """GTX 1650 (4.1 GB free: not even int4) on the 8 GB laptop."""
    c = run(preferred(tmp_path), gpu="gtx1650-4gb", memory="laptop-8g-swap")["memory"]
    assert c.status == FAIL and "4.1 GB free VRAM" in c.detail and "int4, needs 5.0 GB" in c.detail


def test_explicit_fp32_on_the_cpu_that_cannot_fit(tmp_path: Path) -> None:
    c = run(preferred(tmp_path, **{"smoke.precision": "fp32"}), gpu=None, memory="vm-24g-noswap")["memory"]
    assert c.status == FAIL and "fp32 28.5 GB" in c.detail


@pytest.mark.parametrize(
    "cgroup, meminfo, limit",
    [("v2-docker-4g", "workstation-64g", "container limit 4.3 GB, cgroup v2"),
     ("v1-docker-8g", "workstation-64g", "container limit 8.6 GB, cgroup v1")],
)
def test_container_limit_decides(tmp_path: Path, cgroup: str, meminfo: str, limit: str) -> None:
    """A 64 GB host, but the container may use 4 or 8 GiB: the CPU fallback is refused."""
    memory = linux_memory(machine_root(tmp_path, meminfo, cgroup))
    c = run(preferred(tmp_path), gpu=None, memory=memory)["memory"]
    assert c.status == FAIL and limit in c.detail
    assert c.data["cgroup"]["limit_bytes"] in (4 * 1024**3, 8 * 1024**3)
    assert c.data["usable_available_bytes"] < c.data["available_bytes"]


def test_demo_sized_model_fits_anywhere(tmp_path: Path) -> None:
    plan = preferred(tmp_path, **{"models.llama2-chinese-7b-chat.size_gb": 0.001})
    assert run(plan, gpu=None, memory="laptop-8g-swap")["memory"].status == OK


def test_memory_unknown_is_skipped(plan: Plan) -> None:
    checks = run(plan, gpu="rtx4090", memory=None, system="Darwin")
    assert checks["memory"].status == SKIP and "Darwin" in checks["memory"].detail
    assert checks["vram"].data["precision"] == "fp16"


# -- cpu ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, want",
    [("xeon-emerald-rapids-vm", "AVX512"), ("core-i3-7100u", "AVX2"), ("ryzen-9-5950x", "AVX2"),
     ("xeon-e5-2670-vm", "DEFAULT"), ("core2-duo-e6550", "DEFAULT"), ("qemu64-vm", "DEFAULT")],
)
def test_predicted_torch_kernels_x86(name: str, want: str) -> None:
    assert predicted_capability(fixture_cpu(name, 4)) == want


@pytest.mark.parametrize("name, want", [("rpi4-cortex-a72", "DEFAULT"), ("graviton3-neoverse-v1", "SVE")])
def test_predicted_torch_kernels_arm(name: str, want: str) -> None:
    assert predicted_capability(fixture_cpu(name, 4, machine="aarch64")) == want


def test_cpu_all_good(plan: Plan) -> None:
    c = run(plan, gpu="rtx4090")["cpu"]
    assert c.status == OK and c.remedy is None
    assert "AMD Ryzen 9 5950X" in c.detail and "32 usable cores of 32" in c.detail
    assert c.data["torch_capability"] == "AVX2" and c.data["capability_from"] == "predicted"


def test_torch_answers_for_itself(plan: Plan) -> None:
    info = torch_cpu()
    info = type(info)(info.version, None, False, [], [], cpu_capability="AVX512")
    c = run(plan, gpu=None, torch=info, cpu=("xeon-emerald-rapids-vm", 2))["cpu"]
    assert c.data["torch_capability"] == "AVX512" and c.data["capability_from"] == "torch"
    assert "(predicted)" not in c.detail


@pytest.mark.parametrize("name, missing", [("core2-duo-e6550", "sse4_1, sse4_2"), ("qemu64-vm", "sse4_1, sse4_2")])
def test_cpu_without_sse4_fails_even_with_a_gpu(plan: Plan, name: str, missing: str) -> None:
    c = run(plan, gpu="rtx4090", cpu=(name, 4))["cpu"]
    assert c.status == FAIL and f"missing {missing}" in c.detail
    assert "host-passthrough" in c.remedy


def test_no_avx2_is_slow_only_on_the_cpu(tmp_path: Path) -> None:
    on_gpu = run(make_plan(tmp_path / "a"), gpu="rtx4090", cpu=("xeon-e5-2670-vm", 8))["cpu"]
    assert on_gpu.status == OK and "DEFAULT" in on_gpu.detail
    on_cpu = run(preferred(tmp_path / "b"), gpu=None, cpu=("xeon-e5-2670-vm", 8))["cpu"]
    assert on_cpu.status == WARN and "no AVX2+FMA" in on_cpu.detail and "GPU" in on_cpu.remedy


def test_few_cores_warn_on_the_cpu(tmp_path: Path) -> None:
    c = run(preferred(tmp_path), gpu=None, cpu=("core-i3-7100u", 2))["cpu"]
    assert c.status == WARN and "only 2 usable cores" in c.detail and "AVX2" not in c.detail.split(":")[-1]


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path: Path) -> None:
    c = run(preferred(tmp_path), gpu=None, memory="vm-24g-noswap", cpu=("ryzen-9-5950x", 32))["cpu"]
    assert c.status == WARN and "bf16 without AVX512-BF16/AMX is emulated" in c.detail
    ok = run(preferred(tmp_path / "b"), gpu=None, memory="vm-24g-noswap", cpu=("xeon-emerald-rapids-vm", 32))
    assert ok["cpu"].status == OK  # AVX512-BF16 present


def test_tiny_model_is_never_slow(tmp_path: Path) -> None:
    plan = preferred(tmp_path, **{"models.llama2-chinese-7b-chat.size_gb": 0.001})
    assert run(plan, gpu=None, cpu=("xeon-e5-2670-vm", 1))["cpu"].status == OK


def test_container_quota_counts(tmp_path: Path) -> None:
    text = (CPUINFO_DIR / "ryzen-9-5950x.txt").read_text(encoding="utf-8")
    from bootstrap.probes_host import cpu_from_cpuinfo

    cpu = cpu_from_cpuinfo(text, "x86_64", 32, 32.0, quota=1.5)
    c = run(preferred(tmp_path), gpu=None, cpu=cpu)["cpu"]
    assert c.status == WARN and "1.5 usable cores of 32, cgroup quota 1.5" in c.detail


@pytest.mark.parametrize("machine", ["aarch64"])
def test_arm_with_neon_is_fine(plan: Plan, machine: str) -> None:
    c = run(plan, gpu="rtx4090", machine=machine, cpu=fixture_cpu("graviton3-neoverse-v1", 64, machine))["cpu"]
    assert c.status == OK and "asimd" in c.detail and "SVE" in c.detail


def test_arm_without_neon_fails(plan: Plan) -> None:
    """A hypothetical aarch64 system that reports no Advanced SIMD (no real fixture: every ARMv8-A Linux
    machine seen has it); the wheels are built for ARMv8-A with NEON."""
    cpu = CpuInfo("aarch64", None, 4, 4.0, None, frozenset({"fp", "evtstrm", "cpuid"}), "/proc/cpuinfo")
    c = run(plan, gpu=None, machine="aarch64", cpu=cpu)["cpu"]
    assert c.status == FAIL and "asimd (NEON)" in c.detail


def test_windows_cpu_check(plan: Plan) -> None:
    k32 = StandInKernel32("win11-i7-12700-16g")
    cpu = windows_cpu(k32, machine=lambda: "AMD64", cpu_count=lambda: 20, model=lambda: k32.data["processor"])
    c = run(plan, gpu="rtx4090", system="Windows", machine="AMD64", cpu=cpu)["cpu"]
    assert c.status == OK and c.data["torch_capability"] == "AVX2"  # FMA cannot be asked on Windows


def test_windows_that_cannot_tell_only_warns(plan: Plan) -> None:
    cpu = windows_cpu(StandInKernel32("win10-old-ryzen-8g"), machine=lambda: "AMD64", cpu_count=lambda: 12,
                      model=lambda: "AMD64 Family 23 Model 8 Stepping 2, AuthenticAMD")
    c = run(plan, gpu="rtx4090", system="Windows", machine="AMD64", cpu=cpu)["cpu"]
    assert c.status == WARN and "cannot tell" in c.detail and "illegal instruction" in c.remedy


def test_cpu_unknown_is_skipped(plan: Plan) -> None:
    assert run(plan, cpu=None, system="Darwin")["cpu"].status == SKIP
