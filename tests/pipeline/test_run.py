"""run: check -> clone -> pull -> smoke, resumable, locked, logged; and demo end to end."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bootstrap import errors
from bootstrap.pipeline import RunOptions, run
from bootstrap.state import STATE_FILE, run_lock
from tests.pipeline.helpers import DEMO_REPO_ID, cli, plan_for, write_manifest

pytestmark = pytest.mark.torch


@pytest.fixture
def project(local_hub, tiny_model_dir, source_repo, tmp_path):
    local_hub.add_repo(DEMO_REPO_ID, tiny_model_dir)
    return write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                          smoke__max_new_tokens=8)


def statuses(result):
    return {s.step: s.status for s in result.steps}


def test_run_twice_second_is_a_noop(project, local_hub, monkeypatch):
    plan = plan_for(project)
    first = run(plan, RunOptions())
    assert statuses(first) == {"check": "done", "clone": "done", "pull": "done", "smoke": "done"}
    state = json.loads((plan.state_dir / STATE_FILE).read_text())
    assert set(state["steps"]) == {"check", "clone", "pull", "smoke"}
    smoke_answer = state["steps"]["smoke"]["result"]["answer"]
    assert smoke_answer.strip()

    local_hub.reset_counters()
    import bootstrap.pull as pull_mod
    import bootstrap.smoke as smoke_mod
    monkeypatch.setattr(smoke_mod, "smoke", lambda *a, **k: pytest.fail("model loaded on a no-op run"))
    monkeypatch.setattr(pull_mod, "sha256_file", lambda *a: pytest.fail("re-hashed on a no-op run"))
    second = run(plan, RunOptions())
    assert statuses(second) == {"check": "cached", "clone": "cached", "pull": "cached", "smoke": "cached"}
    assert local_hub.requests == []  # no network at all
    assert second.seconds < first.seconds


def test_force_redoes_one_step(project):
    plan = plan_for(project)
    run(plan, RunOptions())
    again = run(plan, RunOptions(force=("smoke",)))
    assert statuses(again)["smoke"] == "done" and statuses(again)["pull"] == "cached"


def test_skip_and_changed_manifest(project, tmp_path):
    plan = plan_for(project)
    result = run(plan, RunOptions(skip=("smoke",)))
    assert statuses(result)["smoke"] == "skipped"
    # a different smoke prompt invalidates only the smoke record
    import yaml
    doc = yaml.safe_load(project.read_text(encoding="utf-8"))
    doc["smoke"]["prompt"] = "北京有什么"
    project.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = run(plan_for(project), RunOptions())
    assert statuses(result)["pull"] == "cached" and statuses(result)["smoke"] == "done"


def test_deleted_file_is_pulled_again(project, local_hub):
    plan = plan_for(project)
    run(plan, RunOptions())
    (plan.model_dir(DEMO_REPO_ID) / "model.safetensors").unlink()
    result = run(plan, RunOptions())
    assert statuses(result)["pull"] == "done" and statuses(result)["smoke"] == "done"


def test_concurrent_run_is_refused(project):
    plan = plan_for(project)
    with run_lock(plan.state_dir):
        with pytest.raises(errors.LockedError, match="in progress"):
            run(plan, RunOptions())
        proc = cli(["run", "--manifest", str(project)])
        assert proc.returncode == 3 and "another llama-bootstrap run" in proc.stderr


def test_second_run_waits_for_the_lock(project):
    plan = plan_for(project)
    run(plan, RunOptions())
    holder = threading.Thread(target=lambda: _hold(plan.state_dir, 1.0))
    holder.start()
    time.sleep(0.2)
    result = run(plan, RunOptions(wait_s=10))
    holder.join()
    assert result.ok


def _hold(state_dir, seconds):
    with run_lock(state_dir):
        time.sleep(seconds)


def test_check_failure_stops_the_run_with_the_log_path(project):
    import yaml
    doc = yaml.safe_load(project.read_text(encoding="utf-8"))
    doc["requirements"]["gpu"] = "required"
    project.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    proc = cli(["run", "--manifest", str(project)])
    assert proc.returncode == 1
    assert "checks failed: gpu" in proc.stderr and "log:" in proc.stderr
    log_path = proc.stderr.rsplit("log: ", 1)[1].split(")")[0]
    assert "check gpu: fail" in open(log_path, encoding="utf-8").read()
    assert not (project.parent / "models").exists()  # nothing after the failed step ran


def test_run_cli_json(project):
    proc = cli(["run", "--manifest", str(project), "--json"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok" and [s["step"] for s in doc["steps"]] == ["check", "clone", "pull", "smoke"]
    assert doc["steps"][3]["result"]["answer"].strip()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    proc = cli(["demo", "--workdir", str(tmp_path / "demo"), "--json"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok"
    assert [s["status"] for s in doc["first_run"]["steps"]] == ["done"] * 4
    assert [s["status"] for s in doc["second_run"]["steps"]] == ["cached"] * 4
    assert doc["first_run"]["steps"][3]["result"]["answer"].strip()
