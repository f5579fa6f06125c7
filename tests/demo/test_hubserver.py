"""The real huggingface_hub download code against LocalHub (runs without torch, on Python 3.9 too)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.utils import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from bootstrap.demo.hubserver import LocalHub, _parse_range, git_blob_sha1  # noqa: E402

REPO = "FlagAlpha/Llama2-Chinese-7b-Chat"
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A small repo: JSON files, an LFS weight file, an LFS tokenizer and a nested file."""
    folder = tmp_path / "repo"
    (folder / "examples").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "generation_config.json").write_text('{"bos_token_id": 1}\n')
    (folder / "model.safetensors").write_bytes(os.urandom(300 * 1024))
    (folder / "tokenizer.model").write_bytes(os.urandom(2000))
    (folder / "examples" / "chat.py").write_text("print('hi')\n")
    return folder


@pytest.fixture
def big_folder(tmp_path: Path) -> Path:
    """One ~25 MiB file: bigger than huggingface_hub's 10 MiB download chunk, so resumes use Range."""
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(25 * MiB + 123))
    (folder / "config.json").write_text("{}\n")
    return folder


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): sha256(p) for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


# ------------------------------------------------------------------------------ metadata


def test_model_info_with_files_metadata(local_hub: LocalHub, model_folder: Path) -> None:
    sha = local_hub.add_repo(REPO, model_folder)
    info = HfApi(endpoint=local_hub.url).model_info(REPO, revision="main", files_metadata=True)
    assert info.sha == sha and len(sha) == 40 and int(sha, 16) >= 0
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.model",
                             "examples/chat.py"}
    weights = siblings["model.safetensors"]
    assert weights.size == 300 * 1024
    assert weights.lfs is not None and weights.lfs.sha256 == sha256(model_folder / "model.safetensors")
    assert siblings["tokenizer.model"].lfs is not None  # LFS by pattern, however small
    config = siblings["config.json"]
    assert config.lfs is None and config.size == (model_folder / "config.json").stat().st_size
    data = (model_folder / "config.json").read_bytes()
    assert config.blob_id == git_blob_sha1(len(data), [data])


def test_commit_sha_is_deterministic_and_content_addressed(model_folder: Path, tmp_path: Path) -> None:
    with LocalHub() as one, LocalHub() as two:
        assert one.add_repo(REPO, model_folder) == two.add_repo(REPO, model_folder)
        before = one.add_repo(REPO, model_folder)
        (model_folder / "config.json").write_text('{"model_type": "llama", "changed": true}\n')
        assert one.add_repo(REPO, model_folder) != before


def test_list_repo_tree(local_hub: LocalHub, model_folder: Path) -> None:
    local_hub.add_repo(REPO, model_folder)
    api = HfApi(endpoint=local_hub.url)
    entries = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert "examples/chat.py" in entries and "examples" in entries
    assert entries["model.safetensors"].lfs.sha256 == sha256(model_folder / "model.safetensors")
    assert entries["model.safetensors"].size == 300 * 1024
    top = {e.path for e in api.list_repo_tree(REPO)}
    assert "examples" in top and "examples/chat.py" not in top
    assert {e.path for e in api.list_repo_tree(REPO, path_in_repo="examples")} == {"examples/chat.py"}


def test_resolve_headers_and_ranges(local_hub: LocalHub, model_folder: Path) -> None:
    sha = local_hub.add_repo(REPO, model_folder)
    url = f"{local_hub.url}/{REPO}/resolve/main/model.safetensors"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as resp:  # noqa: S310 - loopback
        headers = resp.headers
    digest = sha256(model_folder / "model.safetensors")
    assert headers["X-Repo-Commit"] == sha
    assert headers["ETag"] == f'"{digest}"' and headers["X-Linked-Etag"] == f'"{digest}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(300 * 1024)
    assert not [h for h in headers if h.lower().startswith("x-xet")]
    request = urllib.request.Request(url, headers={"Range": "bytes=1000-"})
    with urllib.request.urlopen(request) as resp:  # noqa: S310
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 1000-{300 * 1024 - 1}/{300 * 1024}"
        assert resp.read() == (model_folder / "model.safetensors").read_bytes()[1000:]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={300 * 1024}-"}))  # noqa: S310
    assert err.value.code == 416


def test_parse_range() -> None:
    assert _parse_range(None, 10) is None
    assert _parse_range("bytes=3-", 10) == (3, 9)
    assert _parse_range("bytes=3-5", 10) == (3, 5)
    assert _parse_range("bytes=-4", 10) == (6, 9)
    assert _parse_range("bytes=3-99", 10) == (3, 9)
    assert _parse_range("items=1-2", 10) is None


