"""URL policy: HTTPS everywhere, plain HTTP only on the loopback interface."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact(url: str) -> str:
    """``url`` safe to print: any user:password@ part is replaced by ``***@``."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    if "://" in url and parts.netloc and "@" in parts.netloc:
        return url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)
    return "***@" + url.rsplit("@", 1)[1]  # scp-like user@host:path, or something odd


def check_endpoint(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{redact(url)!r} is not an http(s) URL; use https://HOST")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{redact(url)!r} uses plain http; only https is allowed (http only for 127.0.0.1/localhost)")
    if parts.username or parts.password:
        raise ValueError("endpoint URLs must not carry credentials; set HF_TOKEN instead")
    return url.rstrip("/")


def check_source_url(url: str) -> str:
    """A git source: https, ssh, file:// or a local path; plain http/git:// only on loopback."""
    if "://" not in url:
        return url  # a local path, or scp-like ssh (git@host:path): both fine
    parts = urlsplit(url)
    if parts.scheme in ("https", "ssh", "file"):
        if parts.username and parts.password:
            raise ValueError("source URLs must not carry a password")
        return url
    if parts.scheme in ("http", "git") and parts.hostname and is_loopback_host(parts.hostname):
        return url
    raise ValueError(f"{redact(url)!r}: use https://, ssh://, file:// or a local path (plain http only on loopback)")


def check_mirror_url(url: str) -> str:
    """A weights source's base URL: https, or plain http (a LAN mirror or ``share``).

    Plain http is accepted here because a pinned repo is verified byte for byte against the weights
    lock whatever the transport; ``pull`` refuses a plain-http source for a repo that is not pinned
    and never sends it a token.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{redact(url)!r} is not an http(s) URL; use https://HOST (or http://HOST:PORT on a LAN)")
    if parts.username or parts.password:
        raise ValueError("source URLs must not carry credentials; set HF_TOKEN instead")
    if parts.query or parts.fragment:
        raise ValueError(f"{redact(url)!r}: a base URL has no query or fragment")
    return url.rstrip("/")


def origin(url: str) -> tuple:
    """(scheme, host, port) with the default port filled in: what "the same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin matches it
        port = -1
    return scheme, (parts.hostname or "").lower(), port or {"https": 443, "http": 80}.get(scheme, 0)


def shown_host(url: str) -> str:
    """A URL reduced to what may be printed about a hop: scheme://host[:port]/path, no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    shown = f"{parts.scheme}://{host}{port}{parts.path}"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in shown)[:300]
