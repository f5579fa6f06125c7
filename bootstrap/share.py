"""``share``: serve this machine's verified weights, read-only, as a Hub-compatible endpoint.

Other machines pull from it with ``--endpoint http://HOST:PORT`` (and their own manifest): the same
model info, tree and resolve requests (HEAD, Range, resume) the real Hub answers, served by
:mod:`bootstrap.hubserve`.

What is served is exactly what the last ``pull`` recorded as verified by a hash in the state file
(``State(plan.state_dir).get("pull", pull_fingerprint(plan))``): each repo at its commit (and its
revision name), each file by its recorded name, with the sha256 (LFS files) or git blob id as its
ETag. Nothing else under the model folder is reachable: a request path is only ever looked up among
those names; a name that is not a plain relative path is not loaded; a file that resolves outside its
model folder, is a symlink, or whose size or mtime changed since it was verified is refused (and
logged). The state file is read again when it changes, so a later ``pull`` is picked up.

Loopback by default; another ``host`` makes it plain HTTP on the network, which the ready document
says loudly. No token is needed, and one sent by a client is ignored (and the client warned about in
the log, never the value). Every request is logged to the state folder's ``logs/share-*.log`` and
passed to ``echo``.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from bootstrap import errors
from bootstrap.hubapi import Catalog, RepoFile, Revision, lfs_file, printable
from bootstrap.hubserve import (
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT_S,
    HubHandler,
    HubServer,
    RequestLog,
)
from bootstrap.plan import Plan
from bootstrap.state import STATE_FILE, State, close_log, open_log
from bootstrap.urls import is_loopback_host

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\:]")


@dataclass(frozen=True)
class ShareOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    timeout_s: float = DEFAULT_TIMEOUT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S


@dataclass
class SharedRepo:
    repo_id: str
    revision: str
    commit: str
    local_dir: str
    files: int
    bytes: int
    refused: Dict[str, str] = field(default_factory=dict)  # recorded name -> why it is not served


def unsafe_name(name: str) -> Optional[str]:
    """Why ``name`` cannot be served as a repo file (None: it can): relative, "/"-separated, no dot segments."""
    if not isinstance(name, str) or not name:
        return "empty"
    if _BAD_CHARS.search(name):
        return "has a backslash, colon or control character"
    if name.startswith("/"):
        return "absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' segment"
    return None


def _entry(root: Path, name: str, rec: Any) -> Tuple[Optional[RepoFile], Optional[str]]:
    """The served form of one recorded file, or why it is not served."""
    why = unsafe_name(name)
    if why:
        return None, why
    if not isinstance(rec, dict):
        return None, "no record"
    sha256, blob_id, size, mtime_ns = rec.get("sha256"), rec.get("blob_id"), rec.get("size"), rec.get("mtime_ns")
    if not isinstance(size, int) or not isinstance(mtime_ns, int) or size < 0:
        return None, "no size and mtime recorded"
    local = root.joinpath(*name.split("/"))
    if isinstance(sha256, str) and _HEX.fullmatch(sha256) and len(sha256) == 64:
        return lfs_file(name, local, size, sha256, mtime_ns), None
    if isinstance(blob_id, str) and _HEX.fullmatch(blob_id) and len(blob_id) == 40:
        return RepoFile(name, local, size, blob_id, None, False, 0, mtime_ns), None
    return None, "not verified by a hash"


def load_verified(plan: Plan) -> Tuple[Dict[Tuple[str, str], Revision], List[SharedRepo]]:
    """The verified files of the model's last pull: {(repo id, revision name): Revision}, and a summary.

    Raises ShareError when there is no pull record for this manifest and model (nothing verified).
    """
    record = State(plan.state_dir).get("pull", _pull_fingerprint(plan))
    repos = ((record or {}).get("result") or {}).get("repos")
    if not isinstance(repos, list) or not repos:
        raise errors.ShareError(
            f"nothing verified to share for {plan.model_key}: no pull of it is recorded in {plan.state_dir}",
            remedy="run `llama-bootstrap pull` (or `run`) with this manifest and model first, then share")
    revisions: Dict[Tuple[str, str], Revision] = {}
    summary: List[SharedRepo] = []
    for repo in repos:
        if not isinstance(repo, dict):
            continue
        repo_id, revision, commit = repo.get("repo_id"), repo.get("revision"), repo.get("commit")
        if not all(isinstance(x, str) and x and not _BAD_CHARS.search(x) for x in (repo_id, revision)) \
                or not isinstance(commit, str) or not _HEX.fullmatch(commit) or len(commit) != 40 \
                or not isinstance(repo.get("local_dir"), str) or not isinstance(repo.get("files"), dict):
            continue  # not what pull records: nothing of it is served
        root = Path(os.path.realpath(repo["local_dir"]))
        files: Dict[str, RepoFile] = {}
        refused: Dict[str, str] = {}
        for name, rec in sorted(repo["files"].items()):
            entry, why = _entry(root, name, rec)
            if entry is None:
                refused[str(name)] = why or "refused"
            else:
                files[name] = entry
        revisions[(repo_id, revision)] = Revision(commit, files, root)
        summary.append(SharedRepo(repo_id, revision, commit, str(root), len(files),
                                  sum(f.size for f in files.values()), refused))
    if not revisions:
        raise errors.ShareError(f"nothing to share for {plan.model_key}: the pull record in {plan.state_dir} is not "
                                "in the shape pull writes", remedy="run `llama-bootstrap pull --verify`, then share")
    return revisions, summary


def _pull_fingerprint(plan: Plan) -> Dict[str, Any]:
    from bootstrap.pipeline import pull_fingerprint

    return pull_fingerprint(plan)


class ShareCatalog(Catalog):
    """The verified files, reloaded when the state file changes (a later pull is served without a restart)."""

    def __init__(self, plan: Plan, warn: Callable[[str], None]) -> None:
        super().__init__()
        self.plan, self.warn = plan, warn
        self.summary: List[SharedRepo] = []
        self._seen: Optional[Tuple[int, int]] = None
        self.reload()

    def _state_stamp(self) -> Optional[Tuple[int, int]]:
        try:
            st = os.stat(self.plan.state_dir / STATE_FILE)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        stamp = self._state_stamp()
        revisions, summary = load_verified(self.plan)
        with self.lock:
            self._repos = {}
            for (repo_id, name), revision in revisions.items():
                self.add(repo_id, name, revision)
            self.summary, self._seen = summary, stamp
        for repo in summary:
            for name, why in repo.refused.items():
                self.warn(f"{repo.repo_id}: {printable(name)} is not served: {why}")

    def refresh(self) -> None:
        if self._state_stamp() == self._seen:
            return
        try:
            self.reload()
            self.warn("the state file changed: reloaded the verified files")
        except errors.ShareError as exc:  # keep serving what was verified; each file is still checked
            self._seen = self._state_stamp()
            self.warn(f"the state file changed but {exc}; still serving the files loaded before")


class ShareHandler(HubHandler):
    server_version = "llama-bootstrap-share/1"

    def before(self, method: str, path: str) -> None:
        self.server.catalog.refresh()  # type: ignore[attr-defined]
        if self.headers.get("Authorization") is not None:
            self.server.warn_token(self.client_address[0])  # type: ignore[attr-defined]


class ShareServer(HubServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._token_warned: Set[str] = set()
        self._warned_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def warn_token(self, client: str) -> None:
        with self._warned_lock:
            if client in self._token_warned:
                return
            self._token_warned.add(client)
        self.warn(f"{client} sent an Authorization header: ignored (share needs no token); over plain HTTP it "
                  "was readable on the network: unset HF_TOKEN when pulling from a share")


@dataclass
class Share:
    """A bound, not yet serving share: ``serve_forever()`` serves until Ctrl-C; ``close()`` stops."""

    server: ShareServer
    catalog: ShareCatalog
    log_path: Path
    logger: Any
    warnings: List[str]
    _closed: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return self.server.url

    def describe(self) -> Dict[str, Any]:
        return {"status": "serving", "url": self.url, "log": str(self.log_path), "warnings": list(self.warnings),
                "repos": [r.__dict__ for r in self.catalog.summary]}

    def serve_forever(self) -> None:
        """Serve until interrupted; Ctrl-C raises errors.Interrupted after closing everything."""
        try:
            self.server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            raise errors.Interrupted("share stopped (interrupted)",
                                     remedy="nothing was changed; run `llama-bootstrap share` to serve again") from None
        finally:
            self.close()

    def start(self) -> Share:
        """Serve in a background thread (for embedding and tests)."""
        self.server.start()
        return self

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.server.stop()
        self.logger.info("share stopped")
        close_log(self.logger)


def open_share(plan: Plan, options: ShareOptions, *, echo: Callable[[str], None] = lambda _: None) -> Share:
    """Load the verified files and bind the address; raises ShareError / UsageError. Does not serve yet."""
    logger, log_path = open_log(plan.state_dir, "share")

    def warn(message: str) -> None:
        logger.warning(message)
        echo(f"share: warning: {message}")

    def on_request(r: RequestLog) -> None:
        line = f"{r.client} {r.method} {r.path} {r.status} {r.bytes} {r.seconds:.3f}s" + \
            (f" range={r.range}" if r.range else "")
        logger.info(line)
        echo(f"share: {line}")

    try:
        catalog = ShareCatalog(plan, warn)
        server = ShareServer((options.host, options.port), catalog, ShareHandler,
                             max_connections=options.max_connections, timeout_s=options.timeout_s,
                             header_timeout_s=options.header_timeout_s, on_request=on_request, on_warning=warn)
    except socket.gaierror as exc:
        close_log(logger)
        raise errors.UsageError(f"--host {options.host!r}: not an address of this machine ({exc.strerror})",
                                argument="--host", remedy="use 127.0.0.1 (default), 0.0.0.0 or one of this "
                                "machine's addresses") from None
    except OSError as exc:
        close_log(logger)
        raise _bind_error(options, exc) from None
    except BaseException:
        close_log(logger)
        raise
    warnings = []
    if not is_loopback_host(options.host):
        warnings.append(f"listening on {options.host}: PLAIN HTTP on the network. Anyone who can reach "
                        f"{server.url} can download these files, unencrypted. No token is needed or accepted. "
                        "Pullers verify every file against the hashes the share sends; pin the weights "
                        "(a weights lock) so they verify against hashes of their own.")
    for w in warnings:
        logger.warning(w)
    logger.info(f"share: {server.url}, " + "; ".join(
        f"{r.repo_id}@{r.revision} ({r.commit[:12]}): {r.files} files, {r.bytes} bytes from {r.local_dir}"
        for r in catalog.summary))
    return Share(server, catalog, log_path, logger, warnings)


def _bind_error(options: ShareOptions, exc: OSError) -> errors.BootstrapError:
    where = f"{options.host}:{options.port}"
    if exc.errno == errno.EADDRINUSE:
        return errors.ShareError(f"cannot listen on {where}: the port is in use", address=where,
                                 remedy="choose another --port (0 picks a free one), or stop the other server")
    if exc.errno == errno.EACCES:
        return errors.ShareError(f"cannot listen on {where}: permission denied", address=where,
                                 remedy="use a port above 1023 (--port)")
    return errors.UsageError(f"--host {options.host!r}: cannot listen there ({exc.strerror or exc})",
                             argument="--host",
                             remedy="use 127.0.0.1 (default), 0.0.0.0 or one of this machine's addresses")
