"""``lock --weights``: pin the weights of one model (or all) from a Hub over TLS into the weights lock.

For each repo a model needs (a LoRA's base too) it asks the Hub for the commit the revision points to
and the files ``pull`` would select, with their sizes and hashes, and writes them to the lock. New
entries are added; an entry that already exists is never changed silently: a different commit or hash
is reported as a diff and written only with ``update=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

from bootstrap import errors, weightslock
from bootstrap.names import check_names
from bootstrap.plan import Plan
from bootstrap.sources import RepoRef, SourceSpec, open_source
from bootstrap.weightslock import LockedFile, LockedRepo, ModelPins


@dataclass
class PinReport:
    path: str
    added: List[str] = field(default_factory=list)  # "model key: repo@commit"
    unchanged: List[str] = field(default_factory=list)
    updated: List[str] = field(default_factory=list)
    drift: List[str] = field(default_factory=list)  # diff lines not applied (needs --update)

    def to_json(self) -> Dict[str, object]:
        return {"lock": self.path, "added": self.added, "unchanged": self.unchanged, "updated": self.updated,
                "drift": self.drift}


def _hub_spec(plan: Plan) -> SourceSpec:
    """The hub pins are read from: the profile's hf_endpoint (or --endpoint / HF_ENDPOINT), never a mirror
    from the sources list."""
    spec = SourceSpec("hub", plan.endpoint, "the hub endpoint")
    if not spec.location.startswith("https://"):
        from urllib.parse import urlsplit

        from bootstrap.urls import is_loopback_host

        if not is_loopback_host(urlsplit(spec.location).hostname or ""):
            raise errors.UsageError(f"{spec.origin}: pins are read over TLS only ({spec})", argument="--endpoint",
                                    remedy="run `lock --weights` against an https Hub or mirror")
    return spec


def pin_repo(plan: Plan, ref: RepoRef, log: Callable[[str], None]) -> LockedRepo:
    """The pin of ``ref`` as the hub says now: commit + every selected file with its hash."""
    from bootstrap.pull import select_files

    spec = _hub_spec(plan)
    source = open_source(spec, plan.token)
    try:
        remote = source.listing(ref, None)
    finally:
        source.close()
    check_names([f.path for f in remote.files], source=source.label, repo_id=ref.repo_id)
    chosen, _ = select_files(remote.files)
    files = []
    for f in chosen:
        if not f.sha256 and not f.blob_id:
            raise errors.UnverifiableFile(f"{ref.repo_id}: {source.label} gives no hash for {ascii(f.path)}; it "
                                          "cannot be pinned", repo_id=ref.repo_id, filename=f.path)
        files.append(LockedFile(path=f.path, size=f.size, sha256=f.sha256, blob_id=None if f.sha256 else f.blob_id))
    log(f"{ref.repo_id}@{ref.revision} is commit {remote.commit} ({len(files)} files) at {source.label}")
    return LockedRepo(repo_id=ref.repo_id, revision=ref.revision, commit=remote.commit,
                      files=tuple(sorted(files, key=lambda f: f.path)))


def lock_weights(plans: List[Tuple[str, Plan]], *, update: bool, log: Callable[[str], None] = lambda _: None,
                 pinner: Optional[Callable[[Plan, RepoRef], LockedRepo]] = None) -> PinReport:
    """Pin every (model key, plan) into the plans' weights lock. Raises LockDrift after writing the
    additions when an existing pin differs and ``update`` is False."""
    if not plans:
        raise errors.UsageError("no model to pin", argument="--model")
    path = plans[0][1].weights_lock_path
    assert path is not None
    current = weightslock.load(path) or weightslock.empty()
    report = PinReport(str(path))
    models = dict(current.models)
    pin = pinner or (lambda plan, ref: pin_repo(plan, ref, log))
    for key, plan in plans:
        repos = []
        old_entry = models.get(key)
        old_repos = {r.repo_id: r for r in old_entry.repos} if old_entry else {}
        for ref in plan.repo_refs():
            new = pin(plan, ref)
            old = old_repos.get(ref.repo_id)
            label = f"{key}: {ref.repo_id}@{new.commit[:12]}"
            if old is None or old.revision != new.revision:
                report.added.append(label)
                repos.append(new)
            elif not weightslock.diff_repo(old, new):
                report.unchanged.append(label)
                repos.append(old)
            elif update:
                report.updated.append(label)
                report.drift.extend(weightslock.diff_repo(old, new))
                repos.append(new)
            else:
                report.drift.extend(weightslock.diff_repo(old, new))
                repos.append(old)
        models[key] = ModelPins(repos=tuple(repos))
    new_lock = replace(current, models=models)
    if weightslock.as_data(new_lock) != weightslock.as_data(current) or not path.exists():
        try:
            weightslock.write(path, new_lock)
        except OSError as exc:
            raise errors.StepFailed(f"cannot write the weights lock {path}: {exc.strerror}",
                                    remedy="check that its folder is writable") from exc
    if report.drift and not update:
        raise errors.LockDrift(
            f"the weights changed upstream for {len(report.drift)} pinned item(s); the lock was NOT changed for them:"
            "\n  " + "\n  ".join(report.drift[:40]), diff=report.drift,
            remedy="review the diff, then run again with --update to accept it")
    return report

