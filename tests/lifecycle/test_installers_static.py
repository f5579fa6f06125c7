"""install.ps1's side of the life of an install, read structurally (no PowerShell here; CI can run
tests/lifecycle/ps1/lifecycle.ps1 under PowerShell 7 and 5.1): every install.sh function has its mirror,
the same names for stamps and pointers as bootstrap/receipt.py, the same flags, and the safety rules."""

from __future__ import annotations

import re

import pytest

from bootstrap import receipt

from .conftest import REPO

SH = (REPO / "install.sh").read_text()
PS1 = (REPO / "install.ps1").read_text()

#: install.sh function -> its install.ps1 mirror.
PAIRS = {
    "receipt_locate": "Get-ReceiptPath", "first_missing": "Get-FirstMissing", "receipt_add": "Add-ReceiptEntry",
    "receipt_status": "Get-ReceiptStatus", "receipt_paths": "Get-ReceiptPaths", "record_new": "Add-NewPath",
    "receipt_begin": "Start-Receipt", "record_log": "Add-LogToReceipt", "record_leftovers": "Add-Leftovers",
    "record_demo_workdir": "Add-DemoWorkdir", "record_miniforge": "Add-FoundConda",
    "init_shell_recorded": "Invoke-InitShellRecorded", "meta_dir": "Get-MetaDir", "stamp_of": "Get-Stamp",
    "env_id_of": "Get-EnvId", "wanted_id": "Get-WantedId", "env_is_ours": "Test-EnvIsOurs",
    "env_home": "Get-EnvHome", "current_env": "Get-CurrentEnv", "env_extra": "Get-EnvExtra",
    "record_env": "Add-EnvToReceipt", "keep_env": "Use-ExistingEnv", "conda_env_at": "New-CondaEnvAt",
    "venv_at": "New-VenvAt", "make_venv": "Initialize-Venv", "build_next_to_it": "New-EnvNextToIt",
    "stamp_pip_layer": "Set-PipStamp", "check_new_env": "Test-NewEnv", "switch_env": "Switch-Env",
    "finish_update": "Complete-Update", "prune_envs": "Remove-OldEnvs", "rollback_env": "Invoke-Rollback",
    "uninstall_install": "Invoke-Uninstall", "env_matches_lock": "Test-EnvMatchesLock",
}


def _body(text: str, start: str) -> str:
    begin = text.index(start)
    return text[begin:text.index("\n}\n", begin)]


@pytest.mark.parametrize("sh_name", sorted(PAIRS))
def test_every_function_has_its_mirror(sh_name: str) -> None:
    assert re.search(rf"^{sh_name}\(\) \{{", SH, re.MULTILINE), sh_name
    assert re.search(rf"^function {PAIRS[sh_name]}\b", PS1, re.MULTILINE), PAIRS[sh_name]


def test_the_mirrors_are_called_where_their_originals_are() -> None:
    sh_main, ps_main = _body(SH, "\nmain() {"), _body(PS1, "\nfunction Invoke-Main {")
    called = [n for n in re.findall(r"\b([a-z_]+)\b", sh_main) if n in PAIRS]
    to_sh = {ps: sh for sh, ps in PAIRS.items()}
    mirrored = [to_sh[n] for n in re.findall(r"\b([A-Z][a-z]+-[A-Za-z]+)\b", ps_main) if n in to_sh]
    assert called == mirrored == ["uninstall_install", "rollback_env", "receipt_begin", "record_log",
                                  "record_miniforge", "stamp_pip_layer", "record_leftovers", "check_new_env",
                                  "finish_update", "record_demo_workdir", "finish_update"]


def test_stamps_and_pointers_have_one_name_everywhere() -> None:
    for value, sh, ps in ((receipt.CONDA_STAMP, "STAMP_CONDA", "StampConda"),
                          (receipt.PIP_STAMP, "STAMP_PIP", "StampPip"),
                          (receipt.PREVIOUS_POINTER, "PREVIOUS_POINTER", "PreviousPointer"),
                          (receipt.HOME_POINTER, "HOME_POINTER", "HomePointer")):
        assert f'{sh}="{value}"' in SH and f"${ps} = '{value}'" in PS1
    assert receipt.STATE_DIR_NAME == ".llama-bootstrap" and "/.llama-bootstrap\"" in _body(SH, "\nreceipt_locate() {")
    assert "'.llama-bootstrap'" in _body(PS1, "\nfunction Get-ReceiptPath {")
    assert SH.count("receipt.json") >= 2 and "'receipt.json'" in PS1


def test_the_receipt_layout_install_sh_accepts_is_the_one_python_writes() -> None:
    awk = _body(SH, "\nreceipt_awk() {")
    for line in receipt.dumps([]).splitlines():
        assert '$0 == "' + line.replace('"', '\\"') + '"' in awk, line
    assert '/^    \\{"path": /' in awk


def test_nothing_found_is_recorded_as_created_and_switching_never_deletes_an_env() -> None:
    record = _body(SH, "\nrecord_new() {")
    assert 'receipt_add "$path" "$3" found' in record
    switch, ps_switch = _body(SH, "\nswitch_env() {"), _body(PS1, "\nfunction Switch-Env(")
    assert "rm -rf" not in switch and 'rm -f "$name"' in switch  # only a symlink is ever removed there
    assert "Remove-Tree" not in ps_switch and "[System.IO.Directory]::Delete($name, $false)" in ps_switch
    prune = _body(SH, "\nprune_envs() {")
    assert '[ "$(receipt_status "$candidate")" = created ] || continue' in prune
    assert "(Get-ReceiptStatus $candidate.FullName) -ne 'created'" in _body(PS1, "\nfunction Remove-OldEnvs {")


def test_powershell_removes_links_as_links() -> None:
    tree = _body(PS1, "\nfunction Remove-Tree(")
    assert tree.index("ReparsePoint") < tree.index("Get-ChildItem")  # a junction is deleted before any descent
    assert "Remove-Item" not in tree  # Windows PowerShell 5.1's Remove-Item -Recurse follows junctions
    left = _body(PS1, "\nfunction Remove-LeftForInstaller {")
    assert "left_for_installer" in left


def test_the_new_flags_are_documented() -> None:
    docs = (REPO / "docs" / "installers.md").read_text()
    readme = (REPO / "README.md").read_text()
    for text in (docs, readme):
        for needle in ("--uninstall", "-Uninstall", "--rollback", "-Rollback", "LLAMA_BOOTSTRAP_UNINSTALL",
                       "LLAMA_BOOTSTRAP_ROLLBACK", "receipt.json"):
            assert needle in text, needle
    assert "llama-bootstrap status" in readme and "llama-bootstrap uninstall" in readme


def test_the_powershell_checks_parse_and_their_env_ids_are_pythons(tmp_path) -> None:
    import json
    from pathlib import Path

    from bootstrap.status import env_id
    from tests.installers.test_installer_static import _ps1_errors

    checks = REPO / "tests" / "lifecycle" / "ps1" / "lifecycle.ps1"
    assert _ps1_errors(checks.read_bytes()) == []
    for case in json.loads((REPO / "tests" / "lifecycle" / "fixtures" / "env-ids.json").read_text()):
        kind = "env" if case["conda"] else "venv"
        meta = tmp_path / case["id"] / ("conda-meta" if case["conda"] else "")
        meta.mkdir(parents=True)
        if case["conda"]:
            (meta / receipt.CONDA_STAMP).write_text(case["conda"] + "  x.lock\n")
        (meta / receipt.PIP_STAMP).write_text(case["pip"] + "  y.txt\n")
        assert env_id(Path(tmp_path / case["id"]), kind) == case["id"]
