"""``pull``: the model's files from the profile's sources, verified, resumable, trusted only as far
as they are checked.

For each repo the model needs (a LoRA's base first) the sources are tried in order until one
succeeds; each failure is kept with its reason. From a source, nothing is downloaded before:

* every listed file name is a plain relative path (``names.check_names``);
* a revision pinned to a commit in the manifest is the commit the source answers for;
* with a weights-lock entry: the commit, the file set and every size/hash the source claims agree
  with the lock, and the lock's hashes are what the bytes must match; without one, the source's own
  sha256 (LFS) or git blob id, and a file with neither fails unless ``allow_size_only``;
* a source without TLS (a LAN mirror, a folder) serves only pinned repos, and never gets the token.

Files are fetched by :mod:`bootstrap.fetch` (ranges over several connections, resumable, hashed once
while they arrive) and moved into place only after their hash matched. A verified file's
(size, mtime) is recorded, so later runs do not hash it again unless it changed or ``--verify``.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import errors, weightslock
from bootstrap.fetch import DEFAULT_PER_FILE, DEFAULT_TOTAL, FetchOptions, FileJob, remove_partial, resumable_bytes
from bootstrap.fetch import stale_partial as _stale
from bootstrap.fsutil import path_error
from bootstrap.integrity import git_blob_sha1, sha256_file
from bootstrap.names import ModelFolder, check_names
from bootstrap.plan import Plan
from bootstrap.probes import disk_free
from bootstrap.sources import RemoteFile, RemoteRepo, RepoRef, Source, open_source

GB = 1e9
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 1.0
PROGRESS_EVERY_S = 10.0
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
MAX_FILES = 10_000  # a model repo has tens of files; a listing of more is refused (the lock's limit too)
# Never fetched: other frameworks' weights. Pickle weights are skipped when safetensors exist.
OTHER_FRAMEWORKS = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.gguf", "*.tflite", "flax_model*",
                    "tf_model*", "rust_model*", "coreml/*", "onnx/*")
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")

__all__ = ["PullOptions", "RemoteFile", "RemoteRepo", "pull", "pull_repo", "repos_to_pull", "select_files",
           "unchanged_since", "pins_of"]


@dataclass(frozen=True)
class PullOptions:
    verify: bool = False  # hash every file again even if unchanged since the last verification
    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    progress: bool = False
    connections: int = DEFAULT_PER_FILE  # per file
    connections_total: int = DEFAULT_TOTAL
    require_lock: bool = False
    allow_size_only: bool = False  # record files without any hash as "size only" instead of failing


@dataclass
class RepoResult:
    repo_id: str
    revision: str
    commit: str
    local_dir: str
    files: Dict[str, Dict[str, Any]]  # verified by a hash: {size, mtime_ns, sha256, blob_id}
    size_only: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # NOT verified (--allow-size-only)
    source: str = ""
    pinned: bool = False
    downloaded: List[str] = field(default_factory=list)
    hashed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    bytes_total: int = 0
    bytes_fetched: int = 0


@dataclass(frozen=True)
class Want:
    """What one file must be: its size and the hash it must have (algo None: size only)."""

    name: str
    size: int
    algo: Optional[str]
    digest: Optional[str]

    def record(self, path: Path) -> Dict[str, Any]:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "sha256": self.digest if self.algo == "sha256" else None,
                "blob_id": self.digest if self.algo == "git-blob" else None}


# -- what to fetch ------------------------------------------------------------------------------


def select_files(files: List[RemoteFile]) -> Tuple[List[RemoteFile], List[str]]:
    """(files to fetch, names skipped): safetensors over pickle, no other frameworks' weights, no dot-files
    but .gitattributes."""
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


def repos_to_pull(plan: Plan) -> List[Tuple[str, str]]:
    """(repo_id, revision) pairs: the model, and for LoRA variants the base model first."""
    return [(ref.repo_id, ref.revision) for ref in plan.repo_refs()]


def load_lock(plan: Plan) -> Optional[weightslock.WeightsLock]:
    return weightslock.load(plan.weights_lock_path) if plan.weights_lock_path else None


def pins_of(plan: Plan, lock: Optional[weightslock.WeightsLock] = None) -> Dict[str, Optional[str]]:
    """{repo id: pinned commit or None} for the repos the model needs (part of pull's fingerprint)."""
    lock = lock if lock is not None else load_lock(plan)
    out: Dict[str, Optional[str]] = {}
    for ref in plan.repo_refs():
        pin = lock.pin(ref.repo_id, ref.revision, plan.model_key) if lock else None
        out[ref.repo_id] = pin.commit if pin else None
    return out


def _size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


def _expectations(remote: RemoteRepo, chosen: List[RemoteFile], pin: Any, source: Source,
                  options: PullOptions) -> List[Want]:
    """What each file must be, checked against the lock when there is a pin. Raises before any download."""
    label, repo_id = source.label, remote.repo_id
    if pin is None:
        wants = []
        for f in chosen:
            if f.sha256:
                wants.append(Want(f.path, f.size, "sha256", f.sha256))
            elif f.blob_id:
                wants.append(Want(f.path, f.size, "git-blob", f.blob_id))
            elif options.allow_size_only:
                wants.append(Want(f.path, f.size, None, None))
            else:
                raise errors.UnverifiableFile(
                    f"{repo_id}: {label} gives no sha256 and no git blob id for {ascii(f.path)}, so it cannot be "
                    "verified", repo_id=repo_id, filename=f.path, url=label,
                    remedy="pin the repo (`llama-bootstrap lock --weights`), use a source that lists hashes, or "
                    "accept size-only checks with --allow-size-only (recorded as unverified)")
        return wants
    locked = pin.by_path()
    offered = {f.path: f for f in chosen}
    if source.kind == "hub":
        if remote.commit != pin.commit:
            raise errors.LockMismatch(f"{repo_id}: the weights lock pins commit {pin.commit}, {label} answered "
                                      f"{remote.commit}", source=label, repo_id=repo_id)
        extra = sorted(set(offered) - set(locked))
        if extra:
            raise errors.LockMismatch(f"{repo_id}: {label} lists {len(extra)} file(s) the weights lock does not know "
                                      f"at this commit: {', '.join(ascii(n) for n in extra[:5])}", source=label,
                                      repo_id=repo_id)
    missing = sorted(set(locked) - set(offered))
    if missing:
        raise errors.LockMismatch(f"{repo_id}: {label} does not have {len(missing)} locked file(s): "
                                  f"{', '.join(ascii(n) for n in missing[:5])}", source=label, repo_id=repo_id)
    wants = []
    for name, want in sorted(locked.items()):
        f = offered[name]
        claimed = f.sha256 if want.sha256 else (f.blob_id if f.sha256 is None else None)
        if f.size != want.size or (claimed and claimed != want.want[1]):
            raise errors.LockMismatch(f"{repo_id}: {label} offers {ascii(name)} as {f.size} bytes "
                                      f"{claimed or ''}, the weights lock says {want.size} bytes {want.want[1]}",
                                      source=label, repo_id=repo_id, filename=name)
        wants.append(Want(name, want.size, *want.want))
    return wants


def _record_ok(path: Path, want: Want, record: Optional[Dict[str, Any]]) -> bool:
    """Was this exact file (same size and mtime) verified against the same expected hash before?"""
    if not record:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    return (record.get("size") == st.st_size == want.size and record.get("mtime_ns") == st.st_mtime_ns
            and record.get("ctime_ns", st.st_ctime_ns) == st.st_ctime_ns
            and record.get("sha256") == (want.digest if want.algo == "sha256" else None)
            and record.get("blob_id") == (want.digest if want.algo == "git-blob" else None))


def _hash_in_place(path: Path, want: Want) -> bool:
    if want.algo == "sha256":
        return sha256_file(path) == want.digest
    if want.algo == "git-blob":
        return git_blob_sha1(path) == want.digest
    return path.stat().st_size == want.size


# -- one repo -------------------------------------------------------------------------------------


def _unusable(source: Source, pin: Any, ref: RepoRef) -> Optional[errors.BootstrapError]:
    if source.kind != "hub" and pin is None and _COMMIT.match(ref.revision):
        return errors.NotPinned(
            f"{ref.repo_id}: the manifest pins commit {ref.revision}, which only the Hub or the weights lock can "
            f"vouch for; {source.label} cannot", repo_id=ref.repo_id, url=source.label,
            remedy="pin the repo with `llama-bootstrap lock --weights` so any source is checked against the lock")
    if source.needs_pin and pin is None:
        return errors.NotPinned(
            f"{ref.repo_id}: {source.label} has no TLS, so it may only serve repos pinned in the weights lock",
            repo_id=ref.repo_id, url=source.label,
            remedy="pin the repo with `llama-bootstrap lock --weights` on a trusted network")
    return None


def pull_repo(plan: Plan, ref: RepoRef, pin: Any, sources: List[Source], *, previous: Optional[Dict[str, Any]],
              options: PullOptions, log: Callable[[str], None], disk_need_extra: int = 0) -> RepoResult:
    """Bring one repo into place from the first source that can provide it."""
    folder = ModelFolder(plan.model_dir(ref.repo_id))
    cached = _cached(folder, ref, pin, previous, options)
    if cached is not None:
        log(f"{ref.repo_id}: pinned at {pin.commit[:12]}, every file verified earlier and unchanged")
        return cached
    failures: List[Tuple[str, BaseException]] = []
    for source in sources:
        refused = _unusable(source, pin, ref)
        if refused is not None:
            failures.append((source.label, refused))
            log(f"source {source.label}: skipped: {refused}")
            continue
        try:
            return _pull_from(plan, ref, pin, source, folder, previous, options, log, disk_need_extra)
        except errors.DownloadError as exc:
            failures.append((source.label, exc))
            log(f"source {source.label} failed for {ref.repo_id}: {exc}")
    if len(failures) == 1:
        raise failures[0][1]
    raise errors.SourcesFailed(ref.repo_id, failures)


def _cached(folder: ModelFolder, ref: RepoRef, pin: Any, previous: Optional[Dict[str, Any]],
            options: PullOptions) -> Optional[RepoResult]:
    """With a pin, a repo whose every locked file was verified and is unchanged needs no network at all."""
    if pin is None or options.verify or not previous or previous.get("commit") != pin.commit:
        return None
    files = previous.get("files") or {}
    for f in pin.files:
        want = Want(f.path, f.size, *f.want)
        if not _record_ok(folder.path(f.path), want, files.get(f.path)):
            return None
    kept = {f.path: files[f.path] for f in pin.files}
    return RepoResult(ref.repo_id, ref.revision, pin.commit, str(folder.root), kept, source="(already in place)",
                      pinned=True, bytes_total=sum(f.size for f in pin.files))


def _pull_from(plan: Plan, ref: RepoRef, pin: Any, source: Source, folder: ModelFolder,
               previous: Optional[Dict[str, Any]], options: PullOptions, log: Callable[[str], None],
               disk_need_extra: int) -> RepoResult:
    remote = source.listing(ref, pin)
    if len(remote.files) > MAX_FILES:
        raise errors.UntrustedSource(f"{ref.repo_id}: {source.label} lists {len(remote.files)} files (a model has "
                                     f"tens; more than {MAX_FILES} is refused)", source=source.label,
                                     repo_id=ref.repo_id)
    check_names([f.path for f in remote.files], source=source.label, repo_id=ref.repo_id)
    if source.kind == "hub" and _COMMIT.match(ref.revision) and remote.commit != ref.revision:
        raise errors.CommitMismatch(ref.repo_id, want=ref.revision, got=remote.commit, source=source.label)
    chosen, skipped = select_files(remote.files)
    wants = _expectations(remote, chosen, pin, source, options)
    commit = pin.commit if pin is not None else remote.commit
    if pin is None:
        log(f"{ref.repo_id}: NOT PINNED: trusting {source.label}'s own hashes at commit {commit[:12]} "
            "(pin it with `llama-bootstrap lock --weights`)")
    result = RepoResult(ref.repo_id, ref.revision, commit, str(folder.root), {}, source=source.label,
                        pinned=pin is not None, skipped=skipped, bytes_total=sum(w.size for w in wants))
    old = (previous or {}) if (previous or {}).get("commit") == commit else {}
    old_records = {**(old.get("files") or {}), **(old.get("size_only") or {})}
    todo = _settle_present(folder, wants, old_records, result, options, log)
    if not todo:
        return result
    _ensure_folder(folder)
    _check_disk(plan, folder, todo, options, log, disk_need_extra, ref.repo_id)
    urls = source.file_urls(ref, remote, [w.name for w in todo])
    fetch_options = FetchOptions(per_file=options.connections, total=options.connections_total,
                                 retries=options.retries, backoff_s=options.backoff_s,
                                 progress_every_s=PROGRESS_EVERY_S if options.progress else 0.0)
    log(f"downloading {len(todo)} file(s) of {ref.repo_id}@{commit[:12]} from {source.label} "
        f"({_size(sum(w.size for w in todo))})")
    for attempt in (1, 2):
        jobs = [FileJob(w.name, w.size, w.algo, w.digest, _target(folder, w.name), folder.partial_dir, url,
                        commit if source.kind == "hub" else None, fence=folder.root) for w, url in zip(todo, urls)]
        outcomes = _fetch(source, ref, jobs, fetch_options, log)
        by_name = {w.name: w for w in todo}
        bad = []
        for o in outcomes:
            result.bytes_fetched += o.fetched
            if o.ok:
                _record(result, by_name[o.name], folder)
                result.downloaded.append(o.name)
            else:
                bad.append(o)
                log(f"{o.name}: verification failed (want: {by_name[o.name].digest}, got: {o.got}); removed")
        if not bad:
            result.downloaded.sort()
            return result
        if attempt == 1:
            log(f"{len(bad)} file(s) failed verification; downloading them again from {source.label}")
            names = {o.name for o in bad}
            pairs = [(w, u) for w, u in zip(todo, urls) if w.name in names]
            todo, urls = [p[0] for p in pairs], [p[1] for p in pairs]
    first = bad[0]
    raise errors.IntegrityError(first.name, want=by_name[first.name].digest or "-", got=first.got or "-",
                                repo_id=ref.repo_id)


def _fetch(source: Source, ref: RepoRef, jobs: List[FileJob], options: FetchOptions,
           log: Callable[[str], None]) -> List[Any]:
    try:
        return source.fetch(ref, jobs, options, log)
    except OSError as exc:
        if isinstance(exc, errors.BootstrapError):
            raise
        raise _os_error(exc, jobs[0].partial_dir) from exc


def _target(folder: ModelFolder, name: str) -> Path:
    try:
        return folder.make_parents(name)
    except OSError as exc:
        raise _os_error(exc, folder.root) from exc


def _record(result: RepoResult, want: Want, folder: ModelFolder) -> None:
    record = want.record(folder.path(want.name))
    if want.algo is None:
        result.size_only[want.name] = record
    else:
        result.files[want.name] = record
        result.hashed.append(want.name)


def _settle_present(folder: ModelFolder, wants: List[Want], old: Dict[str, Dict[str, Any]], result: RepoResult,
                    options: PullOptions, log: Callable[[str], None]) -> List[Want]:
    """Keep files recorded as verified and unchanged; hash files found in place without a record (in
    parallel); remove the ones that do not match. Returns what is left to fetch."""
    todo, check = [], []
    for w in wants:
        path = folder.path(w.name)
        if not options.verify and _record_ok(path, w, old.get(w.name)):
            (result.size_only if w.algo is None else result.files)[w.name] = old[w.name]
        elif path.is_file() and not path.is_symlink() and path.stat().st_size == w.size:
            check.append(w)
        else:
            todo.append(w)
    if check:
        workers = max(1, min(len(check), os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            verdicts = list(pool.map(lambda w: _hash_in_place(folder.path(w.name), w), check))
        for w, ok in zip(check, verdicts):
            if ok:
                _record(result, w, folder)
            else:
                log(f"{w.name}: in place but does not match; removing it and downloading it again")
                folder.remove(w.name)
                todo.append(w)
    return todo


def _ensure_folder(folder: ModelFolder) -> None:
    try:
        folder.ensure()
    except OSError as exc:
        raise _os_error(exc, folder.root) from exc


def _check_disk(plan: Plan, folder: ModelFolder, todo: List[Want], options: PullOptions, log: Callable[[str], None],
                extra: int, repo_id: str) -> None:
    """Refuse before downloading when what is missing (plus the margin) will not fit. A partial download
    that can be resumed counts for what it holds; one that cannot (another version) is removed, and said."""
    need = extra + int(plan.manifest.requirements.disk_margin_gb * GB)
    for w in todo:
        job = FileJob(w.name, w.size, w.algo, w.digest, folder.path(w.name), folder.partial_dir)
        if _stale(job):
            log(f"{w.name}: removing a partial download that cannot be resumed (another version, or its record "
                "is missing)")
            remove_partial(job)
        held = resumable_bytes(job)
        if held:
            log(f"{w.name}: resuming a partial download ({_size(held)} of {_size(w.size)} already here)")
        need += w.size - held
    where, free = disk_free(folder.root)
    if free < need:
        raise errors.DiskSpaceError(
            f"not enough disk for {repo_id}: need {_size(need)} (incl. "
            f"{plan.manifest.requirements.disk_margin_gb:g} GB margin), {_size(free)} free at {where}",
            path=str(where), need=need, free=free,
            remedy="free space there, or set weights.dir in the manifest to a bigger disk")


def _os_error(exc: OSError, path: Path) -> errors.BootstrapError:
    if exc.errno == errno.ENOSPC:
        return errors.DiskSpaceError(f"disk full at {path}", path=str(path),
                                     remedy="free space (or set weights.dir to a bigger disk) and run again: the "
                                     "download resumes")
    return path_error(exc, Path(exc.filename) if exc.filename else path, "weights.dir")


# -- the step -------------------------------------------------------------------------------------


def pull(plan: Plan, previous: Optional[Dict[str, Any]], options: PullOptions,
         log: Callable[[str], None]) -> Dict[str, Any]:
    """Pull every repo the model needs. ``previous`` is the last pull result (from the state file)."""
    lock = load_lock(plan)
    require = options.require_lock or plan.require_lock
    before = {r["repo_id"]: r for r in _records(previous)}
    sources = [open_source(spec, plan.token, retries=options.retries, backoff_s=options.backoff_s)
               for spec in plan.sources]
    repos = []
    try:
        for ref in plan.repo_refs():
            pin = lock.pin(ref.repo_id, ref.revision, plan.model_key) if lock else None
            if pin is None and require:
                raise errors.NotPinned(
                    f"{ref.repo_id}@{ref.revision} is not pinned in {plan.weights_lock_path} and pinning is required",
                    repo_id=ref.repo_id,
                    remedy="run `llama-bootstrap lock --weights` on a trusted network and commit the lock "
                    "(or drop --require-lock / weights.require_lock)")
            result = pull_repo(plan, ref, pin, sources, previous=before.get(ref.repo_id), options=options, log=log)
            repos.append(asdict(result))
    finally:
        for source in sources:
            source.close()
    return {"endpoint": plan.endpoint, "sources": [str(s) for s in plan.sources],
            "pinned": all(r["pinned"] for r in repos), "repos": repos}


def _records(previous: Any) -> List[Dict[str, Any]]:
    """The repo records of an earlier pull that have the shape this version writes (others are ignored: the
    files are then checked again, never trusted)."""
    repos = previous.get("repos") if isinstance(previous, dict) else None
    out = []
    for r in repos if isinstance(repos, list) else []:
        if isinstance(r, dict) and isinstance(r.get("repo_id"), str) and isinstance(r.get("commit"), str) and \
                isinstance(r.get("files"), dict) and isinstance(r.get("size_only", {}), dict) and \
                all(isinstance(v, dict) for v in {**r["files"], **r.get("size_only", {})}.values()):
            out.append(r)
    return out


def unchanged_since(result: Dict[str, Any]) -> bool:
    """Are all files of a recorded pull still there, unchanged (size and mtime)? No network, no hashing."""
    try:
        for repo in result.get("repos", []):
            local_dir = Path(repo["local_dir"])
            for rel, rec in {**repo["files"], **(repo.get("size_only") or {})}.items():
                try:
                    st = (local_dir / rel).stat()
                except OSError:
                    return False
                if st.st_size != rec.get("size") or st.st_mtime_ns != rec.get("mtime_ns") or \
                        rec.get("ctime_ns", st.st_ctime_ns) != st.st_ctime_ns:  # a rewrite that kept the mtime
                    return False
        return bool(result.get("repos"))
    except (AttributeError, KeyError, TypeError):  # a state file of another shape: not unchanged
        return False
