"""A Hugging-Face-Hub-compatible HTTP server: the serving core of ``share`` and of the demo's LocalHub.

It answers the requests the real ``huggingface_hub`` download code makes (checked with 0.36.2 and 2.4.0):

- ``GET /api/models/{repo}[/revision/{rev}]`` (model_info; ``?blobs=true`` adds sizes, blob ids, LFS info)
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (list_repo_tree; everything in one page)
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, a quoted ``ETag`` (sha256 for LFS
  files, the git blob id otherwise), ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files, and one
  ``Range`` (``bytes=N-``, ``bytes=N-M``, ``bytes=-N``): 206, or 416 when it cannot be satisfied.

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, ...) and a JSON
``{"error": ...}`` body, which the library maps to its typed errors. No xet headers are sent.

Only what the :class:`Catalog` holds is served, by exact name: a request path is never joined to a
folder. A file is opened without following a final symlink, must lie inside its revision's root and
must still have the size and mtime it was described with (else 409), and is then streamed from that
same open file. The server is threaded but bounded (``max_connections``; beyond that a 503 with
``Retry-After``), a client gets ``header_timeout_s`` to send its request and ``timeout_s`` per read or
write, and every request is reported to ``on_request`` (method, path, status, bytes).

:class:`HubHandler` is meant to be subclassed: ``before``, ``check_access``, ``model_info``,
``file_headers``, ``open_entry`` and ``stream`` are the places to change one behaviour.
"""

from __future__ import annotations

import io
import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Callable, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from bootstrap.hubapi import (
    Catalog,
    HubError,
    RepoFile,
    Revision,
    model_info_doc,
    parse_range,
    printable,
    tree_listing,
)

CHUNK_SIZE = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_HEADER_TIMEOUT_S = 10.0


class RequestLog(NamedTuple):
    client: str
    method: str
    path: str
    status: int
    bytes: int  # body bytes sent
    seconds: float
    range: Optional[str] = None  # the Range header asked for, if any


