"""Ranged, parallel, resumable, verified downloads over :class:`bootstrap.transport.Transport`.

Why our own fetcher (and not ``snapshot_download`` or ``hf_transfer``): mirrors in mainland China cap
each connection, so a big file must come over several connections at once; ``snapshot_download``
uses one per file, and ``hf_transfer`` (the library's multi-connection path) cannot resume a partial
file, follows redirects itself (our per-hop policy cannot apply) and writes out of order (the
sha256 cannot follow). This module does what all three need:

* A file is cut into pieces of ``piece_size``; up to ``per_file`` connections work on one file and
  ``total`` on all files at once. The first request of a file asks for a range: a 206 whose
  ``Content-Range`` agrees with the listed size turns on ranges (the URL after redirects, e.g. a
  CDN, is reused for the other pieces); a 200 means no ranges: that one connection streams the file.
* Bytes go to ``<model>/.partial/<key>.incomplete`` with ``os.pwrite``; ``<key>.json`` records the
  pieces done and the bytes written of pieces in flight, so a dropped connection, a Ctrl-C or a
  ``kill -9`` loses at most what was in the socket: the next run asks only for what is missing.
* One hash pass per file, overlapped with the download: a hasher reads the contiguous prefix
  that is already written (pieces are handed out in order, so it trails the download closely).
  A file is moved into place (``os.replace``) only after its hash matched; a mismatch removes the
  partial file, and the caller decides whether to fetch it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import errors
from bootstrap.transport import body_chunks, network_errors, with_server_message

MiB = 1024 * 1024
PIECE_SIZE = 8 * MiB
READ_CHUNK = 1 * MiB
HASH_CHUNK = 8 * MiB
DEFAULT_PER_FILE = 4
DEFAULT_TOTAL = 8
META_EVERY_S = 1.0
NICE = 10
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a planted symlink in .partial/ is never written through


@dataclass
class FileJob:
    """One file to bring into place: where it goes and the hash it must have."""

    name: str  # repo-relative, already checked
    size: int
    algo: Optional[str]  # "sha256" | "git-blob" | None (no hash known: size only)
    want: Optional[str]
    target: Path  # final place, inside the model folder
    partial_dir: Path
    url: str = ""  # where to GET it (HTTP sources)
    commit: Optional[str] = None  # the commit the source must answer for (X-Repo-Commit), when it says
    fence: Optional[Path] = None  # the folder the target must still be inside when it is moved there

    @property
    def key(self) -> str:
        return hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:24]

    @property
    def partial(self) -> Path:
        return self.partial_dir / f"{self.key}.incomplete"

    @property
    def meta(self) -> Path:
        return self.partial_dir / f"{self.key}.json"


@dataclass
class Outcome:
    name: str
    ok: bool
    got: Optional[str]  # the digest computed (None when no algorithm)
    fetched: int = 0  # bytes that came over the network (or were copied) in this run


@dataclass
class FetchOptions:
    per_file: int = DEFAULT_PER_FILE
    total: int = DEFAULT_TOTAL
    piece_size: int = PIECE_SIZE
    retries: int = 4
    backoff_s: float = 1.0
    progress_every_s: float = 0.0  # > 0: log a progress line this often (a terminal)


def new_digest(algo: Optional[str], size: int) -> Any:
    if algo == "sha256":
        return hashlib.sha256()
    if algo == "git-blob":
        digest = hashlib.sha1(usedforsecurity=False)  # git's object id, not a security hash on its own
        digest.update(f"blob {size}\0".encode())
        return digest
    return None


# -- resumable partial files ------------------------------------------------------------------


class _Piece:
    __slots__ = ("index", "start", "end", "written", "taken")

    def __init__(self, index: int, start: int, end: int) -> None:
        self.index, self.start, self.end = index, start, end  # end exclusive
        self.written = 0
        self.taken = False

    @property
    def done(self) -> bool:
        return self.start + self.written >= self.end


def resumable_bytes(job: FileJob, piece_size: int = PIECE_SIZE) -> int:
    """Bytes of ``job`` a partial download already holds (0 when there is none or it is for other content)."""
    state = _read_meta(job, piece_size)
    return sum(state.values()) if state else 0


def _read_meta(job: FileJob, piece_size: int) -> Optional[Dict[int, int]]:
    """{piece index: bytes written} from the sidecar, if it describes exactly this job's content."""
    try:
        if job.meta.is_symlink() or job.partial.is_symlink():
            return None
        with open(job.meta, encoding="utf-8") as fh:
            doc = json.load(fh)
        held = os.stat(job.partial).st_size
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("name") != job.name or doc.get("size") != job.size or \
            doc.get("want") != job.want or doc.get("piece") != piece_size or held != job.size:
        return None
    written = doc.get("written")
    if not isinstance(written, dict):
        return None
    out: Dict[int, int] = {}
    for k, v in written.items():
        if not (isinstance(k, str) and k.isdigit() and isinstance(v, int) and v >= 0):
            return None
        out[int(k)] = v
    return out


