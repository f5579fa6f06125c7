"""``check`` with injected probes: every check's ok / warn / fail, no GPU needed.

GPU facts come from the real-format nvidia-smi outputs in tests/fixtures/nvidia-smi, parsed by the
real parser (helpers_core.make_probes wires a fake nvidia-smi into ``Probes``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from bootstrap import checks as checks_mod
from bootstrap.checks import (
    FAIL,
    OK,
    REPORT_SCHEMA_VERSION,
    SKIP,
    WARN,
    CheckResult,
    Facts,
    Report,
    arch_supported,
    run_checks,
)
from bootstrap.plan import Plan
from bootstrap.probes import Gpu, GpuReport, TorchInfo
from helpers_core import (
    ARCH_CU121,
    GB,
    LORA_7B,
    MIB,
    FakeNvidiaSmi,
    bootstrap_cmd,
    clean_env,
    listing,
    make_plan,
    make_probes,
    smi,
    torch_cpu,
    torch_cuda,
    write_manifest,
)

CHECK_NAMES = ["platform", "python", "conda_env", "gpu", "torch", "vram", "memory", "cpu", "disk", "git", "token",
               "network"]
RTX_5090 = GpuReport([Gpu(0, "NVIDIA GeForce RTX 5090", 32607, 32120, "570.124.04", "12.0")], "12.8")


def run(plan: Plan, *, offline: bool = True, **probe_kwargs: Any) -> Dict[str, CheckResult]:
    report = run_checks(plan, make_probes(**probe_kwargs), offline=offline)
    assert [c.name for c in report.checks] == CHECK_NAMES
    return {c.name: c for c in report.checks}


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return make_plan(tmp_path / "kit")


def policy_plan(tmp_path: Path, gpu: str, **changes: Any) -> Plan:
    return make_plan(tmp_path / "kit", {"requirements.gpu": gpu, **changes})


# -- platform, python, conda env -------------------------------------------------------------


@pytest.mark.parametrize(
    "system, machine, want",
    [("Linux", "x86_64", OK), ("Linux", "aarch64", OK), ("Windows", "AMD64", OK), ("Darwin", "arm64", WARN),
     ("Darwin", "x86_64", WARN), ("SunOS", "i86pc", FAIL), ("Linux", "armv7l", FAIL), ("FreeBSD", "amd64", FAIL)],
)
def test_platform(plan: Plan, system: str, machine: str, want: str) -> None:
    c = run(plan, system=system, machine=machine)["platform"]
    assert c.status == want
    assert c.data == {"os": system, "arch": machine}
    assert (c.remedy is None) == (want == OK)


@pytest.mark.parametrize(
    "version, want",
    [((3, 8, 18), FAIL), ((3, 9, 5), FAIL), ((3, 9, 6), OK), ((3, 9, 18), OK), ((3, 10, 13), WARN),
     ((3, 11, 7), WARN), ((2, 7, 18), FAIL)],
)
def test_python_against_requirements(plan: Plan, version: Tuple[int, int, int], want: str) -> None:
    c = run(plan, python=version)["python"]
    assert c.status == want
    assert c.data["version"] == ".".join(map(str, version))
    if want != OK:
        assert "myenv" in c.remedy


@pytest.mark.parametrize(
    "spec, version, want",
    [("==3.9", (3, 9, 18), OK), ("==3.9", (3, 10, 0), FAIL), ("<3.10", (3, 9, 18), OK), ("<3.10", (3, 10, 0), FAIL),
     (">3.9.18", (3, 9, 18), FAIL), ("~=3.9.6", (3, 9, 18), OK), ("~=3.9.6", (3, 10, 0), FAIL)],
)
def test_python_specifier_operators(tmp_path: Path, spec: str, version: Tuple[int, int, int], want: str) -> None:
    plan = make_plan(tmp_path, {"requirements.python": spec})
    assert run(plan, python=version)["python"].status == want


@pytest.mark.parametrize(
    "environ, want",
    [({"CONDA_DEFAULT_ENV": "myenv", "CONDA_PREFIX": "/opt/conda/envs/myenv"}, OK),
     ({"CONDA_PREFIX": "C:\\Users\\me\\miniforge3\\envs\\myenv"}, OK) if os.name == "nt" else
     ({"CONDA_PREFIX": "/home/me/miniforge3/envs/myenv"}, OK),
     ({"CONDA_DEFAULT_ENV": "base", "CONDA_PREFIX": "/opt/conda"}, WARN),
     ({}, WARN)],
    ids=["active", "prefix-only", "other-env", "no-conda"],
)
def test_conda_env(plan: Plan, environ: Dict[str, str], want: str) -> None:
    c = run(plan, environ=environ)["conda_env"]
    assert c.status == want
    if want == WARN:
        assert "conda activate myenv" in c.remedy


# -- gpu × policy -------------------------------------------------------------------------------

NO_SMI = None  # nvidia-smi not on PATH


@pytest.mark.parametrize(
    "gpu, policy, want",
    [
        (NO_SMI, "required", FAIL), (NO_SMI, "preferred", WARN), (NO_SMI, "none", OK),
        ("no-driver", "required", FAIL), ("no-driver", "preferred", WARN), ("no-driver", "none", OK),
        ("rtx3060", "required", OK), ("rtx3060", "preferred", OK), ("rtx3060", "none", OK),
    ],
)
def test_gpu_policy(tmp_path: Path, gpu: Optional[str], policy: str, want: str) -> None:
    c = run(policy_plan(tmp_path, policy), gpu=gpu)["gpu"]
    assert c.status == want
    if gpu is None:
        assert "nvidia-smi not found" in c.detail
    elif gpu == "no-driver":
        assert "no GPU" in c.detail
    if want == OK:
        assert c.remedy is None
    else:
        assert c.remedy and "preferred" in c.remedy if gpu is None else c.remedy


def test_gpu_detail_and_data(plan: Plan) -> None:
    c = run(plan, gpu="rtx3060")["gpu"]
    assert "NVIDIA GeForce RTX 3060" in c.detail and "12.0 GiB total" in c.detail and "compute 8.6" in c.detail
    assert "535.104.05" in c.detail and "CUDA <= 12.2" in c.detail
    assert c.data["cuda_driver_version"] == "12.2"
    assert c.data["gpus"][0]["memory_free_mib"] == 11786


def test_two_gpus_are_both_listed(plan: Plan) -> None:
    c = run(plan, gpu="two-gpus")["gpu"]
    assert "GPU0" in c.detail and "GPU1" in c.detail and len(c.data["gpus"]) == 2


def test_gpu_facts_are_gathered_once(plan: Plan) -> None:
    runner = smi("rtx3060")
    run(plan, gpu=runner, torch=torch_cuda())
    assert len(runner.calls) == 2  # one query, one -q, shared by gpu, torch and vram


# -- torch ----------------------------------------------------------------------------------------


def test_torch_not_installed_is_a_warning(plan: Plan) -> None:
    c = run(plan, torch=None)["torch"]
    assert c.status == WARN and "not installed" in c.detail


def test_torch_import_error_fails(plan: Plan) -> None:
    broken = TorchInfo("?", None, False, error="OSError: libcudnn.so.8: cannot open shared object file")
    c = run(plan, torch=broken)["torch"]
    assert c.status == FAIL and "libcudnn.so.8" in c.detail


def test_cpu_torch_with_a_gpu_fails(plan: Plan) -> None:
    c = run(plan, gpu="rtx3060", torch=torch_cpu())["torch"]
    assert c.status == FAIL and "CPU-only" in c.detail and "cuda" in c.remedy


@pytest.mark.parametrize("info", [torch_cpu(), torch_cuda(available=False)], ids=["cpu-build", "cuda-build"])
def test_torch_without_a_gpu_is_fine(plan: Plan, info: TorchInfo) -> None:
    assert run(plan, gpu=None, torch=info)["torch"].status == OK


def test_driver_older_than_torch_cuda_fails(plan: Plan) -> None:
    # driver 470 supports CUDA 11.4; a cu121 torch cannot run on it
    c = run(plan, gpu="old-driver", torch=torch_cuda([(6, 1)]))["torch"]
    assert c.status == FAIL
    assert "12.1" in c.detail and "11.4" in c.detail and "driver" in c.remedy


@pytest.mark.parametrize("torch_cuda_version, want", [("12.1", OK), ("12.2", OK), ("11.8", OK), ("12.4", FAIL)])
def test_driver_cuda_comparison(plan: Plan, torch_cuda_version: str, want: str) -> None:
    # the RTX 3060 fixture's driver supports CUDA 12.2
    assert run(plan, gpu="rtx3060", torch=torch_cuda(cuda=torch_cuda_version))["torch"].status == want


def test_cuda_torch_that_cannot_see_the_gpu_fails(plan: Plan) -> None:
    c = run(plan, gpu="rtx3060", torch=torch_cuda(available=False))["torch"]
    assert c.status == FAIL and "cannot use the GPU" in c.detail


def test_newer_gpu_than_the_torch_build_fails(plan: Plan) -> None:
    """RTX 5090 (compute 12.0) with a torch built up to sm_90 and no PTX: no kernels."""
    c = run(plan, gpu=RTX_5090, torch=torch_cuda([(12, 0)]))["torch"]
    assert c.status == FAIL
    assert "RTX 5090" in c.detail and "sm_120" in c.detail and "sm_90" in c.detail


def test_newer_gpu_runs_through_ptx(plan: Plan) -> None:
    info = torch_cuda([(12, 0)], arch=ARCH_CU121 + ["compute_90"])
    assert run(plan, gpu=RTX_5090, torch=info)["torch"].status == OK


def test_sm89_runs_sm86_kernels(plan: Plan) -> None:
    """RTX 4090 (8.9) on a torch with sm_86 but not sm_89: same major, lower minor, runs."""
    info = torch_cuda([(8, 9)], arch=["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86"])
    assert run(plan, gpu="rtx4090", torch=info)["torch"].status == OK


def test_every_gpu_is_checked(plan: Plan) -> None:
    info = torch_cuda([(8, 6), (12, 0)])
    two = GpuReport([Gpu(0, "NVIDIA GeForce RTX 3090", 24576, 23911, "570.124.04", "8.6"), RTX_5090.gpus[0]], "12.8")
    c = run(plan, gpu=two, torch=info)["torch"]
    assert c.status == FAIL and "RTX 5090" in c.detail and "RTX 3090" not in c.detail


def test_torch_all_good(plan: Plan) -> None:
    c = run(plan, gpu="rtx3060", torch=torch_cuda([(8, 6)]))["torch"]
    assert c.status == OK and c.remedy is None
    assert c.data["cuda_version"] == "12.1" and c.data["cuda_available"] is True


@pytest.mark.parametrize(
    "cap, arch, want",
    [
        ((8, 9), ["sm_86"], True),
        ((8, 6), ["sm_86"], True),
        ((8, 0), ["sm_86"], False),  # SASS does not run on a lower minor
        ((8, 9), ["sm_90"], False),
        ((9, 0), ["sm_80", "sm_86"], False),  # SASS does not cross majors
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX is JIT-compiled upwards
        ((7, 5), ["compute_80"], False),  # but never downwards
        ((12, 0), ARCH_CU121, False),
        ((12, 0), ["sm_120"], True),
        ((10, 0), ["sm_100a"], True),
        ((8, 6), [], False),
    ],
)
def test_arch_supported(cap: Tuple[int, int], arch: List[str], want: bool) -> None:
    assert arch_supported(cap[0], cap[1], arch) is want


# -- vram -----------------------------------------------------------------------------------------


def test_vram_12gb_card_runs_the_7b_in_int8(plan: Plan) -> None:
    """The issue's example: RTX 3060 12 GB, 7B chat (13.5 GB of fp16 weights)."""
    c = run(plan, gpu="rtx3060")["vram"]
    assert c.data["free_vram_gb"] == pytest.approx(11786 * MIB / GB, abs=0.01)
    assert c.data["fits"]["fp16"] is False and c.data["fits"]["int8"] is True
    assert (c.data["precision"], c.data["device"]) == ("int8", "cuda")
    assert c.status == WARN  # runs, but not at the best precision
    assert "auto -> int8 on cuda" in c.detail and "fp16 no" in c.detail


