"""``llama-bootstrap check``: can this machine run the chosen model, and if not, why and what to do.

Every check returns a :class:`CheckResult` and never prints or exits. The GPU policy of the
manifest (``requirements.gpu``) turns GPU findings into fail (required), warn (preferred) or ok
(none). Probes come from :class:`bootstrap.probes.Probes`, so all of it is testable without a GPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional
from urllib.parse import urlsplit

from bootstrap import precision
from bootstrap.checks_base import (  # noqa: F401 - re-exported: the public names of `check`
    FAIL,
    GB,
    MIB,
    OK,
    REPORT_SCHEMA_VERSION,
    SKIP,
    WARN,
    CheckResult,
    Facts,
    Report,
)
from bootstrap.checks_host import check_cpu, check_memory, load_estimate
from bootstrap.fsutil import writable_problem
from bootstrap.plan import Plan
from bootstrap.probes import Probes

SUPPORTED_PLATFORMS = {("Linux", "x86_64"), ("Linux", "aarch64"), ("Windows", "AMD64"), ("Windows", "x86_64")}


def _gpu_status(plan: Plan) -> str:
    """How bad a missing/unfit GPU is under this manifest's policy."""
    return {"required": FAIL, "preferred": WARN, "none": OK}[plan.manifest.requirements.gpu]


# -- the checks ---------------------------------------------------------------------------


def check_platform(plan: Plan, facts: Facts) -> CheckResult:
    system, machine = facts.probes.system(), facts.probes.machine()
    data = {"os": system, "arch": machine}
    if (system, machine) in SUPPORTED_PLATFORMS:
        return CheckResult("platform", OK, f"{system} {machine}", data=data)
    if system == "Darwin":
        return CheckResult("platform", WARN, f"{system} {machine}: no CUDA; only CPU (slow) or MPS runs here",
                           "use a Linux or Windows machine with an NVIDIA GPU for the 7B/13B models", data)
    return CheckResult("platform", FAIL, f"{system} {machine} is not a supported platform",
                       "use Linux (x86_64/aarch64) or Windows (x86_64)", data)


