"""The install receipt: every path the installers and the CLI created (or found already there), with its
kind, when, and by whom; what ``status`` shows and the only thing ``uninstall`` removes.

Where: ``<state folder>/receipt.json``, the CLI's state folder (``LLAMA_BOOTSTRAP_STATE_DIR``, relative to
the manifest's folder, else ``.llama-bootstrap/`` next to the manifest). install.sh and install.ps1 compute
the same folder from the manifest they hand off with, so all three write one file.

Layout (the installers depend on it; :func:`dumps` is the one writer in Python)::

    {
      "receipt": 1,
      "entries": [
        {"path": "/home/u/miniforge3", "kind": "miniforge", "status": "created", "when": "...Z", "by": "installer"},
        {"path": "...", ...}
      ]
    }

one entry per line, keys in that order first (``json.dumps`` with its default separators, non-ASCII as is),
so install.sh can merge an entry with awk: an entry whose ``path`` is already recorded is never replaced
(the first record wins: a path created by an earlier run stays "created"). Readers accept any JSON layout.
A damaged receipt is an error, never set aside: it is the record of what may be removed.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from bootstrap.errors import BootstrapError, ReceiptError
from bootstrap.fsutil import ensure_dir, path_error, read_regular

RECEIPT_NAME = "receipt.json"
RECEIPT_VERSION = 1
STATE_DIR_NAME = ".llama-bootstrap"  # bootstrap.plan's default state folder, next to the manifest
STATE_SETTING = "LLAMA_BOOTSTRAP_STATE_DIR"
MAX_RECEIPT_BYTES = 16 << 20
CREATED, FOUND = "created", "found"
BY_CLI, BY_INSTALLER = "cli", "installer"
#: The stamps the installers write into an env (conda: in conda-meta/, a venv: at its top).
CONDA_STAMP = "llama-bootstrap-lock.sha256"
PIP_STAMP = "llama-bootstrap-pip-lock.sha256"
PREVIOUS_POINTER = "llama-bootstrap-previous"  # the id of the env this one replaced (for --rollback)
HOME_POINTER = "llama-bootstrap-home"  # the prefix the env was built at (it only works there)


class Kind(NamedTuple):
    removal: str  # tree | file | empty-dir | conda-block
    group: str  # what a --keep-* flag keeps: weights | conda | "" (nothing)
    rank: int  # uninstall order: lower first; within a rank, deeper paths first


#: Every kind of entry, and how uninstall treats it. An unknown kind (a newer writer) is left alone.
KINDS: Dict[str, Kind] = {
    "shell-startup-edit": Kind("conda-block", "conda", 0),  # only conda's own block is taken out
    "demo": Kind("tree", "", 1),  # the demo's work folder (./llama-bootstrap-demo)
    "weights": Kind("tree", "weights", 1),  # <weights.dir>/<owner>/<name>
    "source-checkout": Kind("tree", "", 1),
    "build": Kind("tree", "", 1),  # build/ and *.egg-info that pip's build left in the release folder
    "cache": Kind("tree", "", 1),  # pip's cache, when the install created it
    "venv": Kind("tree", "", 2),  # the --demo venv fallback (and its update slots)
    "env": Kind("tree", "", 2),  # the conda env (and its update slots); a symlink is removed as a link
    "miniforge": Kind("tree", "conda", 3),
    "conda-dir": Kind("tree", "conda", 3),  # ~/.conda, when conda made it for our env
    "log": Kind("file", "", 4),
    "state-file": Kind("file", "", 4),  # state.json, run.lock in a state folder that was found
    "logs": Kind("tree", "", 4),  # the CLI's logs/ in a state folder that was found
    "state": Kind("tree", "", 6),  # the CLI's state folder: holds this receipt, so it goes last
    "folder": Kind("empty-dir", "", 7),  # a folder made on the way to one of the above: only if empty
}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str
    status: str  # created | found
    when: str
    by: str  # installer | cli
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"path": self.path, "kind": self.kind, "status": self.status, "when": self.when,
                               "by": self.by}
        doc.update((k, v) for k, v in sorted(self.extra.items()) if k not in doc)
        return doc

    @property
    def created(self) -> bool:
        return self.status == CREATED


def state_dir_for(manifest: Path, state_setting: Optional[Path], cwd: Optional[Path] = None) -> Path:
    """The CLI's state folder for ``manifest``: the rule of :func:`bootstrap.plan.resolve`, without reading the
    manifest (uninstall must work with a broken one)."""
    manifest = manifest if manifest.is_absolute() else (cwd or Path.cwd()) / manifest
    root = manifest.parent.resolve()
    folder = state_setting or root / STATE_DIR_NAME
    return folder if folder.is_absolute() else root / folder


def receipt_path(state_dir: Path) -> Path:
    return Path(state_dir) / RECEIPT_NAME


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is not an object")
    for key in ("path", "kind", "status"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"{where} has no {key}")
    if raw["status"] not in (CREATED, FOUND):
        raise ValueError(f"{where}: status must be created or found, not {raw['status']!r}")
    extra = {k: v for k, v in raw.items() if k not in ("path", "kind", "status", "when", "by")}
    return Entry(raw["path"], raw["kind"], raw["status"], str(raw.get("when") or ""), str(raw.get("by") or ""),
                 extra)


def parse(text: str, path: Path) -> List[Entry]:
    """The entries of a receipt document (any JSON layout); ReceiptError when it is not one."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("receipt") != RECEIPT_VERSION or not isinstance(doc.get("entries"),
                                                                                                  list):
            raise ValueError(f"not a llama-bootstrap receipt (version {RECEIPT_VERSION})")
        entries: List[Entry] = []
        seen = set()
        for i, raw in enumerate(doc["entries"]):
            entry = _entry(raw, f"entry {i + 1}")
            if entry.path not in seen:  # the first record of a path wins
                seen.add(entry.path)
                entries.append(entry)
        return entries
    except (ValueError, RecursionError) as exc:
        raise ReceiptError(f"the receipt {path} cannot be read: {exc}", path=str(path),
                           remedy="restore it, or move it away (then nothing is known to be ours, and uninstall "
                                  "removes nothing); it is never replaced while damaged") from None


