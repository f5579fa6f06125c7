"""``pull``: the model's files from the Hub (or a mirror), verified, resumable.

With the real ``huggingface_hub``: ``HfApi.model_info(files_metadata=True)`` gives the commit,
the file list, sizes and the LFS sha256 values; ``snapshot_download(local_dir=...)`` downloads
(``.incomplete`` files, resumed on the next call) pinned to that commit. Because
``snapshot_download`` itself checks no hash, and skips a file on the next call once it is in
place, every file is verified here (sha256 for LFS files, git's blob sha1 for the others) and a
bad one is removed together with the library's metadata so it is fetched again. A verified
file's (size, mtime) is recorded, so later runs do not hash it again unless it changed or
``--verify`` is given.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import errors
from bootstrap.follow import HashFollower, incomplete_dir
from bootstrap.integrity import git_blob_sha1, sha256_file
from bootstrap.plan import Plan
from bootstrap.probes import disk_free
from bootstrap.transfer import in_background, translate, with_retries

GB = 1e9
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 1.0
DEFAULT_WORKERS = 8
# Never fetched: other frameworks' weights. Pickle weights are skipped when safetensors exist.
OTHER_FRAMEWORKS = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.gguf", "*.tflite", "flax_model*",
                    "tf_model*", "rust_model*", "coreml/*", "onnx/*")
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: Optional[str]  # LFS files
    blob_id: Optional[str]  # git oid (sha1 of the blob) of non-LFS files


@dataclass(frozen=True)
class RemoteRepo:
    repo_id: str
    revision: str
    commit: str
    files: List[RemoteFile]


@dataclass
class RepoResult:
    repo_id: str
    revision: str
    commit: str
    local_dir: str
    files: Dict[str, Dict[str, Any]]
    downloaded: List[str] = field(default_factory=list)
    hashed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    bytes_total: int = 0


@dataclass(frozen=True)
class PullOptions:
    verify: bool = False  # hash every file again even if unchanged since the last verification
    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    max_workers: int = DEFAULT_WORKERS
    progress: bool = False


# -- what is there, what we want --------------------------------------------------------------


def remote_repo(api: Any, repo_id: str, revision: str) -> RemoteRepo:
    info = api.model_info(repo_id, revision=revision, files_metadata=True)
    files = []
    for s in info.siblings or []:
        lfs = s.lfs
        sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        files.append(RemoteFile(s.rfilename, int(s.size or 0), sha, None if sha else s.blob_id))
    return RemoteRepo(repo_id, revision, info.sha, files)


def select_files(files: List[RemoteFile]) -> Tuple[List[RemoteFile], List[str]]:
    """(files to fetch, names skipped): safetensors over pickle, no other frameworks' weights."""
    def matches(name: str, patterns: Tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in patterns)

    has_safetensors = any(f.path.endswith(".safetensors") for f in files)
    chosen, skipped = [], []
    for f in files:
        if matches(f.path, OTHER_FRAMEWORKS) or (has_safetensors and matches(f.path, PICKLE_WEIGHTS)) or \
                f.path.startswith(".") and f.path != ".gitattributes":
            skipped.append(f.path)
        else:
            chosen.append(f)
    return chosen, skipped


def _size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


def _record_ok(path: Path, want: RemoteFile, record: Optional[Dict[str, Any]]) -> bool:
    """Was this exact file (same size and mtime) verified against the same expected hash before?"""
    if not record:
        return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return (record.get("size") == st.st_size == want.size and record.get("mtime_ns") == st.st_mtime_ns
            and record.get("sha256") == want.sha256 and record.get("blob_id") == want.blob_id)


def _verify(path: Path, want: RemoteFile, followed: Optional[str] = None) -> Tuple[bool, str, str]:
    """(ok, want, got) by hashing the file, or by the digest a follower took while it was written."""
    if not path.is_file():
        return False, want.sha256 or want.blob_id or "a file", "missing"
    size = path.stat().st_size
    if size != want.size:
        return False, f"{want.size} bytes", f"{size} bytes"
    if want.sha256 and followed == want.sha256:
        return True, want.sha256, followed
    if want.sha256:  # no follower digest, or a mismatch: a follower alone never condemns a file
        got = sha256_file(path)
        return got == want.sha256, want.sha256, got
    if want.blob_id:
        got = git_blob_sha1(path)
        return got == want.blob_id, want.blob_id, got
    return True, "-", "-"  # the Hub gave no hash: size only


def _discard(local_dir: Path, rel: str) -> None:
    """Remove a bad file and huggingface_hub's record of it, so the next download fetches it again."""
    (local_dir / rel).unlink(missing_ok=True)
    meta = incomplete_dir(local_dir) / f"{rel}.metadata"
    meta.unlink(missing_ok=True)


def _fingerprint_record(path: Path, want: RemoteFile) -> Dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": want.sha256, "blob_id": want.blob_id}


# -- the step ---------------------------------------------------------------------------------


def repos_to_pull(plan: Plan) -> List[Tuple[str, str]]:
    """(repo_id, revision) pairs: the model, and for LoRA variants the base model first."""
    model = plan.model
    pairs = [(model.repo_id, model.revision)]
    if model.kind == "lora" and model.base:
        pairs.insert(0, (model.base, model.base_revision))
    return pairs


