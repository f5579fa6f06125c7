"""What goes into a bundle, layer by layer: the project files, the offline manifest and the model's pins,
the weights, the source as a git bundle and the pip layer as wheels (the conda layer: bundle_conda.py).

Each layer is a list of :class:`Member`: a file (or bytes) and, where a lock pins it, the hash its bytes
must have; bundle_build.py checks that hash while it packs the member, so every byte is read once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from bootstrap import bundle, errors, weightslock
from bootstrap.plan import Plan

BUNDLE_PROFILE = "bundle"
#: The project files a bundle carries (what installing and running need), relative to the project root.
PROJECT_FILES = ("install.sh", "install.ps1", "pyproject.toml", "README.md", "LICENSE", "manifest.schema.json",
                 "environment.yml", "conda-lock.yml", "conda-linux-64.lock", "conda-win-64.lock")
PROJECT_TREES = (("bootstrap", ("*.py", "*.json")), ("requirements", ("*.txt", "*.in")), ("docs", ("*.md",)))
REQUIRED = ("install.sh", "install.ps1", "pyproject.toml", "README.md", "bootstrap/__init__.py")
#: pip's platform tags per bundle platform: glibc 2.28 is the floor of the torch wheels (manylinux_2_28).
LINUX_TAGS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
PIP_PLATFORMS = {"linux-64": LINUX_TAGS, "win-64": ("win_amd64",)}
MANIFEST_HEADER = ("# Written by `llama-bootstrap bundle`: the manifest the bundle was built from, with a `bundle`\n"
                   "# profile that takes the source and the weights from the bundle itself (no network).\n")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Member:
    """One file of the bundle: a file on disk or bytes, and what its bytes must hash to (if pinned)."""

    name: str
    path: Optional[Path] = None
    data: Optional[bytes] = None
    executable: bool = False
    layer: str = "project"
    sha256_in: FrozenSet[str] = frozenset()  # one of these (empty: not pinned by a lock)
    blob_id: Optional[str] = None  # or this git blob id (small files the weights lock pins that way)
    pinned_by: str = ""

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size


def _last_lines(text: str, n: int = 4) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


# -- the project -------------------------------------------------------------------------------------


def check_release(root: Path, needed: Sequence[str]) -> None:
    """``root`` must be a llama-bootstrap project holding ``needed`` too (the locks of the target)."""
    missing = [rel for rel in (*REQUIRED, *needed) if not (root / rel).is_file()]
    if missing:
        raise errors.UsageError(f"--repo: {root} is not a llama-bootstrap project (missing: {', '.join(missing)})",
                                argument="--repo", remedy="pass --repo with the checkout or unpacked release that "
                                "holds install.sh, requirements/ and bootstrap/")


def project_members(root: Path) -> List[Member]:
    paths = [root / rel for rel in PROJECT_FILES if (root / rel).is_file()]
    for folder, patterns in PROJECT_TREES:
        found = set()
        for pattern in patterns:
            found.update(p for p in (root / folder).rglob(pattern)
                         if p.is_file() and "__pycache__" not in p.relative_to(root).parts)
        paths.extend(sorted(found))
    return [Member(p.relative_to(root).as_posix(), path=p, executable=os.access(p, os.X_OK) and p.suffix == ".sh")
            for p in paths]


def offline_manifest(plan: Plan) -> bytes:
    """The plan's manifest with the ``bundle`` profile as default: the source from the git bundle and the
    weights from the bundle's folder (a ``dir`` source: pinned repos only), the lock required, local paths."""
    import yaml

    from bootstrap.manifest import parse_manifest

    doc = yaml.safe_load(plan.manifest_path.read_text(encoding="utf-8"))
    profile = plan.manifest.profiles[plan.profile_key]
    doc["model"] = plan.model_key
    doc["profile"] = BUNDLE_PROFILE
    doc["source"]["dir"] = _inside(plan.manifest.source.dir, "Llama2-Chinese")
    doc["weights"] = {"dir": _inside(plan.manifest.weights.dir, "models"), "lock": bundle.WEIGHTS_LOCK,
                      "require_lock": True}
    doc.setdefault("profiles", {})[BUNDLE_PROFILE] = {
        "hf_endpoint": profile.hf_endpoint, "source_url": bundle.SOURCE,
        "sources": [{"kind": "dir", "path": bundle.WEIGHTS}],
        "description": "offline: the source and the weights come from this bundle (hf_endpoint is never asked)"}
    text = MANIFEST_HEADER + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    parse_manifest(text, source=bundle.MANIFEST)  # what we write must load (raises ManifestError otherwise)
    return text.encode("utf-8")


