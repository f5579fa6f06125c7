"""The ``memory`` and ``cpu`` checks: can this machine's RAM and processor load and run the model?

Both follow what ``smoke`` would do: the precision and device ``precision.pick`` chooses from the
free VRAM and the RAM this process may use (container limits included). The RAM estimate is
documented in :mod:`bootstrap.precision`: a GPU load peaks at about the largest shard + 1.5 GB of
host RAM (measured from the files once they are downloaded, else 10 GB assumed); a CPU run needs
the whole model at its precision (fp32 = 2x the fp16 size) + 1.5 GB.

CPU features, as torch's prebuilt wheels use them:

- x86-64: torch picks its kernels at run time (``torch.backends.cpu.get_cpu_capability()``):
  AVX512 (avx512vl+bw+dq and FMA), else AVX2 (AVX2 and FMA), else DEFAULT, generic code that runs
  anywhere but several times slower. So AVX2 is the fast path, not a requirement: its absence is a
  warning when the model runs on the CPU. SSE4.1/SSE4.2 are a requirement in practice: a torch
  maintainer stated the binaries need SSE up to SSE4.2 (e.g. enabled in a VM), and torch 2.1 wheels
  were reported to die at import with "Illegal instruction" on CPUs without SSE4.1 (pytorch#116623).
- aarch64: the wheels are built for ARMv8-A with NEON (Advanced SIMD, "asimd"); SVE adds a faster
  path on CPUs that have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Optional

from bootstrap import precision
from bootstrap.checks_base import FAIL, GB, OK, SKIP, WARN, CheckResult, Facts
from bootstrap.errors import NotEnoughMemory
from bootstrap.plan import Plan
from bootstrap.probes_host import CpuInfo

WEIGHT_SUFFIXES = (".safetensors", ".bin")
X86 = {"x86_64", "amd64", "x64", "i686", "i386"}
ARM64 = {"aarch64", "arm64"}
X86_REQUIRED = ("sse4_1", "sse4_2")
X86_AVX512 = frozenset({"avx512vl", "avx512bw", "avx512dq", "fma"})
SHOWN_FEATURES = ("sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16",
                  "amx_bf16", "asimd", "sve")
FEW_CORES = 4  # below this a CPU run of a multi-GB model is painfully slow
BIG_MODEL_GB = 1.0  # "slow" warnings only for models this big (not the tiny demo model)


def model_size_gb(plan: Plan) -> float:
    """fp16 size of everything loaded: the model, or a LoRA's base + adapter."""
    model = plan.model
    return model.size_gb if model.kind == "full" else (model.base_size_gb or 0.0) + model.size_gb


def largest_shard_gb(plan: Plan) -> Optional[float]:
    """The largest weight file already downloaded (the base's, for a LoRA); None before the download."""
    model = plan.model
    folder = plan.model_dir(model.base if model.kind == "lora" and model.base else model.repo_id)
    try:
        sizes = [p.stat().st_size for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file()]
    except OSError:
        return None
    return max(sizes) / GB if sizes else None


@dataclass(frozen=True)
class LoadEstimate:
    """What ``smoke`` would do on this machine, and the memory it needs for it."""

    size_gb: float
    free_vram_gb: Optional[float]
    requested: str
    ram_available_gb: Optional[float]
    largest_shard_gb: Optional[float]  # measured; None: precision.DEFAULT_SHARD_GB assumed
    pick: Optional[precision.Pick]  # None: nothing fits (``refused`` says why)
    refused: Optional[NotEnoughMemory]

    @property
    def device(self) -> str:
        return self.pick.device if self.pick else "cpu"

    def ram_needed_gb(self, precision_name: str, device: str) -> float:
        return precision.ram_needed_gb(self.size_gb, precision_name, device, self.largest_shard_gb)

    @property
    def cpu_ram_needed_gb(self) -> Dict[str, float]:
        return {p: round(self.ram_needed_gb(p, "cpu"), 1) for p in precision.CPU_ORDER}