def test_vram_12gb_card_with_fp16_forced_fails(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"smoke.precision": "fp16"})
    c = run(plan, gpu="rtx3060")["vram"]
    assert c.status == FAIL and "does not fit" in c.detail and "auto" in c.remedy


def test_vram_12gb_card_with_int8_asked_is_ok(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"smoke.precision": "int8"})
    assert run(plan, gpu="rtx3060")["vram"].status == OK


def test_vram_24gb_card_runs_fp16(plan: Plan) -> None:
    c = run(plan, gpu="rtx4090")["vram"]
    assert c.status == OK and c.data["precision"] == "fp16" and c.data["device"] == "cuda"


@pytest.mark.parametrize("policy, want", [("required", FAIL), ("preferred", WARN), ("none", OK)])
def test_vram_4gb_card_falls_back_to_cpu(tmp_path: Path, policy: str, want: str) -> None:
    c = run(policy_plan(tmp_path, policy), gpu="gtx1650-4gb")["vram"]
    assert (c.data["precision"], c.data["device"]) == ("fp32", "cpu")
    assert c.data["fits"]["int4"] is False  # int4 needs 5.05 GB; the card has 4.09 GB free
    assert c.status == want


@pytest.mark.parametrize("policy, want", [("required", FAIL), ("preferred", WARN), ("none", OK)])
def test_vram_without_gpu(tmp_path: Path, policy: str, want: str) -> None:
    c = run(policy_plan(tmp_path, policy), gpu=None)["vram"]
    assert c.status == want and c.data["free_vram_gb"] is None
    assert "CPU" in c.detail and "auto -> fp32 on cpu (~28.5 GB RAM)" in c.detail  # RAM: 13.5 * 2 + 1.5