# ------------------------------------------------------------------------------ downloads


def test_snapshot_download_gets_identical_bytes_and_second_call_transfers_nothing(
    local_hub: LocalHub, model_folder: Path, tmp_path: Path
) -> None:
    local_hub.add_repo(REPO, model_folder)
    dest = tmp_path / "dest"
    out = snapshot_download(REPO, local_dir=dest, endpoint=local_hub.url)
    assert files_of(Path(out)) == files_of(model_folder)
    assert local_hub.bytes_sent == sum(p.stat().st_size for p in model_folder.rglob("*") if p.is_file())

    local_hub.reset_counters()
    snapshot_download(REPO, local_dir=dest, endpoint=local_hub.url)
    assert local_hub.file_requests("GET") == []
    assert local_hub.bytes_sent == 0
    assert files_of(dest) == files_of(model_folder)


def test_hf_hub_download_into_cache_by_commit(local_hub: LocalHub, model_folder: Path) -> None:
    sha = local_hub.add_repo(REPO, model_folder)
    path = hf_hub_download(REPO, "examples/chat.py", endpoint=local_hub.url)
    assert Path(path).read_text() == "print('hi')\n"
    assert f"snapshots/{sha}/examples/chat.py" in Path(path).as_posix()
    # by commit sha, as snapshot_download asks for files
    path = hf_hub_download(REPO, "config.json", revision=sha, endpoint=local_hub.url)
    assert Path(path).read_bytes() == (model_folder / "config.json").read_bytes()


def test_several_revisions(local_hub: LocalHub, model_folder: Path, tmp_path: Path) -> None:
    old = local_hub.add_repo(REPO, model_folder, revision="v1")
    v2 = tmp_path / "v2"
    shutil.copytree(str(model_folder), str(v2))
    (v2 / "config.json").write_text('{"model_type": "llama", "v": 2}\n')
    new = local_hub.add_repo(REPO, v2)
    assert old != new
    api = HfApi(endpoint=local_hub.url)
    assert api.model_info(REPO, revision="v1").sha == old
    assert api.model_info(REPO, revision=old).sha == old
    assert api.model_info(REPO).sha == new
    path = hf_hub_download(REPO, "config.json", revision="v1", endpoint=local_hub.url)
    assert Path(path).read_text() == '{"model_type": "llama"}\n'


def test_file_changed_after_add_repo_is_refused(local_hub: LocalHub, model_folder: Path) -> None:
    local_hub.add_repo(REPO, model_folder)
    (model_folder / "config.json").write_text('{"model_type": "llama", "edited": true}\n')
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{local_hub.url}/{REPO}/resolve/main/config.json")  # noqa: S310
    assert err.value.code == 409


# ------------------------------------------------------------------------------ errors


def test_missing_repo_revision_and_file_map_to_typed_errors(local_hub: LocalHub, model_folder: Path) -> None:
    local_hub.add_repo(REPO, model_folder)
    api = HfApi(endpoint=local_hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("FlagAlpha/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("FlagAlpha/does-not-exist", "config.json", endpoint=local_hub.url)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch", endpoint=local_hub.url)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "pytorch_model.bin", endpoint=local_hub.url)


def test_gated_repo_needs_the_token(local_hub: LocalHub, model_folder: Path, tmp_path: Path) -> None:
    local_hub.add_repo(REPO, model_folder, gated=True, token="hf_secret")
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(REPO, "config.json", endpoint=local_hub.url)
    assert err.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(REPO, "config.json", endpoint=local_hub.url, token="hf_wrong")
    assert err.value.response.status_code == 403
    with pytest.raises(GatedRepoError):
        snapshot_download(REPO, local_dir=tmp_path / "no", endpoint=local_hub.url)
    out = snapshot_download(REPO, local_dir=tmp_path / "yes", endpoint=local_hub.url, token="hf_secret")
    assert files_of(Path(out)) == files_of(model_folder)
    assert HfApi(endpoint=local_hub.url).model_info(REPO).gated == "manual"


# ------------------------------------------------------------------------------ faults


def test_status_fault_twice_then_recovers(local_hub: LocalHub, model_folder: Path) -> None:
    local_hub.add_repo(REPO, model_folder)
    fault = local_hub.inject("*/resolve/*/config.json", "status", times=2, code=503)
    path = hf_hub_download(REPO, "config.json", endpoint=local_hub.url)  # the library's backoff retries
    assert Path(path).read_bytes() == (model_folder / "config.json").read_bytes()
    assert fault.fired == 2 and fault.remaining == 0
    heads = local_hub.file_requests("HEAD")
    assert len(heads) == 3


