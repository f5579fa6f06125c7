"""Folders the tool writes into, and the world's ordinary file-system failures as our errors.

:func:`ensure_dir` makes a folder (``mkdir -p``) and checks that it can be written to;
:func:`path_error` turns any ``OSError`` about a path (read-only disk, permission denied, a file or
a symlink to a file where a folder should be, disk full, a symlink loop, ...) into a
:class:`~bootstrap.errors.PathError` whose message names the path and what it is for, and whose
remedy says what to do. No traceback for any of these.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional, Tuple

from bootstrap import errors

PRIVATE_DIR_MODE = 0o700


def _blocker(path: Path) -> Tuple[Optional[Path], str]:
    """The first part of ``path`` that exists and is not a folder, and what it is."""
    for part in [*reversed(path.parents), path]:
        try:
            st = os.lstat(part)
        except OSError:
            return None, ""
        if stat.S_ISDIR(st.st_mode):
            continue
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.stat(part)
            except OSError as exc:
                return part, "a symlink loop" if exc.errno == errno.ELOOP else "a dangling symlink"
            if stat.S_ISDIR(target.st_mode):
                continue
            return part, "a symlink to a file"
        return part, "a file"
    return None, ""


def _read_only(path: Path) -> bool:
    """Is the file system holding ``path`` (or its nearest existing parent) mounted read-only?"""
    for part in [path, *path.parents]:
        try:
            return bool(os.statvfs(part).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):  # not there yet; Windows has no statvfs
            continue
    return False


class NotARegularFile(OSError):
    """Raised by :func:`read_regular` for a named pipe, a device or a socket (nothing is read from it)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        self.kind = kind


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words ("a named pipe (FIFO)", "a folder", ...)."""
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def not_a_file(path: Path, kind: str, what: str, *, setting: Optional[str] = None) -> errors.PathError:
    """``path`` (the ``what``) should be a file of ours but is ``kind``: it is never replaced."""
    other = f", or set {setting} to another folder" if setting else ""
    return errors.PathError(f"{what}: {path} is {kind}, not a file", path=str(path), what=what,
                            remedy=f"move {path} away (llama-bootstrap did not make it and never replaces it){other}")


def read_regular(path: Path, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of the regular file ``path`` (so a caller can tell "too large").

    A named pipe, device or socket raises :class:`NotARegularFile` at once: it is opened without
    blocking and never read. Other failures raise the OS's ``OSError`` (IsADirectoryError, ...).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(str(path), flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, file_kind(mode))
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: errno -> (reason, remedy) where nothing needs looking at: formatted with path, what and other.
_PLAIN = {
    errno.ENOSPC: ("no space left on the disk of {path}", "free space on that disk{other}"),
    errno.EBUSY: ("{path} is a mount point or in use", "use a folder inside it, or unmount it{other}"),
    errno.ENAMETOOLONG: ("the path {path} is too long for the file system", "use a shorter path for {what}"),
}


def path_error(exc: OSError, path: Path, what: str, *, setting: Optional[str] = None) -> errors.BootstrapError:
    """``exc`` (raised while making, reading or writing ``path``, the ``what``) as a PathError.

    ``setting`` names the variable or manifest field that chooses the place, for the remedy
    (default: ``what`` itself, e.g. "weights.dir").
    """
    path = Path(path)
    code = exc.errno
    other = f", or set {setting} to another folder" if setting else f", or point {what} at another folder"
    if isinstance(exc, NotARegularFile):
        return not_a_file(path, exc.kind, what, setting=setting)
    if code == errno.EROFS or (code in (errno.EACCES, errno.EPERM) and _read_only(path)):
        reason = f"{path} is on a read-only file system"
        remedy = f"remount that disk read-write{other}"
    elif code in (errno.EACCES, errno.EPERM):
        shown = exc.filename if isinstance(exc.filename, str) and exc.filename else str(path)
        reason = f"permission denied for {shown}"
        remedy = f"give this user write access (chown/chmod {shown}){other}"
    elif code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ELOOP, errno.ENOENT):
        blocker, kind = _blocker(path)
        if code == errno.EISDIR:
            reason = f"{path} is a folder, not a file"
            remedy = f"move {path} away (llama-bootstrap did not make it){other}"
        elif blocker is not None:
            reason = f"{blocker} is {kind}, not a folder" + (f" (needed for {path})" if blocker != path else "")
            remedy = f"move {blocker} away or make it a folder{other}"
        elif code == errno.ELOOP:
            reason = f"{path} leads into a symlink loop"
            remedy = f"fix the symlinks on {path}{other}"
        else:
            reason = f"{path}: {exc.strerror or exc}"
            remedy = f"check that {path} is a folder that can be written to{other}"
    elif code in _PLAIN:
        reason, remedy = (text.format(path=path, what=what, other=other) for text in _PLAIN[code])
    else:
        reason = f"{path}: {exc.strerror or exc}"
        remedy = f"check the path and its permissions{other}"
    return errors.PathError(f"{what}: {reason}", path=str(path), what=what, errno=code, remedy=remedy)


def writable_problem(path: Path) -> Optional[str]:
    """Why a folder could not be made or written at ``path`` (judged at ``path`` or its nearest existing
    parent), or None. Nothing is created: for ``check``, before any step runs."""
    path = Path(path)
    blocker, kind = _blocker(path)
    if blocker is not None:
        return f"{blocker} is {kind}, not a folder"
    probe = next((p for p in [path, *path.parents] if p.exists()), None)
    if probe is None:
        return None
    if _read_only(probe):
        return f"{probe} is on a read-only file system"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable for this user"
    return None


def ensure_dir(path: Path, what: str, *, private: bool = False, setting: Optional[str] = None) -> Path:
    """Make ``path`` (and its parents) a folder this process can write to; return it.

    ``what`` says what the folder is for ("weights.dir", "the state folder", ...) and is named in the
    error (``setting``: see :func:`path_error`). ``private``: the folder is made owner-only (0700) when
    we own it. Raises PathError.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise path_error(exc, path, what, setting=setting) from exc
    if private:
        try:
            os.chmod(path, PRIVATE_DIR_MODE)
        except OSError:  # a folder we do not own: leave its mode alone
            pass
    if not os.access(path, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(path) else errno.EACCES
        raise path_error(OSError(code, os.strerror(code), str(path)), path, what, setting=setting)
    return path
