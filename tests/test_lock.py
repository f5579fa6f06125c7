"""bootstrap.lock: the relock commands, with an injected runner (no conda-lock or uv needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bootstrap import lock as relock_mod
from bootstrap.errors import StepFailed, ToolMissing

ROOT = Path(__file__).resolve().parents[1]


class FakeRunner:
    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        code = 1 if self.fail_on and self.fail_on in argv else 0
        return subprocess.CompletedProcess(argv, code, "", "solver exploded\n" if code else "")


def _which(*present):
    return lambda tool: f"/opt/bin/{tool}" if tool in present else None


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "environment.yml").write_text((ROOT / "environment.yml").read_text(encoding="utf-8"),
                                              encoding="utf-8")
    (tmp_path / "requirements").mkdir()
    for row in relock_mod.PIP_LOCKS:
        (tmp_path / row.in_file).write_text("-r base.in\n", encoding="utf-8")
    return tmp_path


def test_the_table_covers_every_lock_in_the_repository():
    """Every requirements/*.in is compiled and every committed requirements/*.txt is regenerated."""
    ins = {p.relative_to(ROOT).as_posix() for p in (ROOT / "requirements").glob("*.in")}
    outs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "requirements").glob("*.txt")}
    included_only = {"requirements/base.in", "requirements/demo.in"}  # pulled in with -r by others
    assert {r.in_file for r in relock_mod.PIP_LOCKS} == ins - included_only
    assert {r.out_file for r in relock_mod.PIP_LOCKS} == outs
    for name in included_only:
        assert any(f"-r {Path(name).name}" in (ROOT / r.in_file).read_text(encoding="utf-8")
                   for r in relock_mod.PIP_LOCKS)


def test_relock_runs_conda_lock_then_uv_with_exact_arguments(checkout):
    runner = FakeRunner()
    written = relock_mod.relock(checkout, runner=runner, which=_which("conda-lock", "uv"))
    argvs = [call[0] for call in runner.calls]
    assert argvs[0] == [
        "/opt/bin/conda-lock", "lock", "--file", "environment.yml",
        "--platform", "linux-64", "--platform", "win-64", "--lockfile", "conda-lock.yml",
    ]
    assert argvs[1] == [
        "/opt/bin/conda-lock", "render", "--kind", "explicit",
        "--platform", "linux-64", "--platform", "win-64",
        "--filename-template", "conda-{platform}.lock", "conda-lock.yml",
    ]
    common = ["--generate-hashes", "--no-emit-index-url", "--no-emit-find-links",
              "--custom-compile-command", "llama-bootstrap lock"]
    assert argvs[2] == [
        "/opt/bin/uv", "pip", "compile", "requirements/cuda.in",
        "--python-version", "3.9", "--python-platform", "x86_64-unknown-linux-gnu",
        *common, "-o", "requirements/linux-64-cuda.txt",
    ]
    win_cuda = next(a for a in argvs if "requirements/win-64-cuda.txt" in a)
    assert win_cuda[-4:] == ["--extra-index-url", relock_mod.TORCH_CUDA_INDEX, "--index-strategy",
                             "unsafe-best-match"]
    test = next(a for a in argvs if "requirements/test.txt" in a)
    assert test[test.index("--python-version") + 1] == "3.11" and relock_mod.TORCH_CPU_INDEX in test
    assert len(argvs) == 2 + len(relock_mod.PIP_LOCKS)
    for argv, kwargs in runner.calls:
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert kwargs["cwd"] == str(checkout)
        assert not kwargs.get("shell")
    assert [p.relative_to(checkout).as_posix() for p in written][:3] == [
        "conda-lock.yml", "conda-linux-64.lock", "conda-win-64.lock"]


def test_relock_cuda_index_is_overridable(checkout):
    runner = FakeRunner()
    relock_mod.relock(checkout, runner=runner, which=_which("conda-lock", "uv"),
                      torch_cuda_index="https://mirror.example/whl/cu128")
    win_cuda = next(c[0] for c in runner.calls if "requirements/win-64-cuda.txt" in c[0])
    assert "https://mirror.example/whl/cu128" in win_cuda


@pytest.mark.parametrize(("present", "missing"), [(("uv",), "conda-lock"), (("conda-lock",), "uv")])
def test_relock_missing_tool_raises_before_running_anything(checkout, present, missing):
    runner = FakeRunner()
    with pytest.raises(ToolMissing) as info:
        relock_mod.relock(checkout, runner=runner, which=_which(*present))
    assert info.value.tool == missing and info.value.remedy
    assert runner.calls == []


def test_relock_failed_command_raises_step_failed(checkout):
    runner = FakeRunner(fail_on="render")
    with pytest.raises(StepFailed, match="render") as info:
        relock_mod.relock(checkout, runner=runner, which=_which("conda-lock", "uv"))
    assert "solver exploded" in str(info.value)
    assert len(runner.calls) == 2  # stopped at the failing render, uv never ran


def test_relock_missing_input_raises(checkout):
    (checkout / "requirements" / "win-cuda.in").unlink()
    runner = FakeRunner()
    with pytest.raises(StepFailed, match="win-cuda.in"):
        relock_mod.relock(checkout, runner=runner, which=_which("conda-lock", "uv"))
    assert runner.calls == []


def _normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _in_pins(in_file):
    """name -> version of every exact pin in a requirements .in file, following its ``-r`` includes."""
    pins = {}
    for line in in_file.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(_in_pins(in_file.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==", 1)
            pins[_normalized(name)] = version.strip()
    return pins


def _lock_pins(txt_file):
    """name -> version of every requirement line of a compiled lock."""
    lines = txt_file.read_text(encoding="utf-8").splitlines()
    return dict((_normalized(n), v) for n, v in (ln.split(" ")[0].split("==", 1)
                                                 for ln in lines if re.match(r"[A-Za-z0-9]", ln)))


@pytest.mark.parametrize("row", relock_mod.PIP_LOCKS, ids=lambda r: Path(r.out_file).name)
def test_every_exact_pin_of_an_in_file_is_in_its_lock(row):
    """A pin added to an .in file (or changed there) without re-locking fails here."""
    wanted = _in_pins(ROOT / row.in_file)
    locked = _lock_pins(ROOT / row.out_file)
    assert wanted
    assert {name: locked.get(name) for name in wanted} == wanted


def test_the_serve_stack_is_the_same_version_in_every_layer_that_has_it():
    """`serve` runs the same fastapi/uvicorn in myenv (3.9), the demo venv (3.11) and both test runs."""
    layers = [row for row in relock_mod.PIP_LOCKS if "conda-lock" not in row.out_file]
    for package in ("fastapi", "uvicorn"):
        versions = {Path(row.out_file).name: _lock_pins(ROOT / row.out_file).get(package) for row in layers}
        assert len(set(versions.values())) == 1 and None not in versions.values(), (package, versions)