class _DeadlineReader(io.RawIOBase):
    """Socket reads that give up at the handler's deadline: a client trickling its headers is cut off."""

    def __init__(self, handler: HubHandler) -> None:
        super().__init__()
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        sock, handler = self.handler.connection, self.handler
        left = handler.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request took too long to arrive")
        sock.settimeout(min(left, handler.timeout or left))
        try:
            return sock.recv_into(buffer)
        finally:
            sock.settimeout(handler.timeout)


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llama-bootstrap-hub/1"
    server: HubServer  # type: ignore[assignment]

    # ------------------------------------------------------------------------------ connection
    def setup(self) -> None:
        self.timeout = self.server.timeout_s  # per read/write on this connection
        self.deadline = time.monotonic() + self.server.header_timeout_s
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline (the socket stays open)
        self.rfile = io.BufferedReader(_DeadlineReader(self))  # type: ignore[assignment]
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + self.server.header_timeout_s
        self.status: Optional[int] = None
        self.body_bytes = 0
        self.command, self.headers = "", None  # type: ignore[assignment] - nothing from the previous request
        started = time.monotonic()
        try:
            super().handle_one_request()
        finally:
            if self.status is not None:
                asked = self.headers.get("Range") if getattr(self, "headers", None) is not None else None
                self.server.note(RequestLog(self.client_address[0] if self.client_address else "-", self.command,
                                            printable(getattr(self, "path", "")), self.status, self.body_bytes,
                                            round(time.monotonic() - started, 3),
                                            printable(asked, 100) if asked else None))

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        self.status = code
        super().send_response(code, message)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - requests go to on_request
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self.close_connection = True  # its body is never read
        self._dispatch("POST")

    # ------------------------------------------------------------------------------ hooks
    def before(self, method: str, path: str) -> None:
        """Called first for every request (``path`` decoded); raise HubError to answer with an error."""

    def check_access(self, repo_id: str) -> None:
        """Raise HubError (401/403) to refuse a download; everything is public by default."""

    def model_info(self, repo_id: str, revision: Revision, blobs: bool) -> Dict[str, object]:
        return model_info_doc(repo_id, revision, blobs)

    def file_headers(self, entry: RepoFile, sha: str) -> List[Tuple[str, str]]:
        etag = f'"{entry.sha256 if entry.lfs else entry.blob_id}"'
        headers = [("ETag", etag), ("X-Repo-Commit", sha)]
        if entry.lfs:
            headers += [("X-Linked-Etag", etag), ("X-Linked-Size", str(entry.size))]
        return headers

    def open_entry(self, entry: RepoFile, revision: Revision) -> BinaryIO:
        """The file, opened and checked: inside the revision's root, no final symlink, unchanged."""
        if revision.root is not None:
            real, root = os.path.realpath(entry.local), os.path.realpath(revision.root)
            if not real.startswith(os.path.join(root, "")):
                self.server.warn(f"{entry.path}: resolves outside {revision.root}; not served")
                raise HubError(404, "EntryNotFound", "Entry not found")
        try:
            fd = os.open(str(entry.local), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        except OSError:
            fd = None
        fh = os.fdopen(fd, "rb") if fd is not None else None
        stat = os.fstat(fh.fileno()) if fh is not None else None
        if stat is None or (stat.st_size, stat.st_mtime_ns) != (entry.size, entry.mtime_ns):
            if fh is not None:
                fh.close()
            self.server.warn(f"{entry.path}: changed or gone since it was described ({entry.local}); not served")
            raise HubError(409, None, f"{entry.path} changed since it was verified; it is not served")
        return fh

    def stream(self, path: str, fh: BinaryIO, start: int, length: int) -> None:
        """Send ``length`` bytes of ``fh`` from ``start``."""
        fh.seek(start)
        sent = 0
        while sent < length:
            chunk = fh.read(min(self.server.chunk_size, length - sent))
            if not chunk:
                break
            self.wfile.write(chunk)
            sent += len(chunk)
            self.body_bytes += len(chunk)

    # ------------------------------------------------------------------------------ routing
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        path = "/".join([""] + segments)
        try:
            self.before(method, path)
            if method not in ("GET", "HEAD"):
                raise HubError(405, None, "method not allowed")
            if segments[:2] == ["api", "models"]:
                self._api(segments[2:], parse_qs(split.query))
            else:
                self._resolve(method, path, segments)
        except HubError as err:
            self.send_error_json(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _locate(self, segments: List[str]) -> Tuple[str, List[str]]:
        repo_id, rest = self.server.catalog.find(segments)
        if repo_id is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo_id, rest

    def _revision(self, repo_id: str, rev: str) -> Revision:
        revision = self.server.catalog.revision(repo_id, rev)
        if revision is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return revision

    def _api(self, segments: List[str], query: Dict[str, List[str]]) -> None:
        repo_id, rest = self._locate(segments)
        if not rest or (rest[0] == "revision" and len(rest) == 2):
            revision = self._revision(repo_id, rest[1] if rest else "main")
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            self.send_json(200, self.model_info(repo_id, revision, blobs), revision.sha)
        elif rest[0] == "tree" and len(rest) >= 2:
            revision = self._revision(repo_id, rest[1])
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            self.send_json(200, tree_listing(revision.files, "/".join(rest[2:]), recursive), revision.sha)
        else:
            raise HubError(404, None, "unknown endpoint")

    def _resolve(self, method: str, path: str, segments: List[str]) -> None:
        repo_id, rest = self._locate(segments)
        if len(rest) < 3 or rest[0] != "resolve":
            raise HubError(404, None, "unknown endpoint")
        self.check_access(repo_id)
        revision = self._revision(repo_id, rest[1])
        entry = revision.files.get("/".join(rest[2:]))
        if entry is None:
            raise HubError(404, "EntryNotFound", "Entry not found")
        with self.open_entry(entry, revision) as fh:
            self._send_file(method, path, entry, revision.sha, fh)

    # ------------------------------------------------------------------------------ responses
    def send_error_json(self, err: HubError) -> None:
        body = json.dumps({"error": err.message}).encode()
        self.send_response(err.status)
        if err.code:
            self.send_header("X-Error-Code", err.code)
        self.send_header("X-Error-Message", printable(err.message))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.body_bytes += len(body)

    def send_json(self, status: int, data: object, sha: str) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", sha)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.body_bytes += len(body)

    def _send_file(self, method: str, path: str, entry: RepoFile, sha: str, fh: BinaryIO) -> None:
        size = entry.size
        span = parse_range(self.headers.get("Range"), size) if size > 0 else None
        if span is not None and span[0] > span[1]:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = span if span is not None else (0, size - 1)
        length = max(end - start + 1, 0)
        self.send_response(206 if span is not None else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in self.file_headers(entry, sha):
            self.send_header(name, value)
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if method == "GET":
            self.stream(path, fh, start, length)


class HubServer(ThreadingHTTPServer):
    """A threaded server for a :class:`Catalog`, with at most ``max_connections`` connections at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: Tuple[str, int], catalog: Catalog, handler: type = HubHandler, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, timeout_s: float = DEFAULT_TIMEOUT_S,
                 header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S, chunk_size: int = CHUNK_SIZE,
                 on_request: Optional[Callable[[RequestLog], None]] = None,
                 on_warning: Optional[Callable[[str], None]] = None) -> None:
        self.catalog = catalog
        self.max_connections, self.timeout_s, self.header_timeout_s = max_connections, timeout_s, header_timeout_s
        self.chunk_size = chunk_size
        self.on_request, self.on_warning = on_request, on_warning
        self._slots = threading.BoundedSemaphore(max_connections)
        self._workers: set = set()  # threads serving a connection now
        self._sockets: set = set()
        self._sockets_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: no reverse DNS lookup of the host
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"

    # ------------------------------------------------------------------------------ bounded threads
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        thread = threading.Thread(target=self._work, args=(request, client_address), daemon=True)
        with self._sockets_lock:
            self._workers.add(thread)
        thread.start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._sockets_lock:
                self._workers.discard(threading.current_thread())
            self._slots.release()

    def _refuse(self, request: Any, client_address: Any) -> None:
        body = json.dumps({"error": "too many connections; try again"}).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nX-Error-Message: too many connections\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            request.settimeout(1.0)
            request.sendall(head.encode() + body)
        except OSError:
            pass
        self.shutdown_request(request)
        self.note(RequestLog(str(client_address[0]) if client_address else "-", "-", "-", 503, 0, 0.0))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up or timing out (killed download, dropped keep-alive) is normal here."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
            return
        if isinstance(exc, OSError):  # a socket shut while stopping (EBADF), and the like: no traceback
            self.warn(f"connection from {client_address[0] if client_address else '?'} ended: "
                      f"{exc.strerror or type(exc).__name__}")
            return
        super().handle_error(request, client_address)

    # ------------------------------------------------------------------------------ reporting
    def note(self, record: RequestLog) -> None:
        if self.on_request is not None:
            self.on_request(record)

    def warn(self, message: str) -> None:
        if self.on_warning is not None:
            self.on_warning(message)

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._sockets_lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> HubServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="HubServer", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving (from another thread than the serving one): close the listening socket and every
        connection, then give the requests in flight ``grace_s`` to finish (and be reported)."""
        if self._thread is not None:
            self.shutdown()
        self.server_close()
        with self._sockets_lock:
            sockets, self._sockets = list(self._sockets), set()
            workers = list(self._workers)
        for sock in sockets:  # idle keep-alive connections would otherwise linger
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