def stale_partial(job: FileJob, piece_size: int = PIECE_SIZE) -> bool:
    """A partial file is there but cannot be resumed for this content (another version, no sidecar)."""
    return job.partial.exists() and _read_meta(job, piece_size) is None


def remove_partial(job: FileJob) -> None:
    for path in (job.partial, job.meta):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class _File:
    """A file being fetched: its pieces, its open partial file, its hasher."""

    def __init__(self, job: FileJob, piece_size: int) -> None:
        self.job = job
        self.lock = threading.Lock()
        n = max(1, -(-job.size // piece_size))
        self.pieces = [_Piece(i, i * piece_size, min(job.size, (i + 1) * piece_size)) for i in range(n)]
        self.piece_size = piece_size
        self.state = "new"  # new | probing | ranged | single | done | failed
        self.final_url: Optional[str] = None
        self.active = 0
        self.error: Optional[BaseException] = None
        self.fetched = 0
        self.resumed = 0
        self.digest: Optional[str] = None
        self.hashed = threading.Event()
        self.progress = threading.Event()
        self.fd = -1
        self.open_lock = threading.Lock()
        self.hasher: Optional[threading.Thread] = None
        self.generation = 0  # bumped when the file is restarted from byte 0 (a server without ranges)
        self.meta_dirty = False

    def load(self) -> None:
        """Take over what an earlier run recorded (nothing is opened yet: files are opened when fetched, so a
        repo of many files never holds more descriptors or hashers than it has connections)."""
        job = self.job
        for planted in (job.partial, job.meta):  # ours are plain files: a symlink was put there by someone else
            if planted.is_symlink():
                planted.unlink()
        state = _read_meta(job, self.piece_size)
        if state is None:
            remove_partial(job)
            if job.size == 0:
                job.partial_dir.mkdir(parents=True, exist_ok=True)
                open(job.partial, "wb").close()
            return
        for piece in self.pieces:
            piece.written = min(state.get(piece.index, 0), piece.end - piece.start)
        self.resumed = sum(p.written for p in self.pieces)

    def ensure_open(self, cancel: threading.Event) -> None:
        """Open (or create) the partial file and start its hasher, once."""
        with self.open_lock:
            if self.fd >= 0 or self.state in ("done", "failed"):
                return
            job = self.job
            job.partial_dir.mkdir(parents=True, exist_ok=True)
            fresh = not job.partial.exists()
            self.fd = os.open(str(job.partial), os.O_RDWR | os.O_CREAT | _NOFOLLOW | getattr(os, "O_BINARY", 0),
                              0o600)
            if fresh:
                os.ftruncate(self.fd, job.size)
            self.save_meta()
            self.start_hasher(cancel)

    def start_hasher(self, cancel: threading.Event) -> None:
        if self.hasher is None:
            self.hasher = threading.Thread(target=_hash_prefix, args=(self, cancel), name=f"hash {self.job.name}",
                                           daemon=True)
            self.hasher.start()

    def contiguous(self) -> int:
        """Bytes from the start of the file that are written without a gap."""
        return self.contiguous_at()[0]

    def contiguous_at(self) -> Tuple[int, int]:
        """(contiguous bytes, generation), read together."""
        with self.lock:
            for piece in self.pieces:
                if not piece.done:
                    return piece.start + piece.written, self.generation
            return self.job.size, self.generation

    def restart(self) -> None:
        """Everything is fetched again from byte 0: what was written and hashed so far no longer counts."""
        with self.lock:
            for p in self.pieces:
                p.written = 0
            self.generation += 1

    def all_written(self) -> bool:
        with self.lock:
            return all(p.done for p in self.pieces)

    def save_meta(self) -> None:
        with self.lock:
            doc = {"name": self.job.name, "size": self.job.size, "want": self.job.want, "piece": self.piece_size,
                   "written": {str(p.index): p.written for p in self.pieces if p.written}}
            self.meta_dirty = False
        tmp = self.job.meta.with_suffix(".json.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.job.meta)

    def close(self) -> None:
        with self.open_lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


# -- the hasher -------------------------------------------------------------------------------


def _lower_priority() -> None:
    """Make the calling thread nicer (Linux: a thread id is a valid PRIO_PROCESS target)."""
    if sys.platform != "linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), NICE))
    except OSError:
        pass


def _hash_prefix(f: _File, cancel: threading.Event) -> None:
    """Hash ``f``'s partial file as its written prefix grows; set ``f.digest`` when all of it is hashed."""
    _lower_priority()
    job = f.job
    digest = new_digest(job.algo, job.size)
    if digest is None:
        f.hashed.set()
        return
    try:
        fd = os.open(str(job.partial), os.O_RDONLY | _NOFOLLOW | getattr(os, "O_BINARY", 0))
    except OSError:
        f.hashed.set()
        return
    try:
        pos, generation = 0, f.contiguous_at()[1]
        while True:
            if cancel.is_set() or f.state == "failed":
                return
            end, now = f.contiguous_at()
            if now != generation:  # restarted from byte 0: so is the hash
                digest, pos, generation = new_digest(job.algo, job.size), 0, now
                continue
            if pos >= job.size:
                break
            if end <= pos:
                f.progress.wait(0.05)
                f.progress.clear()
                continue
            data = os.pread(fd, min(HASH_CHUNK, end - pos), pos)
            if not data:
                return
            digest.update(data)
            pos += len(data)
        f.digest = digest.hexdigest()
    finally:
        os.close(fd)
        f.hashed.set()


# -- the downloader ---------------------------------------------------------------------------


class Downloader:
    """Fetch ``jobs`` over ``transport`` with the piece scheduler of the module docstring."""

    def __init__(self, transport: Any, options: FetchOptions, log: Callable[[str], None]) -> None:
        self.transport = transport
        self.options = options
        self.log = log
        self.cancel = threading.Event()  # set on the first hard failure, and on Ctrl-C
        self.cond = threading.Condition()
        self.files: List[_File] = []

    # ---------------------------------------------------------------- scheduling
    def _pick(self) -> Optional[Tuple[_File, _Piece]]:
        for f in self.files:
            if f.state in ("done", "failed", "single", "probing"):
                continue
            if f.state == "new":
                first = next((p for p in f.pieces if not p.done), None)
                if first is None:
                    continue
                f.state = "probing"
                first.taken = True
                f.active += 1
                return f, first
            if f.active >= self.options.per_file:
                continue
            for piece in f.pieces:
                if not piece.done and not piece.taken:
                    piece.taken = True
                    f.active += 1
                    return f, piece
        return None

    def _busy(self) -> bool:
        return any(f.state not in ("done", "failed") for f in self.files)

    def _worker(self) -> None:
        while True:
            with self.cond:
                task = self._pick()
                while task is None and self._busy() and not self.cancel.is_set():
                    self.cond.wait(0.1)
                    task = self._pick()
                if task is None or self.cancel.is_set():
                    return
            f, piece = task
            try:
                self._run(f, piece)
            except BaseException as exc:  # noqa: BLE001 - handed to the coordinator
                with self.cond:
                    if f.error is None:
                        f.error = exc
                    f.state = "failed"
            finally:
                with self.cond:
                    f.active -= 1
                    piece.taken = False
                    if f.state == "probing":  # the probe ended without deciding: let the next one try
                        f.state = "new"
                    if f.state in ("new", "ranged", "single") and f.all_written():
                        f.state = "done"
                        self._save_meta_quietly(f)
                        f.close()
                    self.cond.notify_all()
                f.progress.set()

    # ---------------------------------------------------------------- one request
    def _run(self, f: _File, piece: _Piece) -> None:
        attempt = 0
        while True:
            if self.cancel.is_set():
                return
            try:
                self._request(f, piece)
                return
            except errors.BootstrapError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified here
                attempt += 1
                if attempt > self.options.retries or not _retryable(exc):
                    raise
                delay = self.options.backoff_s * (2 ** (attempt - 1))
                self.log(f"{f.job.name}: {_describe(exc)}; retrying in {delay:.1f}s (attempt {attempt})")
                if self.cancel.wait(delay):
                    return

    def _request(self, f: _File, piece: _Piece) -> None:
        job = f.job
        single = f.state == "single"  # no ranges: every try streams the whole file from byte 0
        if piece.done and not single:
            return
        f.ensure_open(self.cancel)
        probing = f.state == "probing"
        start = piece.start + piece.written
        url = f.final_url or job.url
        headers = {"Range": f"bytes={start}-{piece.end - 1}"} if job.size and not single else {}
        response = self.transport.request("GET", url, headers=headers, stream=True)
        try:
            status = response.status_code
            if f.final_url and status in (401, 403, 404, 410) and url != job.url:
                f.final_url = None  # a signed CDN URL that expired: resolve again from the source
                raise _Retry(f"HTTP {status} from the redirect target")
            seen_commit = response.headers.get("X-Repo-Commit")
            if status in (200, 206) and job.commit and seen_commit and seen_commit.strip() != job.commit:
                raise errors.CommitMismatch(job.name, want=job.commit, got=ascii(seen_commit.strip()[:64]),
                                            source=self.transport.label, where="the listing")
            if status == 206:
                _check_content_range(response, start, piece.end - 1, job)
                if probing:
                    with self.cond:
                        f.final_url = response.url
                        f.state = "ranged"
                        self.cond.notify_all()
                self._stream(f, response, piece, start, piece.end)
            elif status == 200 and (probing or f.state == "single" or not job.size):
                length = response.headers.get("Content-Length")
                if length is not None and length.strip().isdigit() and int(length) != job.size:
                    raise errors.UntrustedSource(
                        f"{job.name}: the source sends {int(length)} bytes, its listing said {job.size}",
                        filename=job.name, source=self.transport.label)
                with self.cond:
                    if f.state != "single" and job.size > self.options.piece_size:
                        self.log(f"{job.name}: the server does not serve byte ranges; one connection")
                    f.state = "single"
                    f.restart()
                self._stream_whole(f, response)
            else:
                error = _http_error(response, job, self.transport)
                if isinstance(error, errors.BootstrapError):
                    error = with_server_message(error, response)
                raise error
        finally:
            response.close()

    def _stream(self, f: _File, response: Any, piece: _Piece, start: int, end: int) -> None:
        pos = start
        for chunk in body_chunks(response, READ_CHUNK):
            if self.cancel.is_set():
                return
            if not chunk:
                continue
            chunk = chunk[: end - pos]
            _pwrite_all(f.fd, chunk, pos)
            pos += len(chunk)
            with f.lock:
                piece.written = pos - piece.start
                f.fetched += len(chunk)
                f.meta_dirty = True
            f.progress.set()
            if pos >= end:
                break
        if pos < end and not self.cancel.is_set():
            raise _Retry(f"the connection closed after {pos - start} of {end - start} bytes")

    def _stream_whole(self, f: _File, response: Any) -> None:
        pos, size = 0, f.job.size
        for chunk in body_chunks(response, READ_CHUNK):
            if self.cancel.is_set():
                return
            if not chunk:
                continue
            if pos + len(chunk) > size:
                raise errors.UntrustedSource(f"{f.job.name}: the source sends more than the {size} bytes it listed",
                                             filename=f.job.name, source=self.transport.label)
            _pwrite_all(f.fd, chunk, pos)
            pos += len(chunk)
            with f.lock:
                for p in f.pieces:
                    p.written = max(0, min(pos, p.end) - p.start)
                f.fetched += len(chunk)
                f.meta_dirty = True
            f.progress.set()
        if pos < size and not self.cancel.is_set():
            raise _Retry(f"the connection closed after {pos} of {size} bytes")

    # ---------------------------------------------------------------- the run
    def run(self, jobs: List[FileJob]) -> List[Outcome]:
        """Fetch every job; returns one Outcome per job (ok: the hash matched and the file is in place).

        Raises the first hard error (HTTP 4xx, a lying source, disk full, too many retries) after the
        others stopped; partial files stay for the next run.
        """
        self.files = [_File(job, self.options.piece_size) for job in jobs]
        try:
            for f in self.files:
                f.load()
                if f.all_written():  # empty, or everything was written by an earlier run
                    f.state = "done"
            workers = [threading.Thread(target=self._worker, name=f"fetch-{i}", daemon=True)
                       for i in range(max(1, min(self.options.total, sum(len(f.pieces) for f in self.files))))]
            for w in workers:
                w.start()
            last_meta = last_progress = started = time.monotonic()
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.05)
                now = time.monotonic()
                if now - last_meta > META_EVERY_S:
                    self._save_metas()
                    last_meta = now
                if self.options.progress_every_s and now - last_progress > self.options.progress_every_s:
                    self.log(self._progress_line(now - started))
                    last_progress = now
                if any(f.state == "failed" for f in self.files) and not self.cancel.is_set():
                    self.cancel.set()  # one hard failure stops this source; partials stay
        except BaseException:
            self.cancel.set()  # Ctrl-C or a bug: stop the workers; what is recorded stays resumable
            self._save_metas()
            raise
        else:
            self._save_metas()
            failed = next((f for f in self.files if f.state == "failed"), None)
            if failed is not None:
                raise _final(failed.error, failed.job, self.transport.label)
            for f in self.files:  # files complete from an earlier run were never opened: hash them now
                if f.hasher is None:
                    f.start_hasher(self.cancel)
                    f.hasher.join()  # type: ignore[union-attr]
            return [self._finish(f) for f in self.files]
        finally:
            for f in self.files:
                f.close()

    def _progress_line(self, elapsed: float) -> str:
        total = sum(f.job.size for f in self.files)
        done = sum(min(f.job.size, f.resumed + f.fetched) for f in self.files)
        fetched = sum(f.fetched for f in self.files)
        rate = fetched / elapsed if elapsed > 0 else 0.0
        left = f", about {(total - done) / rate / 60:.0f} min left" if rate > 0 else ""
        return (f"downloading: {done / 1e9:.2f} of {total / 1e9:.2f} GB ({100 * done / max(total, 1):.0f}%), "
                f"{rate / 1e6:.1f} MB/s{left}")

    def _save_metas(self) -> None:
        for f in self.files:
            if f.meta_dirty and f.fd >= 0:
                self._save_meta_quietly(f)

    @staticmethod
    def _save_meta_quietly(f: _File) -> None:
        try:
            f.save_meta()
        except OSError:
            pass  # the next save, or the final hash, settles it

    def _finish(self, f: _File) -> Outcome:
        f.hashed.wait()
        return finish(f.job, f.digest, f.fetched)


def finish(job: FileJob, digest: Optional[str], fetched: int) -> Outcome:
    """Compare ``digest`` with the job's hash; move the partial file into place only when it matched."""
    if job.algo is not None and digest != job.want:
        remove_partial(job)
        return Outcome(job.name, False, digest, fetched)
    _check_fence(job)
    os.chmod(job.partial, 0o644)
    os.replace(job.partial, job.target)
    try:
        job.meta.unlink()
    except FileNotFoundError:
        pass
    return Outcome(job.name, True, digest, fetched)


# -- errors ------------------------------------------------------------------------------------


class _Retry(Exception):
    """A transfer that can be tried again (cut short, an expired redirect)."""


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def _check_content_range(response: Any, start: int, end: int, job: FileJob) -> None:
    value = (response.headers.get("Content-Range") or "").strip()
    match = _CONTENT_RANGE.match(value)
    if not match or int(match.group(1)) != start or int(match.group(2)) != end or \
            (match.group(3) != "*" and int(match.group(3)) != job.size):
        raise errors.UntrustedSource(f"{job.name}: asked for bytes {start}-{end} of {job.size}, the server answered "
                                     f"Content-Range {value[:80]!r}", filename=job.name)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _Retry):
        return True
    if isinstance(exc, _HttpStatus):
        return exc.status in RETRY_STATUS
    return isinstance(exc, network_errors())


class _HttpStatus(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _http_error(response: Any, job: FileJob, transport: Any) -> BaseException:
    status, label = response.status_code, transport.label
    if status in RETRY_STATUS:
        return _HttpStatus(status, f"HTTP {status}")
    if status in (401, 403):
        refused = " (the token that is set was refused)" if transport.has_token else ""
        return errors.GatedRepoError(f"{job.name} needs authorisation at {label} (HTTP {status})", filename=job.name,
                                     url=label, remedy="accept the license on the model page, create a read token "
                                     f"and export HF_TOKEN=<token>{refused}; a token is sent only to the configured "
                                     "endpoint (over https, or plain http on this machine)")
    if status == 404:
        return errors.NotFoundError(f"{job.name}: not found at {label} (HTTP 404)", filename=job.name, url=label,
                                    remedy="the source does not have this file at this commit")
    if status == 416:
        return errors.UntrustedSource(f"{job.name}: the server refused a range inside the listed size (HTTP 416)",
                                      filename=job.name, source=label)
    return errors.DownloadError(f"{job.name}: HTTP {status} from {label}", filename=job.name, url=label)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}" + (f": {exc}" if isinstance(exc, (_Retry, _HttpStatus)) else "")


def _final(exc: Optional[BaseException], job: FileJob, label: str) -> BaseException:
    """The error a failed file leaves with, as one of ours."""
    import errno

    if isinstance(exc, errors.BootstrapError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return errors.DiskSpaceError(f"disk full while downloading {job.name}", path=str(job.partial_dir),
                                     remedy="free space (or set weights.dir to a bigger disk) and run again: the "
                                     "download resumes where it stopped")
    if isinstance(exc, OSError) and exc.errno is not None and not _retryable(exc):
        return errors.DownloadError(f"{job.name}: cannot write {job.partial_dir}: {exc.strerror}",
                                    filename=job.name, remedy=f"check that {job.partial_dir} is writable")
    if exc is not None and isinstance(exc, network_errors() + (_Retry,)):
        return errors.DownloadError(
            f"the connection to {label} dropped while downloading {job.name} ({_describe(exc)}), more often than "
            "the retries allow", filename=job.name, url=label,
            remedy="run the same command again: the download resumes where it stopped; if it keeps dropping, try "
            "another source (--source, --profile cn)")
    return errors.DownloadError(
        f"the download of {job.name} from {label} kept failing ({_describe(exc) if exc else 'unknown'})",
        filename=job.name, url=label,
        remedy="run the same command again: the download resumes where it stopped; if it keeps failing, try "
        "another source (--source, --profile cn)")


def copy_local(job: FileJob, source: Path, *, hardlink: bool, cancel: Optional[threading.Event] = None) -> Outcome:
    """Bring a local file into place: hardlink (same filesystem) or copy, hashing once, then verify."""
    job.partial_dir.mkdir(parents=True, exist_ok=True)
    remove_partial(job)
    digest = new_digest(job.algo, job.size)
    linked = False
    if hardlink:
        try:
            os.link(source, job.partial, follow_symlinks=True)
            linked = True
        except OSError:
            linked = False
    if linked:
        with open(job.partial, "rb", buffering=0) as fh:
            for block in iter(lambda: fh.read(HASH_CHUNK), b""):
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
                if digest is not None:
                    digest.update(block)
        fetched = 0
    else:
        fetched = 0
        with open(source, "rb", buffering=0) as src, open(job.partial, "wb") as dst:
            for block in iter(lambda: src.read(HASH_CHUNK), b""):
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
                if fetched + len(block) > job.size:
                    break
                dst.write(block)
                fetched += len(block)
                if digest is not None:
                    digest.update(block)
    got = digest.hexdigest() if digest is not None else None
    if os.stat(job.partial).st_size != job.size:
        remove_partial(job)
        return Outcome(job.name, False, f"{os.stat(source).st_size} bytes", fetched)
    if linked:  # never chmod: the inode is shared with the source folder's file
        if job.algo is not None and got != job.want:
            remove_partial(job)
            return Outcome(job.name, False, got, 0)
        _check_fence(job)
        os.replace(job.partial, job.target)
        return Outcome(job.name, True, got, 0)
    return finish(job, got, fetched)


def _check_fence(job: FileJob) -> None:
    """The target's folder is still inside the model folder (it could have been swapped for a symlink since the
    name was checked): checked again right before the move."""
    if job.fence is None:
        return
    fence = os.path.realpath(job.fence)
    parent = os.path.realpath(job.target.parent)
    if parent != fence and not parent.startswith(fence.rstrip(os.sep) + os.sep):
        remove_partial(job)
        raise errors.UntrustedSource(f"{ascii(job.name)}: its folder now leads out of {job.fence} (a symlink)",
                                     filename=job.name, remedy=f"remove the symlink inside {job.fence}")

