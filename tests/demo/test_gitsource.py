"""The local git source repository: real git, deterministic shas, no dependence on the user's config."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bootstrap.demo.gitsource import (
    AUTHOR_EMAIL,
    AUTHOR_NAME,
    GitError,
    add_commit,
    make_source_repo,
    run_git,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_source_repo_fixture(source_repo) -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", source_repo.sha)
    assert run_git(source_repo.path, "rev-parse", "HEAD").strip() == source_repo.sha
    assert (source_repo.path / "README.md").is_file()
    example = (source_repo.path / "examples" / "chat_demo.py").read_text(encoding="utf-8")
    assert "AutoModelForCausalLM" in example
    assert run_git(source_repo.path, "status", "--porcelain") == ""
    assert run_git(source_repo.path, "rev-list", "--count", "HEAD").strip() == "2"
    assert run_git(source_repo.path, "symbolic-ref", "--short", "HEAD").strip() == "main"
    author = run_git(source_repo.path, "log", "-1", "--format=%an <%ae> %cn <%ce>").strip()
    assert author == f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {AUTHOR_NAME} <{AUTHOR_EMAIL}>"


def test_sha_is_deterministic(tmp_path: Path) -> None:
    assert make_source_repo(tmp_path / "a") == make_source_repo(tmp_path / "b")


def test_user_config_and_git_env_do_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = make_source_repo(tmp_path / "clean")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Someone Else\n\temail = else@example.com\n[commit]\n\tgpgsign = true\n"
        "[init]\n\tdefaultBranch = trunk\n[core]\n\tautocrlf = true\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Env Author")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2001-01-01T00:00:00")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert make_source_repo(tmp_path / "dirty-env") == expected


def test_add_commit_makes_the_old_sha_a_pin_in_the_past(source_repo, tmp_path: Path) -> None:
    new = add_commit(source_repo.path, {"examples/extra.py": "print('more')\n"}, "Add another example")
    assert new != source_repo.sha
    assert run_git(source_repo.path, "rev-parse", "HEAD~1").strip() == source_repo.sha
    # a clone can check out the older pin
    clone = tmp_path / "clone"
    git = shutil.which("git")
    subprocess.run([git, "clone", "--quiet", "--", str(source_repo.path), str(clone)], check=True,  # noqa: S603
                   capture_output=True)
    run_git(clone, "checkout", "--quiet", source_repo.sha)
    assert not (clone / "examples" / "extra.py").exists()
    assert run_git(clone, "rev-parse", "HEAD").strip() == source_repo.sha


def test_git_errors_are_typed(tmp_path: Path) -> None:
    (tmp_path / "not-a-repo").mkdir()
    with pytest.raises(GitError, match="command failed"):
        run_git(tmp_path / "not-a-repo", "rev-parse", "HEAD")
