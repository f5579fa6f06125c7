"""HTTP for weights sources: every hop of every request is checked like an endpoint, and the token
goes only where it belongs.

A :class:`Transport` is made for one configured base URL (a Hub, a mirror, ModelScope, a ``share``).
Redirects are followed here, one hop at a time, never by ``requests`` itself, so that each hop is
checked before anything is sent to it:

* a hop is https, or plain http only when the configured base is itself plain http and the hop stays
  on the base's own origin (a LAN mirror, pinned repos only) or, for a loopback base, on loopback;
* the ``Authorization`` header is sent only to the base's own origin (scheme, host and port), and
  over plain http only to a loopback base (a server on this machine that the user configured);
* cookies, ``.netrc`` credentials and ``requests``' own redirect handling are off.

A refused hop is :class:`~bootstrap.errors.RedirectRefused` naming the hop without credentials or
query. Proxies (``HTTPS_PROXY`` …) and CA bundles (``REQUESTS_CA_BUNDLE``) from the environment apply.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple
from urllib.parse import urljoin, urlsplit

from bootstrap import __version__, errors
from bootstrap.urls import is_loopback_host, origin, shown_host

MAX_REDIRECTS = 8
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0  # a stalled connection (no byte for this long) fails and is retried
REDIRECTS = (301, 302, 303, 307, 308)
# A connection that delivers less than this in this long is stalled (a slow-drip server): it is cut and
# retried. Far below any real link (32 KiB in 30 s is ~1 KB/s), far above a server that drips a byte a minute.
STALL_S = 30.0
STALL_MIN_BYTES = 32 * 1024
# The status line and headers of a response must arrive within this long (a socket timeout restarts with
# every byte, so a server that drips its headers would otherwise hold a connection forever).
HEADERS_DEADLINE_S = 60.0


class Stalled(ConnectionError):
    """A response that keeps the connection open but (almost) stops sending."""


def _no_auth(request: Any) -> Any:
    """A session-level auth hook that adds nothing: it also stops ``requests`` reading ``~/.netrc``."""
    return request


class Transport:
    """Requests to one source, with the redirect and token policy of the module docstring."""

    def __init__(self, base_url: str, token: Optional[str] = None, *, label: Optional[str] = None,
                 timeout: Tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.base_origin = origin(base_url)
        self.base_plain = parts.scheme == "http"
        self.base_loopback = is_loopback_host(parts.hostname or "")
        self.label = label or shown_host(base_url)
        self.timeout = timeout
        # The token is kept only when the base can receive it at all.
        self._token = token if token and (not self.base_plain or self.base_loopback) else None
        self._local = threading.local()

    # -- policy ----------------------------------------------------------------------------
    def refusal(self, url: str) -> Optional[str]:
        """Why ``url`` may not be requested, or None when it may."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            return f"scheme {scheme or '(none)'} is not allowed (https only)"
        if not parts.hostname:
            return "not an absolute http(s) URL"
        if scheme == "https":
            return None
        if not self.base_plain:
            return "plain http after an https source (a downgrade)"
        if self.base_loopback:
            return None if is_loopback_host(parts.hostname) else "plain http away from this machine"
        if origin(url) != self.base_origin:
            return "plain http to another host than the configured LAN source"
        return None

    def sends_token_to(self, url: str) -> bool:
        return bool(self._token) and origin(url) == self.base_origin and \
            (urlsplit(url).scheme.lower() == "https" or self.base_loopback)

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    # -- requests --------------------------------------------------------------------------
    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            from http.cookiejar import DefaultCookiePolicy

            import requests

            session = requests.Session()
            adapter = _deadline_adapter()
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.auth = _no_auth
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            session.headers["User-Agent"] = f"llama-bootstrap/{__version__}"
            session.headers["Accept-Encoding"] = "identity"  # sizes and hashes are of the bytes as stored
            self._local.session = session
        return session

    def request(self, method: str, url: str, *, headers: Optional[Mapping[str, str]] = None,
                stream: bool = False) -> Any:
        """``requests.Response`` of the last hop (``response.url`` is where it came from).

        Network failures raise ``requests`` exceptions (the caller classifies them); a refused hop
        raises RedirectRefused before anything is sent to it.
        """
        session = self._session()
        for _ in range(MAX_REDIRECTS + 1):
            why = self.refusal(url)
            if why:
                raise errors.RedirectRefused(shown_host(url), why, source=self.label)
            sent: Dict[str, str] = dict(headers or {})
            if self.sends_token_to(url):
                sent["Authorization"] = f"Bearer {self._token}"
            response = session.request(method, url, headers=sent, stream=stream, allow_redirects=False,
                                       timeout=self.timeout)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or location is None:
                return response
            response.close()
            url = urljoin(url, location.strip())
            if response.status_code == 303 and method != "HEAD":
                method = "GET"
        raise errors.RedirectRefused(shown_host(url), f"more than {MAX_REDIRECTS} redirects", source=self.label)

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None