def test_vram_adds_up_gpus_for_the_13b(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, model="llama2-chinese-13b-chat")
    one = run(plan, gpu="rtx4090")["vram"]
    two = run(plan, gpu="two-gpus")["vram"]
    assert one.data["precision"] == "int8" and one.status == WARN  # fp16 needs 27.03 GB
    assert two.data["precision"] == "fp16" and two.status == OK  # 2 x 24 GB


def test_vram_lora_counts_the_base(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, model=LORA_7B)
    c = run(plan, gpu="rtx4090")["vram"]
    assert c.data["needed_gb"]["fp16"] == pytest.approx(13.6 + 1, abs=0.05)


# -- disk -----------------------------------------------------------------------------------------


def test_disk_short_fails_with_numbers(plan: Plan) -> None:
    c = run(plan, free_bytes=10 * GB)["disk"]
    assert c.status == FAIL
    assert "10.0 GB free" in c.detail and "need 15.5 GB" in c.detail  # 13.5 + 2 margin
    assert "5.5 GB" in c.remedy
    assert c.data["need_bytes"] == int(15.5 * GB) and c.data["free_bytes"] == 10 * GB


def test_disk_enough_is_ok(plan: Plan) -> None:
    assert run(plan, free_bytes=16 * GB)["disk"].status == OK


