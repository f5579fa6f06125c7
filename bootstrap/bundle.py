"""The offline bundle: its format, and ``llama-bootstrap bundle --verify``.

A bundle is one plain tar (weights do not compress) of regular files only::

    install.sh, install.ps1, pyproject.toml, bootstrap/..., requirements/..., conda-*.lock, ...
                                       the project, at the version that built the bundle
    manifest.yaml, weights.lock.yaml   the manifest with a ``bundle`` profile (source and weights come from
                                       the bundle itself) and the model's pins
    bundle/source.gitbundle            the Llama2-Chinese source as a git bundle holding the pinned commit
    bundle/wheels/*.whl                the pip layer for the target platform and Python (hash-locked)
    bundle/conda/...                   the explicit conda lock's packages and the pinned Miniforge installer,
                                       when the channels could be reached (BUNDLE.json says which)
    bundle/weights/<owner>/<name>/...  the model's files (a LoRA's base too), verified against the lock
    BUNDLE.json                        the index: format, platform, created-at, model, ... and the size and
                                       sha256 of every member
    SHA256SUMS                         every member but itself (BUNDLE.json included), in the form
                                       ``sha256sum -c`` and PowerShell's Get-FileHash can check without Python

SHA256SUMS is the root of the bundle: its own sha256 is the bundle's id (the builder prints it; the installers
name the install folder after it). A member may not be a link, a device or a folder entry, and its name may
not be absolute, contain ``..`` or use characters outside a small safe set.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional

from bootstrap import errors

FORMAT = 1
INDEX = "BUNDLE.json"
SUMS = "SHA256SUMS"
MANIFEST = "manifest.yaml"
WEIGHTS_LOCK = "weights.lock.yaml"
SOURCE = "bundle/source.gitbundle"
WHEELS = "bundle/wheels"
CONDA = "bundle/conda"
WEIGHTS = "bundle/weights"
PLATFORMS = ("linux-64", "win-64")
CHUNK = 1 << 20
MAX_SMALL = 64 << 20  # BUNDLE.json and SHA256SUMS are read into memory: a bound against a hostile archive

_PART = re.compile(r"^[A-Za-z0-9_.+@=,~][A-Za-z0-9_.+@=,~-]*$")
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` may not be a member name, or None. Names are checked the same way by the installers."""
    if not name:
        return "an empty name"
    if name.startswith("/"):
        return "an absolute name"
    parts = name.split("/")
    if any(p in (".", "..") for p in parts):
        return "a '.' or '..' component"
    for part in parts:
        if not part:
            return "an empty component (//)"
        if not _PART.match(part):
            return "characters outside A-Z a-z 0-9 . _ + @ = , ~ - (or a part starting with '-')"
    if len(name) > 400:
        return "longer than 400 characters"
    return None


def member_problem(info: tarfile.TarInfo) -> Optional[str]:
    """Why a tar member may not be in a bundle (its type first, then its name), or None."""
    kinds = ((info.issym, "a symbolic link"), (info.islnk, "a hard link"), (info.ischr, "a character device"),
             (info.isblk, "a block device"), (info.isfifo, "a FIFO"), (info.isdir, "a folder entry"))
    for test, what in kinds:
        if test():
            return f"is {what} (a bundle holds regular files only)"
    if not info.isreg() or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return f"has tar type {info.type!r} (a bundle holds regular files only)"
    why = name_problem(info.name)
    return f"has {why}" if why else None


def sums_text(digests: Dict[str, str]) -> str:
    """SHA256SUMS: ``<sha256>  <name>`` per line, in the given order."""
    return "".join(f"{digest}  {name}\n" for name, digest in digests.items())


