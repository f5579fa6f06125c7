"""The weights lock and the sources it makes safe: lock --weights, pull against the lock, hub / modelscope /
dir sources, fallback, --require-lock. Real pull against look-alikes on 127.0.0.1 (tests/lookalikes.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import List

import pytest

from bootstrap import errors, weightslock
from bootstrap.pull import PullOptions, pull
from bootstrap.sources import SourceSpec
from bootstrap.weightspin import lock_weights
from tests.lookalikes import HostileHub, ModelScopeLookalike, free_port_url, model_files
from tests.pipeline.helpers import DEMO_REPO_ID, cli, plan_for, write_manifest

FAST = PullOptions(retries=1, backoff_s=0.01)
KEY = "llama2-chinese-tiny-demo"
MS_ID = "FlagAlpha/Llama2-Chinese-tiny-demo-ms"


@pytest.fixture
def hub():
    with HostileHub() as server:
        server.files = model_files()
        server.commit = server.add_repo(DEMO_REPO_ID, server.files)
        yield server


@pytest.fixture
def manifest(hub, tmp_path):
    return write_manifest(tmp_path / "proj", hub.url, requirements__disk_margin_gb=0,
                          **{f"models__{KEY}__modelscope_id": MS_ID})


def pinned(manifest: Path):
    plan = plan_for(manifest)
    lock_weights([(KEY, plan)], update=False)
    return plan_for(manifest)


def with_sources(plan, *specs: SourceSpec):
    return replace(plan, sources=tuple(specs))


def files_in(plan) -> dict:
    root = plan.model_dir(DEMO_REPO_ID)
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


# -- lock --weights ---------------------------------------------------------------------------------


def test_lock_weights_writes_every_selected_file_with_its_hash(hub, manifest):
    done = cli(["lock", "--weights", "--manifest", str(manifest), "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == [f"{KEY}: {DEMO_REPO_ID}@{hub.commit[:12]}"]
    lock = weightslock.load(manifest.parent / "weights.lock.yaml")
    repo = lock.models[KEY].repos[0]
    assert (repo.repo_id, repo.revision, repo.commit) == (DEMO_REPO_ID, "main", hub.commit)
    got = {f.path: (f.size, f.sha256, f.blob_id) for f in repo.files}
    assert got["model.safetensors"] == (len(hub.files["model.safetensors"]),
                                        hashlib.sha256(hub.files["model.safetensors"]).hexdigest(), None)
    assert got["config.json"][1] is None and len(got["config.json"][2]) == 40  # non-LFS: git blob id
    again = cli(["lock", "--weights", "--manifest", str(manifest), "--json"])
    assert json.loads(again.stdout)["unchanged"] and not json.loads(again.stdout)["added"]


def test_a_changed_upstream_is_a_diff_that_needs_update(hub, manifest):
    assert cli(["lock", "--weights", "--manifest", str(manifest)]).returncode == 0
    lock_path = manifest.parent / "weights.lock.yaml"
    before = lock_path.read_text()
    changed = dict(hub.files, **{"config.json": b'{"model_type": "llama", "changed": true}\n'})
    new_commit = hub.add_repo(DEMO_REPO_ID, changed)
    drift = cli(["lock", "--weights", "--manifest", str(manifest)])
    assert drift.returncode == 1 and "Traceback" not in drift.stderr
    assert f"commit {hub.commit} -> {new_commit}" in drift.stderr and "~ config.json" in drift.stderr
    assert "--update" in drift.stderr
    assert lock_path.read_text() == before  # never changed silently
    update = cli(["lock", "--weights", "--manifest", str(manifest), "--update"])
    assert update.returncode == 0, update.stderr
    assert weightslock.load(lock_path).models[KEY].repos[0].commit == new_commit


def test_a_broken_lock_file_is_bad_input_naming_the_field_and_line(manifest):
    (manifest.parent / "weights.lock.yaml").write_text(
        "version: 1\nmodels:\n  x:\n    repos:\n      - repo_id: a/b\n        revision: main\n"
        "        commit: nothex\n        files: [{path: ../x, size: 1, sha256: " + "0" * 64 + "}]\n")
    done = cli(["pull", "--manifest", str(manifest)])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "weights.lock.yaml" in done.stderr and "commit" in done.stderr and "line 7" in done.stderr


# -- pull against the lock ----------------------------------------------------------------------------


def test_a_mirror_that_replaces_the_weights_is_refused_before_downloading(hub, manifest):
    plan = pinned(manifest)
    evil = dict(hub.files, **{"model.safetensors": b"\0" * len(hub.files["model.safetensors"])})
    with HostileHub() as mirror:
        mirror_commit = mirror.add_repo(DEMO_REPO_ID, evil)
        # the mirror even claims the pinned commit: its hashes still differ from the lock
        mirror.listing_hook = lambda repo_id, doc: {**doc, "sha": hub.commit}
        mirror.repos[DEMO_REPO_ID].commit = hub.commit
        with pytest.raises(errors.LockMismatch, match="model.safetensors"):
            pull(with_sources(plan, SourceSpec("hub", mirror.url)), None, FAST, lambda _: None)
        assert mirror.file_gets() == [] and mirror_commit


def test_a_source_that_lists_right_but_sends_wrong_bytes_fails_and_the_next_one_is_used(hub, manifest):
    plan = pinned(manifest)
    with HostileHub() as liar:
        liar.add_repo(DEMO_REPO_ID, hub.files)
        liar.serve_hook = lambda name, data: data[::-1] if name == "model.safetensors" else data
        lines: List[str] = []
        liar_url = liar.url
        result = pull(with_sources(plan, SourceSpec("hub", liar_url), SourceSpec("hub", hub.url)), None, FAST,
                      lines.append)
    assert any("verification failed" in line for line in lines)
    assert any(f"source hub {liar_url} failed" in line and "sha256 mismatch" in line for line in lines)
    assert result["repos"][0]["source"] == f"hub {hub.url}" and result["pinned"] is True
    assert files_in(plan) == hub.files


@pytest.mark.parametrize("change", ["extra", "missing", "commit"])
def test_the_hub_must_offer_exactly_the_locked_commit_and_files(hub, manifest, change):
    plan = pinned(manifest)
    if change == "extra":
        hub.listing_hook = lambda r, doc: {**doc, "siblings": doc["siblings"] + [
            {"rfilename": "extra.py", "size": 3, "blobId": "0" * 40}]}
    elif change == "missing":
        hub.listing_hook = lambda r, doc: {**doc, "siblings": [s for s in doc["siblings"]
                                                              if s["rfilename"] != "tokenizer.model"]}
    else:
        hub.listing_hook = lambda r, doc: {**doc, "sha": "a" * 40}
    with pytest.raises(errors.LockMismatch) as info:
        pull(plan, None, FAST, lambda _: None)
    assert {"extra": "does not know", "missing": "does not have", "commit": "pins commit"}[change] in str(info.value)
    assert hub.file_gets() == []


def test_pinned_and_in_place_needs_no_network(hub, manifest):
    plan = pinned(manifest)
    first = pull(plan, None, FAST, lambda _: None)
    hub.stop()
    second = pull(plan, first["repos"] and {"repos": first["repos"]}, FAST, lambda _: None)
    assert second["pinned"] and second["repos"][0]["files"] == first["repos"][0]["files"]


def test_unpinned_says_so_and_require_lock_refuses(hub, manifest):
    done = cli(["pull", "--manifest", str(manifest), "--json"])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["steps"][0]["result"]["pinned"] is False and "NOT pinned" in doc["steps"][0]["detail"]
    human = cli(["pull", "--manifest", str(manifest)])
    assert "NOT pinned" in human.stdout and "lock --weights" in human.stdout
    refused = cli(["pull", "--manifest", str(manifest), "--require-lock", "--json", "--verify"])
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["kind"] == "NotPinned"
    env = cli(["pull", "--manifest", str(manifest), "--verify"], env={"LLAMA_BOOTSTRAP_REQUIRE_LOCK": "1"})
    assert env.returncode == 1 and "not pinned" in env.stderr


# -- sources ---------------------------------------------------------------------------------------------


def test_a_dead_first_source_falls_back_to_the_second_with_the_reason_logged(hub, manifest):
    plan = with_sources(pinned(manifest), SourceSpec("hub", free_port_url()), SourceSpec("hub", hub.url))
    lines: List[str] = []
    result = pull(plan, None, FAST, lines.append)
    assert any("cannot reach" in line for line in lines)
    assert result["repos"][0]["source"] == f"hub {hub.url}"


def test_every_source_failing_lists_each_reason(hub, manifest, tmp_path):
    plan = with_sources(pinned(manifest), SourceSpec("hub", free_port_url()),
                        SourceSpec("dir", str(tmp_path / "empty")))
    with pytest.raises(errors.SourcesFailed) as info:
        pull(plan, None, FAST, lambda _: None)
    text = str(info.value)
    assert "2 tried" in text and "cannot reach" in text and "not a folder" in text


def _owner_name_copy(hub, root: Path) -> Path:
    folder = root / DEMO_REPO_ID
    folder.mkdir(parents=True)
    for name, data in hub.files.items():
        (folder / name).write_bytes(data)
    return root


def test_a_dir_source_on_the_same_filesystem_hardlinks_then_verifies(hub, manifest, tmp_path):
    disk = _owner_name_copy(hub, tmp_path / "usb")
    plan = with_sources(pinned(manifest), SourceSpec("dir", str(disk)))
    result = pull(plan, None, FAST, lambda _: None)
    target = plan.model_dir(DEMO_REPO_ID) / "model.safetensors"
    assert os.stat(target).st_ino == os.stat(disk / DEMO_REPO_ID / "model.safetensors").st_ino
    assert files_in(plan) == hub.files and result["repos"][0]["source"] == f"dir {disk}"
    assert hub.seen == [] or all("/resolve/" not in s.path for s in hub.seen)


def test_a_dir_source_on_another_filesystem_copies(hub, manifest, tmp_path, small_tmpfs):
    disk = _owner_name_copy(hub, small_tmpfs)
    plan = with_sources(pinned(manifest), SourceSpec("dir", str(disk)))
    pull(plan, None, FAST, lambda _: None)
    target = plan.model_dir(DEMO_REPO_ID) / "model.safetensors"
    assert os.stat(target).st_dev != os.stat(disk / DEMO_REPO_ID / "model.safetensors").st_dev
    assert files_in(plan) == hub.files


def test_a_dir_source_with_a_tampered_file_is_refused_and_the_disk_is_untouched(hub, manifest, tmp_path):
    disk = _owner_name_copy(hub, tmp_path / "usb")
    bad = disk / DEMO_REPO_ID / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[::-1])
    before = bad.read_bytes()
    plan = with_sources(pinned(manifest), SourceSpec("dir", str(disk)))
    with pytest.raises(errors.IntegrityError):
        pull(plan, None, FAST, lambda _: None)
    assert bad.read_bytes() == before and not (plan.model_dir(DEMO_REPO_ID) / "model.safetensors").exists()


def test_a_dir_source_holding_a_hugging_face_cache(hub, manifest, tmp_path):
    plan = pinned(manifest)
    cache = tmp_path / "hf" / "hub" / f"models--{DEMO_REPO_ID.replace('/', '--')}"
    snap = cache / "snapshots" / hub.commit
    snap.mkdir(parents=True)
    (cache / "blobs").mkdir()
    for name, data in hub.files.items():
        blob = cache / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    result = pull(with_sources(plan, SourceSpec("dir", str(tmp_path / "hf"))), None, FAST, lambda _: None)
    assert files_in(plan) == hub.files and result["pinned"]


def test_a_dir_source_link_out_of_its_folder_is_refused(hub, manifest, tmp_path):
    disk = _owner_name_copy(hub, tmp_path / "usb")
    secret = tmp_path / "secret.json"
    secret.write_bytes(b"not yours")
    (disk / DEMO_REPO_ID / "config.json").unlink()
    (disk / DEMO_REPO_ID / "config.json").symlink_to(secret)
    plan = with_sources(pinned(manifest), SourceSpec("dir", str(disk)))
    with pytest.raises(errors.DownloadError):  # size differs or the link is refused: either way not copied
        pull(plan, None, FAST, lambda _: None)
    assert not (plan.model_dir(DEMO_REPO_ID) / "config.json").exists()


def test_sources_without_tls_serve_only_pinned_repos_and_never_get_the_token(hub, manifest):
    lan_ip = _lan_ip()
    with HostileHub(host="0.0.0.0") as lan:
        lan.add_repo(DEMO_REPO_ID, hub.files)
        url = f"http://{lan_ip}:{lan.port}"
        unpinned = with_sources(plan_for(manifest, token="hf_tok3n1234"), SourceSpec("hub", url))
        with pytest.raises(errors.NotPinned, match="no TLS"):
            pull(unpinned, None, FAST, lambda _: None)
        assert lan.seen == []
        plan = with_sources(pinned(manifest), SourceSpec("hub", url))
        plan = replace(plan, token="hf_tok3n1234")
        pull(plan, None, FAST, lambda _: None)
        assert lan.seen and lan.requests_with_auth() == []
    done = cli(["pull", "--manifest", str(manifest), "--source", "dir"])
    assert done.returncode == 2 and "dir=PATH" in done.stderr


def test_modelscope_shaped_source_pinned_and_unpinned(hub, manifest):
    with ModelScopeLookalike() as ms:
        ms.add_model(MS_ID, dict(hub.files, **{"configuration.json": b"{}"}))  # ModelScope adds its own file
        plan = with_sources(plan_for(manifest, token="hf_tok3n1234"), SourceSpec("modelscope", ms.url))
        result = pull(plan, None, FAST, lambda _: None)  # unpinned: ModelScope's own sha256 of every file
        assert files_in(plan)["model.safetensors"] == hub.files["model.safetensors"]
        assert ms.requests_with_auth() == []  # the Hub's token never goes to ModelScope
        assert result["repos"][0]["files"]["config.json"]["sha256"]
        shutil.rmtree(plan.model_dir(DEMO_REPO_ID))
        plan = with_sources(pinned(manifest), SourceSpec("modelscope", ms.url))
        result = pull(plan, None, FAST, lambda _: None)
        assert result["pinned"] and "configuration.json" not in files_in(plan)  # not in the lock: not fetched
        ms.serve_hook = lambda name, data: b"x" * len(data) if name == "tokenizer.model" else data
        shutil.rmtree(plan.model_dir(DEMO_REPO_ID))
        with pytest.raises(errors.IntegrityError):
            pull(plan, None, FAST, lambda _: None)


def test_check_reports_which_sources_are_reachable(hub, manifest, tmp_path):
    from bootstrap.sources import open_source

    for spec, ok in ((SourceSpec("hub", hub.url), True), (SourceSpec("hub", free_port_url()), False),
                     (SourceSpec("dir", str(tmp_path)), True), (SourceSpec("dir", str(tmp_path / "no")), False)):
        assert open_source(spec, None).probe()[0] is ok


def _lan_ip() -> str:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    addresses = [a for a in out if ":" not in a and not a.startswith("127.")]
    if not addresses:
        pytest.skip("no non-loopback IPv4 address on this machine")
    return addresses[0]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real tmpfs (another filesystem: no hardlinks across it); skipped where mount is not permitted."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)



def test_the_shipped_lock_parses_and_pins_only_the_manifests_repos():
    from bootstrap.plan import Overrides, build_plan
    from bootstrap.settings import Settings
    from helpers_core import SHIPPED_MANIFEST

    lock = weightslock.load(SHIPPED_MANIFEST.parent / "weights.lock.yaml")
    assert lock is not None and lock.version == 1
    for key, pins in lock.models.items():
        plan = build_plan(Overrides(manifest=SHIPPED_MANIFEST, model=key), Settings())
        assert [r.repo_id for r in pins.repos] == [ref.repo_id for ref in plan.repo_refs()]
