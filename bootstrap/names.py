"""File names from a source are data, not paths.

``check_name`` accepts a repo-relative name only if it is plainly one: forward slashes, no ``..``,
``.`` or empty segment, no backslash, no drive letter or colon, no control characters, not absolute,
and no segment that Windows would treat specially (a trailing dot or space, a reserved device name).
``ModelFolder`` turns checked names into paths that stay inside the model folder even when a folder
inside it is a symlink, and is the only way pull creates, replaces or removes a file there.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Dict, Iterable, Optional

from bootstrap import errors

MAX_NAME = 1024
MAX_SEGMENT = 255
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)
#: Folders inside a model folder that belong to llama-bootstrap or huggingface_hub, never to a repo.
RESERVED_TOP = (".partial", ".cache")


def name_problem(name: object) -> Optional[str]:
    """Why ``name`` is not an acceptable repo-relative file name, or None."""
    if not isinstance(name, str):
        return "not a string"
    if not name:
        return "empty"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if not name.isprintable():  # C0/C1 controls, bidi overrides and other format characters, odd spaces
        return "contains a control, format or invisible character"
    if "\\" in name:
        return "contains a backslash"
    if ":" in name:
        return "contains a colon (a drive letter or an alternate data stream on Windows)"
    if name.startswith("/"):
        return "is absolute"
    for segment in name.split("/"):
        if segment in ("", "."):
            return "has an empty or '.' segment"
        if segment == "..":
            return "has a '..' segment"
        if len(segment) > MAX_SEGMENT:
            return f"has a segment longer than {MAX_SEGMENT} characters"
        if segment[-1] in ". ":
            return "has a segment ending in a dot or a space"
        if _WINDOWS_DEVICES.match(segment):
            return "has a segment that is a Windows device name"
    if name.split("/", 1)[0] in RESERVED_TOP:
        return f"is inside {name.split('/', 1)[0]}/, which belongs to the downloader"
    return None


def printable(text: object, limit: int = 200) -> str:
    """``text`` safe to show on a terminal: what a server said, with every non-printable character (escape
    sequences, C1 controls, bidi overrides) written as an escape, and shortened."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))
    return shown if len(shown) <= limit else shown[:limit] + "..."


def check_name(name: object, *, source: Optional[str] = None, repo_id: Optional[str] = None) -> str:
    why = name_problem(name)
    if why:
        raise errors.UnsafeName(str(name), why, source=source, repo_id=repo_id)
    return str(name)


def check_names(names: Iterable[object], *, source: Optional[str] = None, repo_id: Optional[str] = None) -> None:
    """Every name acceptable, no name twice (also ignoring case and Unicode normalisation, as Windows and macOS
    do), no file used as a folder."""
    seen: Dict[str, str] = {}
    for name in names:
        checked = check_name(name, source=source, repo_id=repo_id)
        folded = unicodedata.normalize("NFC", checked).casefold()  # macOS and Windows fold these together
        if folded in seen:
            raise errors.UnsafeName(checked, f"listed twice (as {ascii(seen[folded])})", source=source,
                                    repo_id=repo_id)
        seen[folded] = checked
    for folded, name in seen.items():
        parts = folded.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in seen:
                raise errors.UnsafeName(name, "a listed file is used as its folder", source=source, repo_id=repo_id)


class ModelFolder:
    """``weights.dir/<owner>/<name>``: the one folder pull may write in, and its bookkeeping folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._real_root: Optional[str] = None

    @property
    def partial_dir(self) -> Path:
        return self.root / ".partial"

    def ensure(self) -> None:
        """Create the model folder and its ``.partial`` folder; a ``.partial`` that is a symlink or a file is
        refused (partial downloads never land outside)."""
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.partial_dir
        if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
            raise errors.UntrustedSource(f"{partial} is not a plain folder (a symlink or a file)",
                                         remedy=f"remove {partial}; pull keeps its partial downloads there")
        partial.mkdir(exist_ok=True)

    def real_root(self) -> str:
        if self._real_root is None or not os.path.isdir(self.root):  # cached once the folder exists
            self._real_root = os.path.realpath(self.root)
        return self._real_root

    def inside(self, path: Path) -> bool:
        """Does ``path`` (its parent folders resolved) stay inside the model folder?"""
        root = self.real_root()
        parent = os.path.realpath(path.parent)
        return parent == root or parent.startswith(root.rstrip(os.sep) + os.sep)

    def path(self, name: str) -> Path:
        """The path of a checked name; UntrustedSource if a folder on the way leads outside (a symlink)."""
        target = self.root.joinpath(*name.split("/"))
        if not self.inside(target):
            raise errors.UntrustedSource(
                f"{ascii(name)} would land outside {self.root} (a folder on its way is a symlink)",
                remedy=f"remove the symlink inside {self.root}; pull writes only inside the model folder")
        return target

    def make_parents(self, name: str) -> Path:
        """Create the folders of ``name`` one at a time, refusing a file in the way or a symlink out."""
        folder = self.root
        for part in name.split("/")[:-1]:
            folder = folder / part
            if folder.is_symlink() and not self.inside(folder / "x"):
                raise errors.UntrustedSource(f"{folder} is a symlink out of {self.root}",
                                             remedy=f"remove the symlink {folder}")
            if folder.exists() and not folder.is_dir():
                raise errors.UntrustedSource(f"{folder} is a file where {ascii(name)} needs a folder",
                                             remedy=f"remove {folder} if it is yours, then run again")
            folder.mkdir(exist_ok=True)
        return self.path(name)

    def remove(self, name: str) -> None:
        """Remove a file pull placed (never a folder, never through a symlinked folder; a symlink itself is
        removed, not what it points to)."""
        target = self.path(name)
        try:
            if target.is_dir() and not target.is_symlink():
                return
            target.unlink()
        except FileNotFoundError:
            pass
