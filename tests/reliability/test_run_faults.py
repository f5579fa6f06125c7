"""run under process faults: SIGKILL mid-download, Ctrl-C in every step, concurrent runs, stale locks.

``run`` is the real CLI in its own process group. A step is made slow so that the signal lands inside
it: ``check`` waits on a hanging nvidia-smi wrapper, ``clone`` on a git wrapper that keeps running
after cloning, ``pull`` on LocalHub's ``slow`` fault, ``smoke`` on a tiny model that never emits EOS.
"""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest

from bootstrap.demo.scenario import DEMO_REPO_ID
from bootstrap.exits import EXIT_INTERRUPTED, EXIT_LOCKED

from .conftest import (
    BIG,
    BIG_SIZE,
    MiB,
    Project,
    body_gets,
    cli_env,
    leftovers,
    posix_only,
    range_start,
    wait_for,
    write_manifest,
)

pytestmark = posix_only


def run_args(project: Project, *extra: str):
    return ("run", "--manifest", str(project.manifest), "--json", *extra)


def in_progress(text: str) -> bool:
    return "another llama-bootstrap run is in progress" in text


# -- 2. SIGKILL mid-file ------------------------------------------------------------------------------


def test_sigkill_mid_file_then_run_again_completes_and_resumes(cli, local_hub, project):
    local_hub.inject(f"*/{BIG}", "slow", times=None, rate=1.5 * MiB)  # 4 connections: ~4 s for 25 MiB
    first = cli.start(*run_args(project, "--skip", "smoke"))
    wait_for(lambda: project.partial_bytes() > 0, what="a non-empty .incomplete file", proc=first)
    first.signal(signal.SIGKILL)
    assert first.finish().code == -signal.SIGKILL
    kept = project.partial_bytes()
    assert kept > 0
    assert not (project.model_dir / BIG).exists()
    assert project.recorded() == ["check", "clone"]  # parses; the killed pull is not recorded
    assert (project.state_dir / "run.lock").exists()  # the lock file stays; the OS released the lock

    local_hub.reset_counters()
    again = cli(*run_args(project, "--skip", "smoke"))
    assert again.code == 0, again.stderr
    assert not in_progress(again.output)
    assert again.steps() == {"check": "done", "clone": "cached", "pull": "done", "smoke": "skipped"}
    asked = sum(int(r.split("-")[1]) + 1 - range_start(r) for r in body_gets(local_hub))
    assert asked == BIG_SIZE - kept  # resumed from the killed run's recorded bytes, piece by piece
    assert project.big_is_right() and project.partials() == []
    assert project.recorded() == ["check", "clone", "pull"]


# -- 8. Ctrl-C in each step -------------------------------------------------------------------------


def _interrupt_and_check(run, project: Project, recorded_before: list):
    run.signal(signal.SIGINT)
    sent = time.monotonic()
    result = run.finish(timeout=90)
    seconds = time.monotonic() - sent
    assert result.code == EXIT_INTERRUPTED, result.output
    assert result.doc["error"]["kind"] == "Interrupted"
    assert "state is consistent" in result.stderr and "run again" in result.stderr
    assert project.recorded() == recorded_before  # parses, and the interrupted step is not recorded
    assert "interrupted" in project.logs()
    return seconds


@pytest.mark.parametrize("step", ["check", "clone", "pull"])
def test_ctrl_c_during_a_step_exits_130_and_the_next_run_continues(step, cli, local_hub, project, wrappers,
                                                                   isolated_hf_env):
    slow_git = cli_env(isolated_hf_env, path_prefix=wrappers.git_folder)
    hung_smi = cli_env(isolated_hf_env, path_prefix=wrappers.smi_folder)
    if step == "check":
        run = cli.start(*run_args(project, "--skip", "smoke"), env=hung_smi)
        wait_for(wrappers.smi_marker.exists, what="check to wait on nvidia-smi", proc=run)
        before = []
    elif step == "clone":
        run = cli.start(*run_args(project, "--skip", "smoke"), env=slow_git)
        wait_for(wrappers.git_marker.exists, what="git clone to be running", proc=run)
        assert list(project.root.glob(".Llama2-Chinese.tmp-clone-*"))  # the clone is under way in a temp folder
        before = ["check"]
    else:
        local_hub.inject(f"*/{BIG}", "slow", times=1, delay=0.1, chunk=256 * 1024)  # ~10 s for 25 MiB
        run = cli.start(*run_args(project, "--skip", "smoke"))
        wait_for(lambda: body_gets(local_hub), what="the download to start", proc=run)
        time.sleep(0.3)
        before = ["check", "clone"]
    seconds = _interrupt_and_check(run, project, before)
    if step == "clone":
        assert not project.source_dir.exists()  # no half checkout at the target
        assert leftovers(project.root) == []  # and the temp folder was removed on the way out

    again = cli(*run_args(project, "--skip", "smoke"))
    assert again.code == 0, again.stderr
    assert again.steps()["pull"] == "done" and again.steps()["clone"] in ("done", "cached")
    assert project.big_is_right() and project.recorded() == ["check", "clone", "pull"]
    # Ctrl-C must act promptly, not after the step's remaining work (checked last: see the report).
    assert seconds < 5, f"exit took {seconds:.1f}s after Ctrl-C during {step}"


