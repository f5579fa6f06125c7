"""install.sh behaviour, run for real by bash, with HOME/prefix in tmp_path.

Where conda is needed, a STAND-IN conda (fixtures/standin-conda) records its calls; the env's python
it makes is a stand-in that records calls too (the real pip layer is GBs of CUDA wheels). The real
pip + bootstrapper + hand-off path runs in test_install_demo.py (venv fallback)."""

from __future__ import annotations

import hashlib
import re

from .conftest import Sandbox, closed_port, tree_listing

PINNED_LINUX_X86_64 = "376b160ed8130820db0ab0f3826ac1fc85923647f75c1b8231166e3d559ab768"
INSTALLER = "Miniforge3-25.3.1-0-Linux-x86_64.sh"


def plan_field(stdout: str, name: str) -> str:
    match = re.search(rf"^  {re.escape(name)}:\s+(.*)$", stdout, re.MULTILINE)
    assert match, f"no '{name}:' line in the plan:\n{stdout}"
    return match.group(1)


# ---- dry run ----------------------------------------------------------------------------------
def test_dry_run_without_conda_prints_the_plan_and_changes_nothing(sandbox: Sandbox) -> None:
    before = tree_listing(sandbox.root)
    result = sandbox.run("--dry-run", "--model", "llama2-chinese-13b-chat")
    assert result.returncode == 0, result.stderr
    assert tree_listing(sandbox.root) == before
    assert list(sandbox.home.iterdir()) == []
    out = result.stdout
    assert "dry run" in out
    assert plan_field(out, "platform").startswith("linux-64")
    assert plan_field(out, "conda").startswith(f"not found: will install Miniforge3 25.3.1-0 into {sandbox.prefix}")
    assert plan_field(out, "miniforge").endswith(f"/25.3.1-0/{INSTALLER}")
    assert plan_field(out, "sha256") == PINNED_LINUX_X86_64
    assert plan_field(out, "environment") == f"myenv at {sandbox.prefix}/envs/myenv (will be created)"
    assert plan_field(out, "conda lock") == str(sandbox.repo / "conda-linux-64.lock")
    assert plan_field(out, "torch") == "cpu (auto: no working nvidia-smi)"
    assert plan_field(out, "pip lock") == str(sandbox.repo / "requirements" / "linux-64-cpu.txt")
    assert plan_field(out, "hand-off") == (
        f"<env python> -m bootstrap run --manifest {sandbox.repo / 'manifest.yaml'} --model llama2-chinese-13b-chat"
    )


