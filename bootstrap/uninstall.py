"""``uninstall``: remove exactly what the receipt says was created, in a safe order, and nothing else.

* Only entries recorded as **created** are touched; a **found** path is never removed, nor is anything
  that is not in the receipt. A created folder that now holds something of a kind the receipt did not
  record it as (a file where an env was, a folder without ``conda-meta``...) is left alone and said so.
* Symlinks are never followed: an entry that is a symlink is removed as a link; a tree is removed without
  following the links inside it. Folders made only on the way to something (``folder``) are removed only
  when empty.
* Order: conda's shell start-up blocks first (they point into Miniforge), then the demo, weights, source
  checkout and build leftovers, then envs and venvs, Miniforge, logs, the state folder holding the receipt
  (only when nothing recorded remains), and the empty folders last, deepest first.
* After each removal the receipt is rewritten without it, so an interrupted uninstall continues where it
  stopped. ``--keep-weights`` keeps ``weights``; ``--keep-conda`` keeps Miniforge, ``~/.conda`` and the
  shell start-up edits; what is kept stays in the receipt (and so does the state folder holding it).
* Shell start-up edits: only conda's own block is taken out (``# >>> conda initialize >>>`` ... ``# <<<
  conda initialize <<<``, PowerShell: ``#region conda initialize`` ... ``#endregion``); when the file is
  then byte-for-byte what it was before the edit (its sha256 is recorded) the blank line conda added goes too.
* Windows cannot delete a running python.exe: an entry holding this process's interpreter is left in the
  receipt for ``install.ps1 -Uninstall``, which removes it after this process has ended.

The core never prints and never asks: the CLI asks for consent (``--yes``) before calling :func:`run`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from bootstrap.errors import NoReceipt, ReceiptError, UninstallIncomplete
from bootstrap.receipt import KINDS, Entry, Receipt, lexists, tree_bytes

BUSY = "holds the running Python: install.ps1 -Uninstall removes it afterwards"
LEFT_FOR_INSTALLER = "left_for_installer"  # the mark install.ps1 -Uninstall looks for
CONDA_BLOCKS = (("# >>> conda initialize >>>", "# <<< conda initialize <<<"),
                ("#region conda initialize", "#endregion"))
#: What a created path must still look like to be removed (a symlink always may: only the link goes).
_SHAPES: Dict[str, Tuple[str, Tuple[str, ...]]] = {  # kind -> (file type, one of these names inside)
    "env": ("dir", ("conda-meta",)),
    "venv": ("dir", ("pyvenv.cfg",)),
    "miniforge": ("dir", ("conda-meta",)),
    "source-checkout": ("dir", (".git",)),
    "state": ("dir", ()),
    "logs": ("dir", ()),
    "weights": ("dir", ()),
    "demo": ("dir", ()),
    "build": ("dir", ()),
    "cache": ("dir", ()),
    "conda-dir": ("dir", ()),
    "folder": ("dir", ()),
    "log": ("file", ()),
    "state-file": ("file", ()),
    "shell-startup-edit": ("file", ()),
}


@dataclass
class Item:
    """One recorded path and what uninstall does with it."""

    entry: Entry
    action: str  # remove | unlink | undo-block | rmdir-if-empty | keep
    bytes: int = 0
    reason: str = ""  # why it is kept, or what went wrong

    def to_json(self) -> Dict[str, object]:
        return {"path": self.entry.path, "kind": self.entry.kind, "status": self.entry.status,
                "action": self.action, "bytes": self.bytes, "reason": self.reason or None}


@dataclass
class Plan:
    receipt: Receipt
    items: List[Item] = field(default_factory=list)  # in the order they are done
    kept: List[Item] = field(default_factory=list)
    gone: List[Entry] = field(default_factory=list)  # created, but no longer there

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)


@dataclass
class Result:
    dry_run: bool
    removed: List[Item]
    kept: List[Item]
    failed: List[Item]
    gone: List[Entry]
    receipt: str
    receipt_left: bool

    @property
    def bytes_freed(self) -> int:
        return sum(i.bytes for i in self.removed)

    def to_json(self) -> Dict[str, object]:
        status = "dry-run" if self.dry_run else ("incomplete" if self.failed else "ok")
        return {"status": status, "dry_run": self.dry_run, "receipt": self.receipt,
                "receipt_left": self.receipt_left, "bytes_freed": self.bytes_freed,
                "removed": [i.to_json() for i in self.removed], "kept": [i.to_json() for i in self.kept],
                "failed": [i.to_json() for i in self.failed], "already_gone": [e.path for e in self.gone]}


def _running_inside(path: str) -> bool:
    """Windows only: is this process's interpreter inside ``path`` (it cannot be deleted while it runs)?"""
    if os.name != "nt":
        return False
    root = os.path.normcase(os.path.realpath(path))
    for mine in {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)}:
        mine = os.path.normcase(os.path.realpath(mine))
        if mine == root or mine.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def _protected(path: str) -> bool:
    """A file-system root, the home folder, or a folder above it."""
    p = Path(path)
    if p.parent == p:
        return True
    home = Path.home()
    return p == home or p in home.parents


