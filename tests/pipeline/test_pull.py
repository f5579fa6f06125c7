"""pull: our fetcher (ranges, resume, one hash pass) against LocalHub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bootstrap import errors
from bootstrap.pull import PullOptions, RemoteFile, pull, select_files
from tests.pipeline.helpers import DEMO_REPO_ID, cli, plan_for, random_model, write_manifest

MiB = 1024 * 1024
FAST = PullOptions(retries=2, backoff_s=0.01)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(local_hub, tmp_path):
    """A 12 MiB safetensors file (so resume applies to its first 10 MiB chunk) + small files."""
    folder = random_model(tmp_path / "upstream-model", {"model.safetensors": 12 * MiB, "config.json": 300,
                                                        "tokenizer.model": 5000})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    local_hub.add_repo(DEMO_REPO_ID, folder)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, "unused", "0" * 40, requirements__disk_margin_gb=0)
    return folder, manifest


def _logs():
    lines = []
    return lines, lines.append


def test_fresh_pull_gets_identical_verified_bytes(local_hub, served):
    folder, manifest = served
    plan = plan_for(manifest)
    lines, log = _logs()
    result = pull(plan, None, FAST, log)
    target = plan.model_dir(DEMO_REPO_ID)
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        assert sha256(target / name) == sha256(folder / name)
    repo = result["repos"][0]
    assert sorted(repo["hashed"]) == ["config.json", "model.safetensors", "tokenizer.model"]
    assert repo["files"]["model.safetensors"]["sha256"] == sha256(folder / "model.safetensors")
    assert repo["files"]["config.json"]["blob_id"]  # small files are checked against git's blob id


def test_second_pull_transfers_and_hashes_nothing(local_hub, served, monkeypatch):
    _, manifest = served
    plan = plan_for(manifest)
    first = pull(plan, None, FAST, lambda _: None)
    local_hub.reset_counters()
    hashed = []
    import bootstrap.pull as pull_mod
    monkeypatch.setattr(pull_mod, "sha256_file", lambda p: hashed.append(p) or sha256(p))
    second = pull(plan, first, FAST, lambda _: None)
    assert local_hub.file_requests("GET") == [] and local_hub.file_requests("HEAD") == []
    assert local_hub.bytes_sent == 0
    assert hashed == [] and second["repos"][0]["hashed"] == []
    # --verify hashes again, still without downloading
    third = pull(plan, second, PullOptions(verify=True, retries=0), lambda _: None)
    assert "model.safetensors" in third["repos"][0]["hashed"]
    assert local_hub.bytes_sent == 0


def test_changed_file_is_hashed_again_and_replaced(local_hub, served):
    folder, manifest = served
    plan = plan_for(manifest)
    first = pull(plan, None, FAST, lambda _: None)
    bad = plan.model_dir(DEMO_REPO_ID) / "model.safetensors"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))  # same size, new mtime: the record no longer holds
    second = pull(plan, first, FAST, lambda _: None)
    assert sha256(bad) == sha256(folder / "model.safetensors")
    assert "model.safetensors" in second["repos"][0]["downloaded"]


def test_resume_after_the_server_drops_the_connection(local_hub, served):
    """A piece cut after 3 MiB is asked again from byte 3 MiB on: resumed, not restarted."""
    folder, manifest = served
    local_hub.inject("*/model.safetensors", "drop", times=1, after=3 * MiB)
    plan = plan_for(manifest)
    lines, log = _logs()
    pull(plan, None, FAST, log)
    assert any("retrying" in line for line in lines)
    ranges = sorted(r.range for r in local_hub.file_requests("GET") if r.path.endswith("model.safetensors"))
    assert f"bytes={3 * MiB}-{8 * MiB - 1}" in ranges  # the cut piece, from where it stopped
    assert ranges.count(f"bytes=0-{8 * MiB - 1}") == 1
    assert sha256(plan.model_dir(DEMO_REPO_ID) / "model.safetensors") == sha256(folder / "model.safetensors")


def test_a_big_file_comes_in_pieces_over_several_connections(local_hub, tmp_path):
    folder = random_model(tmp_path / "m", {"model.safetensors": 40 * MiB})
    local_hub.add_repo(DEMO_REPO_ID, folder)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, requirements__disk_margin_gb=0)
    plan = plan_for(manifest)
    local_hub.inject("*/model.safetensors", "slow", times=None, rate=40 * MiB)  # slow enough that pieces overlap
    result = pull(plan, None, PullOptions(retries=1, backoff_s=0.01, connections=4), lambda _: None)
    ranges = sorted(r.range for r in local_hub.file_requests("GET"))
    assert ranges == sorted(f"bytes={i * 8 * MiB}-{(i + 1) * 8 * MiB - 1}" for i in range(5))
    assert local_hub.bytes_sent == 40 * MiB  # every byte once
    assert sha256(plan.model_dir(DEMO_REPO_ID) / "model.safetensors") == sha256(folder / "model.safetensors")
    assert result["repos"][0]["files"]["model.safetensors"]["sha256"] == sha256(folder / "model.safetensors")


def test_corrupted_bytes_are_detected_and_fetched_again(local_hub, served):
    folder, manifest = served
    local_hub.inject("*/model.safetensors", "corrupt", times=1)
    plan = plan_for(manifest)
    lines, log = _logs()
    pull(plan, None, FAST, log)
    assert any("verification failed" in line for line in lines)
    assert sha256(plan.model_dir(DEMO_REPO_ID) / "model.safetensors") == sha256(folder / "model.safetensors")


def test_always_corrupt_is_an_integrity_error_and_nothing_is_kept(local_hub, served):
    _, manifest = served
    local_hub.inject("*/model.safetensors", "corrupt", times=None)
    plan = plan_for(manifest)
    with pytest.raises(errors.IntegrityError) as info:
        pull(plan, None, FAST, lambda _: None)
    assert "want:" in str(info.value) and "got:" in str(info.value)
    assert not (plan.model_dir(DEMO_REPO_ID) / "model.safetensors").exists()


def test_gated_repo_needs_a_token(local_hub, tmp_path):
    folder = random_model(tmp_path / "m", {"model.safetensors": 1000})
    local_hub.add_repo(DEMO_REPO_ID, folder, gated=True, token="hf_goodtoken123")
    manifest = write_manifest(tmp_path / "proj", local_hub.url, "unused", "0" * 40)
    with pytest.raises(errors.GatedRepoError) as info:
        pull(plan_for(manifest), None, FAST, lambda _: None)
    assert "HF_TOKEN" in info.value.remedy and "accept the license" in info.value.remedy
    result = pull(plan_for(manifest, token="hf_goodtoken123"), None, FAST, lambda _: None)
    assert result["repos"][0]["hashed"] == ["model.safetensors"]


def test_not_found_repo_and_revision(local_hub, tmp_path):
    manifest = write_manifest(tmp_path / "proj", local_hub.url, "unused", "0" * 40)
    with pytest.raises(errors.NotFoundError, match="not found"):
        pull(plan_for(manifest), None, FAST, lambda _: None)
    local_hub.add_repo(DEMO_REPO_ID, random_model(tmp_path / "m", {"a.safetensors": 10}))
    manifest = write_manifest(tmp_path / "proj2", local_hub.url, "unused", "0" * 40,
                              **{f"models__{'llama2-chinese-tiny-demo'}__revision": "v9"})
    with pytest.raises(errors.NotFoundError, match="revision"):
        pull(plan_for(manifest), None, FAST, lambda _: None)


def test_unreachable_endpoint_suggests_another_source(tmp_path):
    manifest = write_manifest(tmp_path / "proj", "http://127.0.0.1:9", "unused", "0" * 40)
    with pytest.raises(errors.EndpointUnreachable) as info:
        pull(plan_for(manifest), None, PullOptions(retries=1, backoff_s=0.01), lambda _: None)
    assert "--profile cn" in info.value.remedy


def test_disk_precheck_refuses_before_downloading(local_hub, served, monkeypatch):
    _, manifest = served
    import bootstrap.pull as pull_mod
    monkeypatch.setattr(pull_mod, "disk_free", lambda path: (path, 5 * MiB))
    with pytest.raises(errors.DiskSpaceError) as info:
        pull(plan_for(manifest), None, FAST, lambda _: None)
    assert "need" in str(info.value) and "free" in str(info.value)
    assert local_hub.file_requests("GET") == []


def test_safetensors_preferred_over_pickle():
    files = [RemoteFile(n, 1, None, "x") for n in (
        "config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
        "tokenizer.model", "training_args.bin", ".gitattributes", "onnx/model.onnx")]
    chosen, skipped = select_files(files)
    assert [f.path for f in chosen] == ["config.json", "model.safetensors", "tokenizer.model", ".gitattributes"]
    assert "pytorch_model.bin" in skipped and "tf_model.h5" in skipped
    chosen, _ = select_files([RemoteFile("pytorch_model.bin", 1, None, "x"), RemoteFile("config.json", 1, None, "y")])
    assert [f.path for f in chosen] == ["pytorch_model.bin", "config.json"]  # pickle only when nothing else


def test_pull_cli_exit_codes(local_hub, served, tmp_path):
    _, manifest = served
    ok = cli(["pull", "--manifest", str(manifest), "--json"])
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert [s["step"] for s in doc["steps"]] == ["pull"] and doc["steps"][0]["status"] == "done"
    gone = cli(["pull", "--manifest", str(manifest), "--endpoint", "http://127.0.0.1:9", "--retries", "0"])
    assert gone.returncode == 1 and "--profile cn" in gone.stderr and "Traceback" not in gone.stderr


def test_each_downloaded_file_is_hashed_once_while_it_arrives(local_hub, served, monkeypatch):
    """One pass: the hasher reads what is written as it grows; nothing hashes the file again afterwards."""
    folder, manifest = served
    local_hub.inject("*/model.safetensors", "slow", times=None, rate=20 * MiB)
    import bootstrap.fetch as fetch_mod
    import bootstrap.pull as pull_mod
    hashed_after, read = [], {"bytes": 0}
    monkeypatch.setattr(pull_mod, "sha256_file", lambda p: hashed_after.append(p.name) or sha256(p))
    real_pread = fetch_mod.os.pread

    def counting_pread(fd, n, offset):
        data = real_pread(fd, n, offset)
        read["bytes"] += len(data)
        return data

    monkeypatch.setattr(fetch_mod.os, "pread", counting_pread)
    result = pull(plan_for(manifest), None, FAST, lambda _: None)
    sizes = sum(p.stat().st_size for p in folder.iterdir())
    assert read["bytes"] == sizes  # every byte of every file read once by its hasher
    assert hashed_after == []
    assert result["repos"][0]["files"]["model.safetensors"]["sha256"] == sha256(folder / "model.safetensors")
