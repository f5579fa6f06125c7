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
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from bootstrap.errors import LockedError

STEPS = ("check", "clone", "pull", "smoke")  # the pipeline's steps, in order (here: light to import)
STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "run.lock"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(path, PRIVATE_DIR_MODE)
    except OSError:  # a folder we do not own: leave its mode alone
        pass
    return path


def write_json_atomic(path: Path, doc: Dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` so that readers see the old or the new file, never a mix."""
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _normal(doc: Any) -> Any:
    """``doc`` as it reads back from JSON (tuples become lists), so fingerprints compare equal."""
    return json.loads(json.dumps(doc, sort_keys=True, default=str))


class State:
    """The records of finished steps. ``get(step, fingerprint)`` returns a record only if it still holds."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self.doc: Dict[str, Any] = self._read()

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (FileNotFoundError, ValueError, OSError):
            return {"version": STATE_VERSION, "steps": {}}
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or not isinstance(doc.get("steps"), dict):
            return {"version": STATE_VERSION, "steps": {}}
        return doc

    def get(self, step: str, fingerprint: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        record = self.doc["steps"].get(step)
        if not isinstance(record, dict):
            return None
        if fingerprint is not None and record.get("fingerprint") != _normal(fingerprint):
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
    """Hold the run lock; raise LockedError if another run holds it longer than ``wait_s``."""
    from filelock import FileLock, Timeout  # huggingface_hub's own dependency

    ensure_private_dir(state_dir)
    path = state_dir / LOCK_FILE
    lock = FileLock(str(path), mode=PRIVATE_FILE_MODE)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise LockedError(
            str(path),
            remedy="wait for it to finish (or pass --wait SECONDS); a killed run releases the lock by itself",
        ) from None
    try:
        yield path
    finally:
        lock.release()


class _Redact(logging.Filter):
    def __init__(self, secrets: list) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


def open_log(state_dir: Path, name: str, *, secrets: Optional[list] = None) -> tuple[logging.Logger, Path]:
    """A fresh log file for this run (mode 0600), with secrets redacted from every record."""
    logs = ensure_private_dir(state_dir / "logs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = logs / f"{name}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.log"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    os.close(fd)
    logger = logging.getLogger(f"llama_bootstrap.{name}.{os.getpid()}.{stamp}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logging.FileHandler(str(path), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_Redact(secrets or []))
    logger.addHandler(handler)
    return logger, path


def close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
