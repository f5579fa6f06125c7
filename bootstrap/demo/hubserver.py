"""A local Hugging-Face-Hub-compatible HTTP server for the offline demo and the download tests.

It serves the endpoints the real ``huggingface_hub`` download code uses (checked with 0.36.2 and 2.4.0):

- ``GET /api/models/{repo}[/revision/{rev}]`` (model_info / repo_info; ``?blobs=true`` adds sizes, LFS info)
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (list_repo_tree; everything in one page)
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, quoted ``ETag`` (sha256 for LFS
  files, git blob sha1 otherwise), ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files, ``Range: bytes=N-``.

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) and a JSON
``{"error": ...}`` body, which the library maps to its typed errors. No xet headers are sent, so clients
use plain HTTP downloads. Faults (drop, corrupt, status, slow) can be injected per path glob.

Run ``python -m bootstrap.demo.hubserver --repo OWNER/NAME=FOLDER [--port N]`` to serve folders by hand.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

#: Stored with git LFS on the real Hub (its default .gitattributes), whatever their size.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.model", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.h5", "*.onnx",
                "*.msgpack", "*.npy", "*.zip", "*.tar.gz")
FAULT_KINDS = ("drop", "corrupt", "status", "slow")
CHUNK_SIZE = 64 * 1024
_LAST_MODIFIED = "2023-07-24T00:00:00.000Z"


class Request(NamedTuple):
    """One request as the server saw it: compares equal to a plain ``(method, path, range)`` tuple."""

    method: str
    path: str
    range: Optional[str]


class RepoFile(NamedTuple):
    path: str  # repo-relative, "/"-separated
    local: Path
    size: int
    blob_id: str  # git blob sha1 of what git stores: the file, or the LFS pointer for LFS files
    sha256: str
    lfs: bool
    pointer_size: int
    mtime_ns: int  # files are served live from disk: a change after add_repo is answered with a 409


class Revision(NamedTuple):
    sha: str
    files: Dict[str, RepoFile]


class Fault:
    """An injected fault; ``remaining`` is None for "forever", ``fired`` counts the times it applied."""

    def __init__(self, glob: str, kind: str, times: Optional[int], params: Dict[str, object]) -> None:
        self.glob, self.kind, self.remaining, self.params = glob, kind, times, params
        self.fired = 0

    def __repr__(self) -> str:
        return f"Fault({self.glob!r}, {self.kind!r}, remaining={self.remaining}, fired={self.fired})"


class _Repo:
    def __init__(self) -> None:
        self.revisions: Dict[str, Revision] = {}
        self.gated = False
        self.token: Optional[str] = None


def git_blob_sha1(data_size: int, chunks: Sequence[bytes]) -> str:
    digest = hashlib.sha1(b"blob %d\0" % data_size)  # noqa: S324 - git object ids are sha1
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def describe_file(local: Path, rel: str, lfs_patterns: Sequence[str] = LFS_PATTERNS) -> RepoFile:
    """Size, sha256 and git oid of one file, read in chunks."""
    stat = local.stat()
    size = stat.st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size)  # noqa: S324
    with local.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    lfs = any(fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern) for pattern in lfs_patterns)
    if lfs:
        pointer = lfs_pointer(sha256.hexdigest(), size)
        return RepoFile(rel, local, size, git_blob_sha1(len(pointer), [pointer]), sha256.hexdigest(), True,
                        len(pointer), stat.st_mtime_ns)
    return RepoFile(rel, local, size, sha1.hexdigest(), sha256.hexdigest(), False, 0, stat.st_mtime_ns)


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up (killed download, dropped keep-alive) is normal here, not a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class LocalHub:
    """A Hub-compatible server on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunk_size: int = CHUNK_SIZE,
                 lfs_patterns: Sequence[str] = LFS_PATTERNS) -> None:
        self.host, self.port, self.chunk_size = host, port, chunk_size
        self.lfs_patterns = tuple(lfs_patterns)  # file-name globs stored as LFS (sha256 ETag, lfs info)
        self._lock = threading.Lock()
        self._repos: Dict[str, _Repo] = {}
        self._faults: List[Fault] = []
        self._sockets: set = set()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.requests: List[Request] = []
        self.bytes_sent = 0  # file body bytes sent by resolve GETs (not API JSON)

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        server = _QuietServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.hub = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="LocalHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:  # idle keep-alive connections would otherwise linger
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ content
    def add_repo(self, repo_id: str, folder: Path, *, revision: str = "main", gated: bool = False,
                 token: Optional[str] = None) -> str:
        """Serve ``folder`` (recursively, minus .git) as ``repo_id`` at ``revision``; return its commit sha.

        Files are hashed now and streamed from disk later: do not change them afterwards (a changed file
        is answered with 409 Conflict); use a separate folder for each revision.

        The sha is a deterministic 40-hex digest of the repo id and the files' paths and oids. A repo can
        hold several revisions (call again with another ``revision``); each is also reachable by its sha.
        ``gated=True`` makes downloads require ``Authorization: Bearer <token>``.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise NotADirectoryError(str(folder))
        files: Dict[str, RepoFile] = {}
        for local in sorted(folder.rglob("*")):
            rel = local.relative_to(folder).as_posix()
            if local.is_file() and ".git" not in rel.split("/"):
                files[rel] = describe_file(local, rel, self.lfs_patterns)
        digest = hashlib.sha1(b"llama-bootstrap LocalHub commit\0" + repo_id.encode() + b"\0")  # noqa: S324
        for rel, entry in sorted(files.items()):
            digest.update(f"{rel}\0{entry.blob_id}\n".encode())
        sha = digest.hexdigest()
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            repo.revisions[revision] = Revision(sha, files)
            repo.gated, repo.token = gated, token
        return sha

    def file_info(self, repo_id: str, path: str, revision: str = "main") -> RepoFile:
        with self._lock:
            return self._repos[repo_id].revisions[revision].files[path]

    # ------------------------------------------------------------------------------ faults
    def inject(self, path_glob: str, kind: str, times: Optional[int] = 1, **params: object) -> Fault:
        """Make the next ``times`` matching requests fail (``times=None``: all of them).

        ``path_glob`` is matched (fnmatch) against the decoded request path, e.g. ``"*/resolve/*/big.bin"``.
        Kinds and their params:

        - ``drop``: send the headers with the full length, then close after ``after`` body bytes
          (default: half).
        - ``corrupt``: flip ``count`` bytes (default 1) from absolute file offset ``offset`` (default: the
          middle of the served body); headers and ETag stay those of the good file.
        - ``status``: answer ``code`` (default 503) with a JSON error body, on any method.
        - ``slow``: sleep ``delay`` seconds (default 0.05) before each body chunk of ``chunk`` bytes
          (default 64 KiB); or, with ``rate`` (bytes per second), pace the body like a link of that
          speed: each chunk waits until ``bytes sent / rate`` seconds after the first byte, so time
          the server or the client spends elsewhere is not added on top of the link's time.

        drop / corrupt / slow apply to file bodies (resolve GETs) only; ``method="HEAD"`` etc. restricts
        a fault to one method.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
        fault = Fault(path_glob, kind, times, dict(params))
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = []
            self.bytes_sent = 0

    def file_requests(self, method: str = "GET") -> List[Request]:
        """Requests for file contents (resolve URLs) with the given method."""
        with self._lock:
            return [r for r in self.requests if r.method == method and "/resolve/" in r.path]

    def _take_fault(self, method: str, path: str, kinds: Tuple[str, ...]) -> Optional[Fault]:
        with self._lock:
            for fault in self._faults:
                wanted = fault.params.get("method")
                if (fault.kind in kinds and fault.remaining != 0 and fnmatch.fnmatchcase(path, fault.glob)
                        and (wanted is None or wanted == method)):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.fired += 1
                    return fault
        return None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    # ------------------------------------------------------------------------------ lookup
    def _find(self, segments: List[str]) -> Tuple[Optional[str], List[str]]:
        """Split decoded path segments into (known repo id, rest); tries "owner/name" before "name"."""
        with self._lock:
            for n in (2, 1):
                repo_id = "/".join(segments[:n])
                if len(segments) >= n and repo_id in self._repos:
                    return repo_id, segments[n:]
        return None, segments

    def _revision(self, repo_id: str, rev: str) -> Optional[Revision]:
        with self._lock:
            repo = self._repos[repo_id]
            if rev in repo.revisions:
                return repo.revisions[rev]
            for revision in repo.revisions.values():
                if revision.sha == rev:
                    return revision
        return None