def _inside(value: str, default: str) -> str:
    """A relative path stays (inside the unpacked bundle); an absolute one of this machine does not travel."""
    return default if Path(value).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", value) else value


# -- the weights -------------------------------------------------------------------------------------


def pinned_repos(plan: Plan) -> List[weightslock.LockedRepo]:
    """The pins of every repo the model needs; a model must be pinned to be bundled."""
    lock = weightslock.load(plan.weights_lock_path) if plan.weights_lock_path else None
    out = []
    for ref in plan.repo_refs():
        pin = lock.pin(ref.repo_id, ref.revision, plan.model_key) if lock else None
        if pin is None:
            raise errors.NotPinned(
                f"{ref.repo_id}@{ref.revision} is not pinned in {plan.weights_lock_path}; only pinned weights are "
                "bundled (the target checks every file against the lock)", repo_id=ref.repo_id,
                remedy=f"run `llama-bootstrap lock --weights --model {plan.model_key}` on a trusted network, then "
                "`llama-bootstrap pull`")
        out.append(pin)
    return out


def lock_member(plan: Plan, repos: Sequence[weightslock.LockedRepo]) -> Member:
    lock = weightslock.WeightsLock(version=weightslock.LOCK_VERSION,
                                   models={plan.model_key: weightslock.ModelPins(repos=tuple(repos))})
    return Member(bundle.WEIGHTS_LOCK, data=weightslock.dump(lock).encode("utf-8"))


def weights_members(plan: Plan, repos: Sequence[weightslock.LockedRepo]) -> List[Member]:
    """Every pinned file, found where pull put it; its bytes are checked against the lock while packing."""
    out = []
    for repo in repos:
        folder = plan.model_dir(repo.repo_id)
        wrong = []
        for f in repo.files:
            path = folder.joinpath(*f.path.split("/"))
            size = path.stat().st_size if path.is_file() else None
            if size != f.size:
                wrong.append(f"{f.path} ({'missing' if size is None else f'{size} bytes, the lock says {f.size}'})")
                continue
            out.append(Member(f"{bundle.WEIGHTS}/{repo.repo_id}/{f.path}", path=path, layer="weights",
                              sha256_in=frozenset([f.sha256]) if f.sha256 else frozenset(),
                              blob_id=None if f.sha256 else f.blob_id,
                              pinned_by=f"the weights lock ({repo.repo_id}@{repo.commit[:12]})"))
        if wrong:
            raise errors.BundleBuildError(
                f"{repo.repo_id}: {len(wrong)} pinned file(s) are not in place in {folder}: {', '.join(wrong[:5])}",
                layer="weights", remedy=f"run `llama-bootstrap pull --model {plan.model_key}` first (it fetches and "
                "verifies them against the lock)")
    return out


# -- the source ----------------------------------------------------------------------------------------


def git_bundle(plan: Plan, work: Path, log: Callable[[str], None]) -> Member:
    """A git bundle holding the pinned commit (as refs/heads/pinned), made in a bare clone under ``work``
    from the local checkout when it has the commit, else from the source URL."""
    from bootstrap.vcs import GIT_NETWORK_OPTS, Git

    git = Git()
    ref = plan.manifest.source.ref
    have_local = (plan.source_dir / ".git").exists() and \
        git("cat-file", "-e", f"{ref}^{{commit}}", cwd=plan.source_dir).returncode == 0
    origin = str(plan.source_dir) if have_local else plan.source_url
    bare, dest = work / "source.git", work / "source.gitbundle"
    log(f"source: {ref[:12]} from {origin}")
    proc = git(*GIT_NETWORK_OPTS, "clone", "--bare", "--quiet", "--", origin, str(bare))
    if proc.returncode != 0:
        raise errors.BundleBuildError(f"cannot clone the source {origin}: {_last_lines(proc.stderr, 1)}",
                                      layer="source", remedy="run `llama-bootstrap clone` first, or check the network")
    steps = (("update-ref", "refs/heads/pinned", ref), ("bundle", "create", "--quiet", str(dest), "refs/heads/pinned"),
             ("bundle", "verify", "--quiet", str(dest)))
    for args in steps:
        proc = git(*args, cwd=bare)
        if proc.returncode != 0:
            raise errors.BundleBuildError(f"git {args[0]} {args[1]} failed for commit {ref} of {origin}: "
                                          f"{_last_lines(proc.stderr, 1)}", layer="source",
                                          remedy="check source.ref in the manifest (a commit of that repository)")
    heads = git.out("bundle", "list-heads", str(dest), cwd=bare) or ""
    if f"{ref} refs/heads/pinned" not in heads.splitlines():
        raise errors.BundleBuildError(f"the git bundle does not hold {ref} (heads: {heads!r})", layer="source")
    return Member(bundle.SOURCE, path=dest, layer="source")