def load_estimate(plan: Plan, facts: Facts) -> LoadEstimate:
    def compute() -> LoadEstimate:
        memory = facts.memory
        ram = memory.available_gb if memory else None
        size, free, requested = model_size_gb(plan), facts.free_vram_gb, plan.manifest.smoke.precision
        try:
            chosen: Optional[precision.Pick] = precision.pick(size, free, requested, ram_available_gb=ram)
            refused = None
        except NotEnoughMemory as exc:
            chosen, refused = None, exc
        return LoadEstimate(size, free, requested, ram, largest_shard_gb(plan), chosen, refused)

    return facts.once("load", compute)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def check_memory(plan: Plan, facts: Facts) -> CheckResult:
    memory = facts.memory
    if memory is None:
        return CheckResult("memory", SKIP, f"RAM is not measured on {facts.probes.system()}")
    est = load_estimate(plan, facts)
    cg = memory.cgroup
    total, avail, swap = memory.usable_total_bytes, memory.usable_available_bytes, memory.usable_swap_free_bytes
    limit = f" (container limit {_gb(cg.limit_bytes)}, cgroup v{cg.version} {cg.path})" \
        if cg and cg.limit_bytes < memory.total_bytes else ""
    swap_text = f"{_gb(swap)} swap free" if memory.swap_total_bytes else "no swap"
    have = f"{_gb(avail)} of {_gb(total)} RAM available{limit}, {swap_text}"
    cpu_needs = est.cpu_ram_needed_gb
    data: Dict[str, Any] = {
        "total_bytes": memory.total_bytes, "available_bytes": memory.available_bytes,
        "swap_total_bytes": memory.swap_total_bytes, "swap_free_bytes": memory.swap_free_bytes,
        "usable_total_bytes": total, "usable_available_bytes": avail, "usable_swap_free_bytes": swap,
        "source": memory.source,
        "cgroup": None if cg is None else {"version": cg.version, "path": cg.path, "limit_bytes": cg.limit_bytes,
                                           "available_bytes": cg.available_bytes},
        "largest_shard_gb": None if est.largest_shard_gb is None else round(est.largest_shard_gb, 2),
        "cpu_needed_gb": cpu_needs, "precision": est.pick.precision if est.pick else None, "device": est.device,
    }
    if est.pick is None:
        refused = est.refused
        data["needed_gb"] = refused.need_gb if refused else None
        return CheckResult("memory", FAIL, f"{have}; {refused}", refused.remedy if refused else None, data)
    chosen, device = est.pick
    need = est.ram_needed_gb(chosen, device)
    data["needed_gb"] = round(need, 1)
    if device == "cuda":
        shard = f"largest shard {est.largest_shard_gb:.1f} GB" if est.largest_shard_gb is not None else \
            f"a shard, assumed <= {precision.DEFAULT_SHARD_GB:g} GB until downloaded,"
        how = f"loading {chosen} onto the GPU needs up to ~{need:.1f} GB ({shard} + {precision.HOST_OVERHEAD_GB:g} GB)"
    else:
        how = f"running {chosen} on the CPU needs ~{need:.1f} GB"
    cpu = ", ".join(f"{p} {n} GB" for p, n in cpu_needs.items())
    detail = f"{have}; {how}; on the CPU: {cpu}"
    if need * GB <= avail:
        return CheckResult("memory", OK, detail, data=data)
    # Only a GPU load gets here (pick refuses a CPU run that does not fit). Its estimate is an upper
    # bound: safetensors are memory-mapped and copied to the GPU tensor by tensor, so a load can
    # succeed below it. Hence a warning, never a failure.
    if need * GB <= total + swap:
        return CheckResult("memory", WARN, detail + " (more than is free now)",
                           "close programs that use memory before loading (else the load pushes them into swap "
                           "or the OS stops it)", data)
    return CheckResult("memory", WARN, detail + f" (more than this machine's RAM + swap, {_gb(total + swap)})",
                       f"the load may be stopped by the OS: add swap (>= {need - (total + swap) / GB:.1f} GB more), "
                       "raise the container's memory limit, or use a machine with more RAM", data)