# ------------------------------------------------------------------------------ handler


class HubError(Exception):
    def __init__(self, status: int, code: Optional[str], message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _sibling(entry: RepoFile, blobs: bool) -> Dict[str, object]:
    data: Dict[str, object] = {"rfilename": entry.path}
    if blobs:
        data.update(size=entry.size, blobId=entry.blob_id)
        if entry.lfs:
            data["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def _tree_entry(entry: RepoFile) -> Dict[str, object]:
    data: Dict[str, object] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": entry.path}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def _tree(files: Dict[str, RepoFile], prefix: str, recursive: bool) -> List[Dict[str, object]]:
    base = prefix.strip("/")
    if base and base in files:
        raise HubError(400, None, f"{base} is a file, not a directory")
    start = base + "/" if base else ""
    dirs: Dict[str, None] = {}
    out: List[Dict[str, object]] = []
    for path in sorted(files):
        if not path.startswith(start):
            continue
        parts = path[len(start):].split("/")
        for depth in range(1, len(parts)):
            if depth > 1 and not recursive:
                break
            dirs.setdefault(start + "/".join(parts[:depth]), None)
        if recursive or len(parts) == 1:
            out.append(_tree_entry(files[path]))
    if base and not out and not dirs:
        raise HubError(404, "EntryNotFound", f"{base} does not exist on this revision")
    dir_entries = [{"type": "directory", "oid": git_blob_sha1(len(d), [d.encode()]), "size": 0, "path": d}
                   for d in dirs]
    return dir_entries + out


def _parse_range(value: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """(start, end-inclusive) for a single ``bytes=`` range; None when absent or unparsable (serve all)."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[len("bytes="):].strip().partition("-")
    try:
        if first == "":
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), (int(last) if last else size - 1)
    except ValueError:
        return None
    return start, min(end, size - 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1"

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.hub._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.hub._track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by default
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    # ------------------------------------------------------------------------------ routing
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        path = "/".join([""] + segments)
        self.hub._record(Request(method, path, self.headers.get("Range")))
        try:
            fault = self.hub._take_fault(method, path, ("status",))
            if fault is not None:
                code = int(fault.params.get("code", 503))  # type: ignore[arg-type]
                raise HubError(code, None, f"injected status {code}")
            if method == "POST":
                raise HubError(405, None, "method not allowed")
            query = parse_qs(split.query)
            if segments[:2] == ["api", "models"]:
                self._api(segments[2:], query)
            else:
                self._resolve(method, path, segments)
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _locate(self, segments: List[str]) -> Tuple[str, List[str]]:
        repo_id, rest = self.hub._find(segments)
        if repo_id is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo_id, rest

    def _api(self, segments: List[str], query: Dict[str, List[str]]) -> None:
        repo_id, rest = self._locate(segments)
        if not rest or rest[0] == "revision":
            rev = rest[1] if len(rest) > 1 else "main"
            revision = self._get_revision(repo_id, rev)
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            self._json(200, self._model_info(repo_id, revision, blobs), revision.sha)
        elif rest[0] == "tree" and len(rest) >= 2:
            revision = self._get_revision(repo_id, rest[1])
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            self._json(200, _tree(revision.files, "/".join(rest[2:]), recursive), revision.sha)
        else:
            raise HubError(404, None, "unknown endpoint")

    def _model_info(self, repo_id: str, revision: Revision, blobs: bool) -> Dict[str, object]:
        with self.hub._lock:
            gated = self.hub._repos[repo_id].gated
        info: Dict[str, object] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],  # noqa: S324
            "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": revision.sha, "lastModified": _LAST_MODIFIED, "createdAt": _LAST_MODIFIED,
            "private": False, "disabled": False, "gated": "manual" if gated else False,
            "downloads": 0, "likes": 0, "tags": ["transformers", "llama", "text-generation"],
            "pipeline_tag": "text-generation", "library_name": "transformers",
            "siblings": [_sibling(entry, blobs) for _, entry in sorted(revision.files.items())],
        }
        if blobs:
            info["usedStorage"] = sum(entry.size for entry in revision.files.values())
        return info

    def _get_revision(self, repo_id: str, rev: str) -> Revision:
        revision = self.hub._revision(repo_id, rev)
        if revision is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return revision

    def _check_access(self, repo_id: str) -> None:
        with self.hub._lock:
            repo = self.hub._repos[repo_id]
            gated, token = repo.gated, repo.token
        if not gated:
            return
        auth = self.headers.get("Authorization")
        if auth is None:
            raise HubError(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access"
                                             " to it and be authenticated to access it. Please log in.")
        if token is None or auth != f"Bearer {token}":
            raise HubError(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the"
                                             " authorized list.")

    def _resolve(self, method: str, path: str, segments: List[str]) -> None:
        repo_id, rest = self._locate(segments)
        if len(rest) < 3 or rest[0] != "resolve":
            raise HubError(404, None, "unknown endpoint")
        self._check_access(repo_id)
        revision = self._get_revision(repo_id, rest[1])
        entry = revision.files.get("/".join(rest[2:]))
        if entry is None:
            raise HubError(404, "EntryNotFound", "Entry not found")
        try:
            stat = entry.local.stat()
        except OSError:
            stat = None
        if stat is None or (stat.st_size, stat.st_mtime_ns) != (entry.size, entry.mtime_ns):
            raise HubError(409, None, f"{entry.local} changed after add_repo(); use one folder per revision")
        self._send_file(method, path, entry, revision.sha)

    # ------------------------------------------------------------------------------ responses
    def _error(self, err: HubError) -> None:
        body = json.dumps({"error": err.message}).encode()
        self.send_response(err.status)
        if err.code:
            self.send_header("X-Error-Code", err.code)
        self.send_header("X-Error-Message", err.message)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: object, sha: str) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", sha)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, method: str, path: str, entry: RepoFile, sha: str) -> None:
        size = entry.size
        span = _parse_range(self.headers.get("Range"), size)
        if span is not None and (span[0] >= size or span[0] > span[1]) and size > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = span if span is not None else (0, size - 1)
        length = max(end - start + 1, 0)
        etag = entry.sha256 if entry.lfs else entry.blob_id
        self.send_response(206 if span is not None else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", sha)
        if entry.lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(size))
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if method == "HEAD":
            return
        self._stream(path, entry.local, start, length)

    def _stream(self, path: str, local: Path, start: int, length: int) -> None:
        hub = self.hub
        fault = hub._take_fault("GET", path, ("drop", "corrupt", "slow"))
        params = fault.params if fault is not None else {}
        kind = fault.kind if fault is not None else None
        chunk_size = hub.chunk_size
        if kind == "slow":
            chunk_size = int(params.get("chunk", hub.chunk_size))  # type: ignore[arg-type]
        limit = int(params.get("after", length // 2)) if kind == "drop" else length  # type: ignore[arg-type]
        if kind == "corrupt":
            bad_from = int(params.get("offset", start + length // 2))  # type: ignore[arg-type]
            bad_to = bad_from + int(params.get("count", 1))  # type: ignore[arg-type]
        rate = float(params.get("rate", 0)) if kind == "slow" else 0.0  # type: ignore[arg-type]
        sent = 0
        began = time.monotonic()
        with local.open("rb") as fh:
            fh.seek(start)
            while sent < min(limit, length):
                chunk = fh.read(min(chunk_size, min(limit, length) - sent))
                if not chunk:
                    break
                if kind == "corrupt":
                    chunk = _flip(chunk, start + sent, bad_from, bad_to)
                elif rate > 0:
                    wait = began + (sent + len(chunk)) / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                elif kind == "slow":
                    time.sleep(float(params.get("delay", 0.05)))  # type: ignore[arg-type]
                self.wfile.write(chunk)
                sent += len(chunk)
                hub._count(len(chunk))
        if kind == "drop":
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _flip(chunk: bytes, chunk_start: int, bad_from: int, bad_to: int) -> bytes:
    lo, hi = max(bad_from, chunk_start), min(bad_to, chunk_start + len(chunk))
    if lo >= hi:
        return chunk
    data = bytearray(chunk)
    for i in range(lo - chunk_start, hi - chunk_start):
        data[i] ^= 0xFF
    return bytes(data)


# ------------------------------------------------------------------------------ CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap.demo.hubserver",
        description="Serve local folders as a Hugging-Face-Hub-compatible endpoint.",
    )
    parser.add_argument("--repo", action="append", default=[], metavar="ID[@REV]=FOLDER",
                        help="serve FOLDER as repo ID at revision REV (default main); repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    hub = LocalHub(args.host, args.port)
    for spec in args.repo:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--repo wants ID[@REV]=FOLDER, got {spec!r}")
        repo_id, _, rev = name.partition("@")
        sha = hub.add_repo(repo_id, Path(folder), revision=rev or "main")
        print(f"{repo_id}@{rev or 'main'} = {sha}", file=sys.stderr)
    with hub:
        print(hub.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
