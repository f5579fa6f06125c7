"""The builder's layers, each with real components on local data: the offline manifest through the real
loader, pins through the real weights lock, the source through real git, the conda layer over a real HTTP
server on 127.0.0.1, and the pack-time checks of the real writer. (The whole build, pip download included,
runs in test_airgapped.py.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Tuple

import pytest
import yaml

from bootstrap import bundle, bundle_conda, bundle_layers, errors, weightslock
from bootstrap.bundle_build import _write
from bootstrap.bundle_layers import Member
from bootstrap.cli import run_cli
from bootstrap.manifest import parse_manifest
from helpers_core import DEFAULT_MODEL, make_plan
from tests.installers.conftest import closed_port

from .conftest import REPO, TORCH_WHEEL, small_bundle


# -- the manifest and the pins -------------------------------------------------------------------------------
def test_the_offline_manifest_takes_source_and_weights_from_the_bundle(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"weights.dir": "/data/models", "source.dir": "src/Llama2-Chinese"})
    text = bundle_layers.offline_manifest(plan).decode()
    loaded = parse_manifest(text, source="manifest.yaml")
    assert loaded.model == DEFAULT_MODEL and loaded.profile == bundle_layers.BUNDLE_PROFILE
    profile = loaded.profiles[bundle_layers.BUNDLE_PROFILE]
    assert profile.source_url == bundle.SOURCE
    assert [(s.kind, s.path) for s in profile.sources] == [("dir", bundle.WEIGHTS)]
    assert loaded.weights.dir == "models"  # an absolute path of the building machine does not travel
    assert loaded.source.dir == "src/Llama2-Chinese"  # a relative one does
    assert loaded.weights.lock == bundle.WEIGHTS_LOCK and loaded.weights.require_lock is True
    assert set(loaded.profiles) == set(plan.manifest.profiles) | {bundle_layers.BUNDLE_PROFILE}
    assert loaded.models == plan.manifest.models and loaded.source.ref == plan.manifest.source.ref


def _pinned(tmp_path: Path, files: dict) -> Tuple[object, weightslock.LockedRepo]:
    """A plan whose model is pinned to ``files`` (name -> bytes), the files pulled into place."""
    plan = make_plan(tmp_path)
    repo_id = plan.model.repo_id
    locked = []
    for name, data in files.items():
        path = plan.model_dir(repo_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        locked.append(weightslock.LockedFile(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    repo = weightslock.LockedRepo(repo_id=repo_id, revision=plan.model.revision, commit="c" * 40,
                                  files=tuple(locked))
    weightslock.write(plan.weights_lock_path, weightslock.WeightsLock(
        version=1, models={plan.model_key: weightslock.ModelPins(repos=(repo,))}))
    return plan, repo


def test_a_model_must_be_pinned_to_be_bundled(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    with pytest.raises(errors.NotPinned, match="only pinned weights are bundled"):
        bundle_layers.pinned_repos(plan)


def test_the_weights_are_found_where_pull_put_them_and_carry_the_lock_hashes(tmp_path: Path) -> None:
    plan, repo = _pinned(tmp_path, {"config.json": b"{}", "model-1.safetensors": b"w" * 1000})
    assert bundle_layers.pinned_repos(plan) == [repo]
    members = bundle_layers.weights_members(plan, [repo])
    assert [m.name for m in members] == [f"bundle/weights/{repo.repo_id}/config.json",
                                         f"bundle/weights/{repo.repo_id}/model-1.safetensors"]
    assert members[1].sha256_in == {hashlib.sha256(b"w" * 1000).hexdigest()}
    lock = bundle_layers.lock_member(plan, [repo])
    assert lock.name == bundle.WEIGHTS_LOCK and repo.repo_id in lock.data.decode()  # type: ignore[union-attr]
    (plan.model_dir(repo.repo_id) / "model-1.safetensors").write_bytes(b"w" * 999)
    with pytest.raises(errors.BundleBuildError, match=r"model-1.safetensors \(999 bytes, the lock says 1000\)"):
        bundle_layers.weights_members(plan, [repo])


# -- the pack-time checks ------------------------------------------------------------------------------------
def test_bytes_that_differ_from_their_pin_stop_the_build_and_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out" / "b.tar"
    out.parent.mkdir()
    good = Member("a.bin", data=b"abc", sha256_in=frozenset([hashlib.sha256(b"abc").hexdigest()]))
    bad = Member("b.bin", data=b"abd", sha256_in=frozenset([hashlib.sha256(b"abc").hexdigest()]),
                 pinned_by="the weights lock", layer="weights")
    with pytest.raises(errors.BundleBuildError, match="b.bin: its sha256 .* is not what the weights lock pins"):
        _write(out, [good, bad], {"format": 1}, lambda _: None)
    assert list(out.parent.iterdir()) == []


def test_small_files_pinned_by_git_blob_id_are_checked_too(tmp_path: Path) -> None:
    data = b"small file\n"
    blob = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True,  # noqa: S603,S607
                          check=True).stdout.decode().strip()
    small_bundle(tmp_path / "ok.tar", {})  # the writer itself works on an empty member list
    _write(tmp_path / "ok.tar", [Member("x", data=data, blob_id=blob)], {"format": 1}, lambda _: None)
    assert bundle.verify(tmp_path / "ok.tar").members == 3
    with pytest.raises(errors.BundleBuildError, match="git blob id"):
        _write(tmp_path / "no.tar", [Member("x", data=data + b"!", blob_id=blob)], {"format": 1}, lambda _: None)
    assert not (tmp_path / "no.tar").exists()


# -- the source ----------------------------------------------------------------------------------------------
def test_the_git_bundle_holds_the_pinned_commit_and_clones_with_the_real_clone_step(tmp_path: Path,
                                                                                     source_repo) -> None:
    from bootstrap.demo.gitsource import add_commit
    from bootstrap.vcs import clone

    pinned = source_repo.sha
    add_commit(source_repo.path, {"later.txt": "after the pin"}, "a later commit")  # not the pin any more
    plan = make_plan(tmp_path / "p", {"source.url": str(source_repo.path), "source.ref": pinned})
    work = tmp_path / "work"
    work.mkdir()
    member = bundle_layers.git_bundle(plan, work, lambda _: None)
    assert member.name == bundle.SOURCE
    result = clone(str(member.path), pinned, tmp_path / "checkout")
    assert result.commit == pinned and not (tmp_path / "checkout" / "later.txt").exists()

    stray = make_plan(tmp_path / "q", {"source.url": str(source_repo.path), "source.ref": "0" * 40})
    (tmp_path / "work2").mkdir()
    with pytest.raises(errors.BundleBuildError, match="0000000000"):
        bundle_layers.git_bundle(stray, tmp_path / "work2", lambda _: None)


# -- the pip layer -------------------------------------------------------------------------------------------
def test_pip_download_asks_for_the_target_and_ignores_this_machines_pip_configuration() -> None:
    argv = bundle_layers.pip_download_argv(Path("r.txt"), "win-64", "3.9", Path("d"), ())
    joined = " ".join(argv)
    for part in ("download", "--require-hashes", "--no-deps", "--only-binary :all:", "--python-version 3.9",
                 "--implementation cp", "--abi cp39", "--platform win_amd64", "-r r.txt", "--dest d"):
        assert part in joined
    assert "--find-links" not in argv and "--index-url" not in joined
    linux = bundle_layers.pip_download_argv(Path("r.txt"), "linux-64", "3.11", Path("d"), (Path("/w"),))
    tags = [linux[i + 1] for i, a in enumerate(linux) if a == "--platform"]
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in tags and "manylinux_2_17_x86_64" in tags
    assert linux[-2:] == ["--find-links", "/w"] and "--abi" in linux and "cp311" in linux
    env = bundle_layers.pip_env({"PIP_FIND_LINKS": "/opt/x", "PIP_INDEX_URL": "file:///x", "HOME": "/h"})
    assert env == {"HOME": "/h", "PIP_CONFIG_FILE": os.devnull}


def test_the_demo_lock_is_read_with_every_hash() -> None:
    reqs = bundle_layers.hashed_requirements((REPO / "requirements" / "demo-linux-64.txt").read_text())
    assert reqs["torch"][0] == "2.13.0+cpu" and reqs["charset-normalizer"][1]
    assert all(hashes for _, hashes in reqs.values())
    if TORCH_WHEEL.exists():
        assert hashlib.sha256(TORCH_WHEEL.read_bytes()).hexdigest() in reqs["torch"][1]


def test_an_incomplete_lock_cannot_be_bundled(tmp_path: Path) -> None:
    lock = tmp_path / "win-64-cuda.txt"
    lock.write_text("# llama-bootstrap: incomplete lock\nx==1\n")
    with pytest.raises(errors.BundleBuildError, match="not fully hashed"):
        bundle_layers.pip_layer(lock, "win-64", "3.9", (), tmp_path / "w", lambda _: None)


# -- the conda layer, over a real HTTP server on 127.0.0.1 (file_server: a channel and a Miniforge mirror) ------
def _conda_project(root: Path, served: Path) -> bytes:
    """A project with a two-package explicit lock and a Miniforge pin, both files served."""
    pkgs = {"linux-64/python-3.9.18-h0_cpython.conda": b"python package", "noarch/pip-23.3.2-py_0.conda": b"pip"}
    lines = ["# platform: linux-64", "@EXPLICIT"]
    for rel, data in pkgs.items():
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        (served / rel).write_bytes(data)
        lines.append(f"{bundle_conda.CONDA_FORGE}/{rel}#{hashlib.md5(data).hexdigest()}")  # noqa: S324 - the lock's
    installer = b"#!/bin/sh\necho a stand-in for the Miniforge installer\n"
    (served / "Miniforge3-9.9.9-0-Linux-x86_64.sh").write_bytes(installer)
    root.mkdir()
    (root / "conda-linux-64.lock").write_text("\n".join(lines) + "\n")
    (root / "install.sh").write_text(
        'MINIFORGE_VERSION="9.9.9-0"\n'
        f'MINIFORGE_SHA256_LINUX_X86_64="{hashlib.sha256(installer).hexdigest()}"\n'
        'MINIFORGE_URL_GLOBAL="https://example.invalid/${MINIFORGE_VERSION}"\n'
        'MINIFORGE_URL_CN="https://cn.example.invalid/${MINIFORGE_VERSION}"\n')
    return installer


def test_the_conda_layer_fetches_every_package_and_the_pinned_installer(tmp_path: Path, file_server) -> None:
    url, served = file_server
    _conda_project(tmp_path / "root", served)
    members, why = bundle_conda.conda_layer(tmp_path / "root", "linux-64", tmp_path / "w", channel=url,
                                            profile_key="global", log=lambda _: None, miniforge_base=url)
    assert why == ""
    assert [m.name for m in members] == ["bundle/conda/linux-64/python-3.9.18-h0_cpython.conda",
                                         "bundle/conda/noarch/pip-23.3.2-py_0.conda",
                                         "bundle/conda/Miniforge3-9.9.9-0-Linux-x86_64.sh"]
    assert members[-1].executable and members[-1].pinned_by == bundle_conda.MINIFORGE_PIN
    assert (tmp_path / "w" / "noarch" / "pip-23.3.2-py_0.conda").read_bytes() == b"pip"


def test_without_the_installer_the_packages_stay_and_the_index_says_why(tmp_path: Path, file_server) -> None:
    url, served = file_server
    _conda_project(tmp_path / "root", served)
    (served / "Miniforge3-9.9.9-0-Linux-x86_64.sh").unlink()
    members, why = bundle_conda.conda_layer(tmp_path / "root", "linux-64", tmp_path / "w", channel=url,
                                            profile_key="global", log=lambda _: None, miniforge_base=url)
    assert len(members) == 2 and "Miniforge installer was unreachable" in why and "HTTP 404" in why


def test_an_unreachable_channel_leaves_the_layer_out(tmp_path: Path, file_server) -> None:
    url, served = file_server
    _conda_project(tmp_path / "root", served)
    dead = f"http://127.0.0.1:{closed_port()}"
    members, why = bundle_conda.conda_layer(tmp_path / "root", "linux-64", tmp_path / "w", channel=dead,
                                            profile_key="global", log=lambda _: None, miniforge_base=url)
    assert members == [] and "conda channel was unreachable" in why and "127.0.0.1" in why


def test_a_package_with_other_bytes_stops_the_build(tmp_path: Path, file_server) -> None:
    url, served = file_server
    _conda_project(tmp_path / "root", served)
    (served / "noarch" / "pip-23.3.2-py_0.conda").write_bytes(b"not pip")
    with pytest.raises(errors.BundleBuildError, match="does not match its pin"):
        bundle_conda.conda_layer(tmp_path / "root", "linux-64", tmp_path / "w", channel=url, profile_key="global",
                                 log=lambda _: None, miniforge_base=url)
    assert not (tmp_path / "w" / "noarch" / "pip-23.3.2-py_0.conda").exists()


def test_the_miniforge_pins_are_the_installers_documented_ones() -> None:
    docs = (REPO / "docs" / "installers.md").read_text()
    for platform, profile in (("linux-64", "global"), ("win-64", "cn")):
        base, name, sha = bundle_conda.miniforge_pin(REPO, platform, profile)
        assert f"| `{name}` | `{sha}` |" in docs
        assert base.startswith("https://") and base.endswith("/25.3.1-0") and "$" not in base
        assert ("tuna" in base) == (profile == "cn")
    packages = bundle_conda.explicit_packages((REPO / "conda-linux-64.lock").read_text(), "conda-linux-64.lock")
    assert packages and all(p.algo == "md5" and "/" in p.rel for p in packages)


# -- the command line ----------------------------------------------------------------------------------------
def test_bundle_command_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["bundle"]) == 2
    assert run_cli(["bundle", "--output", "a.tar", "--verify", "b.tar"]) == 2
    assert run_cli(["bundle", "--demo", "--model", "x", "--output", str(tmp_path / "a.tar")]) == 2
    assert run_cli(["bundle", "--output", str(tmp_path / "no" / "such" / "a.tar"), "--manifest",
                    str(REPO / "manifest.yaml")]) == 2
    assert "--output" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unpinned_model_fails_before_anything_is_fetched_or_written(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    manifest = tmp_path / "m" / "manifest.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump(yaml.safe_load((REPO / "manifest.yaml").read_text())))
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(["bundle", "--output", str(out / "b.tar"), "--manifest", str(manifest), "--repo",
                    str(REPO)]) == 1
    assert "not pinned" in capsys.readouterr().err
    assert list(out.iterdir()) == []