def _arch(machine: str) -> str:
    m = machine.lower()
    return "x86" if m in X86 else "arm64" if m in ARM64 else m


def predicted_capability(cpu: CpuInfo) -> str:
    """The kernels torch would choose from the features (torch's own answer wins when it is installed)."""
    flags = cpu.flags
    if _arch(cpu.arch) == "arm64":
        return "SVE" if "sve" in flags else "DEFAULT"
    if X86_AVX512 <= flags:
        return "AVX512"
    # Windows cannot be asked about FMA; every CPU with AVX2 has it.
    if "avx2" in flags and ("fma" in flags or not cpu.absent_is_certain):
        return "AVX2"
    return "DEFAULT"


def _missing(flags: FrozenSet[str], arch: str) -> tuple:
    if arch == "x86":
        return tuple(f for f in X86_REQUIRED if f not in flags)
    if arch == "arm64":
        return () if "asimd" in flags else ("asimd (NEON)",)
    return ()


def check_cpu(plan: Plan, facts: Facts) -> CheckResult:
    cpu = facts.cpu
    if cpu is None:
        return CheckResult("cpu", SKIP, f"CPU features are not read on {facts.probes.system()}")
    arch = _arch(cpu.arch)
    info = facts.torch
    torch_says = info.cpu_capability if info and not info.error else None
    capability = torch_says or predicted_capability(cpu)
    shown = [f for f in SHOWN_FEATURES if f in cpu.flags]
    cores = "?" if cpu.usable_cpus is None else f"{cpu.usable_cpus:g}"
    quota = f", cgroup quota {cpu.quota_cpus:g}" if cpu.quota_cpus is not None else ""
    detail = f"{cpu.model or cpu.arch}: {cores} usable cores of {cpu.logical_cpus or '?'}{quota}; " \
             f"{' '.join(shown) or 'no SIMD features reported'}; torch CPU kernels: {capability}" + \
             ("" if torch_says else " (predicted)")
    data = {"arch": cpu.arch, "model": cpu.model, "logical_cpus": cpu.logical_cpus, "usable_cpus": cpu.usable_cpus,
            "quota_cpus": cpu.quota_cpus, "flags": sorted(cpu.flags), "source": cpu.source,
            "torch_capability": capability, "capability_from": "torch" if torch_says else "predicted"}
    missing = _missing(cpu.flags, arch)
    if missing and not torch_says:
        need = ", ".join(missing)
        if cpu.absent_is_certain:
            return CheckResult("cpu", FAIL, f"{detail}; missing {need}, which torch's prebuilt wheels need",
                               "use a newer CPU; in a VM, pass the host CPU through (QEMU/KVM: -cpu host, libvirt: "
                               "host-passthrough) so the guest sees its SSE4.2/AVX2", data)
        return CheckResult("cpu", WARN, f"{detail}; {cpu.source} does not report {need} (older Windows builds "
                           "cannot tell); torch's prebuilt wheels need it", "if importing torch fails with an "
                           "illegal instruction, the CPU lacks it: use a newer CPU", data)
    est = load_estimate(plan, facts)
    on_cpu = est.device == "cpu" and est.size_gb > BIG_MODEL_GB
    slow = []
    if on_cpu and capability == "DEFAULT" and arch == "x86":
        slow.append("no AVX2+FMA: torch uses its generic kernels, several times slower")
    if on_cpu and cpu.usable_cpus is not None and cpu.usable_cpus < FEW_CORES:
        slow.append(f"only {cores} usable cores")
    if on_cpu and est.pick and est.pick.precision == "bf16" and not cpu.flags & {"avx512_bf16", "amx_bf16"}:
        slow.append("bf16 without AVX512-BF16/AMX is emulated (slower than fp32)")
    if slow:
        return CheckResult("cpu", WARN, f"{detail}; the model runs on the CPU: " + "; ".join(slow),
                           "expect minutes per answer; a GPU (or a CPU with more cores and AVX2/AVX512) is "
                           "much faster", data)
    return CheckResult("cpu", OK, detail, data=data)
