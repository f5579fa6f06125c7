"""install.ps1, read structurally (there is no PowerShell here): what issue 13 asked of it, parsed from
the script. PowerShell runs it for real in CI: provision.yml's ps1-on-linux job (PowerShell 7 on
ubuntu: -DryRun, refused arguments, tests/installers/ps1/functions.ps1) and its windows job
(Windows PowerShell 5.1: the same functions, then the installer end to end)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import REPO
from .test_installer_static import PS1, _body, _ps1_errors

FUNCTIONS_PS1 = REPO / "tests" / "installers" / "ps1" / "functions.ps1"


def test_the_powershell_function_checks_parse() -> None:
    assert _ps1_errors(FUNCTIONS_PS1.read_bytes()) == []
    text = FUNCTIONS_PS1.read_text()
    assert ". (Join-Path $repo 'install.ps1')" in text and "exit 1" in text


def test_install_ps1_parses_with_either_line_end() -> None:
    assert _ps1_errors(PS1.replace("\n", "\r\n").encode()) == []


def test_line_ends_are_pinned_by_gitattributes() -> None:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    paths = ["install.sh", "install.ps1", "tests/installers/fixtures/standin-conda", ".ci/run",
             "tests/installers/fixtures/manifest-values.yaml"]
    out = subprocess.run(  # noqa: S603 - fixed argv
        ["git", "check-attr", "text", "eol", "--", *paths], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    attrs = dict(((path, attr), value) for path, attr, value in (line.split(": ") for line in out.splitlines()))
    assert attrs[("install.sh", "eol")] == "lf" and attrs[(".ci/run", "eol")] == "lf"
    assert attrs[("tests/installers/fixtures/standin-conda", "eol")] == "lf"
    assert attrs[("install.ps1", "text")] == "set" and attrs[("install.ps1", "eol")] == "unspecified"
    assert attrs[("tests/installers/fixtures/manifest-values.yaml", "text")] == "unset"


def test_the_platform_is_checked_before_anything_windows_only() -> None:
    main = _body(PS1, "\nfunction Invoke-Main {")
    guard = main.index("if (-not (Test-IsWindows)) { Stop-Install 'install.ps1 is for Windows")
    assert guard < main.index("Read-Options") and main.index("if ($Help)") < guard
    assert "$env:USERPROFILE" not in PS1[: PS1.index("function Read-Options")]


def test_a_batch_file_conda_is_never_invoked() -> None:
    find = _body(PS1, "\nfunction Find-Conda {")
    assignments = re.findall(r"\$script:CondaBin = ([^;\n]+)", find)
    assert assignments == ["''", "Resolve-CondaExe $env:CONDA_EXE", "Resolve-CondaExe $cmd.Source", "$exe"]
    resolve = _body(PS1, "\nfunction Resolve-CondaExe(")
    assert "'.bat'" in resolve and "'.cmd'" in resolve and "'Scripts') \"$name.exe\"" in resolve


def test_the_temporary_folder_goes_in_a_finally() -> None:
    tail = PS1[PS1.index("\n$script:ExitCode = 0\ntry {") :]
    assert re.search(r"\} finally \{\n(\s+#[^\n]*\n)*\s+Remove-TempDir\n\}\nexit \$script:ExitCode\n$", tail)
    assert PS1.count("Remove-TempDir") == 2  # defined, and called only there
    assert "if ($MyInvocation.InvocationName -eq '.') { return }" in PS1[: PS1.index("\n$script:ExitCode = 0")]


def test_the_miniforge_prefix_is_checked_before_the_download() -> None:
    problem = _body(PS1, "\nfunction Get-MiniforgePrefixProblem(")
    assert "$Prefix.Contains(' ')" in problem and "'[\\^%!=,()]'" in problem
    assert "$Prefix.Length -gt 46 -and $LongPathsEnabled -eq '0' -and -not $IsAdmin" in problem
    prereq = _body(PS1, "\nfunction Test-Prerequisites {")
    assert "Get-MiniforgePrefixProblem $o.CondaPrefix $longPaths $isAdmin" in prereq
    assert "-CondaPrefix $suggestion" in prereq and "winget install --id Git.Git" in prereq
    install = _body(PS1, "\nfunction Install-Miniforge {")
    assert "Join-Path $o.CondaPrefix 'install.log'" in install and "-Tail 40" in install


def test_no_variable_is_followed_by_a_colon_inside_a_string() -> None:
    """"$code: x" would be read as the variable `code:` (a scope or drive qualifier): use $($code)."""
    for number, line in enumerate(PS1.splitlines(), 1):
        for string in re.findall(r'"[^"]*"', line):
            bad = [m for m in re.findall(r"(?<![({])\$([A-Za-z_]\w*):", string) if m not in ("env", "script")]
            assert not bad, (number, line)
