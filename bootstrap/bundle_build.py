"""``llama-bootstrap bundle --output FILE``: one verified archive that carries the project, the environment,
the source and the weights to a machine without network (the format: bundle.py).

The layers are gathered first (bundle_layers.py, bundle_conda.py); then every member is streamed into the tar
once, hashed on the way, and checked against what pins it (the weights lock, the pip lock, the Miniforge pin).
The archive is written to a temp file next to the output and moved into place only when complete: a failed
build leaves nothing at the output path.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from bootstrap import __version__, bundle, bundle_conda, bundle_layers, errors
from bootstrap.bundle_layers import Member
from bootstrap.plan import Plan

TORCH_KINDS = ("cuda", "cpu")


@dataclass(frozen=True)
class BundleRequest:
    output: Path
    platform: str
    repo_root: Path
    plan: Optional[Plan] = None  # the model to bundle (None with demo)
    demo: bool = False  # the demo's tiny model and the demo pip layer instead
    torch: str = "cuda"  # the product pip layer: requirements/<platform>-<torch>.txt
    find_links: Tuple[Path, ...] = ()  # folders holding wheels that exist only on this disk
    workdir: Optional[Path] = None  # demo: where the demo project is prepared (default: a temp folder)
    miniforge_base: Optional[str] = None  # where the Miniforge installer is fetched from (default: the pin's URL)


@dataclass
class BundleReport:
    path: str
    id: str  # sha256 of SHA256SUMS
    sha256: str  # of the whole file
    bytes: int
    members: int
    seconds: float
    index: Dict[str, Any] = field(repr=False, default_factory=dict)
    layers: Dict[str, int] = field(default_factory=dict)  # bytes per layer

    def to_json(self) -> Dict[str, Any]:
        keys = ("platform", "python", "torch", "model", "demo", "conda", "conda_reason", "created_at")
        return {"path": self.path, "id": self.id, "sha256": self.sha256, "bytes": self.bytes, "members": self.members,
                "seconds": round(self.seconds, 3), "layers": self.layers, **{k: self.index.get(k) for k in keys}}


def pip_lock_for(platform: str, torch: str, demo: bool) -> Tuple[str, str]:
    """(the pip lock, relative to the project, and its Python) for the target."""
    from bootstrap.lock import PIP_LOCKS

    rel = f"requirements/demo-{platform}.txt" if demo else f"requirements/{platform}-{torch}.txt"
    python = next((row.python for row in PIP_LOCKS if row.out_file == rel), None)
    if python is None:
        raise errors.UsageError(f"--platform/--torch: there is no pip lock {rel}", argument="--platform",
                                remedy=f"use --platform {' or '.join(bundle.PLATFORMS)} and --torch cuda or cpu")
    return rel, python


def build(request: BundleRequest, log: Callable[[str], None] = lambda _: None) -> BundleReport:
    """Build the bundle. Raises BundleBuildError / NotPinned / UsageError; nothing is left at the output then."""
    started = time.perf_counter()
    output = request.output.absolute()
    if output.is_dir() or not output.parent.is_dir():
        raise errors.UsageError(f"--output: {output} is a folder, or its folder does not exist", argument="--output",
                                remedy="name a file in an existing folder, e.g. --output ./llama-bundle.tar")
    if request.platform not in bundle.PLATFORMS:
        raise errors.UsageError(f"--platform: {request.platform!r} is not one of {', '.join(bundle.PLATFORMS)}",
                                argument="--platform")
    root = request.repo_root.resolve()
    pip_lock, python = pip_lock_for(request.platform, request.torch, request.demo)
    conda_lock = f"conda-{request.platform}.lock"
    bundle_layers.check_release(root, (pip_lock, conda_lock))
    with tempfile.TemporaryDirectory(prefix=".llama-bootstrap-bundle-", dir=str(output.parent)) as tmp:
        work = Path(tmp)
        plan = request.plan if not request.demo else _demo_plan(request.workdir or work / "demo", log)
        if plan is None:
            raise errors.UsageError("no model to bundle", argument="--model")
        repos = bundle_layers.pinned_repos(plan)
        weights = bundle_layers.weights_members(plan, repos)  # all in place? (before anything is fetched)
        members = bundle_layers.project_members(root)
        members += [Member(bundle.MANIFEST, data=bundle_layers.offline_manifest(plan)),
                    bundle_layers.lock_member(plan, repos)]
        _check_members(members + weights)
        members.append(bundle_layers.git_bundle(plan, work, log))
        members += bundle_layers.pip_layer(root / pip_lock, request.platform, python, request.find_links,
                                           work / "wheels", log)
        channel = plan.manifest.profiles[plan.profile_key].conda_channel
        conda, conda_reason = bundle_conda.conda_layer(root, request.platform, work / "conda", channel=channel,
                                                       profile_key=plan.profile_key, log=log,
                                                       miniforge_base=request.miniforge_base)
        if conda_reason:
            log(f"WARNING: {conda_reason}" + ("" if conda else f"; the offline install will fall back to a Python "
                                              f"{python} venv (as install.sh --demo does)"))
        members += conda
        members += weights
        index = _index(request, plan, repos, python, pip_lock, conda_lock, conda, conda_reason)
        _check_members(members)
        _check_disk(output, members)
        digest, file_sha, size = _write(output, members, index, log)
    layers: Dict[str, int] = {}
    for m in members:
        layers[m.layer] = layers.get(m.layer, 0) + index["members"][m.name]["size"]
    report = BundleReport(str(output), digest, file_sha, size, len(members) + 2, time.perf_counter() - started,
                          index, layers)
    return report


def _demo_plan(workdir: Path, log: Callable[[str], None]) -> Plan:
    from bootstrap.demo.scenario import prepare_pulled
    from bootstrap.plan import Overrides, build_plan
    from bootstrap.settings import Settings

    manifest = prepare_pulled(workdir, echo=log)
    return build_plan(Overrides(manifest=manifest), Settings())


def _index(request: BundleRequest, plan: Plan, repos: Sequence[Any], python: str, pip_lock: str, conda_lock: str,
           conda: List[Member], conda_reason: str) -> Dict[str, Any]:
    """BUNDLE.json without its members table: the scalars the installers read come first, one per line."""
    miniforge = next((m.name for m in conda if m.pinned_by == bundle_conda.MINIFORGE_PIN), "")
    return {
        "format": bundle.FORMAT, "kind": "llama-bootstrap bundle",
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "llama_bootstrap": __version__,
        "platform": request.platform, "python": python, "torch": "cpu" if request.demo else request.torch,
        "demo": request.demo, "model": plan.model_key, "manifest": bundle.MANIFEST,
        "weights_lock": bundle.WEIGHTS_LOCK, "pip_lock": pip_lock, "wheels": bundle.WHEELS,
        "conda": "included" if conda else "missing", "conda_reason": conda_reason, "conda_lock": conda_lock,
        "conda_packages": bundle.CONDA, "miniforge": miniforge,
        "source": {"url": plan.manifest.source.url, "ref": plan.manifest.source.ref, "bundle": bundle.SOURCE},
        "repos": [{"repo_id": r.repo_id, "revision": r.revision, "commit": r.commit, "files": len(r.files),
                   "bytes": sum(f.size for f in r.files)} for r in repos],
    }


def _check_members(members: Sequence[Member]) -> None:
    seen: Dict[str, str] = {}
    for m in members:
        why = bundle.name_problem(m.name)
        if why:
            raise errors.BundleBuildError(f"{ascii(m.name)} cannot be packed: it has {why}", layer=m.layer,
                                          remedy="rename the file (bundles carry plain ASCII names only)")
        if m.name.casefold() in seen or m.name in (bundle.INDEX, bundle.SUMS):
            raise errors.BundleBuildError(f"{m.name} would be packed twice", layer=m.layer)
        seen[m.name.casefold()] = m.name


def _check_disk(output: Path, members: Sequence[Member]) -> None:
    need = sum(m.size + 1536 for m in members) + (4 << 20)
    free = shutil.disk_usage(str(output.parent)).free
    if free < need:
        raise errors.DiskSpaceError(f"not enough disk for the bundle: need {need / 1e9:.2f} GB, {free / 1e9:.2f} GB "
                                    f"free at {output.parent}", path=str(output.parent), need=need, free=free,
                                    remedy="free space there, or write the bundle to a bigger disk (--output)")


class _Sink:
    """The tar's output file, hashed as it is written (the sha256 of the whole bundle)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