def dumps(entries: Iterable[Entry]) -> str:
    lines = [f"    {json.dumps(e.to_json(), ensure_ascii=False)}" for e in entries]
    body = ",\n".join(lines)
    return "{\n" + f'  "receipt": {RECEIPT_VERSION},\n  "entries": [\n' + (body + "\n" if body else "") + "  ]\n}\n"


class Receipt:
    """The receipt file: read (or empty when there is none), changed, saved atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.exists = False
        self.entries: List[Entry] = self._read()

    def _read(self) -> List[Entry]:
        try:
            raw = read_regular(self.path, MAX_RECEIPT_BYTES)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise path_error(exc, self.path, "the receipt", setting=STATE_SETTING) from exc
        self.exists = True
        if len(raw) > MAX_RECEIPT_BYTES:
            raise ReceiptError(f"the receipt {self.path} is larger than {MAX_RECEIPT_BYTES >> 20} MiB",
                               path=str(self.path), remedy="it is not ours: move it away")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "\0"  # not JSON: reported by parse
        return parse(text, self.path)

    def get(self, path: str) -> Optional[Entry]:
        return next((e for e in self.entries if e.path == path), None)

    def add(self, path: str, kind: str, status: str, by: str, **extra: Any) -> bool:
        """Record ``path`` unless it is recorded already (the first record wins). True when added."""
        if self.get(path) is not None:
            return False
        self.entries.append(Entry(path, kind, status, now(), by, dict(extra)))
        return True

    def drop(self, path: str) -> None:
        self.entries = [e for e in self.entries if e.path != path]

    def save(self) -> None:
        ensure_dir(self.path.parent, "the state folder", private=True, setting=STATE_SETTING)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=str(self.path.parent))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(dumps(self.entries))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            tmp = None
            self.exists = True
        except OSError as exc:
            raise path_error(exc, self.path, "the receipt", setting=STATE_SETTING) from exc
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def remove_file(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.exists = False


# -- what a path holds ----------------------------------------------------------------------------------


def lexists(path: Path) -> bool:
    return os.path.lexists(path)


def tree_bytes(path: Path, seen: Optional[Dict[Tuple[int, int], int]] = None) -> int:
    """Disk used under ``path`` (allocated blocks where the OS says, else the size), symlinks not followed.

    With ``seen`` (shared across calls) nothing is counted twice: a tree inside one counted before adds
    nothing, and a file with several hard links counts only when its last link is seen (the bytes that
    removing all of them frees)."""
    total = 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except OSError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if seen is not None:
            key = (st.st_dev, st.st_ino)
            count = seen.get(key, 0) + 1
            seen[key] = count
            if (is_dir or st.st_nlink <= 1) and count > 1:
                continue  # counted already, with everything under it
            if not is_dir and st.st_nlink > 1 and count != st.st_nlink:
                continue
        if is_dir:
            try:
                with os.scandir(current) as it:
                    stack.extend(entry.path for entry in it)
            except OSError:
                pass
        total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


# -- what a run of the CLI created ----------------------------------------------------------------------


def first_missing(path: Path) -> Optional[Path]:
    """The topmost folder that does not exist on the way to ``path`` (``path`` itself when only it is missing),
    or None when ``path`` exists."""
    top = None
    current = Path(path)
    while not lexists(current):
        top = current
        if current.parent == current:
            break
        current = current.parent
    return top


def record_paths(receipt: Receipt, targets: List[Tuple[Path, str, Optional[Path]]], by: str) -> bool:
    """Record each existing ``(path, kind, top)``: found when ``top`` is None (it was there before), else
    created, with every folder from ``top`` down to it as a created ``folder``. True when anything was added."""
    changed = False
    for path, kind, top in targets:
        if not lexists(path):
            continue
        if top is None:
            changed |= receipt.add(str(path), kind, FOUND, by)
            continue
        changed |= receipt.add(str(path), kind, CREATED, by)
        current = Path(path)
        while current != top and current.parent != current:
            current = current.parent
            changed |= receipt.add(str(current), "folder", CREATED, by)
    return changed


class Recorder:
    """Around a pipeline run: which of the paths it may create were already there; afterwards, the new ones go
    into the receipt as created (and the others as found). Never fails the run: a receipt that cannot be
    written or read is reported through ``warn``."""

    def __init__(self, plan: Any, warn: Callable[[str], None] = lambda _: None) -> None:
        self.path = receipt_path(plan.state_dir)
        self.warn = warn
        state = Path(plan.state_dir)
        wanted = [(state, "state"), (Path(plan.source_dir), "source-checkout"), (Path(plan.weights_dir), "folder")]
        wanted += [(plan.model_dir(ref.repo_id), "weights") for ref in plan.repo_refs()]
        self.state_dir = state
        self.targets = [(path, kind, first_missing(path)) for path, kind in wanted]
        self.in_state = [(state / name, kind, first_missing(state / name))
                         for name, kind in (("state.json", "state-file"), ("run.lock", "state-file"),
                                            ("logs", "logs"))]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.record()

    def record(self) -> None:
        try:
            receipt = Receipt(self.path)
            changed = record_paths(receipt, self.targets, BY_CLI)
            state = receipt.get(str(self.state_dir))
            if state is not None and not state.created:  # our files in a folder that is not ours
                changed |= record_paths(receipt, self.in_state, BY_CLI)
            if changed:
                receipt.save()
        except (BootstrapError, OSError) as exc:  # the run itself stands
            self.warn(f"the receipt was not updated: {exc}")