def test_disk_is_measured_where_the_weights_go(plan: Plan) -> None:
    seen: List[Path] = []
    probes = make_probes()
    probes.disk_free = lambda path: (seen.append(path), (path, 100 * GB))[1]
    report = run_checks(plan, probes, offline=True)
    assert seen == [plan.weights_dir]
    assert next(c for c in report.checks if c.name == "disk").data["path"] == str(plan.weights_dir)


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


def test_downloaded_bytes_reduce_the_need(plan: Plan) -> None:
    folder = plan.model_dir(plan.model.repo_id)
    _sparse(folder / "pytorch_model-00001-of-00002.bin", 10 * GB)
    _sparse(folder / ".cache" / "huggingface" / "download" / "x.incomplete", 3 * GB)  # not counted
    c = run(plan, free_bytes=6 * GB)["disk"]
    assert c.data["present_bytes"] == 10 * GB
    assert c.data["need_bytes"] == int(5.5 * GB)  # 13.5 - 10 + 2
    assert c.status == OK


def test_disk_lora_needs_the_base_too(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, model=LORA_7B)
    c = run(plan, free_bytes=15.55 * GB)["disk"]
    assert c.data["need_bytes"] == int(15.6 * GB)  # 0.1 + 13.5 + 2
    assert c.status == FAIL
    _sparse(plan.model_dir(plan.model.base) / "model.safetensors", 13 * GB)
    assert run(plan, free_bytes=15.55 * GB)["disk"].status == OK