class _Source:
    """A member's bytes as tarfile reads them, hashed on the way (sha256; and git's blob id when asked)."""

    def __init__(self, raw: BinaryIO, size: int, blob: bool) -> None:
        self.raw, self.sha256 = raw, hashlib.sha256()
        self.sha1 = hashlib.sha1(b"blob %d\0" % size) if blob else None  # noqa: S324 - git's blob id

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)
        return data


def _add(tar: tarfile.TarFile, m: Member, now: int) -> Tuple[str, int]:
    """Pack one member; returns (sha256, size). A pinned member whose bytes differ from its pin raises."""
    with (io.BytesIO(m.data) if m.data is not None else open(m.path, "rb")) as raw:  # type: ignore[arg-type]
        size = len(m.data) if m.data is not None else os.fstat(raw.fileno()).st_size
        mtime = now if m.data is not None else int(os.fstat(raw.fileno()).st_mtime)
        info = tarfile.TarInfo(m.name)
        info.size, info.mtime, info.mode, info.type = size, mtime, 0o755 if m.executable else 0o644, tarfile.REGTYPE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        source = _Source(raw, size, m.blob_id is not None)
        tar.addfile(info, source)  # type: ignore[arg-type]
    got = source.sha256.hexdigest()
    if m.sha256_in and got not in m.sha256_in:
        raise errors.BundleBuildError(f"{m.name}: its sha256 {got} is not what {m.pinned_by} pins "
                                      f"({', '.join(sorted(m.sha256_in)[:3])})", layer=m.layer,
                                      remedy="the file changed after it was verified: run `llama-bootstrap pull "
                                      "--verify` (weights) or build again")
    if m.blob_id is not None and source.sha1 is not None and source.sha1.hexdigest() != m.blob_id:
        raise errors.BundleBuildError(f"{m.name}: its git blob id {source.sha1.hexdigest()} is not what "
                                      f"{m.pinned_by} pins ({m.blob_id})", layer=m.layer,
                                      remedy="run `llama-bootstrap pull --verify`, then build again")
    return got, size


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """A file written next to ``path`` and moved over it only when the block ends without an error."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write(output: Path, members: Sequence[Member], index: Dict[str, Any],
           log: Callable[[str], None]) -> Tuple[str, str, int]:
    """Write the tar (members, BUNDLE.json, SHA256SUMS) to a temp file and move it into place, then
    ``<output>.sha256``. Returns (bundle id, sha256 of the file, its size)."""
    now = int(time.time())
    digests: Dict[str, str] = {}
    table: Dict[str, Dict[str, Any]] = {}
    with _atomic(output) as raw:
        sink = _Sink(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          copybufsize=bundle.CHUNK) as tar:
            layer = None
            for m in members:
                if m.layer != layer:
                    layer = m.layer
                    log(f"packing the {layer} layer")
                digests[m.name], size = _add(tar, m, now)
                table[m.name] = {"size": size, "sha256": digests[m.name]}
            index["unpacked_bytes"] = sum(e["size"] for e in table.values())
            index["members"] = table
            digests[bundle.INDEX], _ = _add(tar, Member(bundle.INDEX, data=bundle.index_json(index)), now)
            sums = bundle.sums_text(digests).encode("ascii")
            _add(tar, Member(bundle.SUMS, data=sums), now)
    file_sha = sink.digest.hexdigest()
    with _atomic(output.with_name(output.name + ".sha256")) as fh:
        fh.write(f"{file_sha}  {output.name}\n".encode("ascii"))
    return hashlib.sha256(sums).hexdigest(), file_sha, sink.size
