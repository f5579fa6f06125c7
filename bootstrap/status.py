"""``status``: what is installed where (the receipt), the env's versions and whether it matches its lock,
whether the weights are pinned and verified, the last smoke result, and the disk each item uses.

Nothing heavy is imported and nothing is run: versions come from the packages' metadata in the env's
site-packages (``importlib.metadata``), the env's Python from ``pyvenv.cfg`` or ``conda-meta``, the lock
match from the stamps the installers wrote, weights and smoke from the state file (sizes and mtimes only,
no hashing).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from bootstrap import __version__
from bootstrap.receipt import CONDA_STAMP, PIP_STAMP, PREVIOUS_POINTER, Entry, Receipt, receipt_path, tree_bytes

PACKAGES = ("torch", "transformers", "llama-bootstrap")
ENV_KINDS = ("env", "venv")


@dataclass
class EnvInfo:
    path: str
    kind: str
    name: Optional[str]  # the stable path (`conda activate` name / the venv path) this env is switched in at
    role: str  # current | previous | kept
    id: str  # the locks it was made from, as the installers name its slot: <name>-<id>
    python: Optional[str]
    versions: Dict[str, Optional[str]]
    matches_lock: Optional[bool]  # None: no lock recorded or no stamp to compare
    lock_detail: str


@dataclass
class Report:
    receipt: str
    receipt_exists: bool
    items: List[Dict[str, Any]] = field(default_factory=list)
    envs: List[EnvInfo] = field(default_factory=list)
    weights: List[Dict[str, Any]] = field(default_factory=list)
    smoke: Optional[Dict[str, Any]] = None
    disk_bytes: int = 0  # what the created items use together

    def to_json(self) -> Dict[str, Any]:
        return {"schema": 1, "status": "ok", "bootstrapper": __version__,
                "receipt": {"path": self.receipt, "exists": self.receipt_exists}, "items": self.items,
                "envs": [asdict(e) for e in self.envs], "weights": self.weights, "smoke": self.smoke,
                "disk_bytes": self.disk_bytes}


# -- an env, read from its files --------------------------------------------------------------------------


def _stamp(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").split()[0]
    except (OSError, IndexError):
        return ""


def _meta_dir(prefix: Path, kind: str) -> Path:
    return prefix / "conda-meta" if kind == "env" else prefix


def stamps(prefix: Path, kind: str) -> Dict[str, str]:
    meta = _meta_dir(prefix, kind)
    return {"conda": _stamp(meta / CONDA_STAMP) if kind == "env" else "", "pip": _stamp(meta / PIP_STAMP)}


def env_id(prefix: Path, kind: str) -> str:
    """The id the installers give an env: the first 12 hex digits of sha256("<conda sha>\\n<pip sha>\\n")."""
    s = stamps(prefix, kind)
    return hashlib.sha256(f"{s['conda']}\n{s['pip']}\n".encode()).hexdigest()[:12]


def python_version(prefix: Path) -> Optional[str]:
    cfg = prefix / "pyvenv.cfg"
    if cfg.is_file():
        found = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+\.\d+)", cfg.read_text(errors="replace"), re.MULTILINE)
        if found:
            return found.group(1)
    meta = sorted((prefix / "conda-meta").glob("python-[0-9]*.json"))
    if meta:
        return meta[0].name.split("-")[1]
    libs = sorted((prefix / "lib").glob("python[0-9]*.[0-9]*"))
    return libs[0].name[len("python"):] if libs else None


def package_versions(prefix: Path, names=PACKAGES) -> Dict[str, Optional[str]]:
    from importlib import metadata  # light: no package of the env is imported

    folders = [str(p) for p in sorted(prefix.glob("lib/python*/site-packages")) + [prefix / "Lib" / "site-packages"]
               if p.is_dir()]
    found: Dict[str, Optional[str]] = {name: None for name in names}
    if not folders:
        return found
    for dist in metadata.distributions(path=folders):
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()
        if name in found and found[name] is None:
            found[name] = dist.version
    return found


def _sha256_file(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def lock_match(entry: Entry, prefix: Path, name_entry: Optional[Entry]) -> tuple:
    """(matches, detail) of the env's stamps against the lock files the installer recorded for its name."""
    source = name_entry or entry
    kind = entry.kind
    have = stamps(prefix, kind)
    wanted = [("conda", source.extra.get("conda_lock")), ("pip", source.extra.get("pip_lock"))]
    wanted = [(layer, lock) for layer, lock in wanted if isinstance(lock, str) and lock]
    if not wanted:
        return None, "no lock recorded for it"
    problems = []
    for layer, lock in wanted:
        digest = _sha256_file(Path(lock))
        if digest is None:
            problems.append(f"{lock} is gone")
        elif not have[layer]:
            problems.append(f"no {layer} stamp")
        elif have[layer] != digest:
            problems.append(f"{Path(lock).name} changed since it was built")
    if not problems:
        return True, "matches " + ", ".join(Path(lock).name for _, lock in wanted)
    return False, "; ".join(problems)


