"""install.sh behaviour, run for real by bash, with HOME/prefix in tmp_path.

Where conda is needed, a STAND-IN conda (fixtures/standin-conda) records its calls and places envs
where real conda would; the env's python it makes is a stand-in that records calls too (the real pip
layer is GBs of CUDA wheels). The real pip + bootstrapper + hand-off path runs in
test_install_demo.py (venv fallback); the real CLI behind the hand-off in test_output_encoding.py."""

from __future__ import annotations

import hashlib
import json
import re

from .conftest import Sandbox, closed_port, tree_listing

PINNED_LINUX_X86_64 = "376b160ed8130820db0ab0f3826ac1fc85923647f75c1b8231166e3d559ab768"
INSTALLER = "Miniforge3-25.3.1-0-Linux-x86_64.sh"


def plan_field(stdout: str, name: str) -> str:
    match = re.search(rf"^  {re.escape(name)}:\s+(.*)$", stdout, re.MULTILINE)
    assert match, f"no '{name}:' line in the plan:\n{stdout}"
    return match.group(1)


def conda_calls(sandbox: Sandbox, *verbs: str) -> list[str]:
    return [c for c in sandbox.standin_calls() if c.startswith(tuple(f"conda {v}" for v in verbs))]


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
    assert plan_field(out, "env prefix") == "inside the Miniforge to be installed"
    assert plan_field(out, "git").endswith("/git")
    assert re.fullmatch(rf"\d+ GB free at {re.escape(str(sandbox.home))} \(the env needs about 9 GB\)",
                        plan_field(out, "disk"))
    assert plan_field(out, "conda lock") == str(sandbox.repo / "conda-linux-64.lock")
    assert plan_field(out, "torch") == "cpu (auto: no working nvidia-smi)"
    assert plan_field(out, "pip lock") == str(sandbox.repo / "requirements" / "linux-64-cpu.txt")
    assert plan_field(out, "hand-off") == (
        f"<env python> -m bootstrap run --manifest {sandbox.repo / 'manifest.yaml'} --model llama2-chinese-13b-chat"
    )


