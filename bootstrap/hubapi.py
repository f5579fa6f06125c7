"""The Hub's data model as a Hub-compatible server answers it: files, revisions, listings, ranges.

What a server serves is a :class:`Catalog` (repo id -> revision name -> :class:`Revision` -> files by
repo-relative name). The functions here build the JSON the real ``huggingface_hub`` reads (model info
siblings, tree entries) from those names only, never from a folder listing. Used by
:mod:`bootstrap.hubserve` (the HTTP side), ``share`` and the demo's LocalHub.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

LAST_MODIFIED = "2023-07-24T00:00:00.000Z"
_DIGITS = re.compile(r"[0-9]*")


class RepoFile(NamedTuple):
    path: str  # repo-relative, "/"-separated
    local: Path
    size: int
    blob_id: str  # git blob sha1 of what git stores: the file, or the LFS pointer for LFS files
    sha256: Optional[str]  # always set for LFS files
    lfs: bool
    pointer_size: int
    mtime_ns: int  # served live from disk: a file whose size or mtime changed is answered with 409


class Revision(NamedTuple):
    sha: str
    files: Dict[str, RepoFile]
    root: Optional[Path] = None  # when set, every served file must resolve to a path inside it


class HubError(Exception):
    def __init__(self, status: int, code: Optional[str], message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def git_blob_sha1(data_size: int, chunks: List[bytes]) -> str:
    digest = hashlib.sha1(b"blob %d\0" % data_size)  # noqa: S324 - git object ids are sha1
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_file(path: str, local: Path, size: int, sha256: str, mtime_ns: int) -> RepoFile:
    """An LFS-stored file: git holds its pointer, so the blob id is the pointer's."""
    pointer = lfs_pointer(sha256, size)
    return RepoFile(path, local, size, git_blob_sha1(len(pointer), [pointer]), sha256, True, len(pointer), mtime_ns)


def parse_range(value: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """(start, end-inclusive) for a single ``bytes=`` range; None when absent or unparsable (serve all).

    The result may be unsatisfiable (start beyond the end): the caller answers that with 416.
    """
    if not value or not value.startswith("bytes="):
        return None
    first, sep, last = value[len("bytes="):].strip().partition("-")
    if not sep or not _DIGITS.fullmatch(first) or not _DIGITS.fullmatch(last) or first == last == "":
        return None  # not one range of digits (several ranges included): ignored, as RFC 9110 allows
    if first == "":
        return max(size - int(last), 0), size - 1  # a suffix: the last N bytes (N = 0: unsatisfiable)
    if last and int(last) < int(first):
        return None  # syntactically invalid: ignored
    return int(first), min(int(last) if last else size - 1, size - 1)  # first >= size: unsatisfiable


def sibling(entry: RepoFile, blobs: bool) -> Dict[str, object]:
    data: Dict[str, object] = {"rfilename": entry.path}
    if blobs:
        data.update(size=entry.size, blobId=entry.blob_id)
        if entry.lfs:
            data["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def model_info_doc(repo_id: str, revision: Revision, blobs: bool) -> Dict[str, object]:
    """The model info API's answer for one revision (``blobs``: with sizes, blob ids and LFS info)."""
    info: Dict[str, object] = {
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],  # noqa: S324
        "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0] if "/" in repo_id else None,
        "sha": revision.sha, "lastModified": LAST_MODIFIED, "createdAt": LAST_MODIFIED,
        "private": False, "disabled": False, "gated": False,
        "downloads": 0, "likes": 0, "tags": ["transformers", "llama", "text-generation"],
        "pipeline_tag": "text-generation", "library_name": "transformers",
        "siblings": [sibling(entry, blobs) for _, entry in sorted(revision.files.items())],
    }
    if blobs:
        info["usedStorage"] = sum(entry.size for entry in revision.files.values())
    return info


def _tree_entry(entry: RepoFile) -> Dict[str, object]:
    data: Dict[str, object] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": entry.path}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def tree_listing(files: Dict[str, RepoFile], prefix: str, recursive: bool) -> List[Dict[str, object]]:
    """The tree API's answer, built from the served names only (never from a folder listing)."""
    base = prefix.strip("/")
    if base and base in files:
        raise HubError(400, None, f"{base} is a file, not a directory")
    start = base + "/" if base else ""
    dirs: Dict[str, None] = {}
    out: List[Dict[str, object]] = []
    for path in sorted(files):
        if not path.startswith(start):
            continue
        parts = path[len(start):].split("/")
        for depth in range(1, len(parts)):
            if depth > 1 and not recursive:
                break
            dirs.setdefault(start + "/".join(parts[:depth]), None)
        if recursive or len(parts) == 1:
            out.append(_tree_entry(files[path]))
    if base and not out and not dirs:
        raise HubError(404, "EntryNotFound", f"{base} does not exist on this revision")
    dir_entries = [{"type": "directory", "oid": git_blob_sha1(len(d), [d.encode()]), "size": 0, "path": d}
                   for d in dirs]
    return dir_entries + out


def printable(text: str, limit: int = 300) -> str:
    """``text`` safe for one log line: control characters escaped, shortened."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


class Catalog:
    """What a server serves: repo id -> revision name -> :class:`Revision`. Safe to share between threads."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._repos: Dict[str, Dict[str, Revision]] = {}

    def add(self, repo_id: str, name: str, revision: Revision) -> None:
        with self.lock:
            self._repos.setdefault(repo_id, {})[name] = revision

    def repo_ids(self) -> List[str]:
        with self.lock:
            return sorted(self._repos)

    def find(self, segments: List[str]) -> Tuple[Optional[str], List[str]]:
        """Split decoded path segments into (known repo id, rest); tries "owner/name" before "name"."""
        with self.lock:
            for n in (2, 1):
                repo_id = "/".join(segments[:n])
                if len(segments) >= n and repo_id in self._repos:
                    return repo_id, segments[n:]
        return None, segments

    def revision(self, repo_id: str, rev: str) -> Optional[Revision]:
        """A revision by name or by commit sha."""
        with self.lock:
            revisions = self._repos.get(repo_id, {})
            if rev in revisions:
                return revisions[rev]
            return next((r for r in revisions.values() if r.sha == rev), None)
