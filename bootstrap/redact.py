"""Secrets never leave the process: a process-wide registry of secret values, and scrubbing.

The CLI registers ``HF_TOKEN`` (and the other secrets of :func:`bootstrap.settings.Settings.secrets`)
when it starts; every output path (stdout, stderr, ``--json``, the log files, the state file,
tracebacks) passes its text through :func:`scrub`. Besides the registered values, ``scrub`` removes
what is a secret by its shape wherever it comes from: the user-info part of a URL
(``scheme://user:pass@host``), the value of an ``Authorization`` header and of ``Bearer``/``Basic``
credentials, and Hugging Face access tokens (``hf_`` + 30 or more letters and digits).

A secret of fewer than :data:`MIN_SECRET_CHARS` characters is not registered: replacing every
occurrence of two or three characters would make all output unreadable.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple
from urllib.parse import quote

MASK = "***"
MIN_SECRET_CHARS = 4

_lock = threading.Lock()
_secrets: List[str] = []  # longest first, so a secret containing another is replaced whole

# scheme://USERINFO@host: everything between "//" and "@" that cannot be part of a host or path.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s'\"<>]+)@")
# Authorization: [scheme] credential (a credential: 8+ characters of base64/token68; prose is left alone)
_AUTH_HEADER = re.compile(r"(?P<name>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?(?:[A-Za-z][\w-]*\s+)?)"
                          r"(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
_CREDENTIAL = re.compile(r"(?P<scheme>\b(?:Bearer|Basic)\s+)(?P<value>[^\s'\",;}\]]+)", re.IGNORECASE)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


def add_secret(value: Optional[str]) -> None:
    """Register ``value`` (and its URL-encoded form) to be replaced by ``***`` in all output."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    forms = {value, quote(value, safe="")}
    with _lock:
        known = set(_secrets)
        _secrets.extend(f for f in forms if f not in known)
        _secrets.sort(key=len, reverse=True)


def reset() -> None:
    """Forget every registered secret (for tests)."""
    with _lock:
        _secrets.clear()


def _registered() -> Tuple[str, ...]:
    with _lock:
        return tuple(_secrets)


def scrub(text: str) -> str:
    """``text`` with every registered secret, URL password, credential and Hub token replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    for secret in _registered():
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _AUTH_HEADER.sub(lambda m: m.group("name") + MASK, text)
    text = _CREDENTIAL.sub(lambda m: m.group("scheme") + MASK, text)
    return _HF_TOKEN.sub(MASK, text)


def scrub_obj(doc: Any) -> Any:
    """:func:`scrub` over JSON-like data: strings, dict keys and values, lists and tuples (a new object)."""
    if isinstance(doc, str):
        return scrub(doc)
    if isinstance(doc, dict):
        return {scrub_obj(k): scrub_obj(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [scrub_obj(v) for v in doc]
    return doc


class LogFilter(logging.Filter):
    """A handler filter: the message, the formatted exception (with its whole chain) and the stack are
    scrubbed into the record; ``exc_info`` is cleared so no formatter renders the raw exception again."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not stop the log
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = scrub(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class ScrubbingStream(io.TextIOBase):
    """A text stream that scrubs what passes through it, line by line, into ``target``.

    Text is held until a line ends (``\\n`` or ``\\r``) or ``flush`` is called, so a secret written in
    pieces within one line is still caught. Everything else (``isatty``, ``fileno``, ``encoding``,
    ``buffer``, ...) is the target's.
    """

    def __init__(self, target: Any) -> None:
        super().__init__()
        self._target = target
        self._pending = ""
        self._guard = threading.Lock()

    @property
    def target(self) -> Any:
        return self._target

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._guard:
            self._pending += text
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
            if cut < 0:
                return len(text)
            ready, self._pending = self._pending[: cut + 1], self._pending[cut + 1:]
        self._target.write(scrub(ready))
        return len(text)

    def flush(self) -> None:
        with self._guard:
            ready, self._pending = self._pending, ""
        if ready:
            self._target.write(scrub(ready))
        self._target.flush()

    def close(self) -> None:  # the process's stream is not ours to close
        self.flush()

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return bool(getattr(self._target, "closed", False))

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self._target, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


@contextmanager
def scrubbed_std_streams() -> Iterator[None]:
    """Route ``sys.stdout`` and ``sys.stderr`` through :class:`ScrubbingStream` while the block runs.

    The backstop for output that does not pass through :mod:`bootstrap.output`: the libraries' own
    log handlers and warnings, progress bars, Python's tracebacks of a thread.
    """
    saved = sys.stdout, sys.stderr
    wrapped = tuple(ScrubbingStream(s) if s is not None and not isinstance(s, ScrubbingStream) else s for s in saved)
    sys.stdout, sys.stderr = wrapped
    try:
        yield
    finally:
        for stream in wrapped:
            if isinstance(stream, ScrubbingStream):
                try:
                    stream.flush()
                except (OSError, ValueError):  # a closed or broken pipe: nothing more can be shown
                    pass
        if sys.stdout is wrapped[0]:
            sys.stdout = saved[0]
        if sys.stderr is wrapped[1]:
            sys.stderr = saved[1]
