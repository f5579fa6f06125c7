"""The GitHub side: the workflows, the composite action (action.yml) and its example, read as YAML and
checked for what issue 13 asked; the action's Linux steps are RUN here, in order, by a small runner
that understands only the expressions action.yml uses (inputs, step outputs, runner.os), with the
stand-in conda and the real bootstrapper's `check --json` behind it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, Sandbox
from .test_installer_static import _ps1_errors, _shellcheck

WORKFLOWS = REPO / ".github" / "workflows"
ACTION = REPO / "action.yml"
EXAMPLE = REPO / "examples" / "workflows" / "provisioning-gate.yml"
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@[0-9a-f]{40}$")


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def _steps(workflow: dict) -> list[tuple[str, dict]]:
    return [(name, step) for name, job in workflow["jobs"].items() for step in job.get("steps", [])]


def _run_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


# ---- pinning ----------------------------------------------------------------------------------
def test_every_action_is_pinned_by_commit_with_its_version_named() -> None:
    files = [*sorted(WORKFLOWS.glob("*.yml")), ACTION, EXAMPLE]
    docs = (REPO / "docs" / "installers.md").read_text()
    seen = 0
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not match:
                continue
            ref, rest = match.groups()
            if ref.startswith("./"):
                continue
            seen += 1
            assert PINNED.match(ref), f"{path.name}:{number}: {ref} is not pinned by a full commit SHA"
            assert re.match(r"\s+# \S+", rest), f"{path.name}:{number}: say which version the commit is"
            if not ref.startswith("OWNER/"):  # the example's placeholder for the reader's own pin
                assert ref.split("@")[1] in docs, f"{ref}: say in docs/installers.md where this commit came from"
    assert seen >= 8


# ---- provision.yml ----------------------------------------------------------------------------
def test_provision_runs_on_every_change_that_matters_and_can_be_called() -> None:
    wf = _load(WORKFLOWS / "provision.yml")
    on = _triggers(wf)
    assert on["pull_request"]["paths"] == on["push"]["paths"]
    for path in ("bootstrap/**", "pyproject.toml", "install.sh", "install.ps1", "action.yml", "requirements/**",
                 "conda-*.lock", "tests/installers/**"):
        assert path in on["push"]["paths"], path
    assert on["workflow_call"]["inputs"]["ref"]["type"] == "string"
    for name, step in _steps(wf):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["ref"] == "${{ inputs.ref }}", name


def test_provision_jobs_and_what_they_run() -> None:
    wf = _load(WORKFLOWS / "provision.yml")
    jobs = wf["jobs"]
    assert set(jobs) == {"linux", "linux-system-conda", "ps1-on-linux", "windows"}
    for name in ("linux", "linux-system-conda", "ps1-on-linux"):
        assert jobs[name]["runs-on"] == "ubuntu-latest"
        # An explicit `shell: bash` is bash -eo pipefail: a failing command cannot hide behind a pipe.
        assert jobs[name]["defaults"]["run"]["shell"] == "bash", name
        assert all("shell" not in step for step in jobs[name]["steps"]), name
    linux = _run_text(jobs["linux"])
    assert "./install.sh --demo --yes --torch cpu" in linux and "--dry-run" in linux
    assert 'grep -q "keeping it" "$RUNNER_TEMP/rerun.log"' in linux
    assert "--model no-such-model || rc=$?" in linux and 'test "$rc" -eq 2' in linux
    assert "| tee" not in linux
    system = _run_text(jobs["linux-system-conda"])
    assert 'sudo chown -R root:root "$CONDA"' in system and "$HOME/.conda/envs/myenv" in system
    ps1 = _run_text(jobs["ps1-on-linux"])
    assert "pwsh -NoProfile -File ./install.ps1 -DryRun" in ps1 and "install.ps1 is for Windows" in ps1
    assert "pwsh -NoProfile -File ./install.ps1 --yes" in ps1
    assert "pwsh -NoProfile -File tests/installers/ps1/functions.ps1" in ps1
    windows = jobs["windows"]
    assert windows["runs-on"] == "windows-latest"
    win = _run_text(windows)
    assert "powershell -NoProfile -ExecutionPolicy Bypass -File tests\\installers\\ps1\\functions.ps1" in win
    for args in ("-DryRun -Demo -Torch cpu", "-Demo -Yes -Torch cpu", "-Demo -Yes -Torch cpu -Log"):
        assert f"powershell -NoProfile -ExecutionPolicy Bypass -File .\\install.ps1 {args}" in win, args
    assert "'keeping it'" in win and "if ($rc -ne 2)" in win and "Jane Doe" in win
    assert all(step.get("shell") == "powershell" for step in windows["steps"] if "run" in step)  # 5.1, not pwsh
    for job in ("linux", "windows"):
        assert any(step.get("uses") == "./" for step in jobs[job]["steps"]), f"{job} does not run action.yml"


def test_the_powershell_in_the_workflows_and_the_action_parses() -> None:
    provision = _load(WORKFLOWS / "provision.yml")
    scripts = [step["run"] for _, step in _steps(provision) if step.get("shell") == "powershell"]
    scripts += [step["run"] for step in _load(ACTION)["runs"]["steps"] if step.get("shell") == "powershell"]
    assert len(scripts) >= 10
    for script in scripts:
        assert _ps1_errors(script.encode()) == [], script


def test_the_bash_in_the_action_is_shellcheck_clean(tmp_path: Path) -> None:
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    for number, step in enumerate(_load(ACTION)["runs"]["steps"]):
        if step.get("shell") != "bash":
            continue
        script = tmp_path / f"step{number}.sh"
        script.write_text(step["run"])
        proc = subprocess.run(  # noqa: S603 - fixed argv
            [shellcheck, "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout


# ---- relock.yml -------------------------------------------------------------------------------
def test_relock_provisions_its_branch_before_the_pull_request() -> None:
    wf = _load(WORKFLOWS / "relock.yml")
    on = _triggers(wf)
    assert "workflow_dispatch" in on and "schedule" in on
    jobs = wf["jobs"]
    assert "llama-bootstrap lock" in _run_text(jobs["relock"])
    assert jobs["relock"]["outputs"]["branch"] == "${{ steps.push.outputs.branch }}"
    assert jobs["provision"]["uses"] == "./.github/workflows/provision.yml"
    assert jobs["provision"]["with"]["ref"] == "${{ needs.relock.outputs.branch }}"
    assert jobs["pull-request"]["needs"] == ["relock", "provision"]
    assert "gh pr create" in _run_text(jobs["pull-request"])
    assert wf["permissions"] == {"contents": "read"}  # write only where a job needs it


# ---- action.yml and its example ---------------------------------------------------------------
def test_the_action_declares_its_inputs_and_outputs() -> None:
    action = _load(ACTION)
    assert set(action["inputs"]) == {"manifest", "model", "profile", "demo", "torch", "fail-on-fail"}
    assert set(action["outputs"]) == {"status", "precision", "report"}
    assert action["runs"]["using"] == "composite"
    ids = {step.get("id") for step in action["runs"]["steps"]}
    for output in action["outputs"].values():
        for step_id in re.findall(r"steps\.([a-z-]+)\.outputs", output["value"]):
            assert step_id in ids
    for step in action["runs"]["steps"]:
        # Inputs reach the scripts as environment variables only: nothing is pasted into a script.
        assert "${{" not in step["run"], step["name"]
        for value in step.get("env", {}).values():
            for name in re.findall(r"inputs\.([a-z-]+)", value):
                assert name in action["inputs"], name


def test_the_example_uses_only_what_the_action_offers() -> None:
    example = _load(EXAMPLE)
    action = _load(ACTION)
    uses = [(job, step) for job, step in _steps(example) if "llama-bootstrap@" in str(step.get("uses", ""))]
    assert len(uses) == 2
    for _, step in uses:
        assert set(step.get("with", {})) <= set(action["inputs"])
    text = EXAMPLE.read_text()
    for output in re.findall(r"steps\.llama\.outputs\.([a-z]+)", text):
        assert output in action["outputs"], output


class _Runner:
    """Runs action.yml's steps for runner.os == Linux, as GitHub would: `bash --noprofile --norc -eo
    pipefail`, env from the step's `env:` with the expressions below filled in, GITHUB_OUTPUT read
    back after each step. Any other expression is an error here, not a guess."""

    def __init__(self, sandbox: Sandbox, inputs: dict[str, str], env: dict[str, str]) -> None:
        action = _load(ACTION)
        self.steps = action["runs"]["steps"]
        self.outputs_spec = action["outputs"]
        self.inputs = {name: spec.get("default", "") for name, spec in action["inputs"].items()} | inputs
        self.sandbox = sandbox
        self.env = dict(sandbox.env) | env
        self.outputs: dict[str, dict[str, str]] = {}
        self.ran: list[str] = []

    def value(self, expr: str) -> str:
        expr = expr.strip()
        if expr == "runner.os":
            return "Linux"
        if m := re.fullmatch(r"inputs\.([a-z-]+)", expr):
            return self.inputs[m.group(1)]
        if m := re.fullmatch(r"steps\.([a-z-]+)\.outputs\.([a-z]+)", expr):
            return self.outputs.get(m.group(1), {}).get(m.group(2), "")
        raise AssertionError(f"expression not understood: {expr}")

    def condition(self, text: str) -> bool:
        result = True
        for part in text.split("&&"):
            m = re.fullmatch(r"\s*([a-z.-]+)\s*==\s*'([^']*)'\s*", part)
            assert m, f"condition not understood: {text}"
            result = result and self.value(m.group(1)) == m.group(2)
        return result

    def fill(self, text: str) -> str:
        def one(m: re.Match) -> str:
            alternatives = [self.value(e) for e in m.group(1).split("||")]
            return next((a for a in alternatives if a), "")

        return re.sub(r"\$\{\{(.*?)\}\}", one, text)

    def run(self) -> int:
        temp = self.sandbox.root / "runner-temp"
        temp.mkdir(exist_ok=True)
        for number, step in enumerate(self.steps):
            if "if" in step and not self.condition(step["if"]):
                continue
            assert step["shell"] == "bash", step["name"]
            self.ran.append(step["name"])
            output_file = temp / f"output-{number}"
            output_file.write_text("")
            env = self.env | {k: self.fill(str(v)) for k, v in step.get("env", {}).items()}
            env |= {"GITHUB_ACTION_PATH": str(self.sandbox.repo), "RUNNER_TEMP": str(temp),
                    "GITHUB_OUTPUT": str(output_file)}
            script = temp / f"step-{number}.sh"
            script.write_text(step["run"])
            proc = subprocess.run(  # noqa: S603 - fixed argv, the action's own script
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                env=env, cwd=self.sandbox.root, capture_output=True, text=True, timeout=300, check=False,
            )
            self.log = proc.stdout + proc.stderr
            if "id" in step:
                self.outputs[step["id"]] = dict(
                    line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line
                )
            if proc.returncode != 0:
                return proc.returncode
        return 0

    def output(self, name: str) -> str:
        return self.fill(self.outputs_spec[name]["value"])


def _action_sandbox(sandbox: Sandbox) -> dict[str, str]:
    sandbox.add_standin_conda()
    (sandbox.root / "my-manifest.yaml").write_text((REPO / "manifest.yaml").read_text(encoding="utf-8"),
                                                   encoding="utf-8")
    # The stand-in env's python runs this interpreter (with the real bootstrapper) for all but pip.
    return {"STANDIN_REAL_PYTHON": sys.executable, "LLAMA_BOOTSTRAP_CONDA_PREFIX": str(sandbox.prefix)}


def test_the_action_runs_the_installer_and_the_real_check(sandbox: Sandbox) -> None:
    env = _action_sandbox(sandbox)
    runner = _Runner(sandbox, {"manifest": "my-manifest.yaml", "torch": "cpu", "fail-on-fail": "false"}, env)
    assert runner.run() == 0, runner.log
    assert runner.ran == ["install (Linux)", "check (Linux)"]
    python = sandbox.conda_base / "envs" / "myenv" / "bin" / "python"
    assert runner.outputs["install-linux"]["python"] == str(python)
    assert not [c for c in sandbox.standin_calls() if c.startswith("python -m bootstrap run")]  # --install-only
    report = Path(runner.output("report"))
    doc = json.loads(report.read_text(encoding="utf-8"))
    # This machine has no GPU and the manifest requires one: the real check says fail; the precision output
    # is the CPU precision the check chose (fp32, or bf16 where fp32 does not fit in RAM).
    assert runner.output("status") == doc["status"] == "fail"
    vram = next(c for c in doc["checks"] if c["name"] == "vram")
    assert runner.output("precision") == vram["data"]["precision"] in ("fp32", "bf16")

    failing = _Runner(sandbox, {"manifest": "my-manifest.yaml", "torch": "cpu"}, env)  # fail-on-fail: true
    assert failing.run() == 1
    assert "::error::llama-bootstrap check: this runner cannot serve the model" in failing.log
    assert failing.output("status") == "fail"  # the outputs are set before the step fails


def test_the_action_passes_bad_input_on_as_exit_2(sandbox: Sandbox) -> None:
    env = _action_sandbox(sandbox)
    runner = _Runner(sandbox, {"manifest": "my-manifest.yaml", "model": "no-such-model", "torch": "cpu"}, env)
    assert runner.run() == 2
    assert runner.output("status") == "error"
    assert json.loads(Path(runner.output("report")).read_text())["error"]["exit_code"] == 2


def test_the_action_runs_the_demo_only_when_asked() -> None:
    steps = _load(ACTION)["runs"]["steps"]
    demo = [step for step in steps if step["name"].startswith("demo")]
    assert [step["if"] for step in demo] == ["runner.os == 'Linux' && inputs.demo == 'true'",
                                             "runner.os == 'Windows' && inputs.demo == 'true'"]
    assert '"$PYTHON" -m bootstrap demo --workdir "$RUNNER_TEMP/llama-bootstrap-demo"' in demo[0]["run"]


def test_the_mini_runner_refuses_what_it_does_not_understand(sandbox: Sandbox) -> None:
    runner = _Runner(sandbox, {}, {})
    with pytest.raises(AssertionError):
        runner.condition("github.event_name == 'push'")
    with pytest.raises(AssertionError):
        runner.fill("${{ secrets.TOKEN }}")
    assert shutil.which("bash") and os.path.exists(ACTION)
