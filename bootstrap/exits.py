"""The one place that maps errors to messages and exit codes.

Exit codes (documented in the README):
  0  everything asked for succeeded
  1  a check or a pipeline step failed (the message says which and what to do)
  2  bad input: command line, environment variable or manifest
  3  another llama-bootstrap run holds the lock
  130 interrupted (Ctrl-C); state is consistent, run again to continue

An unknown exception is a bug: the CLI shows its traceback (scrubbed of secrets) and exits 1
(:func:`unexpected`); tracebacks of known errors only with LLAMA_BOOTSTRAP_DEBUG=1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bootstrap import errors

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Outcome:
    code: int
    kind: str  # the error class name, stable for --json consumers
    message: str
    remedy: Optional[str]


def _where(exc: errors.ManifestError) -> str:
    where = exc.path or "manifest"
    if exc.line and not str(exc).startswith("line "):
        where += f":{exc.line}"
    return where


def outcome(exc: BaseException) -> Optional[Outcome]:
    """The outcome of a known error, or None when ``exc`` is not ours (see :func:`unexpected`)."""
    if isinstance(exc, KeyboardInterrupt):
        return Outcome(EXIT_INTERRUPTED, "Interrupted", "interrupted",
                       "nothing half-written was kept; run the same command again to continue")
    if not isinstance(exc, errors.BootstrapError):
        return None
    kind = type(exc).__name__
    if isinstance(exc, errors.ManifestError):
        return Outcome(EXIT_USAGE, kind, f"{_where(exc)}: {exc}", exc.remedy)
    if isinstance(exc, errors.UsageError):
        return Outcome(EXIT_USAGE, kind, str(exc), exc.remedy)
    if isinstance(exc, errors.LockedError):
        return Outcome(EXIT_LOCKED, kind, str(exc), exc.remedy)
    if isinstance(exc, errors.Interrupted):
        return Outcome(EXIT_INTERRUPTED, kind, str(exc), exc.remedy)
    return Outcome(EXIT_FAILED, kind, str(exc), exc.remedy)


def unexpected(exc: BaseException) -> Outcome:
    """The outcome of an exception that is not ours: a bug, reported with its traceback."""
    return Outcome(EXIT_FAILED, "InternalError", f"unexpected {type(exc).__name__}: {exc}",
                   "this is a bug in llama-bootstrap: please report it with the traceback above")
