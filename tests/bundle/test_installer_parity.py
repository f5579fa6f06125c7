"""install.ps1 -FromBundle cannot run here (no PowerShell): its structure is checked against install.sh's
--from-bundle, which runs for real in the other tests. Both scripts name the same helpers, call the steps in
the same order, isolate pip with the same variables and read only BUNDLE.json fields the builder writes (as
top-level scalars, which install.sh's line reader can take)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import List, Tuple

from bootstrap import bundle
from bootstrap.bundle_build import BundleRequest, _index
from helpers_core import make_plan

from .conftest import REPO

SH = (REPO / "install.sh").read_text()
PS1 = (REPO / "install.ps1").read_text()


def _mapping(text: str) -> List[Tuple[str, str]]:
    """The `install.sh <-> install.ps1: a = B, c = D, ...` comment of the bundle section."""
    match = re.search(r"^# install\.sh <-> install\.ps1: (.*?)\.\n(?!#   )", text, re.MULTILINE | re.DOTALL)
    assert match, "no bundle helper mapping"
    body = " ".join(line.lstrip("# ").strip() for line in match.group(1).splitlines())
    return [tuple(pair.strip().split(" = ")) for pair in body.split(",")]  # type: ignore[misc]


def _body(text: str, start: str) -> str:
    begin = text.index(start)
    return text[begin:text.index("\n}\n", begin)]


def _steps() -> List[Tuple[str, str]]:
    rows = re.findall(r"^\s*#?\s*([a-z_]+)\s+<->\s+([A-Z][A-Za-z]+-[A-Za-z]+)\s*$", SH, re.MULTILINE)
    return [*rows, *_mapping(SH)]


def test_both_scripts_name_the_same_bundle_helpers_and_define_them() -> None:
    pairs = _mapping(SH)
    assert pairs == _mapping(PS1)
    assert ("from_bundle", "Install-FromBundle") in pairs and ("verify_bundle", "Test-Bundle") in pairs
    for sh_name, ps_name in pairs:
        assert re.search(rf"^{sh_name}\(\) \{{", SH, re.MULTILINE), sh_name
        assert re.search(rf"^function {ps_name}\b", PS1, re.MULTILINE), ps_name


def _calls(text: str, header: str, names: List[str]) -> List[str]:
    """The steps and helpers (sh names) a function's body calls, in order, without itself and field reads."""
    to_sh = {ps: sh for sh, ps in _steps()}
    body = _body(text, header)
    body = body[body.index("{") + 1:]
    if text is SH:
        found = [n for n in re.findall(r"\b([a-z_]+)\b", body) if n in to_sh.values()]
    else:
        found = [to_sh[n] for n in re.findall(r"\b([A-Z][a-z]+-[A-Za-z]+)\b", body) if n in to_sh]
    return [n for n in found if n in names]


def test_from_bundle_and_install_frombundle_run_the_same_steps_in_the_same_order() -> None:
    names = [sh for sh, _ in _steps() if sh not in ("bundle_field", "undo_bundle")]
    sh_order = _calls(SH, "\nfrom_bundle() {", names)
    assert sh_order == ["detect_platform", "verify_bundle", "start_log", "isolate_pip", "hand_off", "bundle_env",
                        "install_pip_layer", "install_bootstrapper", "hand_off"]
    assert _calls(PS1, "\nfunction Install-FromBundle {", names) == sh_order
    bundle_env = _calls(SH, "\nbundle_env() {", names)
    assert bundle_env == ["find_conda", "install_bundle_miniforge", "create_env", "create_venv_fallback"]
    assert _calls(PS1, "\nfunction New-BundleEnv", names) == bundle_env


def test_both_verifiers_refuse_the_same_things() -> None:
    sh, ps = _body(SH, "\nverify_bundle() {"), _body(PS1, "\nfunction Test-Bundle")
    for refusal in ("something other than a regular file", "unsafe member name", "twice",
                    "is not a llama-bootstrap bundle", "not enough disk",
                    "is not both in the archive and in SHA256SUMS",
                    "does not match its sha256 in SHA256SUMS", "is not 1", "the bundle is for"):
        assert refusal in sh and refusal in ps, refusal
    assert sh.count("nothing was changed") >= 8 and ps.count("nothing was changed") >= 8


def test_pip_is_isolated_with_the_same_variables() -> None:
    sh_vars = set(re.findall(r"\b(PIP_[A-Z_]+)=", _body(SH, "\nisolate_pip() {")))
    ps_vars = set(re.findall(r"\$env:(PIP_[A-Z_]+) =", _body(PS1, "\nfunction Set-PipIsolation")))
    assert sh_vars == ps_vars == {"PIP_CONFIG_FILE", "PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_DISABLE_PIP_VERSION_CHECK"}
    assert "PIP_*" in _body(SH, "\nisolate_pip() {") and "'PIP_*'" in _body(PS1, "\nfunction Set-PipIsolation")
    for text in (SH, PS1):  # the same place and the same marker of a finished install
        assert "bundles" in text and ".llama-bootstrap-installed" in text and "CONDA_OFFLINE" in text


def test_the_installers_read_only_top_level_scalars_the_builder_writes(tmp_path: Path) -> None:
    sh_fields = set(re.findall(r'bundle_field "[^"]+" ([a-z_]+)', SH))
    ps_fields = set(re.findall(r"Get-BundleField \$[A-Za-z:]+ '([a-z_]+)'", PS1))
    ps_fields |= set(re.findall(r"\$index\.([a-z_]+)", _body(PS1, "\nfunction Test-Bundle")))
    assert sh_fields == ps_fields and {"platform", "format", "pip_lock", "conda", "python"} <= sh_fields
    plan = make_plan(tmp_path)
    index = _index(BundleRequest(output=tmp_path / "b.tar", platform="linux-64", repo_root=REPO), plan, [],
                   "3.9", "requirements/linux-64-cuda.txt", "conda-linux-64.lock", [], "why")
    index["members"] = {"a": {"size": 1, "sha256": "0" * 64}}
    path = tmp_path / "BUNDLE.json"
    path.write_bytes(bundle.index_json(index))
    reader = _body(SH, "\nbundle_field() {") + "\n}\n"
    for field in sorted(sh_fields):
        assert isinstance(index[field], (str, int, bool)), field
        proc = subprocess.run(["bash", "-c", f'{reader}\nbundle_field "$1" "$2"', "_", str(path), field],  # noqa: S603,S607
                              capture_output=True, text=True, check=True)
        want = str(index[field]).lower() if isinstance(index[field], bool) else str(index[field])
        assert proc.stdout.strip() == want, field