def test_status_fault_on_api_is_an_http_error(local_hub: LocalHub, model_folder: Path) -> None:
    local_hub.add_repo(REPO, model_folder)
    local_hub.inject(f"/api/models/{REPO}*", "status", times=1, code=500)
    with pytest.raises(hf.utils.HfHubHTTPError) as err:
        HfApi(endpoint=local_hub.url).model_info(REPO)
    assert err.value.response.status_code == 500
    assert HfApi(endpoint=local_hub.url).model_info(REPO).sha  # recovered


def test_drop_then_resume_with_range(local_hub: LocalHub, big_folder: Path, tmp_path: Path) -> None:
    local_hub.add_repo(REPO, big_folder)
    size = (big_folder / "model.safetensors").stat().st_size
    fault = local_hub.inject("*/model.safetensors", "drop", times=1, after=15 * MiB)
    dest = tmp_path / "dest"
    try:  # 0.36 raises on the broken stream; newer versions may resume inside the same call
        snapshot_download(REPO, local_dir=dest, endpoint=local_hub.url)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises for a cut connection
        assert not (dest / "model.safetensors").exists(), exc
        snapshot_download(REPO, local_dir=dest, endpoint=local_hub.url)
    assert fault.fired == 1
    assert sha256(dest / "model.safetensors") == sha256(big_folder / "model.safetensors")
    gets = [r for r in local_hub.file_requests("GET") if r.path.endswith("model.safetensors")]
    assert gets[0].range is None
    assert len(gets) == 2 and gets[1].range is not None and gets[1].range.startswith("bytes=")
    resumed_from = int(gets[1].range[len("bytes="):].split("-")[0])
    assert 0 < resumed_from <= 15 * MiB
    assert local_hub.bytes_sent < 2 * size  # the kept part was not downloaded again


def test_corrupt_fault_is_not_noticed_by_snapshot_download(
    local_hub: LocalHub, model_folder: Path, tmp_path: Path
) -> None:
    """The known trap: huggingface_hub does not verify sha256 after a download; our product must."""
    local_hub.add_repo(REPO, model_folder)
    local_hub.inject("*/model.safetensors", "corrupt", times=1, count=16)
    out = Path(snapshot_download(REPO, local_dir=tmp_path / "dest", endpoint=local_hub.url))
    got = out / "model.safetensors"
    expected = local_hub.file_info(REPO, "model.safetensors").sha256
    assert got.stat().st_size == (model_folder / "model.safetensors").stat().st_size
    assert sha256(got) != expected


def test_slow_fault_slows_the_body(local_hub: LocalHub, model_folder: Path) -> None:
    local_hub.add_repo(REPO, model_folder)
    local_hub.inject("*/model.safetensors", "slow", times=1, delay=0.1, chunk=100 * 1024)
    url = f"{local_hub.url}/{REPO}/resolve/main/model.safetensors"
    start = time.monotonic()
    with urllib.request.urlopen(url) as resp:  # noqa: S310
        data = resp.read()
    assert time.monotonic() - start >= 0.3  # 3 chunks of 100 KiB, 0.1 s each
    assert data == (model_folder / "model.safetensors").read_bytes()


def test_slow_fault_with_a_rate_paces_the_body_like_a_link(local_hub: LocalHub, model_folder: Path) -> None:
    """``rate``: the body never arrives faster than the link, and arrives whole after a reader's stall."""
    local_hub.add_repo(REPO, model_folder)
    size = (model_folder / "model.safetensors").stat().st_size
    rate = size / 0.4  # the whole body in 0.4 s
    local_hub.inject("*/model.safetensors", "slow", times=1, rate=rate, chunk=max(1, size // 8))
    url = f"{local_hub.url}/{REPO}/resolve/main/model.safetensors"
    start = time.monotonic()
    with urllib.request.urlopen(url) as resp:  # noqa: S310
        first = resp.read(1)
        time.sleep(0.2)  # the reader stalls
        data = first + resp.read()
    assert time.monotonic() - start >= 0.4
    assert data == (model_folder / "model.safetensors").read_bytes()


def test_inject_rejects_unknown_kind(local_hub: LocalHub) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        local_hub.inject("*", "explode")


# ------------------------------------------------------------------------------ CLI


def test_cli_serves_until_interrupted(model_folder: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "bootstrap.demo.hubserver", "--repo", f"{REPO}={model_folder}", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert HfApi(endpoint=url).model_info(REPO).sha
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