def _check_path(entry: Entry, receipt: Path) -> None:
    path = entry.path
    if "\0" in path or not os.path.isabs(path) or os.path.normpath(path) != path or path != path.strip():
        raise ReceiptError(f"the receipt {receipt} lists {path!r}, which is not a plain absolute path",
                           path=str(receipt), remedy="the receipt was changed by hand or damaged: remove what you "
                           "know to be ours by hand, then delete the receipt")
    if _protected(path) and KINDS[entry.kind].removal != "empty-dir":
        raise ReceiptError(f"the receipt {receipt} lists {path} (a root or home folder) as created by "
                           "llama-bootstrap; refusing to remove anything", path=str(receipt),
                           remedy="the receipt was changed by hand or damaged: remove what you know to be ours "
                           "by hand, then delete the receipt")


def _shape_problem(entry: Entry) -> Optional[str]:
    """Why a created path no longer looks like what was recorded (None: it does, or it is a symlink)."""
    try:
        st = os.lstat(entry.path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    want, names = _SHAPES.get(entry.kind, ("dir", ()))
    if want == "dir" and not stat.S_ISDIR(st.st_mode):
        return f"it is no longer a folder (recorded as {entry.kind})"
    if want == "file" and not stat.S_ISREG(st.st_mode):
        return f"it is no longer a file (recorded as {entry.kind})"
    if names and not any(os.path.lexists(os.path.join(entry.path, n)) for n in names):
        return f"it no longer looks like a {entry.kind} (no {' or '.join(names)} in it)"
    return None


def _order(entry: Entry) -> Tuple[int, int]:
    kind = KINDS.get(entry.kind)
    return (kind.rank if kind else 99), -len(Path(entry.path).parts)


def plan(receipt_file: Path, *, keep_weights: bool = False, keep_conda: bool = False,
         busy: Callable[[str], bool] = _running_inside) -> Plan:
    """What uninstall would do. Raises NoReceipt, ReceiptError (nothing is done then)."""
    receipt = Receipt(receipt_file)
    if not receipt.exists:
        raise NoReceipt(str(receipt_file), remedy=(
            "run uninstall with the manifest (--manifest) or LLAMA_BOOTSTRAP_STATE_DIR of the install, whose "
            f"state folder holds {receipt_file.name}; an install made before receipts existed must be removed by "
            "hand (docs/installers.md lists what it creates)"))
    out = Plan(receipt)
    keep_groups = {g for g, on in (("weights", keep_weights), ("conda", keep_conda)) if on}
    for entry in receipt.entries:
        if not entry.created:
            out.kept.append(Item(entry, "keep", reason="found: it was there before, so it is not ours"))
        elif entry.kind not in KINDS:
            out.kept.append(Item(entry, "keep", reason=f"unknown kind {entry.kind!r} (a newer llama-bootstrap?)"))
        else:
            _check_path(entry, receipt_file)
    for entry in sorted((e for e in receipt.entries if e.created and e.kind in KINDS), key=_order):
        kind = KINDS[entry.kind]
        if not lexists(entry.path):
            out.gone.append(entry)
        elif kind.group in keep_groups:
            out.kept.append(Item(entry, "keep", tree_bytes(Path(entry.path)), f"--keep-{kind.group}"))
        elif busy(entry.path):
            out.kept.append(Item(entry, "keep", tree_bytes(Path(entry.path)), BUSY))
        elif kind.removal == "empty-dir" and _protected(entry.path):
            out.kept.append(Item(entry, "keep", reason="a root or home folder is never removed"))
        elif _shape_problem(entry):
            out.kept.append(Item(entry, "keep", reason=f"{_shape_problem(entry)}: left alone"))
        else:
            out.items.append(_item(entry))
    seen: Dict[Tuple[int, int], int] = {}
    for item in out.items:
        if item.action == "remove":
            item.bytes = tree_bytes(Path(item.entry.path), seen)
    return out


def _item(entry: Entry) -> Item:
    removal = KINDS[entry.kind].removal
    if os.path.islink(entry.path) and removal != "conda-block":
        return Item(entry, "unlink")
    return Item(entry, {"tree": "remove", "file": "remove", "empty-dir": "rmdir-if-empty",
                        "conda-block": "undo-block"}[removal])


def _countable(entry: Entry) -> bool:
    """A created entry that keeps the receipt alive while it is listed (folders made on the way do not)."""
    kind = KINDS.get(entry.kind)
    return entry.created and (kind is None or kind.removal != "empty-dir")


def run(p: Plan, *, dry_run: bool = False, log: Callable[[str], None] = lambda _: None) -> Result:
    """Carry out (or with ``dry_run`` only report) the plan. What could not be removed is in ``Result.failed``
    and stays in the receipt, so a second run can finish the job."""
    receipt = p.receipt
    removed: List[Item] = []
    kept = list(p.kept)
    failed: List[Item] = []
    done = {e.path for e in p.gone}
    if not dry_run:
        for entry in p.gone:
            receipt.drop(entry.path)
        receipt.entries.sort(key=_order)  # what stays is listed in removal order (install.ps1 follows it)
        for item in p.kept:
            if item.reason == BUSY:
                item.entry.extra[LEFT_FOR_INSTALLER] = True
    for item in p.items:
        entry = item.entry
        if entry.kind == "state" and item.action == "remove":
            left = [e for e in receipt.entries if _countable(e) and e.path != entry.path and e.path not in done]
            if left:
                kept.append(Item(entry, "keep", item.bytes, f"holds the receipt, which still lists {len(left)} "
                                 "path(s) that were kept or could not be removed"))
                continue
        if dry_run:
            removed.append(item)
            done.add(entry.path)
            continue
        if not lexists(entry.path):  # inside something removed before it (an env inside Miniforge)
            removed.append(item)
            done.add(entry.path)
            receipt.drop(entry.path)
            continue
        try:
            gone = _do(item, log)
        except OSError as exc:
            item.reason = exc.strerror or str(exc)
            failed.append(item)
            log(f"could not remove {entry.path}: {item.reason}")
            continue
        if not gone:  # a folder that is not empty: it stays listed
            kept.append(item)
            continue
        removed.append(item)
        done.add(entry.path)
        receipt.drop(entry.path)
        if lexists(receipt.path):
            receipt.save()
    receipt_left = any(_countable(e) and e.path not in done for e in receipt.entries)
    if not dry_run and lexists(receipt.path) and not receipt_left:
        receipt.remove_file()
    return Result(dry_run, removed, kept, failed, p.gone, str(receipt.path),
                  receipt_left if dry_run else lexists(receipt.path))


def incomplete(result: Result) -> UninstallIncomplete:
    return UninstallIncomplete([(i.entry.path, i.reason) for i in result.failed], remedy=(
        "fix what is named (permissions, a process using the folder) and run uninstall again: the receipt still "
        "lists them"))


def _do(item: Item, log: Callable[[str], None]) -> bool:
    """Do one item; False when it was kept after all (a folder that is not empty)."""
    path = item.entry.path
    if item.action == "unlink":
        os.unlink(path)
        log(f"removed the symlink {path}")
    elif item.action == "undo-block":
        log(f"{path}: {undo_conda_block(item.entry)}")
    elif item.action == "rmdir-if-empty":
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            item.reason = "not empty: it holds things llama-bootstrap did not record"
            item.action = "keep"
            return False
        log(f"removed the empty folder {path}")
    elif os.path.isdir(path) and not os.path.islink(path):
        _rmtree(path)
        log(f"removed {path} ({item.bytes} bytes)")
    else:
        os.unlink(path)
        log(f"removed {path}")
    return True


def _rmtree(path: str) -> None:
    def retry_writable(func, target, _exc_info):  # read-only files (Windows, git objects): make writable, retry
        os.chmod(target, stat.S_IWRITE | stat.S_IREAD | (stat.S_IEXEC if os.path.isdir(target) else 0))
        func(target)

    shutil.rmtree(path, onerror=retry_writable)


# -- conda's shell start-up block ------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def block_removed(data: bytes, before_sha256: Optional[str] = None) -> Optional[bytes]:
    """``data`` without conda's initialize block, or None when it has none. Of the ways to take it out (the
    block alone; with the blank line conda puts before it; with the line break it added to a last line
    without one) the one that gives back the recorded original is chosen, else the block alone."""
    lines = data.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    for start_marker, end_marker in CONDA_BLOCKS:
        start = next((i for i, line in enumerate(lines) if line.strip() == start_marker), None)
        if start is None:
            continue
        end = next((j for j in range(start + 1, len(lines)) if lines[j].strip() == end_marker), None)
        if end is None:
            continue
        head, tail = lines[:start], lines[end + 1:]
        plain = "".join(head + tail)
        candidates = [plain]
        if head and not head[-1].strip():
            candidates.append("".join(head[:-1] + tail))
        if head and not tail:
            candidates.append("".join(head[:-1] + [head[-1].rstrip("\r\n")]))
        encoded = [c.encode("utf-8", "surrogateescape") for c in candidates]
        return next((c for c in encoded if before_sha256 and _sha256(c) == before_sha256), encoded[0])
    return None


def undo_conda_block(entry: Entry) -> str:
    """Take conda's block out of the start-up file ``entry.path`` (edited in place, through a symlink like
    conda wrote it); remove the file when the edit had created it and nothing else is in it."""
    target = os.path.realpath(entry.path)
    with open(target, "rb") as fh:
        data = fh.read()
    new = block_removed(data, entry.extra.get("sha256_before"))
    if new is None:
        return "conda's block is not there any more; nothing to undo"
    if entry.extra.get("file_existed") is False and not new.strip():
        os.unlink(target)
        return "removed conda's block and the file it had created"
    mode = stat.S_IMODE(os.stat(target).st_mode)
    fd, tmp = tempfile.mkstemp(prefix=".llama-bootstrap-", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = ""
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return "removed conda's initialize block; the rest of the file is unchanged"
