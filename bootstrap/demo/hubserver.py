"""A local Hugging-Face-Hub-compatible server for the offline demo and the download tests.

The serving itself (model info, tree, resolve with HEAD and Range, the headers and error codes the real
``huggingface_hub`` expects) is :mod:`bootstrap.hubserve` over :mod:`bootstrap.hubapi`, the same core
that ``llama-bootstrap share`` uses. This layer adds what the demo and the tests need on top: repos
made from a folder (hashed now, served live), gated repos that want a token, request counters, and
faults (drop, corrupt, status, slow) injected per path glob.

Run ``python -m bootstrap.demo.hubserver --repo OWNER/NAME=FOLDER [--port N]`` to serve folders by hand.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import socket
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Sequence, Tuple

from bootstrap.hubapi import Catalog, HubError, RepoFile, Revision, git_blob_sha1, lfs_file, lfs_pointer
from bootstrap.hubapi import parse_range as _parse_range
from bootstrap.hubserve import CHUNK_SIZE, HubHandler, HubServer

__all__ = ["LFS_PATTERNS", "FAULT_KINDS", "CHUNK_SIZE", "Request", "RepoFile", "Revision", "Fault", "HubError",
           "LocalHub", "describe_file", "git_blob_sha1", "lfs_pointer", "_parse_range", "main"]

#: Stored with git LFS on the real Hub (its default .gitattributes), whatever their size.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.model", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.h5", "*.onnx",
                "*.msgpack", "*.npy", "*.zip", "*.tar.gz")
FAULT_KINDS = ("drop", "corrupt", "status", "slow")


class Request(NamedTuple):
    """One request as the server saw it: compares equal to a plain ``(method, path, range)`` tuple."""

    method: str
    path: str
    range: Optional[str]


class Fault:
    """An injected fault; ``remaining`` is None for "forever", ``fired`` counts the times it applied."""

    def __init__(self, glob: str, kind: str, times: Optional[int], params: Dict[str, object]) -> None:
        self.glob, self.kind, self.remaining, self.params = glob, kind, times, params
        self.fired = 0

    def __repr__(self) -> str:
        return f"Fault({self.glob!r}, {self.kind!r}, remaining={self.remaining}, fired={self.fired})"


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
    if any(fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern) for pattern in lfs_patterns):
        return lfs_file(rel, local, size, sha256.hexdigest(), stat.st_mtime_ns)
    return RepoFile(rel, local, size, sha1.hexdigest(), sha256.hexdigest(), False, 0, stat.st_mtime_ns)


class LocalHub:
    """A Hub-compatible server on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunk_size: int = CHUNK_SIZE,
                 lfs_patterns: Sequence[str] = LFS_PATTERNS) -> None:
        self.host, self.port, self.chunk_size = host, port, chunk_size
        self.lfs_patterns = tuple(lfs_patterns)  # file-name globs stored as LFS (sha256 ETag, lfs info)
        self.catalog = Catalog()
        self._lock = threading.Lock()
        self._access: Dict[str, Tuple[bool, Optional[str]]] = {}  # repo id -> (gated, token)
        self._faults: List[Fault] = []
        self._server: Optional[HubServer] = None
        self.requests: List[Request] = []
        self.bytes_sent = 0  # file body bytes sent by resolve GETs (not API JSON)

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        server = HubServer((self.host, self.port), self.catalog, _LocalHandler, chunk_size=self.chunk_size,
                           max_connections=256, timeout_s=60.0, header_timeout_s=60.0)
        server.hub = self  # type: ignore[attr-defined]
        self._server = server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
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
            self._access[repo_id] = (gated, token)
        self.catalog.add(repo_id, revision, Revision(sha, files))
        return sha

    def file_info(self, repo_id: str, path: str, revision: str = "main") -> RepoFile:
        found = self.catalog.revision(repo_id, revision)
        if found is None:
            raise KeyError(f"{repo_id}@{revision}")
        return found.files[path]

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

    def _access_of(self, repo_id: str) -> Tuple[bool, Optional[str]]:
        with self._lock:
            return self._access.get(repo_id, (False, None))


class _LocalHandler(HubHandler):
    """The core handler plus LocalHub's request log, gated repos and injected faults."""

    server_version = "LocalHub/1"

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    def before(self, method: str, path: str) -> None:
        self.hub._record(Request(method, path, self.headers.get("Range")))
        fault = self.hub._take_fault(method, path, ("status",))
        if fault is not None:
            code = int(fault.params.get("code", 503))  # type: ignore[arg-type]
            raise HubError(code, None, f"injected status {code}")

    def model_info(self, repo_id: str, revision: Revision, blobs: bool) -> Dict[str, object]:
        info = super().model_info(repo_id, revision, blobs)
        if self.hub._access_of(repo_id)[0]:
            info["gated"] = "manual"
        return info

    def check_access(self, repo_id: str) -> None:
        gated, token = self.hub._access_of(repo_id)
        if not gated:
            return
        auth = self.headers.get("Authorization")
        if auth is None:
            raise HubError(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access"
                                             " to it and be authenticated to access it. Please log in.")
        if token is None or auth != f"Bearer {token}":
            raise HubError(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the"
                                             " authorized list.")

    def stream(self, path: str, fh: BinaryIO, start: int, length: int) -> None:
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
            self.body_bytes += len(chunk)
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
