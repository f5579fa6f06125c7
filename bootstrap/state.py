"""What finished, with its fingerprint: the state file, the run lock and the run log.

The state file (``<state dir>/state.json``) is rewritten atomically (temp file + ``os.replace``),
so a kill at any moment leaves the old or the new version, never half of one. A step's record
counts only when its fingerprint equals what the step would do now.

The run lock is an OS file lock (``filelock``): the OS releases it when the holding process dies,
so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from bootstrap.errors import LockedError
from bootstrap.fsutil import ensure_dir, file_kind, not_a_file, path_error, read_regular
from bootstrap.redact import LogFilter, add_secret, scrub_obj

STEPS = ("check", "clone", "pull", "smoke")  # the pipeline's steps, in order (here: light to import)
STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "run.lock"
PRIVATE_FILE_MODE = 0o600
MAX_STATE_BYTES = 64 << 20  # far beyond any real state file; a bigger one is not ours
STATE_SETTING = "LLAMA_BOOTSTRAP_STATE_DIR"
STATE_DIR_WHAT = "the state folder"


def ensure_private_dir(path: Path, what: str = STATE_DIR_WHAT) -> Path:
    return ensure_dir(path, what, private=True, setting=STATE_SETTING)


def write_json_atomic(path: Path, doc: Dict[str, Any], *, what: str = "the state file") -> None:
    """Write ``doc`` (scrubbed of secrets) to ``path`` so that readers see the old or the new file, never a mix.

    Raises PathError when the folder or the file cannot be written (read-only, a folder in the way, ...).
    """
    ensure_private_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(scrub_obj(doc), fh, ensure_ascii=False, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        raise path_error(exc, path, what, setting=STATE_SETTING) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _normal(doc: Any) -> Any:
    """``doc`` as it reads back from JSON (tuples become lists), so fingerprints compare equal."""
    return json.loads(json.dumps(doc, sort_keys=True, default=str))


class State:
    """The records of finished steps. ``get(step, fingerprint)`` returns a record only if it still holds.

    The state file is a cache of what was verified: losing it costs a re-check, never data. So a state
    file that is empty, not JSON, or not in our shape is set aside: reading starts afresh (``problem``
    says why, for the log) and the next record replaces the file. A state file that cannot be read
    (permission denied) or is a folder, a pipe or a device is not ours to replace: PathError.
    """

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self.problem: Optional[str] = None
        self.doc: Dict[str, Any] = self._read()

    def _fresh(self, problem: Optional[str]) -> Dict[str, Any]:
        self.problem = f"the state file {self.path} {problem}; starting afresh (finished steps are checked again)" \
            if problem else None
        return {"version": STATE_VERSION, "steps": {}}

    def _read(self) -> Dict[str, Any]:
        try:
            raw = read_regular(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return self._fresh(None)
        except OSError as exc:
            raise path_error(exc, self.path, "the state file", setting=STATE_SETTING) from exc
        if not raw.strip():
            return self._fresh("was empty")
        if len(raw) > MAX_STATE_BYTES:
            return self._fresh(f"is larger than {MAX_STATE_BYTES >> 20} MiB")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested beyond the parser's stack
            return self._fresh("is not valid JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("steps"), dict):
            return self._fresh("is not a llama-bootstrap state file")
        if doc.get("version") != STATE_VERSION:
            return self._fresh(f"has version {doc.get('version')!r}, not {STATE_VERSION}")
        steps = {k: v for k, v in doc["steps"].items() if k in STEPS and isinstance(v, dict)
                 and isinstance(v.get("fingerprint"), dict) and isinstance(v.get("result"), dict)}
        if len(steps) != len(doc["steps"]):
            self.problem = f"the state file {self.path} had records in the wrong shape; they are checked again"
        doc["steps"] = steps
        return doc

    def get(self, step: str, fingerprint: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        record = self.doc["steps"].get(step)
        if not isinstance(record, dict):
            return None
        if fingerprint is not None and record.get("fingerprint") != scrub_obj(_normal(fingerprint)):
            return None
        return record

    def put(self, step: str, fingerprint: Dict[str, Any], result: Dict[str, Any]) -> None:
        self.doc["steps"][step] = {"fingerprint": _normal(fingerprint), "result": _normal(result),
                                   "finished_at": time.time()}
        write_json_atomic(self.path, self.doc)

    def forget(self, step: str) -> None:
        if self.doc["steps"].pop(step, None) is not None:
            write_json_atomic(self.path, self.doc)


@contextmanager
def run_lock(state_dir: Path, *, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the run lock; raise LockedError if another run holds it longer than ``wait_s``.

    A lock path that is a folder, a symlink or anything but a file is refused (PathError), never replaced:
    the lock library would open (and truncate) whatever a symlink points to.
    """
    from filelock import FileLock, Timeout  # huggingface_hub's own dependency

    ensure_private_dir(state_dir)
    path = state_dir / LOCK_FILE
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise path_error(exc, path, "the run lock", setting=STATE_SETTING) from exc
    if mode is not None and not stat.S_ISREG(mode):
        raise not_a_file(path, file_kind(mode), "the run lock", setting=STATE_SETTING)
    lock = FileLock(str(path), mode=PRIVATE_FILE_MODE)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise LockedError(
            str(path),
            remedy="wait for it to finish (or pass --wait SECONDS); a killed run releases the lock by itself",
        ) from None
    except OSError as exc:
        raise path_error(exc, path, "the run lock", setting=STATE_SETTING) from exc
    try:
        yield path
    finally:
        lock.release()


class _LogFile(logging.FileHandler):
    """A log file that cannot be written (disk full, ...) neither stops the run nor prints logging's own
    "--- Logging error ---" traceback: the first error is kept in ``error`` (see :func:`log_problem`)."""

    error: Optional[BaseException] = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.error is None:
            self.error = sys.exc_info()[1]




def open_log(state_dir: Path, name: str, *, secrets: Optional[list] = None) -> tuple[logging.Logger, Path]:
    """A fresh log file for this run (mode 0600). Every record is scrubbed (:class:`bootstrap.redact.LogFilter`):
    the message and the formatted exception chain; ``secrets`` are registered for that first."""
    for secret in secrets or []:
        add_secret(secret)
    ensure_private_dir(state_dir)  # named as itself when it is the state folder that cannot be made
    logs = ensure_private_dir(state_dir / "logs", "the log folder")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = logs / f"{name}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.log"
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        os.close(fd)
        handler = _LogFile(str(path), encoding="utf-8")
    except OSError as exc:
        raise path_error(exc, path, "the log file", setting=STATE_SETTING) from exc
    logger = logging.getLogger(f"llama_bootstrap.{name}.{os.getpid()}.{stamp}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(LogFilter())
    logger.addHandler(handler)
    return logger, path


def close_log(logger: logging.Logger) -> Optional[str]:
    """Close the log; return why (part of) it could not be written, or None."""
    problem = None
    for handler in list(logger.handlers):
        try:
            handler.close()
        except OSError as exc:  # the last flush on a full disk
            if isinstance(handler, _LogFile) and handler.error is None:
                handler.error = exc
        logger.removeHandler(handler)
        error = getattr(handler, "error", None)
        if error is not None and problem is None:
            why = getattr(error, "strerror", None) or str(error)
            problem = f"the log file {getattr(handler, 'baseFilename', '')} could not be written ({why}); " \
                      "it is incomplete"
    return problem
