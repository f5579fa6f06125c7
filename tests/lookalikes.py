"""Look-alikes that lie: a Hub and a ModelScope on 127.0.0.1 whose every answer can be made hostile.

``HostileHub`` speaks the part of the Hub API that ``pull`` and ``lock --weights`` use (model info with file
metadata, ``resolve`` with HEAD and ranges) and records every request with its headers. Knobs make it lie:
``listing_hook`` rewrites the model info it sends (odd file names, another commit, missing or wrong hashes),
``serve_hook`` rewrites a file's bytes, ``redirects`` send a path elsewhere (plain http, another origin,
another scheme), ``no_ranges`` ignores ``Range``, ``drop_after`` cuts a file's response short once,
``echo_token`` puts the request's Authorization into the error body and a header, ``xet`` adds the Xet headers
huggingface.co sends, with a refresh route that fails, ``commit_header`` sends another ``X-Repo-Commit``. With
``tls=True`` it serves https with a throw-away CA made by the ``openssl`` command (``ca_file``).

``ModelScopeLookalike`` serves ModelScope's two file APIs (list, download) the same way.
These are test servers: they are not part of the product and are never started by it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

LFS = ("*.safetensors", "*.bin", "*.model")


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


@dataclass
class Seen:
    method: str
    path: str
    headers: Dict[str, str]


@dataclass
class Repo:
    commit: str
    files: Dict[str, bytes]
    lfs: Tuple[str, ...] = LFS


def _commit_of(repo_id: str, files: Dict[str, bytes]) -> str:
    digest = hashlib.sha1(repo_id.encode())  # noqa: S324 - a made-up commit id
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:  # clients hang up: not an error here
        pass


class _Base:
    """Start/stop, the request record, TLS."""

    handler: type = BaseHTTPRequestHandler

    def __init__(self, *, host: str = "127.0.0.1", tls: bool = False, workdir: Optional[Path] = None) -> None:
        self.host, self.tls, self.workdir = host, tls, workdir
        self.seen: List[Seen] = []
        self.lock = threading.Lock()
        self.server: Optional[_Server] = None
        self.ca_file: Optional[Path] = None
        self.bytes_sent = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host = "localhost" if self.tls else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> Any:
        self.server = _Server((self.host, 0), self.handler)
        self.server.owner = self  # type: ignore[attr-defined]
        if self.tls:
            assert self.workdir is not None, "tls=True needs a workdir for the certificates"
            cert, key, self.ca_file = make_certificates(self.workdir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert), str(key))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def record(self, method: str, path: str, headers: Any) -> None:
        with self.lock:
            self.seen.append(Seen(method, path, {k.lower(): v for k, v in headers.items()}))

    def requests_with_auth(self) -> List[Seen]:
        return [s for s in self.seen if "authorization" in s.headers]

    def file_gets(self, name: str = "") -> List[Seen]:
        return [s for s in self.seen if s.method == "GET" and "/resolve/" in s.path and s.path.endswith(name)]


def make_certificates(folder: Path) -> Tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost/127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        import pytest

        pytest.skip("the openssl command is not installed (needed for the TLS look-alike)")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt, ext = folder / "server.key", folder / "server.csr", folder / "server.crt", folder / "ext.cnf"
    run = lambda *args: subprocess.run([openssl, *args], check=True, capture_output=True)  # noqa: E731
    if not crt.exists():
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lookalike test CA",
            "-keyout", str(ca_key), "-out", str(ca_crt))
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
        run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return crt, key, ca_crt


# -- the Hub ----------------------------------------------------------------------------------------


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def hub(self) -> HostileHub:
        return self.server.owner  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_GET(self) -> None:
        self._handle("GET")

    def _handle(self, method: str) -> None:
        hub = self.hub
        hub.record(method, self.path, self.headers)
        if hub.drip_headers:  # the status line, a byte at a time: never a whole response
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: " + b"x" * 1000:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(hub.drip_headers)
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        for glob, location in hub.redirects.items():
            if fnmatch.fnmatchcase(path, glob):
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if path.startswith("/xet-refresh/"):
            return self._send(500, b'{"error": "xet refresh failed"}', "application/json")
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/"):], parse_qs(parts.query))
        if "/resolve/" in path:
            return self._resolve(method, path)
        if path.startswith("/raw/"):  # a "CDN": bytes by name, no questions asked
            data = hub.raw.get(path[len("/raw/"):])
            return self._send(404, b"{}") if data is None else self._bytes(method, data, {})
        self._send(404, b'{"error": "unknown"}', "application/json")

    def _error(self, status: int, code: str, message: str) -> None:
        extra = {"X-Error-Code": code}
        body = {"error": message}
        auth = self.headers.get("Authorization")
        if self.hub.echo_token and auth:
            extra["X-Echo"] = auth
            body["error"] = f"{message} (you sent {auth})"
        self._send(status, json.dumps(body).encode(), "application/json", extra)

    def _api(self, rest: str, query: Dict[str, List[str]]) -> None:
        hub = self.hub
        repo_id, revision = rest, "main"
        if "/revision/" in rest:
            repo_id, revision = rest.split("/revision/", 1)
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if hub.gated_token and self.headers.get("Authorization") != f"Bearer {hub.gated_token}" and hub.gate_api:
            return self._error(401, "GatedRepo", "restricted")
        doc = {"id": repo_id, "sha": repo.commit, "siblings": [hub.sibling(repo, name) for name in sorted(repo.files)]}
        if hub.listing_hook is not None:
            doc = hub.listing_hook(repo_id, doc)
        self._send(200, json.dumps(doc).encode(), "application/json", {"X-Repo-Commit": repo.commit})

    def _resolve(self, method: str, path: str) -> None:
        hub = self.hub
        head, _, name = path.lstrip("/").partition("/resolve/")
        revision, _, name = name.partition("/")
        repo = hub.repos.get(head)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if hub.gated_token and self.headers.get("Authorization") != f"Bearer {hub.gated_token}":
            return self._error(401, "GatedRepo", "restricted")
        data = repo.files.get(name)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        if hub.serve_hook is not None:
            data = hub.serve_hook(name, data)
        extra = {"X-Repo-Commit": hub.commit_header or repo.commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if hub.xet:
            extra["X-Xet-Hash"] = hashlib.sha256(b"xet" + data).hexdigest()
            extra["X-Xet-Refresh-Route"] = f"/xet-refresh/{head}/{revision}"
            extra["Link"] = f'<{hub.url}/xet-refresh/{head}/{revision}>; rel="xet-auth"'
        self._bytes(method, data, extra, hub.drop_after.pop(name, None))

    def _bytes(self, method: str, data: bytes, extra: Dict[str, str], drop_after: Optional[int] = None) -> None:
        hub = self.hub
        rng = self.headers.get("Range")
        start, end = 0, len(data) - 1
        status = 200
        if rng and not hub.no_ranges and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start, end = int(a), (int(b) if b else len(data) - 1)
            end = min(end, len(data) - 1)
            status = 206
            if hub.range_lie:
                extra["Content-Range"] = f"bytes 0-{end - start}/{len(data)}"
            else:
                extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]
        extra["Accept-Ranges"] = "none" if hub.no_ranges else "bytes"
        if hub.extra_bytes and status == 200:
            body += b"\0" * hub.extra_bytes  # more than the listing said
        with hub.lock:
            hub.active += 1
            hub.max_active = max(hub.max_active, hub.active)
        try:
            self._send_body(method, status, body, extra, drop_after)
        finally:
            with hub.lock:
                hub.active -= 1

    def _send_body(self, method: str, status: int, body: bytes, extra: Dict[str, str],
                   drop_after: Optional[int]) -> None:
        hub = self.hub
        if method == "HEAD":
            self._send(status, b"", "application/octet-stream", extra, length=len(body))
        elif drop_after is not None:  # the full length announced, then the connection dies
            self._send(status, body[:drop_after], "application/octet-stream", extra, length=len(body))
            self.close_connection = True
            with hub.lock:
                hub.bytes_sent += min(drop_after, len(body))
        else:
            self._send(status, body, "application/octet-stream", extra)
            with hub.lock:
                hub.bytes_sent += len(body)

    def _send(self, status: int, body: bytes, ctype: str = "application/json", extra: Optional[Dict[str, str]] = None,
              length: Optional[int] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            rate = getattr(self.server.owner, "rate", 0.0)  # type: ignore[attr-defined]
            step = max(1, min(64 * 1024, int(rate / 10))) if rate else len(body)
            began = time.monotonic()
            try:
                for i in range(0, len(body), step):
                    if rate:
                        wait = began + (i + step) / rate - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                    self.wfile.write(body[i:i + step])
            except OSError:
                pass


class HostileHub(_Base):
    handler = _HubHandler

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.repos: Dict[str, Repo] = {}
        self.raw: Dict[str, bytes] = {}
        self.listing_hook: Optional[Callable[[str, Dict[str, Any]], Dict[str, Any]]] = None
        self.serve_hook: Optional[Callable[[str, bytes], bytes]] = None
        self.redirects: Dict[str, str] = {}
        self.no_ranges = False
        self.range_lie = False
        self.echo_token = False
        self.xet = False
        self.commit_header: Optional[str] = None
        self.drop_after: Dict[str, int] = {}  # file name -> bytes sent before the connection dies (once)
        self.extra_bytes = 0  # a 200 answer carries this many bytes more than the file has
        self.drip_headers = 0.0  # > 0: send the response's head one byte per this many seconds
        self.rate = 0.0  # bytes per second per response (0: as fast as possible)
        self.active = 0  # file bodies being sent now
        self.max_active = 0
        self.gated_token: Optional[str] = None
        self.gate_api = False

    def add_repo(self, repo_id: str, files: Dict[str, bytes], lfs: Tuple[str, ...] = LFS) -> str:
        commit = _commit_of(repo_id, files)
        self.repos[repo_id] = Repo(commit, dict(files), lfs)
        return commit

    @staticmethod
    def sibling(repo: Repo, name: str) -> Dict[str, Any]:
        data = repo.files[name]
        entry: Dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": git_blob(data)}
        if any(fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in repo.lfs):
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


# -- ModelScope -----------------------------------------------------------------------------------


class _ModelScopeHandler(_HubHandler):
    @property
    def ms(self) -> ModelScopeLookalike:
        return self.server.owner  # type: ignore[attr-defined]

    def _handle(self, method: str) -> None:
        ms = self.ms
        ms.record(method, self.path, self.headers)
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        if not path.startswith("/api/v1/models/"):
            return self._send(404, b'{"Code": 404}')
        rest = path[len("/api/v1/models/"):]
        if rest.endswith("/repo/files"):
            model = rest[: -len("/repo/files")]
            files = ms.models.get(model)
            if files is None:
                return self._send(404, json.dumps({"Code": 10010205001, "Message": "not found"}).encode())
            listing = [{"Name": n.rsplit("/", 1)[-1], "Path": n, "Size": len(d), "Type": "blob",
                        "Sha256": hashlib.sha256(d).hexdigest(), "Revision": "0" * 40}
                       for n, d in sorted(files.items())]
            doc = {"Code": 200, "Data": {"Files": listing}, "Success": True}
            if ms.listing_hook is not None:
                doc = ms.listing_hook(model, doc)
            return self._send(200, json.dumps(doc).encode())
        if rest.endswith("/repo"):
            model = rest[: -len("/repo")]
            name = query.get("FilePath", [""])[0]
            data = ms.models.get(model, {}).get(name)
            if data is None:
                return self._send(404, b'{"Code": 404}')
            if ms.serve_hook is not None:
                data = ms.serve_hook(name, data)
            return self._bytes(method, data, {})
        self._send(404, b'{"Code": 404}')


class ModelScopeLookalike(HostileHub):
    handler = _ModelScopeHandler

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models: Dict[str, Dict[str, bytes]] = {}

    def add_model(self, model_id: str, files: Dict[str, bytes]) -> None:
        self.models[model_id] = dict(files)


def free_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def model_files(big: int = 3 * 1024 * 1024, seed: bytes = b"w") -> Dict[str, bytes]:
    """A model-like repo: a big safetensors of pseudo-random bytes, a tokenizer (LFS), a small config."""
    block = hashlib.sha256(seed).digest() * 32
    data = bytearray()
    counter = 0
    while len(data) < big:
        data += hashlib.sha256(block + counter.to_bytes(8, "little")).digest() * 64
        counter += 1
    return {"model.safetensors": bytes(data[:big]), "tokenizer.model": b"tok" * 1000,
            "config.json": b'{"model_type": "llama"}\n'}