# -- disk: a weights.dir that cannot be written ------------------------------------------------------


def disk_check(plan: Plan) -> CheckResult:
    """The disk check with the real writability probe (make_probes keeps the real one)."""
    return run(plan)["disk"]


def test_a_file_where_weights_dir_should_be(plan: Plan) -> None:
    plan.weights_dir.parent.mkdir(parents=True, exist_ok=True)
    plan.weights_dir.write_text("not a folder")
    c = disk_check(plan)
    assert c.status == FAIL
    assert f"{plan.weights_dir} is a file, not a folder" in c.detail and "move that file away" in c.remedy
    assert c.data == {"path": str(plan.weights_dir), "weights_dir": str(plan.weights_dir), "problem": "not a folder"}
    assert plan.weights_dir.read_text() == "not a folder"  # untouched


def test_a_file_above_weights_dir(tmp_path: Path) -> None:
    plan = make_plan(tmp_path / "kit", {"weights.dir": "blocked/models"})
    (tmp_path / "kit" / "blocked").write_text("x")
    c = disk_check(plan)
    assert c.status == FAIL and c.data["path"] == str(tmp_path / "kit" / "blocked")


def test_a_symlink_to_a_file_where_weights_dir_should_be(plan: Plan, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    plan.weights_dir.symlink_to(target)
    c = disk_check(plan)
    assert c.status == FAIL and c.data["problem"] == "not a folder"


def test_a_symlink_to_a_folder_is_fine(plan: Plan, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    plan.weights_dir.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert disk_check(plan).status == OK


def _mount(argv: List[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(argv[:3])}...: {proc.stderr.strip() or proc.returncode})")


@pytest.fixture
def read_only_mounts(tmp_path: Path) -> Iterator[Dict[str, Path]]:
    """A tmpfs remounted read-only and a read-only bind mount, both under tmp_path (needs root)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root on Linux")
    tmpfs, source, bind = tmp_path / "tmpfs", tmp_path / "source", tmp_path / "bind"
    for folder in (tmpfs, source, bind):
        folder.mkdir()
    mounted: List[Path] = []
    try:
        _mount(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmpfs)])
        mounted.append(tmpfs)
        (tmpfs / "models").mkdir()
        _mount(["mount", "-o", "remount,ro", str(tmpfs)])
        (source / "models").mkdir()
        _mount(["mount", "--bind", str(source), str(bind)])
        mounted.append(bind)
        _mount(["mount", "-o", "remount,bind,ro", str(bind)])
        yield {"tmpfs": tmpfs, "bind": bind}
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", str(folder)], capture_output=True, check=False)


@pytest.mark.parametrize("kind, below", [("tmpfs", "models"), ("tmpfs", "models/new"), ("bind", "models")])
def test_read_only_weights_dir_fails_the_disk_check(tmp_path: Path, read_only_mounts: Dict[str, Path], kind: str,
                                                     below: str) -> None:
    weights = read_only_mounts[kind] / below
    plan = make_plan(tmp_path / "kit", {"weights.dir": str(weights)})
    before = listing(read_only_mounts[kind])
    c = disk_check(plan)
    assert c.status == FAIL
    assert c.data["problem"] == "read-only file system" and c.data["path"] == str(read_only_mounts[kind] / "models")
    assert str(weights) in c.detail and "remount it read-write" in c.remedy
    assert listing(read_only_mounts[kind]) == before


def test_read_only_weights_dir_through_the_cli(tmp_path: Path, read_only_mounts: Dict[str, Path]) -> None:
    """The real command, real probes: exit 1, the disk check failed with the path, no traceback."""
    manifest = write_manifest(tmp_path / "kit", {"weights.dir": str(read_only_mounts["tmpfs"] / "models")})
    proc = subprocess.run(bootstrap_cmd("check", "--json", "--offline", "--manifest", str(manifest)),
                          capture_output=True, text=True, env=clean_env(), timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    disk = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "disk")
    assert disk["status"] == FAIL and disk["data"]["problem"] == "read-only file system"


def test_unwritable_weights_dir_fails_the_disk_check(plan: Plan) -> None:
    """EACCES: a folder this user may not write. As root (who may write anywhere) the check runs in a
    forked child that drops to the nobody user; the first entry it cannot write is reported."""
    plan.weights_dir.mkdir(parents=True)
    plan.weights_dir.chmod(0o555)
    facts = Facts(make_probes())
    if os.geteuid() != 0:
        c = checks_mod.check_disk(plan, facts)
        assert c.status == FAIL and c.data["path"] == str(plan.weights_dir)
        assert c.data["problem"] == "permission denied" and "chown/chmod" in c.remedy
        return
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run the check, report, exit without cleanup
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            c = checks_mod.check_disk(plan, facts)
            os.write(write, json.dumps({"status": c.status, "data": c.data, "remedy": c.remedy}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        out = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    c = json.loads(out)
    assert c["status"] == FAIL and c["data"]["problem"] == "permission denied" and "chown/chmod" in c["remedy"]
    where = Path(c["data"]["path"])
    assert where == plan.weights_dir or where in plan.weights_dir.parents


# -- git, network, token ----------------------------------------------------------------------


def test_git_missing_fails(plan: Plan) -> None:
    c = run(plan, which={})["git"]
    assert c.status == FAIL and "git" in c.remedy


def test_git_present(plan: Plan) -> None:
    c = run(plan)["git"]
    assert c.status == OK and "git version 2.39.5" in c.detail and c.data["path"] == "/usr/bin/git"


def test_network_unreachable_suggests_the_cn_profile(plan: Plan) -> None:
    seen: List[str] = []

    def down(url: str, timeout: float) -> Tuple[bool, str]:
        seen.append(url)
        return False, "[Errno 110] Connection timed out"

    c = run(plan, offline=False, reachable=down)["network"]
    assert c.status == FAIL
    assert "--profile cn" in c.remedy
    assert "https://huggingface.co" in c.detail and "Connection timed out" in c.detail
    assert seen == ["https://huggingface.co", "https://github.com/FlagAlpha/Llama2-Chinese.git"]


def test_network_unreachable_on_the_cn_profile_points_at_the_proxy(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, profile="cn")
    c = run(plan, offline=False, reachable=lambda url, t: (False, "timed out"))["network"]
    assert c.status == FAIL and "--profile cn" not in c.remedy and "PROXY" in c.remedy


def test_network_one_target_down(plan: Plan) -> None:
    c = run(plan, offline=False, reachable=lambda url, t: (("github" not in url), "HTTP 200"))["network"]
    assert c.status == FAIL and "github.com" in c.detail and "huggingface.co (" not in c.detail


def test_network_ok(plan: Plan) -> None:
    c = run(plan, offline=False, reachable=lambda url, t: (True, "HTTP 404"))["network"]
    assert c.status == OK and set(c.data["targets"]) == {"https://huggingface.co",
                                                        "https://github.com/FlagAlpha/Llama2-Chinese.git"}


def test_offline_skips_the_network(plan: Plan) -> None:
    c = run(plan, offline=True, reachable=lambda url, t: pytest.fail("no network when offline"))["network"]
    assert c.status == SKIP


def test_token_needed_for_the_gated_base(tmp_path: Path) -> None:
    c = run(make_plan(tmp_path / "a", model=LORA_7B))["token"]
    assert c.status == FAIL
    assert "meta-llama/Llama-2-7b-chat-hf" in c.detail
    assert "https://huggingface.co/meta-llama/Llama-2-7b-chat-hf" in c.remedy and "HF_TOKEN" in c.remedy
    c = run(make_plan(tmp_path / "b", model=LORA_7B, env={"HF_TOKEN": "hf_x"}))["token"]
    assert c.status == OK and "hf_x" not in c.detail


def test_token_not_needed_for_the_full_model(plan: Plan) -> None:
    assert run(plan)["token"].status == OK


def test_gated_full_model_needs_a_token(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"models.llama2-chinese-7b-chat.gated": True})
    assert run(plan)["token"].status == FAIL


# -- the report -----------------------------------------------------------------------------------


def test_all_good_machine(plan: Plan) -> None:
    report = run_checks(plan, make_probes(gpu="rtx4090", torch=torch_cuda([(8, 9)])), offline=False)
    assert report.status == OK, [(c.name, c.status, c.detail) for c in report.checks if c.status != OK]
    assert report.failed == []


def test_report_json(plan: Plan) -> None:
    report = run_checks(plan, make_probes(gpu=None, torch=None), offline=True)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["schema"] == REPORT_SCHEMA_VERSION == 1
    assert doc["status"] == FAIL
    assert [c["name"] for c in doc["checks"]] == CHECK_NAMES
    for c in doc["checks"]:
        assert set(c) == {"name", "status", "detail", "remedy", "data"}
        assert c["status"] in (OK, WARN, FAIL, SKIP)
        assert isinstance(c["detail"], str) and c["detail"]
        assert isinstance(c["data"], dict)
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["gpu"]["status"] == FAIL and by_name["network"]["status"] == SKIP
    assert report.failed == ["gpu", "vram"]


def _r(*statuses: str) -> Report:
    return Report([CheckResult(f"c{i}", s, "d") for i, s in enumerate(statuses)])


@pytest.mark.parametrize(
    "statuses, want",
    [((OK, OK), OK), ((OK, SKIP), OK), ((OK, WARN, SKIP), WARN), ((WARN, FAIL, OK), FAIL), ((FAIL,), FAIL),
     ((SKIP,), OK)],
)
def test_overall_status(statuses: Tuple[str, ...], want: str) -> None:
    assert _r(*statuses).status == want
    assert _r(*statuses).to_json()["status"] == want


def test_no_gpu_under_preferred_is_not_a_failure(tmp_path: Path) -> None:
    """The issue's acceptance check, in-process: a CPU-only machine with gpu: preferred."""
    report = run_checks(policy_plan(tmp_path, "preferred"), make_probes(gpu=None, torch=torch_cpu()), offline=True)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["gpu"] == WARN and statuses["vram"] == WARN and statuses["torch"] == OK
    assert report.status == WARN


@pytest.mark.torch
def test_real_torch_info_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    from bootstrap.probes import torch_info

    info = torch_info()
    assert info is not None and info.error is None
    assert info.version == torch.__version__
    assert info.cuda_version == torch.version.cuda
    assert info.cuda_available == torch.cuda.is_available()
    assert info.cpu_capability == torch.backends.cpu.get_cpu_capability()
    if not info.cuda_available:
        assert info.arch_list == [] and info.device_capabilities == []


def test_fake_nvidia_smi_refuses_unknown_arguments() -> None:
    """The fake answers only what the real tool would be asked; guards the other tests."""
    out = FakeNvidiaSmi("rtx3060.csv", "rtx3060-q.txt")(["nvidia-smi", "--bogus"])
    assert out is not None and out.returncode != 0


def test_network_reports_each_weights_source_in_order(tmp_path: Path) -> None:
    from dataclasses import replace

    from bootstrap.sources import SourceSpec

    plan = replace(make_plan(tmp_path), sources=(SourceSpec("hub", "https://mirror.example"),
                                                 SourceSpec("dir", str(tmp_path)),
                                                 SourceSpec("dir", str(tmp_path / "not-mounted"))))
    c = run(plan, offline=False, reachable=lambda url, t: ("mirror" not in url, "HTTP 200"))["network"]
    assert c.status == WARN and c.data["sources_reachable"] == 1 and c.data["sources"] == 3
    assert "unreachable (skipped by pull)" in c.detail and "mirror.example" in c.detail and "not-mounted" in c.detail
    plan = replace(plan, sources=plan.sources[:1])
    c = run(plan, offline=False, reachable=lambda url, t: ("mirror" not in url, "HTTP 200"))["network"]
    assert c.status == FAIL and "no weights source answers" in c.detail