def pull_repo(plan: Plan, repo_id: str, revision: str, *, previous: Optional[Dict[str, Any]],
              options: PullOptions, log: Callable[[str], None], disk_need_extra: int = 0) -> RepoResult:
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=plan.endpoint, token=plan.token)
    try:
        remote = with_retries(lambda: remote_repo(api, repo_id, revision), options.retries, options.backoff_s, log)
    except errors.BootstrapError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated
        raise translate(exc, repo_id, plan) from exc
    chosen, skipped = select_files(remote.files)
    local_dir = plan.model_dir(repo_id)
    old_files = (previous or {}).get("files", {}) if (previous or {}).get("commit") == remote.commit else {}
    done: Dict[str, Dict[str, Any]] = {}
    todo: List[RemoteFile] = []
    for f in chosen:
        record = old_files.get(f.path)
        if not options.verify and _record_ok(local_dir / f.path, f, record):
            done[f.path] = record
        else:
            todo.append(f)
    result = RepoResult(repo_id, revision, remote.commit, str(local_dir), done, skipped=skipped,
                        bytes_total=sum(f.size for f in chosen))
    if not todo:
        return result
    # Disk: refuse before downloading when what is missing (plus the margin) will not fit.
    missing = [f for f in todo if not (local_dir / f.path).is_file() or (local_dir / f.path).stat().st_size != f.size]
    need = sum(f.size for f in missing) + disk_need_extra + int(plan.manifest.requirements.disk_margin_gb * GB)
    where, free = disk_free(local_dir)
    if missing and free < need:
        raise errors.DiskSpaceError(
            f"not enough disk for {repo_id}: need {_size(need)} (incl. "
            f"{plan.manifest.requirements.disk_margin_gb:g} GB margin), {_size(free)} free at {where}",
            path=str(where), need=need, free=free,
            remedy="free space there, or set weights.dir in the manifest to a bigger disk",
        )
    local_dir.mkdir(parents=True, exist_ok=True)

    def download(files: List[RemoteFile]) -> Dict[str, str]:
        """Download ``files``; LFS files are hashed while they arrive. Returns the followers' digests."""
        names = [f.path for f in files]
        log(f"downloading {len(names)} file(s) of {repo_id}@{remote.commit[:12]} from {plan.endpoint}")
        finished = threading.Event()
        followers = [HashFollower(local_dir, f.path, f.sha256, f.size, finished) for f in files if f.sha256]
        for follower in followers:
            follower.start()
        try:
            in_background(lambda: with_retries(lambda: snapshot_download(
                repo_id, revision=remote.commit, local_dir=str(local_dir), allow_patterns=names,
                endpoint=plan.endpoint, token=plan.token, max_workers=options.max_workers,
            ), options.retries, options.backoff_s, log))
        finally:
            finished.set()
        for follower in followers:  # on Ctrl-C they are abandoned (daemon threads), not awaited
            follower.join()
        return {f.rel_path: f.digest for f in followers if f.digest}

    followed: Dict[str, str] = {}
    for attempt in (1, 2):
        try:
            if missing or attempt == 2:
                followed = download(todo)
        except errors.BootstrapError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated
            raise translate(exc, repo_id, plan) from exc
        result.downloaded = sorted(set(result.downloaded) | {f.path for f in missing})
        bad = _verify_all(local_dir, todo, followed, result, done, log)
        if not bad:
            return result
        for f, _, _ in bad:
            _discard(local_dir, f.path)
        if attempt == 1:
            log(f"{len(bad)} file(s) failed verification; downloading them again")
            todo = [f for f, _, _ in bad]
            missing = todo
    f, want, got = bad[0]
    raise errors.IntegrityError(f.path, want=want, got=got, repo_id=repo_id)


def _verify_all(local_dir: Path, files: List[RemoteFile], followed: Dict[str, str], result: RepoResult,
                done: Dict[str, Dict[str, Any]], log: Callable[[str], None]) -> List[Tuple[RemoteFile, str, str]]:
    """Verify ``files`` (followers' digests, else hashing in parallel: hashlib releases the GIL);
    record the good, return the bad."""
    workers = max(1, min(len(files), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = list(pool.map(lambda f: (f, _verify(local_dir / f.path, f, followed.get(f.path))), files))
    bad = []
    for f, (ok, want, got) in checked:
        if ok:
            done[f.path] = _fingerprint_record(local_dir / f.path, f)
            result.hashed.append(f.path)
        else:
            log(f"{f.path}: verification failed (want: {want}, got: {got})")
            bad.append((f, want, got))
    return bad


def pull(plan: Plan, previous: Optional[Dict[str, Any]], options: PullOptions,
         log: Callable[[str], None]) -> Dict[str, Any]:
    """Pull every repo the model needs. ``previous`` is the last pull result (from the state file)."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if options.progress else disable_progress_bars)()
    before = {r["repo_id"]: r for r in (previous or {}).get("repos", [])}
    repos = []
    for repo_id, revision in repos_to_pull(plan):
        prior = before.get(repo_id)
        repos.append(asdict(pull_repo(plan, repo_id, revision, previous=prior, options=options, log=log)))
    return {"endpoint": plan.endpoint, "repos": repos}


def unchanged_since(result: Dict[str, Any]) -> bool:
    """Are all files of a recorded pull still there, unchanged (size and mtime)? No network, no hashing."""
    for repo in result.get("repos", []):
        local_dir = Path(repo["local_dir"])
        for rel, rec in repo["files"].items():
            try:
                st = (local_dir / rel).stat()
            except FileNotFoundError:
                return False
            if st.st_size != rec.get("size") or st.st_mtime_ns != rec.get("mtime_ns"):
                return False
    return bool(result.get("repos"))
