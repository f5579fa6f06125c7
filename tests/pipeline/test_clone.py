"""clone: real git on local repositories."""

from __future__ import annotations

import subprocess

import pytest

from bootstrap.demo.gitsource import add_commit
from bootstrap.errors import CheckoutConflict, CloneError, ToolMissing
from bootstrap.vcs import Git, clone


def test_fresh_clone_is_at_the_pinned_commit(source_repo, tmp_path):
    target = tmp_path / "work" / "Llama2-Chinese"
    result = clone(str(source_repo.path), source_repo.sha, target)
    assert result.action == "cloned"
    head = subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.strip() == source_repo.sha
    assert (target / "examples" / "chat_demo.py").is_file()
    assert not list(target.parent.glob(".*tmp-clone*")), "temporary folder left behind"


def test_pinned_older_commit_is_checked_out(source_repo, tmp_path):
    older = subprocess.run(["git", "-C", str(source_repo.path), "rev-parse", "HEAD~1"], capture_output=True,
                           text=True).stdout.strip()
    target = tmp_path / "older"
    clone(str(source_repo.path), older, target)
    assert not (target / "examples" / "chat_demo.py").exists()  # added by the newer commit


def test_file_url_works(source_repo, tmp_path):
    result = clone(source_repo.path.as_uri(), source_repo.sha, tmp_path / "x")
    assert result.commit == source_repo.sha


def test_already_there_is_left_alone(source_repo, tmp_path):
    target = tmp_path / "t"
    clone(str(source_repo.path), source_repo.sha, target)
    marker = target / "untracked-note.txt"  # untracked files are the user's business, not a conflict
    marker.write_text("mine")
    before = (target / ".git" / "HEAD").stat().st_mtime_ns
    result = clone(str(source_repo.path), source_repo.sha, target)
    assert result.action == "present"
    assert marker.read_text() == "mine"
    assert (target / ".git" / "HEAD").stat().st_mtime_ns == before


def test_wrong_commit_is_refused_not_overwritten(source_repo, tmp_path):
    target = tmp_path / "t"
    clone(str(source_repo.path), source_repo.sha, target)
    new_sha = add_commit(source_repo.path, {"NEW.md": "new"}, "upstream moves on")
    with pytest.raises(CheckoutConflict) as info:
        clone(str(source_repo.path), new_sha, target)
    assert source_repo.sha in str(info.value) and new_sha in str(info.value)
    assert "checkout" in info.value.remedy
    assert not (target / "NEW.md").exists()


def test_dirty_checkout_is_refused(source_repo, tmp_path):
    target = tmp_path / "t"
    clone(str(source_repo.path), source_repo.sha, target)
    (target / "README.md").write_text("local edit")
    with pytest.raises(CheckoutConflict, match="local changes"):
        clone(str(source_repo.path), source_repo.sha, target)
    assert (target / "README.md").read_text() == "local edit"


def test_other_remote_is_refused(source_repo, tmp_path):
    target = tmp_path / "t"
    clone(str(source_repo.path), source_repo.sha, target)
    mirror = tmp_path / "mirror"
    subprocess.run(["git", "clone", "-q", "--", str(source_repo.path), str(mirror)], check=True)
    with pytest.raises(CheckoutConflict, match="cloned from"):
        clone(str(mirror), source_repo.sha, target)


def test_non_git_folder_is_refused(source_repo, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "precious.txt").write_text("x")
    with pytest.raises(CheckoutConflict, match="not a git checkout"):
        clone(str(source_repo.path), source_repo.sha, target)
    assert (target / "precious.txt").read_text() == "x"


def test_missing_commit_and_missing_repo(source_repo, tmp_path):
    with pytest.raises(CloneError, match="is not in"):
        clone(str(source_repo.path), "0" * 40, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(CloneError, match="no git repository"):
        clone(str(tmp_path / "nope"), "0" * 40, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".*tmp-clone*"))


def test_option_like_url_is_not_an_option(tmp_path):
    """`--` keeps a hostile url from being read as a git option."""
    with pytest.raises(CloneError):
        clone("--upload-pack=touch " + str(tmp_path / "pwned"), "0" * 40, tmp_path / "c")
    assert not (tmp_path / "pwned").exists()


def test_git_missing_is_a_typed_error(tmp_path):
    with pytest.raises(ToolMissing, match="git"):
        Git(which=lambda name: None)


def test_unreachable_url_suggests_the_cn_profile(tmp_path):
    with pytest.raises(CloneError) as info:
        clone("https://127.0.0.1:9/nothing.git", "0" * 40, tmp_path / "d")
    assert "--profile cn" in info.value.remedy


def test_stale_temp_folder_is_cleaned(source_repo, tmp_path):
    stale = tmp_path / ".t.tmp-clone-deadbeef"
    stale.mkdir()
    (stale / "junk").write_text("half a clone")
    clone(str(source_repo.path), source_repo.sha, tmp_path / "t")
    assert not stale.exists()