@pytest.mark.torch
def test_ctrl_c_during_smoke_exits_130_and_the_next_run_passes(cli, local_hub, tiny_model_dir, source_repo,
                                                               tmp_path):
    pytest.importorskip("torch")
    # A copy of the tiny model that never emits EOS, so generation runs to max_new_tokens (tens of seconds).
    model = tmp_path / "tiny-no-eos"
    shutil.copytree(tiny_model_dir, model)
    for name in ("config.json", "generation_config.json"):
        doc = json.loads((model / name).read_text(encoding="utf-8"))
        doc["eos_token_id"] = None
        (model / name).write_text(json.dumps(doc), encoding="utf-8")
    local_hub.add_repo(DEMO_REPO_ID, model)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                              smoke__max_new_tokens=3000)
    project = Project(manifest, model)
    run = cli.start(*run_args(project))
    wait_for(lambda: "[smoke] start" in project.logs(), what="smoke to start", proc=run, timeout=120)
    wait_for(lambda: "loading " in project.logs(), what="smoke to load the model", proc=run)
    time.sleep(1.5)  # loaded and generating
    seconds = _interrupt_and_check(run, project, ["check", "clone", "pull"])
    assert seconds < 10

    # The next run continues: only smoke is left (with fewer tokens, so it ends quickly).
    write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                   smoke__max_new_tokens=8)
    again = cli(*run_args(project), timeout=180)
    assert again.code == 0, again.stderr
    assert again.steps() == {"check": "done", "clone": "cached", "pull": "cached", "smoke": "done"}
    assert project.recorded() == ["check", "clone", "pull", "smoke"]


# -- 9. two runs at once -------------------------------------------------------------------------------


def test_a_second_concurrent_run_stops_with_exit_3_or_waits_with_wait(cli, local_hub, project):
    local_hub.inject(f"*/{BIG}", "slow", times=None, rate=1 * MiB)  # 4 connections: ~6 s for 25 MiB
    args = ("pull", "--manifest", str(project.manifest), "--json")
    first = cli.start(*args)
    wait_for(lambda: body_gets(local_hub), what="the first run to be downloading (holding the lock)", proc=first)

    second = cli(*args, timeout=30)
    assert second.code == EXIT_LOCKED, second.output
    assert second.seconds < 15  # refused at once, did not wait for the first
    assert second.doc["error"]["kind"] == "LockedError"
    assert in_progress(second.stderr) and "--wait" in second.stderr
    assert first.alive()

    waiting = cli.start(*args, "--wait", "120")
    result = first.finish()
    assert result.code == 0, result.stderr
    waited = waiting.finish()
    assert waited.code == 0, waited.stderr
    assert waited.doc["status"] == "ok"
    # the waiting run found the file in place and verified: every piece was asked for once, by the first run
    assert len(body_gets(local_hub)) == len(range(0, BIG_SIZE, 8 * MiB))
    assert project.big_is_right() and project.recorded() == ["pull"]


# -- 10. a stale lock ------------------------------------------------------------------------------------


def test_a_lock_held_by_a_killed_run_does_not_block_the_next_run(cli, project, wrappers, isolated_hf_env):
    holder = cli.start(*run_args(project, "--skip", "smoke"),
                       env=cli_env(isolated_hf_env, path_prefix=wrappers.smi_folder))
    wait_for(wrappers.smi_marker.exists, what="the run to hold the lock (in check)", proc=holder)
    holder.signal(signal.SIGKILL)
    assert holder.finish().code == -signal.SIGKILL
    assert (project.state_dir / "run.lock").exists()
    assert project.recorded() == []

    again = cli(*run_args(project, "--skip", "smoke"), timeout=120)
    assert again.code == 0, again.stderr
    assert not in_progress(again.output)
    assert again.steps()["check"] == "done" and project.big_is_right()