# -- the pip layer -------------------------------------------------------------------------------------


def normal_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def hashed_requirements(text: str) -> Dict[str, Tuple[str, FrozenSet[str]]]:
    """{normalised name: (version, sha256 set)} from a ``--generate-hashes`` lock."""
    out: Dict[str, Tuple[str, FrozenSet[str]]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            name, _, version = line.split(" ")[0].partition("==")
            current = normal_name(name)
            out[current] = (version, frozenset())
        elif current and line.strip().startswith("--hash=sha256:"):
            digest = line.strip().split(":", 1)[1].rstrip(" \\")
            out[current] = (out[current][0], out[current][1] | {digest})
        elif not line.startswith(" "):
            current = None
    return out


def pip_download_argv(lock: Path, platform: str, python: str, dest: Path, find_links: Sequence[Path]) -> List[str]:
    abi = "cp" + python.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--require-hashes",
            "--no-deps", "--only-binary", ":all:", "--dest", str(dest), "-r", str(lock),
            "--python-version", python, "--implementation", "cp", "--abi", abi]
    for tag in PIP_PLATFORMS[platform]:
        argv += ["--platform", tag]
    for folder in find_links:
        argv += ["--find-links", str(folder)]
    return argv


def pip_env(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """No pip configuration from this machine: no config file, no PIP_* variable (what a bundle holds must
    not depend on local package folders or indexes that pip.conf adds)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def pip_layer(lock: Path, platform: str, python: str, find_links: Sequence[Path], dest: Path,
              log: Callable[[str], None], runner: Runner = subprocess.run) -> List[Member]:
    """The wheels of ``lock`` for the target, downloaded with --require-hashes; each one must be a file the lock
    pins (checked again while packing)."""
    text = lock.read_text(encoding="utf-8")
    if text.startswith("# llama-bootstrap: incomplete lock"):
        raise errors.BundleBuildError(f"{lock.name} is not fully hashed (see its header), so it cannot be bundled",
                                      layer="pip", remedy="use --torch cpu, or re-lock it with `llama-bootstrap lock`")
    wanted = hashed_requirements(text)
    dest.mkdir(parents=True, exist_ok=True)
    log(f"pip layer: {len(wanted)} wheels of {lock.name} for {platform}, Python {python}")
    proc = runner(pip_download_argv(lock, platform, python, dest, find_links), env=pip_env(), capture_output=True,
                  text=True, check=False)
    if proc.returncode != 0:
        raise errors.BundleBuildError(
            f"pip download of {lock.name} failed: {_last_lines(proc.stderr)}", layer="pip",
            remedy="check the network to the package index; a wheel that exists only on this disk (such as a local "
            "torch build) needs --find-links DIR")
    out, seen = [], set()
    for path in sorted(dest.iterdir()):
        name = normal_name(path.name.split("-", 1)[0]) if path.suffix == ".whl" else None
        if name not in wanted or name in seen:
            raise errors.BundleBuildError(f"pip download left {path.name}, which is not one wheel of {lock.name}",
                                          layer="pip")
        seen.add(name)
        out.append(Member(f"{bundle.WHEELS}/{path.name}", path=path, layer="pip", sha256_in=wanted[name][1],
                          pinned_by=lock.name))
    missing = sorted(set(wanted) - seen)
    if missing:
        raise errors.BundleBuildError(f"pip download gave no wheel for {', '.join(missing)}", layer="pip")
    return out
