"""clone under process faults: a clone killed while git runs leaves no half checkout, and the next run
cleans the leftover temp folder and succeeds."""

from __future__ import annotations

import signal

from bootstrap.demo.gitsource import head_sha

from .conftest import Project, cli_env, leftovers, posix_only, wait_for

pytestmark = posix_only


def clone_args(project: Project):
    return ("clone", "--manifest", str(project.manifest), "--json")


def test_killed_clone_leaves_no_half_checkout_and_the_next_clone_cleans_up(cli, project, wrappers,
                                                                           isolated_hf_env, source_repo):
    slow = cli.start(*clone_args(project), env=cli_env(isolated_hf_env, path_prefix=wrappers.git_folder))
    wait_for(wrappers.git_marker.exists, what="git clone to be running", proc=slow)
    temps = list(project.root.glob(".Llama2-Chinese.tmp-clone-*"))
    assert len(temps) == 1 and (temps[0] / ".git").is_dir()  # git was mid-way, in a temp folder
    slow.signal(signal.SIGKILL)  # the whole job: the CLI and git
    assert slow.finish().code == -signal.SIGKILL
    assert not project.source_dir.exists()  # no half checkout at the target
    assert temps[0].exists()  # a killed process cleans nothing: the temp folder is left over
    assert "clone" not in project.recorded()

    again = cli(*clone_args(project))
    assert again.code == 0, again.stderr
    assert again.steps() == {"clone": "done"}
    assert not temps[0].exists() and leftovers(project.root) == []
    assert head_sha(project.source_dir) == source_repo.sha
    assert project.recorded() == ["clone"]


def test_killed_clone_does_not_count_as_a_checkout_on_the_next_run(cli, project, wrappers, isolated_hf_env,
                                                                   source_repo):
    """The same kill, then a full ``run``: clone is done again (not "present"), and pull follows."""
    slow = cli.start("run", "--manifest", str(project.manifest), "--json", "--skip", "smoke",
                     env=cli_env(isolated_hf_env, path_prefix=wrappers.git_folder))
    wait_for(wrappers.git_marker.exists, what="git clone to be running", proc=slow)
    slow.signal(signal.SIGKILL)
    slow.finish()
    again = cli("run", "--manifest", str(project.manifest), "--json", "--skip", "smoke")
    assert again.code == 0, again.stderr
    clone = next(s for s in again.doc["steps"] if s["step"] == "clone")
    assert clone["status"] == "done" and clone["result"]["action"] == "cloned"
    assert head_sha(project.source_dir) == source_repo.sha
    assert leftovers(project.root) == [] and project.big_is_right()