def test_dry_run_with_standin_conda_only_asks_conda_where_envs_go(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    before = tree_listing(sandbox.root)
    result = sandbox.run("--env-name", "llama", LLAMA_BOOTSTRAP_DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    assert sandbox.standin_calls() == ["conda info --json"]
    # The stand-in's call log is the only new file.
    after = [entry for entry in tree_listing(sandbox.root) if entry[0] != sandbox.standin_log.name]
    assert after == before
    assert plan_field(result.stdout, "conda") == f"{sandbox.bin / 'conda'} (found via PATH)"
    assert plan_field(result.stdout, "environment") == f"llama at {sandbox.conda_base}/envs/llama (will be created)"
    assert plan_field(result.stdout, "env prefix") == "conda's first writable envs dir"


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


# ---- point 1: where the env goes is conda's decision, asked, then used as a prefix -------------
def test_the_standin_places_named_envs_like_conda_would(sandbox: Sandbox) -> None:
    """What broke the old installer: with a read-only base, `conda create --name` goes to
    ~/.conda/envs, not to <base>/envs where the script then looked for python."""
    sandbox.add_standin_conda()
    lock = sandbox.repo / "conda-linux-64.lock"
    proc = sandbox.call(f"conda create --yes --name myenv --file '{lock}'", STANDIN_BASE_READONLY="1")
    assert proc.returncode == 0, proc.stderr
    assert (sandbox.home / ".conda" / "envs" / "myenv" / "bin" / "python").exists()
    assert not (sandbox.conda_base / "envs" / "myenv").exists()
    listed = sandbox.call("conda env list --json", STANDIN_BASE_READONLY="1")
    assert json.loads(listed.stdout) == {"envs": [str(sandbox.conda_base), str(sandbox.home / ".conda/envs/myenv")]}


def test_read_only_base_puts_the_env_in_the_users_envs_dir(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    plan = sandbox.run("--dry-run", STANDIN_BASE_READONLY="1")
    user_env = sandbox.home / ".conda" / "envs" / "myenv"
    assert plan_field(plan.stdout, "environment") == f"myenv at {user_env} (will be created)"

    result = sandbox.run(STANDIN_BASE_READONLY="1")
    assert result.returncode == 0, result.stderr
    assert conda_calls(sandbox, "create", "remove") == [
        f"conda create --yes --prefix {user_env} --file {sandbox.repo / 'conda-linux-64.lock'}"
    ]
    assert sandbox.standin_calls()[-1].startswith("python -m bootstrap run")
    assert (user_env / "conda-meta" / "llama-bootstrap-lock.sha256").is_file()
    assert not (sandbox.conda_base / "envs").exists()


def test_envs_dirs_setting_is_honoured_and_unwritable_dirs_are_skipped(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    team = sandbox.root / "team-envs"
    # /dev/null/... can never be created (these tests run as root, so file modes cannot show it).
    envs_path = f"/dev/null/shared-envs:{team}"
    result = sandbox.run("--yes", CONDA_ENVS_PATH=envs_path)
    assert result.returncode == 0, result.stderr
    assert conda_calls(sandbox, "create") == [
        f"conda create --yes --prefix {team}/myenv --file {sandbox.repo / 'conda-linux-64.lock'}"
    ]
    plan = sandbox.run("--dry-run", CONDA_ENVS_PATH=envs_path)
    assert plan_field(plan.stdout, "environment") == f"myenv at {team}/myenv (exists, matches the lock: kept)"
    assert plan_field(plan.stdout, "env prefix") == f"an env of that name in conda's envs dir {team}"


def test_condarc_envs_dirs_is_honoured(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    (sandbox.home / ".condarc").write_text("channels:\n  - conda-forge\nenvs_dirs:\n  - ~/my-envs\n")
    result = sandbox.run("--dry-run")
    assert plan_field(result.stdout, "environment") == f"myenv at {sandbox.home}/my-envs/myenv (will be created)"


def test_an_existing_env_in_a_later_envs_dir_is_found(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    env = sandbox.make_env(stamp_lock=sandbox.repo / "conda-linux-64.lock")  # in <base>/envs
    result = sandbox.run(STANDIN_BASE_READONLY="1")  # ~/.conda/envs now comes first
    assert result.returncode == 0, result.stderr
    assert conda_calls(sandbox, "create", "remove") == []
    assert "env myenv already matches conda-linux-64.lock: keeping it" in result.stderr
    assert f"the environment is {env}".lower() in result.stderr.lower()


def test_micromamba_shape_and_non_ascii_paths(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    envs = sandbox.root / "环境"
    for flavour in ("conda", "micromamba"):  # conda writes \\uXXXX escapes, micromamba raw UTF-8
        result = sandbox.run("--dry-run", CONDA_ENVS_PATH=str(envs), STANDIN_FLAVOUR=flavour)
        assert result.returncode == 0, result.stderr
        assert plan_field(result.stdout, "environment") == f"myenv at {envs}/myenv (will be created)", flavour


def test_no_writable_envs_dir_is_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    # Neither ~/.conda/envs nor <base>/envs can be created under /dev/null.
    result = sandbox.run("--dry-run", HOME="/dev/null/nohome", STANDIN_CONDA_BASE="/dev/null/base")
    assert result.returncode == 1
    assert "none of conda's envs directories is writable" in result.stderr
    assert "conda config --prepend envs_dirs" in result.stderr


def test_the_awk_readers_under_every_awk_here(sandbox: Sandbox) -> None:
    """The JSON and manifest readers are plain awk; run them under each awk this machine has."""
    import shutil

    from .conftest import FIXTURES

    expected = json.loads((FIXTURES / "manifest-values.json").read_text())
    doc = '{"a": 1, "envs_dirs": ["/x/\\u73af\\u5883", "C:\\\\Users\\\\j \\"q\\"", "/y"], "z": ["no"]}'
    want = "/x/环境\nC:\\Users\\j \"q\"\n/y\n"
    tried = 0
    for awk in ("mawk", "gawk", "original-awk", "busybox"):  # busybox acts as awk when called so
        path = shutil.which(awk)
        if not path:
            continue
        tried += 1
        (sandbox.bin / "awk").unlink(missing_ok=True)
        (sandbox.bin / "awk").symlink_to(path)
        proc = sandbox.call(f"printf '%s' '{doc}' | json_string_list envs_dirs")
        assert proc.returncode == 0, (awk, proc.stderr)
        assert proc.stdout == want, awk
        for key, value in expected.items():
            proc = sandbox.call(f"manifest_value '{FIXTURES / 'manifest-values.yaml'}' '{key}'")
            assert proc.stdout.rstrip("\n") == value, (awk, key)
    assert tried


# ---- arguments and platform -------------------------------------------------------------------
def test_unknown_flag_and_bad_values_are_bad_input(sandbox: Sandbox) -> None:
    for args, env, needle in [
        (["--frobnicate"], {}, "unknown option '--frobnicate'"),
        (["--torch", "rocm"], {}, "must be auto, cuda or cpu"),
        (["--torch", "CPU"], {}, "must be auto, cuda or cpu"),
        ([], {"LLAMA_BOOTSTRAP_PROFILE": "eu"}, "must be global or cn"),
        ([], {"LLAMA_BOOTSTRAP_YES": "perhaps"}, "LLAMA_BOOTSTRAP_YES must be 0 or 1"),
        (["--env-name", "base"], {}, "env name 'base' is not allowed"),
        (["--manifest", "/nonexistent/manifest.yaml"], {}, "manifest not found"),
        (["--model"], {}, "--model needs a value"),
    ]:
        result = sandbox.run("--dry-run", *args, **env)
        assert result.returncode == 2, (args, env, result.stdout)
        assert needle in result.stderr, (args, env, result.stderr)


def test_help_lists_every_flag_and_the_exit_codes(sandbox: Sandbox) -> None:
    result = sandbox.run("--help")
    assert result.returncode == 0
    assert "--skip-download" in result.stdout and "LLAMA_BOOTSTRAP_MINIFORGE_URL" in result.stdout
    assert "130 interrupted" in result.stdout


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


def test_manifest_reading_follows_the_shared_rules(sandbox: Sandbox) -> None:
    """install.ps1's Read-ManifestValue is held to the same fixture by tests/installers/ps1/functions.ps1."""
    from .conftest import FIXTURES

    assert b"\r\n" in (FIXTURES / "manifest-values.yaml").read_bytes()  # a manifest saved on Windows
    expected = json.loads((FIXTURES / "manifest-values.json").read_text())
    for key, want in expected.items():
        proc = sandbox.call(f"manifest_value '{FIXTURES / 'manifest-values.yaml'}' '{key}'")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip("\n") == want, key


# ---- point 4: prerequisites before any download -----------------------------------------------
def test_missing_git_stops_before_any_download(sandbox: Sandbox, file_server) -> None:
    base_url, folder = file_server
    (folder / INSTALLER).write_bytes(b"#!/bin/sh\nexit 0\n")
    no_git = f"{sandbox.bin}:{sandbox.system_bin(hide=('git',))}"
    result = sandbox.run("--yes", PATH=no_git, LLAMA_BOOTSTRAP_MINIFORGE_URL=base_url)
    assert result.returncode == 1
    assert "need git" in result.stderr and "apt-get install git" in result.stderr
    assert "downloading" not in result.stderr and "checksum" not in result.stderr
    assert not sandbox.prefix.exists()


def test_too_little_disk_stops_before_any_download(sandbox: Sandbox) -> None:
    sandbox.add_tool("fake-df", "df")
    url = f"http://127.0.0.1:{closed_port()}"
    result = sandbox.run("--yes", FAKE_DF_AVAIL_KB="2097152", LLAMA_BOOTSTRAP_MINIFORGE_URL=url)  # 2 GB
    assert result.returncode == 1
    assert f"not enough disk for the env: 2 GB free at {sandbox.home} (the env needs about 9 GB)" in result.stderr
    assert "downloading" not in result.stderr
    ok = sandbox.run("--dry-run", FAKE_DF_AVAIL_KB=str(20 * 1024 * 1024))
    assert ok.returncode == 0 and plan_field(ok.stdout, "disk").startswith("20 GB free")


def test_a_prefix_with_a_space_is_refused_with_the_remedy(sandbox: Sandbox) -> None:
    """Miniforge's installer refuses a prefix with a space; say so before downloading anything."""
    prefix = sandbox.home / "Jane Doe" / "miniforge3"
    result = sandbox.run("--yes", LLAMA_BOOTSTRAP_CONDA_PREFIX=str(prefix),
                         LLAMA_BOOTSTRAP_MINIFORGE_URL=f"http://127.0.0.1:{closed_port()}")
    assert result.returncode == 2
    assert f"the Miniforge prefix '{prefix}' contains a space" in result.stderr
    assert "--conda-prefix" in result.stderr
    assert "downloading" not in result.stderr
    assert not (sandbox.home / "Jane Doe").exists()


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
        assert result.returncode == 2
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
    assert result.returncode == 2
    assert "exists but holds no conda" in result.stderr
    assert "downloading" not in result.stderr
    assert (sandbox.prefix / "precious.txt").read_text() == "keep me"


def test_an_empty_existing_prefix_is_installed_into(sandbox: Sandbox) -> None:
    """Miniforge's `-b` alone refuses any existing path; an empty one gets `-u`. The download and the
    sha256 (pinned: no local file can match it) are replaced by a recorded installer here."""
    sandbox.prefix.mkdir()
    record = sandbox.root / "installer-args"
    fake = f'echo "$@" > {record}; mkdir -p "${{@: -1}}/bin"; ln -s /bin/true "${{@: -1}}/bin/conda"'
    script = f"""
        LOG_FILE="" OPT_CONDA_PREFIX='{sandbox.prefix}' OPT_INIT_SHELL=0 OPT_ENV_NAME=myenv
        MINIFORGE_BASE_URL=http://127.0.0.1:1 MINIFORGE_FILE=mf.sh MINIFORGE_SHA256=x TMP_DIR='{sandbox.root}'
        downloader() {{ printf '%s\\n' '{fake}' > "$2"; }}
        sha256_of() {{ echo x; }}
        decide_env_prefix() {{ ENV_PREFIX=p ENV_WHY=w; }}
        install_miniforge
    """
    proc = sandbox.call(script)
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().split() == ["-b", "-u", "-p", str(sandbox.prefix)]
    sandbox.prefix.joinpath("bin", "conda").unlink()
    sandbox.prefix.joinpath("bin").rmdir()
    sandbox.prefix.rmdir()
    proc = sandbox.call(script)
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().split() == ["-b", "-p", str(sandbox.prefix)]


# ---- the conda env ----------------------------------------------------------------------------
def test_fresh_install_creates_the_env_then_keeps_it(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    first = sandbox.run()
    assert first.returncode == 0, first.stderr
    lock = sandbox.repo / "conda-linux-64.lock"
    env = sandbox.conda_base / "envs" / "myenv"
    assert sandbox.standin_calls() == [
        "conda info --json",
        f"conda create --yes --prefix {env} --file {lock}",
        f"python -m pip install --disable-pip-version-check --no-input --require-hashes --no-deps "
        f"--only-binary :all: -r {sandbox.repo / 'requirements' / 'linux-64-cpu.txt'}",
        f"python -m pip install --disable-pip-version-check --no-input --no-deps --no-build-isolation "
        f"--no-index {sandbox.repo}",
        f"python -m bootstrap run --manifest {sandbox.repo / 'manifest.yaml'}",
    ]
    stamp = env / "conda-meta" / "llama-bootstrap-lock.sha256"
    assert stamp.read_text().split()[0] == hashlib.sha256(lock.read_bytes()).hexdigest()

    sandbox.standin_log.unlink()
    second = sandbox.run()
    assert second.returncode == 0, second.stderr
    assert conda_calls(sandbox, "create", "remove") == []
    assert "already matches conda-linux-64.lock: keeping it" in second.stderr


def test_env_matching_the_lock_is_not_recreated(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    sandbox.make_env(stamp_lock=sandbox.repo / "conda-linux-64.lock")
    result = sandbox.run()
    assert result.returncode == 0, result.stderr
    assert [c for c in sandbox.standin_calls() if c.startswith("conda ")] == ["conda info --json"]


def test_mismatched_env_is_replaced_only_with_yes(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    env = sandbox.make_env()  # exists, no stamp: made by someone else
    refused = sandbox.run()
    assert refused.returncode == 1
    assert "re-run with --yes to replace it" in refused.stderr
    assert (env / "conda-meta").is_dir()
    assert conda_calls(sandbox, "create", "remove") == []

    replaced = sandbox.run("--yes")
    assert replaced.returncode == 0, replaced.stderr
    assert conda_calls(sandbox, "create", "remove") == [
        f"conda remove --yes --prefix {env} --all",
        f"conda create --yes --prefix {env} --file {sandbox.repo / 'conda-linux-64.lock'}",
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


def test_a_mirror_url_with_shell_and_sed_specials_is_taken_literally(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    mirror = "https://mirror.test.invalid/a&b|c#d\\1/conda-forge"
    manifest = sandbox.repo / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace(
        "https://mirror.test.invalid/anaconda/cloud/conda-forge", mirror))
    result = sandbox.run("--profile", "cn", "--skip-download")
    assert result.returncode == 0, result.stderr
    used = [line for line in (sandbox.root / "standin-calls.log.lock").read_text().splitlines()
            if line.startswith("http")]
    original = [line for line in (sandbox.repo / "conda-linux-64.lock").read_text().splitlines()
                if line.startswith("http")]
    assert used == [mirror + line[len("https://conda.anaconda.org/conda-forge"):] for line in original]


# ---- hand-off and exit codes ------------------------------------------------------------------
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


def test_the_hand_off_runs_with_utf8_python_io(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    result = sandbox.run(LANG="C", LC_ALL="C")
    assert result.returncode == 0, result.stderr
    assert (sandbox.root / "standin-calls.log.env").read_text() == (
        "PYTHONUTF8=1 PYTHONIOENCODING= PYTHONNOUSERSITE=1\n"
    )


def test_the_cli_exit_code_is_passed_through(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    log = sandbox.root / "my.log"
    for code, meaning in [("1", "a check or step failed"), ("2", "bad input"),
                          ("3", "another llama-bootstrap run holds the lock"), ("130", "interrupted")]:
        result = sandbox.run("--log", str(log), STANDIN_HANDOFF_EXIT=code)
        assert result.returncode == int(code), result.stderr
        assert f"llama-bootstrap run failed (exit {code}: {meaning})" in result.stderr
        assert f"the full log is in: {log}" in result.stderr
        text = log.read_text()
        assert f"hand-off exited with {code}" in text and "llama-bootstrap install plan" in text


def test_install_only_prints_the_env_python_and_does_not_hand_off(sandbox: Sandbox) -> None:
    sandbox.add_standin_conda()
    result = sandbox.run("--install-only", "--yes")
    assert result.returncode == 0, result.stderr
    env_python = sandbox.conda_base / "envs" / "myenv" / "bin" / "python"
    assert result.stdout.splitlines()[-1] == str(env_python)
    assert not [c for c in sandbox.standin_calls() if c.startswith("python -m bootstrap")]
    plan = sandbox.run("--dry-run", LLAMA_BOOTSTRAP_INSTALL_ONLY="1")
    assert plan_field(plan.stdout, "hand-off").startswith("none (--install-only")
