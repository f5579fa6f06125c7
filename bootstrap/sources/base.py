"""What every weights source is and offers: a listing (commit, files, sizes, hashes) and a way to
bring files into place through :mod:`bootstrap.fetch`.

Kinds: ``hub`` (the Hub or a Hub mirror, or ``share``), ``modelscope`` (ModelScope's HTTP API) and
``dir`` (a local or mounted folder). A source never decides what is trusted: ``pull`` compares its
listing with the manifest's pinned commit and the weights lock, and every byte with a hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import errors
from bootstrap.fetch import Downloader, FetchOptions, FileJob, Outcome
from bootstrap.transport import Transport, body_chunks, connect_failed, network_errors, with_server_message
from bootstrap.urls import is_loopback_host, shown_host

MAX_LISTING_BYTES = 64 * 1024 * 1024
LISTING_RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: Optional[str]  # LFS files (ModelScope: every file)
    blob_id: Optional[str]  # git oid (sha1 of the blob) of non-LFS files


@dataclass(frozen=True)
class RemoteRepo:
    repo_id: str
    revision: str
    commit: str  # the Hub's commit; ModelScope: "modelscope:<revision>"; dir: the lock's
    files: List[RemoteFile]
    source: str = ""


@dataclass(frozen=True)
class RepoRef:
    """A repo a model needs, with its ModelScope twin if the manifest names one."""

    repo_id: str
    revision: str
    modelscope_id: Optional[str] = None
    modelscope_revision: str = "master"


@dataclass(frozen=True)
class SourceSpec:
    """A configured source: kind, URL or folder, and where the setting came from (for messages)."""

    kind: str
    location: str
    origin: str = "manifest"

    def __str__(self) -> str:
        return f"{self.kind} {shown_host(self.location) if self.kind != 'dir' else self.location}"


class Source:
    """Base of the source kinds."""

    kind = "?"

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.label = str(spec)

    @property
    def tls(self) -> bool:
        """Do the bytes travel over TLS? (False for plain http and for a folder.)"""
        return False

    @property
    def needs_pin(self) -> bool:
        """Is this source usable only for repos pinned in the weights lock?"""
        return not self.tls

    def listing(self, ref: RepoRef, pin: Any) -> RemoteRepo:
        raise NotImplementedError

    def fetch(self, ref: RepoRef, jobs: List[FileJob], options: FetchOptions,
              log: Callable[[str], None]) -> List[Outcome]:
        """Bring ``jobs`` into place (each verified before it is moved there)."""
        raise NotImplementedError

    def file_urls(self, ref: RepoRef, repo: RemoteRepo, names: List[str]) -> List[str]:
        """Where each file is fetched from (HTTP sources); "" where there is no URL."""
        return ["" for _ in names]

    def probe(self) -> Tuple[bool, str]:
        """(reachable, detail) for ``check``: one cheap request, or a look at the folder."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class HttpSource(Source):
    """A source reached over HTTP(S) with :class:`Transport` (every hop checked, the token kept home)."""

    def __init__(self, spec: SourceSpec, token: Optional[str], *, retries: int = 4, backoff_s: float = 1.0) -> None:
        super().__init__(spec)
        self.base = spec.location.rstrip("/")
        self.transport = Transport(self.base, token, label=self.label)
        self.retries, self.backoff_s = retries, backoff_s

    @property
    def tls(self) -> bool:
        return self.base.startswith("https://")

    @property
    def needs_pin(self) -> bool:
        """Plain http is usable for unpinned repos only on loopback (a server on this machine)."""
        from urllib.parse import urlsplit

        return not self.tls and not is_loopback_host(urlsplit(self.base).hostname or "")

    def fetch(self, ref: RepoRef, jobs: List[FileJob], options: FetchOptions,
              log: Callable[[str], None]) -> List[Outcome]:
        try:
            return Downloader(self.transport, options, log).run(jobs)
        except errors.BootstrapError:
            raise
        except network_errors() as exc:
            raise self.unreachable(exc) from exc

    def close(self) -> None:
        self.transport.close()

    # -- JSON APIs --------------------------------------------------------------------------
    def get_json(self, url: str, what: str, status_errors: Callable[[Any], Optional[BaseException]]) -> Any:
        """GET ``url`` and parse JSON, with retries on 5xx/429/network errors; ``status_errors`` maps a
        non-200 response to one of our errors (or None for the generic one)."""
        attempt = 0
        while True:
            try:
                response = self.transport.request("GET", url, headers={"Accept": "application/json"}, stream=True)
                try:
                    if response.status_code == 200:
                        return _json_body(response, what, self.label)
                    if response.status_code in LISTING_RETRY_STATUS and attempt < self.retries:
                        raise _RetryStatus(response.status_code)
                    mapped = status_errors(response) or errors.DownloadError(
                        f"{what}: HTTP {response.status_code} from {self.label}", url=self.label,
                        remedy="the server failed; try again later or use another source")
                    raise with_server_message(mapped, response)
                finally:
                    response.close()
            except errors.BootstrapError:
                raise
            except (_RetryStatus,) + network_errors() as exc:  # type: ignore[operator]
                attempt += 1
                if attempt > self.retries or connect_failed(exc):  # nobody listens: the next source, now
                    raise self.unreachable(exc) from exc
                time.sleep(self.backoff_s * (2 ** (attempt - 1)))

    def unreachable(self, exc: BaseException) -> errors.DownloadError:
        if isinstance(exc, _RetryStatus):
            return errors.DownloadError(f"{self.label} keeps answering HTTP {exc.status}", url=self.label,
                                        remedy="the server failed; try again later or use another source")
        if connect_failed(exc):
            return errors.EndpointUnreachable(f"cannot reach {self.label} ({type(exc).__name__})", url=self.label,
                                              remedy="check the network, proxy (HTTPS_PROXY) and firewall, or use "
                                              "another source (--profile cn, --source)")
        return errors.DownloadError(f"the connection to {self.label} failed ({type(exc).__name__})", url=self.label,
                                    remedy="run the same command again: downloads resume where they stopped")

    def probe(self) -> Tuple[bool, str]:
        try:
            response = self.transport.request("HEAD", self.base + "/", stream=True)
            response.close()
            return True, f"{self.label} answers (HTTP {response.status_code})"
        except errors.BootstrapError as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure is "unreachable" for a probe
            return False, str(self.unreachable(exc))


class _RetryStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _json_body(response: Any, what: str, label: str) -> Any:
    body = bytearray()
    for chunk in body_chunks(response, 1 << 20):
        body += chunk
        if len(body) > MAX_LISTING_BYTES:
            raise errors.UntrustedSource(f"{what}: {label} sent more than {MAX_LISTING_BYTES >> 20} MiB of listing",
                                         source=label)
    try:
        return json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise errors.UntrustedSource(f"{what}: {label} did not send valid JSON", source=label) from None


def field_of(doc: Dict[str, Any], key: str, kind: type, what: str, label: str, *, optional: bool = False) -> Any:
    """A typed field of a listing; a wrong type is the source not speaking the API (untrusted)."""
    got = doc.get(key) if isinstance(doc, dict) else None
    if got is None and optional:
        return None
    if not isinstance(got, kind) or isinstance(got, bool) and kind is not bool:
        raise errors.UntrustedSource(f"{what}: {label} sent a listing whose {key!r} is not a {kind.__name__}",
                                     source=label)
    return got