def _cut(connection: Any) -> None:
    """Shut a connection's socket down: a thread blocked reading from it wakes up with an error."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _with_header_deadline(connection_cls: type) -> type:
    class Deadlined(connection_cls):  # type: ignore[misc, valid-type]
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            timer = threading.Timer(HEADERS_DEADLINE_S, _cut, args=(self,))
            timer.daemon = True
            timer.start()
            try:
                return super().getresponse(*args, **kwargs)
            finally:
                timer.cancel()

    Deadlined.__name__ = f"Deadlined{connection_cls.__name__}"
    return Deadlined


def _deadline_adapter() -> Any:
    """A ``requests`` adapter whose connections (direct and through an http(s) proxy) give up on a response
    whose headers do not arrive within HEADERS_DEADLINE_S."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Pool(HTTPConnectionPool):
        ConnectionCls = _with_header_deadline(HTTPConnection)

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = _with_header_deadline(HTTPSConnection)

    pools = {"http": Pool, "https": TlsPool}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: Any, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if hasattr(manager, "pool_classes_by_scheme") and not type(manager).__name__.startswith("SOCKS"):
                manager.pool_classes_by_scheme = pools
            return manager

    return Adapter()


def body_chunks(response: Any, chunk: int, *, stall_s: Optional[float] = None,
                min_bytes: Optional[int] = None) -> Iterator[bytes]:
    """The raw body bytes as they arrive (no content decoding: sizes and hashes are of what is sent), each
    read returning as soon as data is there; raises Stalled when a window of ``stall_s`` seconds brings
    fewer than ``min_bytes``. (A socket timeout alone cannot catch a server that sends a byte now and then.)"""
    stall_s = STALL_S if stall_s is None else stall_s
    min_bytes = STALL_MIN_BYTES if min_bytes is None else min_bytes
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read
    window_start, window_bytes = time.monotonic(), 0
    while True:
        data = read(chunk)
        if not data:
            return
        yield data
        window_bytes += len(data)
        now = time.monotonic()
        if now - window_start >= stall_s:
            if window_bytes < min_bytes:
                raise Stalled(f"less than {min_bytes // 1024} KiB in {stall_s:.0f} s")
            window_start, window_bytes = now, 0


def server_message(response: Any, limit: int = 300) -> str:
    """What an error answer says (X-Error-Message, or the JSON body's "error"/"message"), shortened and with
    control characters escaped: the server's words are data, shown to help, never trusted."""
    text = response.headers.get("X-Error-Message") or ""
    if not text:
        try:
            body = b"".join(body_chunks(response, 4096, stall_s=5.0, min_bytes=1))[:4096]
            doc = json.loads(body.decode("utf-8", "replace"))
            text = str(doc.get("error") or doc.get("message") or doc.get("Message") or "") if isinstance(doc, dict) \
                else ""
        except Exception:  # noqa: BLE001 - no readable message: say nothing
            text = ""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text.strip())
    return text[:limit] + ("..." if len(text) > limit else "")


def with_server_message(exc: errors.BootstrapError, response: Any) -> errors.BootstrapError:
    """``exc`` with what the server said appended; never when the request carried the token (a server can echo
    a token in forms no scrubbing recognises: reversed, spaced, base64)."""
    request = getattr(response, "request", None)
    if request is not None and "Authorization" in getattr(request, "headers", {}):
        return exc
    said = server_message(response)
    if said:
        exc.message = f"{exc.message} (the server says: {said})"
    return exc


def network_errors() -> Tuple[type, ...]:
    """Exceptions that mean "the network failed" (retry, or try the next source)."""
    import requests
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
            ProtocolError, ReadTimeoutError, DecodeError, ConnectionError, TimeoutError)


def connect_failed(exc: BaseException) -> bool:
    """The host could not be reached at all (as opposed to a transfer that started and was cut)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError) or not exc.args:
        return False
    reason = getattr(exc.args[0], "reason", exc.args[0])  # urllib3's MaxRetryError carries the cause
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