def parse_sums(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        match = _SUM_LINE.match(line)
        if not match or name_problem(match.group(2)):
            raise errors.BundleError(f"{SUMS}: line {i} is not '<sha256>  <name>' with a safe name", member=SUMS)
        if match.group(2) in out:
            raise errors.BundleError(f"{SUMS}: {match.group(2)} is listed twice", member=SUMS)
        out[match.group(2)] = match.group(1)
    return out


def index_json(index: Dict[str, Any]) -> bytes:
    """BUNDLE.json bytes. One top-level key per line (indent 1), so the installers can read the top-level
    strings without a JSON parser; the scalars come first."""
    return (json.dumps(index, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def parse_index(data: bytes) -> Dict[str, Any]:
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.BundleError(f"{INDEX} is not valid JSON: {exc}", member=INDEX) from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else None
        raise errors.BundleError(f"{INDEX}: format {got!r} is not {FORMAT} (made by another version?)",
                                 member=INDEX, remedy="verify and install it with the llama-bootstrap that built it "
                                 "(its install.sh is inside the bundle)")
    members = index.get("members")
    if not isinstance(members, dict):
        raise errors.BundleError(f"{INDEX} has no 'members' table", member=INDEX)
    for name, entry in members.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
                and isinstance(entry.get("sha256"), str) and _HEX64.match(entry["sha256"])):
            raise errors.BundleError(f"{INDEX}: the entry for {ascii(name)} needs size and sha256", member=INDEX)
    return index


@dataclass(frozen=True)
class BundleInfo:
    """A verified bundle."""

    path: str
    id: str  # sha256 of SHA256SUMS
    index: Dict[str, Any]
    members: int
    bytes: int  # the data of every member: what unpacking writes

    def to_json(self) -> Dict[str, Any]:
        keys = ("format", "created_at", "platform", "python", "model", "demo", "torch", "conda", "conda_reason",
                "llama_bootstrap")
        return {"path": self.path, "id": self.id, "members": self.members, "bytes": self.bytes,
                **{k: self.index.get(k) for k in keys}}


def _read_small(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    if info.size > MAX_SMALL:
        raise errors.BundleError(f"{info.name} is {info.size} bytes; that is not a bundle index", member=info.name)
    handle = tar.extractfile(info)
    assert handle is not None  # a regular file, checked before
    return handle.read()


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _members(tar: tarfile.TarFile, shown: str) -> List[tarfile.TarInfo]:
    """Every member header; the first unsafe one (type, name, a name given twice) raises. Nothing is read yet."""
    seen: Dict[str, str] = {}
    infos = []
    for info in tar:
        why = member_problem(info)
        if why:
            raise errors.BundleError(f"{shown}: member {ascii(info.name)} {why}", path=shown, member=info.name)
        folded = info.name.casefold()
        if folded in seen:
            raise errors.BundleError(f"{shown}: member {info.name} is in the archive twice (first as {seen[folded]})",
                                     path=shown, member=info.name)
        seen[folded] = info.name
        infos.append(info)
    return infos


def verify(path: Path, log: Callable[[str], None] = lambda _: None) -> BundleInfo:
    """Check a bundle without unpacking it: the member headers first (types, names), then the index against
    SHA256SUMS, then every member's bytes. Raises BundleError naming the first bad member."""
    shown = str(path)
    if not path.is_file():
        raise errors.UsageError(f"--verify: {shown} is not a file", argument="--verify",
                                remedy="pass the path of a bundle made by `llama-bootstrap bundle --output FILE`")
    try:
        with tarfile.open(path, mode="r:") as tar:
            infos = _members(tar, shown)
            by_name = {i.name: i for i in infos}
            for required in (INDEX, SUMS):
                if required not in by_name:
                    raise errors.BundleError(f"{shown} has no {required}: not a llama-bootstrap bundle", path=shown,
                                             member=required)
            sums_bytes = _read_small(tar, by_name[SUMS])
            try:
                sums = parse_sums(sums_bytes.decode("ascii"))
            except UnicodeDecodeError:
                raise errors.BundleError(f"{SUMS} is not ASCII", path=shown, member=SUMS) from None
            index = parse_index(_read_small(tar, by_name[INDEX]))
            _check_lists(infos, sums, index["members"], shown)
            log(f"{len(infos)} members, names and types safe; hashing every member")
            for info in infos:
                if info.name == SUMS:  # the root: its own hash is the id
                    continue
                handle = tar.extractfile(info)
                assert handle is not None
                got = _sha256(handle)
                if got != sums[info.name]:
                    raise errors.BundleError(f"{shown}: member {info.name} does not match its sha256 (want: "
                                             f"{sums[info.name]}, got: {got})", path=shown, member=info.name)
    except (tarfile.TarError, EOFError) as exc:
        raise errors.BundleError(f"{shown} is not a complete plain tar archive ({exc})", path=shown) from None
    except OSError as exc:
        raise errors.BundleError(f"cannot read {shown}: {exc.strerror or exc}", path=shown,
                                 remedy="check the disk or medium the bundle is on") from None
    return BundleInfo(shown, hashlib.sha256(sums_bytes).hexdigest(), index, len(infos),
                      sum(i.size for i in infos))


def _check_lists(infos: List[tarfile.TarInfo], sums: Dict[str, str], listed: Dict[str, Any], shown: str) -> None:
    """Every member is in SHA256SUMS and (but the two index files) in BUNDLE.json with the same size and hash."""
    names = [i.name for i in infos]
    for name in sums:
        if name not in names or name == SUMS:
            raise errors.BundleError(f"{shown}: {SUMS} lists {name}, which is not a member", path=shown, member=name)
    for name in listed:
        if name not in sums or name == INDEX:
            raise errors.BundleError(f"{shown}: {INDEX} lists {name}, which is not a member", path=shown, member=name)
    for info in infos:
        if info.name == SUMS:
            continue
        if info.name not in sums:
            raise errors.BundleError(f"{shown}: member {info.name} is not listed in {SUMS}", path=shown,
                                     member=info.name)
        if info.name == INDEX:
            continue
        entry = listed.get(info.name)
        if entry is None:
            raise errors.BundleError(f"{shown}: member {info.name} is not listed in {INDEX}", path=shown,
                                     member=info.name)
        if entry["size"] != info.size or entry["sha256"] != sums[info.name]:
            raise errors.BundleError(f"{shown}: member {info.name}: {INDEX} and {SUMS} disagree", path=shown,
                                     member=info.name)