def test_dry_run_with_standin_conda_calls_nothing_but_info(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    before = tree_listing(sandbox.root)
    result = sandbox.run("--env-name", "llama", LLAMA_BOOTSTRAP_DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    assert sandbox.standin_calls() == ["conda info --base"]
    # The stand-in's call log is the only new file.
    after = [entry for entry in tree_listing(sandbox.root) if entry[0] != sandbox.standin_log.name]
    assert after == before
    assert plan_field(result.stdout, "conda") == f"{sandbox.bin / 'conda'} (found via PATH)"
    assert plan_field(result.stdout, "environment") == f"llama at {sandbox.conda_base}/envs/llama (will be created)"


def test_torch_auto_picks_cuda_when_nvidia_smi_works(sandbox: Sandbox) -> None:
    sandbox.add_tool("fake-nvidia-smi", "nvidia-smi")
    result = sandbox.run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert plan_field(result.stdout, "torch") == "cuda (auto: nvidia-smi found a GPU)"
    assert plan_field(result.stdout, "pip lock").endswith("requirements/linux-64-cuda.txt")


def test_profile_cn_uses_the_mirrors(sandbox: Sandbox) -> None:
    result = sandbox.run("--dry-run", "--profile", "cn")
    assert result.returncode == 0, result.stderr
    assert plan_field(result.stdout, "miniforge").startswith(
        "https://mirrors.tuna.tsinghua.edu.cn/github-release/conda-forge/miniforge/25.3.1-0/"
    )
    assert plan_field(result.stdout, "conda mirror").startswith(
        "https://mirror.test.invalid/anaconda/cloud/conda-forge"
    )
    assert "--profile cn" in plan_field(result.stdout, "hand-off")


# ---- arguments and platform -------------------------------------------------------------------
def test_unknown_flag_and_bad_values_are_errors(sandbox: Sandbox) -> None:
    for args, env, needle in [
        (["--frobnicate"], {}, "unknown option '--frobnicate'"),
        (["--torch", "rocm"], {}, "must be auto, cuda or cpu"),
        ([], {"LLAMA_BOOTSTRAP_PROFILE": "eu"}, "must be global or cn"),
        ([], {"LLAMA_BOOTSTRAP_YES": "perhaps"}, "LLAMA_BOOTSTRAP_YES must be 0 or 1"),
        (["--env-name", "base"], {}, "env name 'base' is not allowed"),
        (["--manifest", "/nonexistent/manifest.yaml"], {}, "manifest not found"),
    ]:
        result = sandbox.run("--dry-run", *args, **env)
        assert result.returncode == 1, (args, env, result.stdout)
        assert needle in result.stderr, (args, env, result.stderr)


def test_help_lists_every_flag(sandbox: Sandbox) -> None:
    result = sandbox.run("--help")
    assert result.returncode == 0
    assert "--skip-download" in result.stdout and "LLAMA_BOOTSTRAP_MINIFORGE_URL" in result.stdout


def test_unknown_platform_is_an_error_not_a_guess(sandbox: Sandbox) -> None:
    sandbox.add_tool("fake-uname", "uname")
    for os_name, arch, needle in [
        ("SunOS", "x86_64", "unsupported operating system 'SunOS'"),
        ("Linux", "riscv64", "unsupported CPU architecture 'riscv64'"),
        ("Darwin", "arm64", "macOS is not supported"),
        ("MINGW64_NT-10.0", "x86_64", "run install.ps1"),
    ]:
        result = sandbox.run("--dry-run", FAKE_UNAME_S=os_name, FAKE_UNAME_M=arch)
        assert result.returncode == 1
        assert needle in result.stderr, result.stderr


def test_aarch64_is_detected_but_reports_the_missing_lock(sandbox: Sandbox) -> None:
    sandbox.add_tool("fake-uname", "uname")
    result = sandbox.run("--dry-run", FAKE_UNAME_M="aarch64")
    assert result.returncode == 1
    assert "no conda lock for linux-aarch64" in result.stderr


def test_incomplete_pip_lock_is_refused(sandbox: Sandbox) -> None:
    lock = sandbox.repo / "requirements" / "linux-64-cpu.txt"
    lock.write_text("# llama-bootstrap: incomplete lock: test\n" + lock.read_text())
    result = sandbox.run("--dry-run", "--torch", "cpu")
    assert result.returncode == 1
    assert "is not fully hashed yet" in result.stderr


# ---- Miniforge download -----------------------------------------------------------------------
def test_no_conda_and_no_network_is_a_clear_error(sandbox: Sandbox) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = sandbox.run("--yes", LLAMA_BOOTSTRAP_MINIFORGE_URL=url)
    assert result.returncode == 1
    assert f"could not download {url}/{INSTALLER}" in result.stderr
    assert "no conda found and Miniforge could not be downloaded" in result.stderr
    log = re.search(r"the full log is in: (\S+)", result.stderr)
    assert log and log.group(1).startswith(str(sandbox.home)), result.stderr
    assert not sandbox.prefix.exists()


def test_plain_http_to_a_real_host_is_refused(sandbox: Sandbox) -> None:
    for url in ("http://example.invalid/miniforge", "ftp://127.0.0.1/x", "file:///tmp/x"):
        result = sandbox.run("--dry-run", LLAMA_BOOTSTRAP_MINIFORGE_URL=url)
        assert result.returncode == 1
        assert "only https:// URLs" in result.stderr


def test_checksum_mismatch_is_refused_and_nothing_is_installed(sandbox: Sandbox, file_server) -> None:
    base_url, folder = file_server
    marker = sandbox.root / "installer-was-run"
    fake = f"#!/bin/sh\ntouch '{marker}'\nmkdir -p \"$3\"\n".encode()
    (folder / INSTALLER).write_bytes(fake)
    result = sandbox.run("--yes", LLAMA_BOOTSTRAP_MINIFORGE_URL=base_url)
    assert result.returncode == 1
    assert f"want: {PINNED_LINUX_X86_64}" in result.stderr
    assert f"got:  {hashlib.sha256(fake).hexdigest()}" in result.stderr
    assert not marker.exists()
    assert not sandbox.prefix.exists()
    assert not list(sandbox.root.glob("llama-bootstrap.*")), "the temporary download folder was left behind"


def test_existing_non_conda_prefix_is_not_overwritten(sandbox: Sandbox) -> None:
    sandbox.prefix.mkdir()
    (sandbox.prefix / "precious.txt").write_text("keep me")
    result = sandbox.run("--yes", LLAMA_BOOTSTRAP_MINIFORGE_URL=f"http://127.0.0.1:{closed_port()}")
    assert result.returncode == 1
    assert "exists but holds no conda" in result.stderr
    assert (sandbox.prefix / "precious.txt").read_text() == "keep me"


# ---- the conda env ----------------------------------------------------------------------------
def test_fresh_install_creates_the_env_then_keeps_it(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    first = sandbox.run()
    assert first.returncode == 0, first.stderr
    lock = sandbox.repo / "conda-linux-64.lock"
    env_python = sandbox.conda_base / "envs" / "myenv" / "bin" / "python"
    assert sandbox.standin_calls() == [
        "conda info --base",
        f"conda create --yes --name myenv --file {lock}",
        f"python -m pip install --disable-pip-version-check --no-input --require-hashes --no-deps "
        f"--only-binary :all: -r {sandbox.repo / 'requirements' / 'linux-64-cpu.txt'}",
        f"python -m pip install --disable-pip-version-check --no-input --no-deps --no-build-isolation "
        f"--no-index {sandbox.repo}",
        f"python -m bootstrap run --manifest {sandbox.repo / 'manifest.yaml'}",
    ]
    stamp = env_python.parent.parent / "conda-meta" / "llama-bootstrap-lock.sha256"
    assert stamp.read_text().split()[0] == hashlib.sha256(lock.read_bytes()).hexdigest()

    sandbox.standin_log.unlink()
    second = sandbox.run()
    assert second.returncode == 0, second.stderr
    calls = sandbox.standin_calls()
    assert not [c for c in calls if c.startswith(("conda create", "conda remove"))], calls
    assert "already matches conda-linux-64.lock: keeping it" in second.stderr


def test_env_matching_the_lock_is_not_recreated(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    sandbox.make_env(stamp_lock=sandbox.repo / "conda-linux-64.lock")
    result = sandbox.run()
    assert result.returncode == 0, result.stderr
    calls = sandbox.standin_calls()
    assert calls[0] == "conda info --base"
    assert not [c for c in calls if c.startswith("conda ") and c != "conda info --base"], calls


def test_mismatched_env_is_replaced_only_with_yes(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    env = sandbox.make_env()  # exists, no stamp: made by someone else
    refused = sandbox.run()
    assert refused.returncode == 1
    assert "re-run with --yes to replace it" in refused.stderr
    assert (env / "conda-meta").is_dir()
    assert not [c for c in sandbox.standin_calls() if c.startswith(("conda create", "conda remove"))]

    replaced = sandbox.run("--yes")
    assert replaced.returncode == 0, replaced.stderr
    calls = [c for c in sandbox.standin_calls() if c.startswith(("conda create", "conda remove"))]
    assert calls == [
        "conda remove --yes --name myenv --all",
        f"conda create --yes --name myenv --file {sandbox.repo / 'conda-linux-64.lock'}",
    ]


def test_profile_cn_rewrites_the_lock_to_the_manifest_mirror(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    result = sandbox.run("--profile", "cn", "--skip-download")
    assert result.returncode == 0, result.stderr
    used = (sandbox.root / "standin-calls.log.lock").read_text().splitlines()
    urls = [line for line in used if line.startswith("http")]
    assert urls and all(u.startswith("https://mirror.test.invalid/anaconda/cloud/conda-forge/") for u in urls)
    # Same files, same md5s: only the host part changed.
    original = [
        line for line in (sandbox.repo / "conda-linux-64.lock").read_text().splitlines() if line.startswith("http")
    ]
    assert [u.rsplit("/", 2)[-2:] for u in urls] == [u.rsplit("/", 2)[-2:] for u in original]


# ---- hand-off ---------------------------------------------------------------------------------
def test_hand_off_passes_manifest_profile_model_and_skips(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    manifest = sandbox.root / "elsewhere.yaml"
    manifest.write_text((sandbox.repo / "manifest.yaml").read_text())
    result = sandbox.run(
        "--model",
        "llama2-chinese-13b-chat",
        "--skip-download",
        LLAMA_BOOTSTRAP_MANIFEST=str(manifest),
        LLAMA_BOOTSTRAP_PROFILE="global",
    )
    assert result.returncode == 0, result.stderr
    assert sandbox.standin_calls()[-1] == (
        f"python -m bootstrap run --manifest {manifest} --profile global --model llama2-chinese-13b-chat "
        "--skip pull --skip smoke"
    )

    sandbox.standin_log.unlink()
    result = sandbox.run(LLAMA_BOOTSTRAP_SKIP_SMOKE="1")
    assert sandbox.standin_calls()[-1].endswith("--skip smoke")
    assert "--skip pull" not in sandbox.standin_calls()[-1]

    sandbox.standin_log.unlink()
    result = sandbox.run("--demo")
    assert sandbox.standin_calls()[-1] == "python -m bootstrap demo"


def test_failed_hand_off_exits_non_zero_and_names_the_log(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    log = sandbox.root / "my.log"
    result = sandbox.run("--log", str(log), STANDIN_HANDOFF_EXIT="3")
    assert result.returncode == 1
    assert "llama-bootstrap run failed (exit 3)" in result.stderr
    assert f"the full log is in: {log}" in result.stderr
    text = log.read_text()
    assert "hand-off exited with 3" in text and "llama-bootstrap install plan" in text