def env_infos(entries: List[Entry]) -> List[EnvInfo]:
    by_path = {e.path: e for e in entries}
    out = []
    for e in entries:
        if e.kind not in ENV_KINDS or not os.path.isdir(e.path) or os.path.islink(e.path):
            continue
        prefix = Path(e.path)
        name = e.extra.get("name") if isinstance(e.extra.get("name"), str) else e.path
        ident = env_id(prefix, e.kind)
        current_path = os.path.realpath(name) if os.path.lexists(name) else ""
        if current_path == os.path.realpath(e.path):
            role = "current"
        else:
            current = Path(current_path) if current_path else None
            previous = _stamp(_meta_dir(current, e.kind) / PREVIOUS_POINTER) if current else ""
            role = "previous" if previous == ident else "kept"
        matches, detail = lock_match(e, prefix, by_path.get(name))
        out.append(EnvInfo(e.path, e.kind, name, role, ident, python_version(prefix), package_versions(prefix),
                           matches, detail))
    return out


# -- weights and smoke, from the state file ------------------------------------------------------------------


def weights_and_smoke(plan: Any) -> tuple:
    from bootstrap.pipeline import pull_fingerprint, smoke_fingerprint
    from bootstrap.pull import pins_of, unchanged_since
    from bootstrap.state import State

    state = State(plan.state_dir)
    pull_rec = state.get("pull")
    pins = pins_of(plan)
    weights = []
    result = (pull_rec or {}).get("result") or {}
    current_pull = bool(pull_rec) and state.get("pull", pull_fingerprint(plan)) is not None
    unchanged = unchanged_since(result) if result else False
    recorded = {r.get("repo_id"): r for r in result.get("repos", []) if isinstance(r, dict)}
    for ref in plan.repo_refs():
        rec = recorded.get(ref.repo_id) or {}
        size_only = len(rec.get("size_only") or {})
        weights.append({
            "repo_id": ref.repo_id, "dir": str(plan.model_dir(ref.repo_id)),
            "pinned_by_lock": bool(pins.get(ref.repo_id)), "pulled": bool(rec),
            "commit": rec.get("commit"), "files_verified": len(rec.get("files") or {}),
            "files_size_only": size_only, "recorded_for_this_manifest": current_pull,
            "verified": bool(rec) and unchanged and not size_only,
            "bytes": tree_bytes(plan.model_dir(ref.repo_id)) if plan.model_dir(ref.repo_id).exists() else 0,
        })
    smoke_rec = state.get("smoke")
    smoke = None
    if smoke_rec:
        res = smoke_rec.get("result") or {}
        current = bool(result) and state.get("smoke", smoke_fingerprint(plan, result)) is not None
        smoke = {"passed": bool(res.get("passed")), "answer": res.get("answer"), "precision": res.get("precision"),
                 "device": res.get("device"), "tokens_per_s": res.get("tokens_per_s"),
                 "finished_at": smoke_rec.get("finished_at"), "current": current}
    return weights, smoke


def _under(path: str, others: List[str]) -> bool:
    return any(path != o and path.startswith(o.rstrip(os.sep) + os.sep) for o in others)


def status(plan: Any) -> Report:
    path = receipt_path(plan.state_dir)
    receipt = Receipt(path)
    report = Report(str(path), receipt.exists)
    created_trees = []
    for e in receipt.entries:
        exists = os.path.lexists(e.path)
        link = os.path.islink(e.path)
        size = 0 if (not exists or link) else tree_bytes(Path(e.path))
        item = {**e.to_json(), "exists": exists, "bytes": size, "symlink_to": os.readlink(e.path) if link else None}
        report.items.append(item)
        if e.created and exists and not link:
            created_trees.append(e.path)
    report.disk_bytes = sum(i["bytes"] for i in report.items if i["path"] in created_trees
                            and not _under(i["path"], created_trees))
    report.envs = env_infos(receipt.entries)
    report.weights, report.smoke = weights_and_smoke(plan)
    return report

