"""The weights lock: for each model key, every repo it needs, pinned to a commit, with the size and
hash of every file ``pull`` selects.

``weights.lock.yaml`` sits next to the manifest (``weights.lock``). It is written by
``llama-bootstrap lock --weights`` on a trusted network and reviewed like any lock; ``pull`` then
checks whatever a source says against it (commit, file set, every byte), so a mirror, ModelScope or
a USB disk can only deliver the pinned bytes. Reading is strict like the manifest (schema-checked,
errors name the field and line, exit 2); writing is atomic.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from bootstrap import errors
from bootstrap.names import name_problem
from bootstrap.schema import Loc, Rule, Section, mapping, sequence, value

LOCK_VERSION = 1
_COMMIT = r"^[0-9a-f]{40}$"
_SHA256 = r"^[0-9a-f]{64}$"
_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
_KEY = r"^[a-z0-9][a-z0-9._-]*$"
HEADER = ("# The weights lock: written by `llama-bootstrap lock --weights`; review every change like a code change.\n"
          "# pull checks every source (Hub, mirror, ModelScope, a folder) against it: commit, file set, sha256.\n")


def _file_name(name: str) -> str:
    why = name_problem(name)
    if why:
        raise ValueError(f"{ascii(name)} is not a plain relative file name ({why})")
    return name


@dataclass(frozen=True)
class LockedFile(Section):
    """One file of a pinned repo: its size and the hash it must have."""

    path: str = value(Rule("string", check=_file_name))
    size: int = value(Rule("integer", ge=0))
    sha256: Optional[str] = value(Rule("string", nullable=True, pattern=_SHA256,
                                       pattern_hint="64 lowercase hex digits"), None)
    blob_id: Optional[str] = value(Rule("string", nullable=True, pattern=_COMMIT,
                                        pattern_hint="a git blob id (40 lowercase hex digits)"), None)

    def cross_check(self) -> List[Tuple[Loc, str]]:
        if not self.sha256 and not self.blob_id:
            return [((), "a locked file needs sha256 or blob_id")]
        return []

    @property
    def want(self) -> Tuple[str, str]:
        """(algorithm, hex digest) the file must hash to: sha256 when known, else git's blob id."""
        return ("sha256", self.sha256) if self.sha256 else ("git-blob", self.blob_id or "")


@dataclass(frozen=True)
class LockedRepo(Section):
    """One repo at one commit."""

    repo_id: str = value(Rule("string", pattern=_REPO_ID, pattern_hint="a Hub repo id like 'owner/name'"))
    revision: str = value(Rule("string", min_length=1, max_length=255, pattern=r"^[^\s]+$",
                               pattern_hint="a revision without spaces"))
    commit: str = value(Rule("string", pattern=_COMMIT, pattern_hint="a full commit id (40 lowercase hex digits)"))
    files: Tuple[LockedFile, ...] = sequence(LockedFile, required=True, min_items=1, max_items=10_000)

    def cross_check(self) -> List[Tuple[Loc, str]]:
        seen: Dict[str, int] = {}
        for i, f in enumerate(self.files):
            if f.path.casefold() in seen:
                first = seen[f.path.casefold()]
                return [(("files", str(i), "path"), f"{f.path!r} is listed twice (first as entry {first})")]
            seen[f.path.casefold()] = i
        return []

    def by_path(self) -> Dict[str, LockedFile]:
        return {f.path: f for f in self.files}


@dataclass(frozen=True)
class ModelPins(Section):
    """The repos one model key needs (a LoRA's base first)."""

    repos: Tuple[LockedRepo, ...] = sequence(LockedRepo, required=True, min_items=1, max_items=8)


@dataclass(frozen=True)
class WeightsLock(Section):
    """The llama-bootstrap weights lock."""

    version: int = value(Rule("integer", choices=(LOCK_VERSION,), description="lock format version; this tool "
                                                                               "reads 1"))
    models: Dict[str, ModelPins] = mapping(ModelPins, key_pattern=_KEY, min_entries=0,
                                           key_hint="a model key of the manifest", description="pins per model key")

    def pin(self, repo_id: str, revision: str, model_key: Optional[str] = None) -> Optional[LockedRepo]:
        """The pin for ``repo_id`` at ``revision`` (the model's own entry first, then any model's)."""
        keys = ([model_key] if model_key in self.models else []) + [k for k in self.models if k != model_key]
        for key in keys:
            for repo in self.models[key].repos:
                if repo.repo_id == repo_id and revision in (repo.revision, repo.commit):
                    return repo
        return None

    def repos(self) -> Iterator[Tuple[str, LockedRepo]]:
        for key, pins in self.models.items():
            for repo in pins.repos:
                yield key, repo


def load(path: Path) -> Optional[WeightsLock]:
    """The lock at ``path``; None when there is no file there. Raises WeightsLockError (exit 2)."""
    from bootstrap.manifest import load_manifest

    if not os.path.lexists(path):
        return None
    return load_manifest(path, cls=WeightsLock, error=errors.WeightsLockError, what="weights lock")


def empty() -> WeightsLock:
    return WeightsLock(version=LOCK_VERSION, models={})


def as_data(lock: WeightsLock) -> Dict[str, Any]:
    """Plain data in a stable order, None-valued keys left out (what the YAML file holds)."""
    def file_data(f: LockedFile) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": f.path, "size": f.size}
        if f.sha256:
            out["sha256"] = f.sha256
        if f.blob_id and not f.sha256:
            out["blob_id"] = f.blob_id
        return out

    return {"version": lock.version, "models": {
        key: {"repos": [{"repo_id": r.repo_id, "revision": r.revision, "commit": r.commit,
                         "files": [file_data(f) for f in sorted(r.files, key=lambda f: f.path)]}
                        for r in pins.repos]}
        for key, pins in sorted(lock.models.items())}}


def dump(lock: WeightsLock) -> str:
    import yaml

    return HEADER + yaml.safe_dump(as_data(lock), sort_keys=False, allow_unicode=True, width=200)


def write(path: Path, lock: WeightsLock) -> None:
    """Write atomically (temp file next to it, then os.replace)."""
    text = dump(lock)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def diff_repo(old: LockedRepo, new: LockedRepo) -> List[str]:
    """Human-readable lines of what changed between two pins of the same repo."""
    lines: List[str] = []
    if old.commit != new.commit:
        lines.append(f"{new.repo_id}: commit {old.commit} -> {new.commit}")
    before, after = old.by_path(), new.by_path()
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None:
            lines.append(f"{new.repo_id}: + {name} ({b.size} bytes, {b.want[0]} {b.want[1]})")  # type: ignore[union-attr]
        elif b is None:
            lines.append(f"{new.repo_id}: - {name}")
        elif (a.size, a.want) != (b.size, b.want):
            lines.append(f"{new.repo_id}: ~ {name}: {a.size} bytes {a.want[1]} -> {b.size} bytes {b.want[1]}")
    return lines