def _version_tuple(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _satisfies(version: tuple, spec: str) -> bool:
    m = re.match(r"^(>=|==|>|<=|<|~=)?\s*(.+)$", spec.strip())
    op, want = (m.group(1) or "=="), _version_tuple(m.group(2))
    have = version[: len(want)] if op in ("==", "~=") else version
    return {
        ">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want, "==": have == want,
        "~=": version[: len(want) - 1] == want[:-1] and version >= want,
    }[op]


def check_python(plan: Plan, facts: Facts) -> CheckResult:
    spec = plan.manifest.requirements.python
    have = facts.probes.python_version
    text = ".".join(map(str, have))
    env_minor = plan.manifest.env.python
    data = {"version": text, "required": spec}
    if not _satisfies(have, spec):
        return CheckResult("python", FAIL, f"Python {text} does not satisfy {spec}",
                           f"run inside the conda env {plan.manifest.env.name} (Python {env_minor}); "
                           "./install.sh creates it", data)
    if f"{have[0]}.{have[1]}" != env_minor:
        return CheckResult("python", WARN, f"Python {text} satisfies {spec}, but the locked env uses {env_minor}",
                           f"the tested setup is the conda env {plan.manifest.env.name}; ./install.sh creates it",
                           data)
    return CheckResult("python", OK, f"Python {text} ({spec})", data=data)


def check_conda_env(plan: Plan, facts: Facts) -> CheckResult:
    want = plan.manifest.env.name
    env = facts.probes.environ
    active, prefix = env.get("CONDA_DEFAULT_ENV"), env.get("CONDA_PREFIX")
    data = {"want": want, "active": active, "prefix": prefix}
    if active == want or (prefix and Path(prefix).name == want):
        return CheckResult("conda_env", OK, f"running in conda env {want} ({prefix})", data=data)
    where = f"conda env {active}" if active else "no conda env"
    return CheckResult("conda_env", WARN, f"running in {where}, not {want}",
                       f"conda activate {want} (./install.sh creates it), or ignore this for the demo", data)


def check_gpu(plan: Plan, facts: Facts) -> CheckResult:
    report = facts.gpu
    bad = _gpu_status(plan)
    if report is None:
        return CheckResult("gpu", bad, "no NVIDIA driver: nvidia-smi not found",
                           None if bad == OK else "install the NVIDIA driver (nvidia-smi must work), "
                           "or set requirements.gpu: preferred to run on the CPU (slow)")
    if not report.gpus:
        return CheckResult("gpu", bad, "nvidia-smi found but it lists no GPU (driver not loaded?)",
                           None if bad == OK else
                           "run nvidia-smi and fix what it reports; reboot after a driver update")
    parts = []
    for g in report.gpus:
        cap = f", compute {g.compute_capability}" if g.compute_capability else ""
        parts.append(f"GPU{g.index} {g.name}: {g.memory_total_mib / 1024:.1f} GiB total, "
                     f"{g.memory_free_mib / 1024:.1f} GiB free{cap}")
    cuda = report.cuda_driver_version or "?"
    detail = "; ".join(parts) + f"; driver {report.gpus[0].driver_version}, supports CUDA <= {cuda}"
    data = {"gpus": [asdict(g) for g in report.gpus], "cuda_driver_version": report.cuda_driver_version}
    return CheckResult("gpu", OK, detail, data=data)


def check_torch(plan: Plan, facts: Facts) -> CheckResult:
    info = facts.torch
    gpu = facts.gpu
    has_gpu = bool(gpu and gpu.gpus)
    if info is None:
        return CheckResult("torch", WARN, "torch is not installed (smoke needs it)",
                           "install the pip layer: pip install --require-hashes -r requirements/<platform>.txt")
    if info.error:
        return CheckResult("torch", FAIL, f"torch fails to import: {info.error}",
                           "reinstall the pip layer into a clean env (./install.sh)")
    data = {"version": info.version, "cuda_version": info.cuda_version, "cuda_available": info.cuda_available,
            "arch_list": info.arch_list}
    if not has_gpu:
        kind = f"CUDA {info.cuda_version}" if info.cuda_version else "CPU-only"
        return CheckResult("torch", OK, f"torch {info.version} ({kind}); no GPU to use", data=data)
    if info.cuda_version is None:
        return CheckResult("torch", FAIL, f"torch {info.version} is a CPU-only build but this machine has a GPU",
                           "install the CUDA pip layer: ./install.sh --torch cuda", data)
    driver = gpu.cuda_driver_version if gpu else None
    if driver and _version_tuple(driver) < _version_tuple(info.cuda_version)[:2]:
        return CheckResult("torch", FAIL,
                           f"torch {info.version} needs CUDA {info.cuda_version}; the driver supports <= {driver}",
                           "update the NVIDIA driver (or use a torch built for an older CUDA)", data)
    if not info.cuda_available:
        return CheckResult("torch", FAIL, f"torch {info.version} (CUDA {info.cuda_version}) cannot use the GPU",
                           "check the driver with nvidia-smi; reboot after a driver update", data)
    missing = [f"{g.name} (sm_{major}{minor})" for (major, minor), g in zip(info.device_capabilities, gpu.gpus)
               if not arch_supported(major, minor, info.arch_list)]
    if missing:
        return CheckResult("torch", FAIL,
                           f"torch {info.version} has no kernels for {', '.join(missing)}; built for "
                           f"{' '.join(info.arch_list)}",
                           "install a torch build that supports this GPU (newer GPU: newer torch; "
                           "old GPU: older torch)", data)
    return CheckResult("torch", OK, f"torch {info.version}, CUDA {info.cuda_version}, GPU usable", data=data)


def arch_supported(major: int, minor: int, arch_list: List[str]) -> bool:
    """Can a torch built for ``arch_list`` run on a GPU of compute capability major.minor?

    SASS for sm_Xy runs on GPUs of the same major with minor >= y; PTX (compute_XY) is JIT-compiled
    for any GPU of capability >= XY.
    """
    cap = major * 10 + minor
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = "".join(ch for ch in number if ch.isdigit())
        if not digits:
            continue
        value = int(digits)
        if kind == "sm" and value // 10 == major and value <= cap:
            return True
        if kind == "compute" and value <= cap:
            return True
    return False


def check_vram(plan: Plan, facts: Facts) -> CheckResult:
    """VRAM per precision and what ``auto`` picks; the host RAM each choice needs is in the table too."""
    model = plan.model
    est = load_estimate(plan, facts)
    size, free, requested = est.size_gb, est.free_vram_gb, est.requested
    table = precision.fits_table(size, free)
    needs = {p: round(precision.needed_gb(size, p), 1) for p in precision.FACTORS}
    chosen, device = est.pick if est.pick else (None, "cpu")
    gpu_ram, cpu_ram = round(est.ram_needed_gb("fp16", "cuda"), 1), est.cpu_ram_needed_gb
    data = {"free_vram_gb": None if free is None else round(free, 2), "needed_gb": needs, "fits": table,
            "precision": chosen, "device": device, "ram_needed_gb": {"cuda": gpu_ram, "cpu": cpu_ram}}
    cpu_text = " / ".join(f"{p} {n} GB" for p, n in cpu_ram.items())
    if chosen is None:
        outcome = f"{requested} -> nothing fits: too little RAM for the CPU too ({cpu_text}; see memory)"
    else:
        ram = gpu_ram if device == "cuda" else round(est.ram_needed_gb(chosen, "cpu"), 1)
        outcome = f"{requested} -> {chosen} on {device} (~{ram} GB RAM)"
    if free is None:
        return CheckResult("vram", _gpu_status(plan),
                           f"no GPU: {plan.model_key} runs on the CPU, very slowly; {outcome}",
                           None if _gpu_status(plan) == OK else "use a machine with an NVIDIA GPU "
                           f"(>= {model.min_vram_gb:g} GB VRAM)", data)
    fits = ", ".join(f"{p} {'fits' if table[p] else 'no'} ({needs[p]} GB)" for p in precision.GPU_ORDER)
    detail = f"{free:.1f} GB free VRAM; {fits}; {outcome}"
    if device == "cpu":
        return CheckResult("vram", _gpu_status(plan), detail,
                           f"free VRAM (close other GPU programs) or use a GPU with >= {model.min_vram_gb:g} GB",
                           data)
    if requested != "auto" and not table.get(chosen or "", False):
        return CheckResult("vram", FAIL, detail + f" (but {chosen} does not fit)",
                           "set smoke.precision: auto (or int8/int4)", data)
    status = OK if chosen in ("fp16", "bf16") or requested != "auto" else WARN
    remedy = None if status == OK else f"{chosen} is slower and slightly less accurate than fp16"
    return CheckResult("vram", status, detail, remedy, data)


def _present_bytes(folder: Path) -> int:
    """Bytes already downloaded into ``folder`` (0 when it cannot be read: the writability check says why)."""
    try:
        if not folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    except OSError:
        return 0


UNWRITABLE_REMEDY = {
    "not a folder": "move that file away, or set weights.dir to a folder",
    "read-only file system": "remount it read-write, or set weights.dir to a folder on a writable disk",
    "permission denied": "give this user write access to it (chown/chmod), or set weights.dir to a folder you own",
}


def check_disk(plan: Plan, facts: Facts) -> CheckResult:
    model = plan.model
    where, problem = facts.probes.folder_problem(plan.weights_dir)
    if problem is not None:
        kind = "a symlink to a file" if where.is_symlink() else "a file"
        what = f"{where} is {kind}, not a folder" if problem == "not a folder" else \
            f"{where} is not writable ({problem})"
        return CheckResult("disk", FAIL, f"weights.dir {plan.weights_dir} cannot be written: {what}",
                           UNWRITABLE_REMEDY.get(problem, "set weights.dir to a writable folder"),
                           {"path": str(where), "weights_dir": str(plan.weights_dir), "problem": problem})
    want = model.size_gb * GB
    present = _present_bytes(plan.model_dir(model.repo_id))
    if model.kind == "lora" and model.base:
        want += (model.base_size_gb or 0) * GB
        present += _present_bytes(plan.model_dir(model.base))
    margin = plan.manifest.requirements.disk_margin_gb * GB
    need = max(0.0, want - present) + margin
    where, free = facts.probes.disk_free(plan.weights_dir)
    data = {"path": str(where), "free_bytes": free, "need_bytes": int(need), "present_bytes": present}
    folders = [plan.model_dir(r) for r in (model.repo_id, model.base if model.kind == "lora" else None) if r]
    unwritable = next((p for p in map(writable_problem, folders) if p), None)
    if unwritable:
        return CheckResult("disk", FAIL, f"weights.dir cannot be written: {unwritable}",
                           "make it writable for this user, or set weights.dir to a folder on a writable disk", data)
    detail = f"{free / GB:.1f} GB free at {where}; need {need / GB:.1f} GB ({plan.model_key} + " \
             f"{plan.manifest.requirements.disk_margin_gb:g} GB margin)"
    if free < need:
        return CheckResult("disk", FAIL, detail,
                           f"free {((need - free) / GB):.1f} GB there, or set weights.dir to a bigger disk", data)
    return CheckResult("disk", OK, detail, data=data)


def check_git(plan: Plan, facts: Facts) -> CheckResult:
    path = facts.probes.which("git")
    if path is None:
        return CheckResult("git", FAIL, "git not found on PATH",
                           "install git (apt-get install git / winget install Git.Git)")
    out = facts.probes.run([path, "--version"])
    version = out.stdout.strip() if out and out.returncode == 0 else "unknown version"
    return CheckResult("git", OK, f"{version} ({path})", data={"path": path})


def check_network(plan: Plan, facts: Facts, *, offline: bool = False) -> CheckResult:
    """Which weights sources answer (in the profile's order), and the git source."""
    if offline:
        return CheckResult("network", SKIP, "skipped (--offline)")
    results: Dict[str, str] = {}
    sources_up, sources_down, down = [], [], []
    for spec in plan.sources:
        if spec.kind == "dir":
            ok = os.path.isdir(spec.location) and os.access(spec.location, os.R_OK | os.X_OK)
            why = "a readable folder" if ok else "not a readable folder (not mounted?)"
        else:
            ok, why = facts.probes.reachable(spec.location, 5.0)
        results[spec.location] = why
        (sources_up if ok else sources_down).append(f"{spec} ({why})")
    if urlsplit(plan.source_url).scheme == "https":
        ok, why = facts.probes.reachable(plan.source_url, 5.0)
        results[plan.source_url] = why
        if not ok:
            down.append(f"git source {plan.source_url} ({why})")
    hint = "try --profile cn (mirrors reachable from mainland China)" if plan.profile_key != "cn" else \
        "check the proxy settings (HTTPS_PROXY) and the firewall"
    data = {"targets": results, "sources_reachable": len(sources_up), "sources": len(plan.sources)}
    if not sources_up or down:
        what = down + ([f"no weights source answers: {'; '.join(sources_down)}"] if not sources_up else [])
        return CheckResult("network", FAIL, "unreachable: " + "; ".join(what), hint, data)
    detail = "weights sources reachable: " + ", ".join(sources_up)
    if sources_down:
        return CheckResult("network", WARN, detail + "; unreachable (skipped by pull): " + "; ".join(sources_down),
                           "pull falls back to the next source in order", data)
    return CheckResult("network", OK, detail + ("; git source reachable" if plan.source_url in results else ""),
                       data=data)


def check_token(plan: Plan, facts: Facts) -> CheckResult:
    model = plan.model
    gated = [r for r, g in ((model.repo_id, model.gated), (model.base, model.kind == "lora" and model.base_gated))
             if g and r]
    if not gated:
        return CheckResult("token", OK, "no gated repo needed" + (" (token set)" if plan.token else ""))
    if plan.token:
        return CheckResult("token", OK, f"HF_TOKEN set for gated {', '.join(gated)}")
    return CheckResult("token", FAIL, f"{', '.join(gated)} is gated and HF_TOKEN is not set",
                       f"accept the license at {plan.endpoint}/{gated[0]}, create a read token, "
                       "and export HF_TOKEN=<token>")


CHECKS: List[Callable[[Plan, Facts], CheckResult]] = [
    check_platform, check_python, check_conda_env, check_gpu, check_torch, check_vram, check_memory, check_cpu,
    check_disk, check_git, check_token,
]


def run_checks(plan: Plan, probes: Optional[Probes] = None, *, offline: bool = False) -> Report:
    """All checks, in a fixed order. Never prints, never exits."""
    facts = Facts(probes or Probes())
    results = [check(plan, facts) for check in CHECKS]
    results.append(check_network(plan, facts, offline=offline))
    return Report(results)
