"""``run``: check -> clone -> pull -> smoke, resumable, under one lock, with one log.

Each step's record in the state file carries a fingerprint of what it did. A step whose record
still holds is not redone: a second ``run`` with nothing changed does no network transfer, no
hashing and no model load. ``check`` gates work: it runs whenever a later step has work to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from bootstrap import errors
from bootstrap.fsutil import path_error
from bootstrap.plan import Plan
from bootstrap.receipt import Recorder
from bootstrap.redact import scrub, scrub_obj
from bootstrap.state import STEPS, State, close_log, open_log, run_lock


@dataclass(frozen=True)
class RunOptions:
    skip: Sequence[str] = ()
    force: Sequence[str] = ()  # redo these even if recorded (pull: re-verify every file too)
    only: Sequence[str] = ()  # run just these steps, always (the single-step commands)
    verify: bool = False
    offline_check: bool = False
    wait_s: float = 0.0
    progress: bool = False
    pull_retries: Optional[int] = None
    pull_backoff_s: Optional[float] = None
    connections: Optional[int] = None  # per file (pull --connections)
    require_lock: bool = False
    allow_size_only: bool = False


@dataclass
class StepOutcome:
    step: str
    status: str  # done | cached | skipped | failed
    seconds: float
    detail: str
    result: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # shown and printed as --json: never a secret
        self.detail = scrub(self.detail)
        self.result = scrub_obj(self.result)


@dataclass
class RunResult:
    steps: List[StepOutcome]
    log_path: str
    seconds: float

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    def to_json(self) -> Dict[str, Any]:
        return {"status": "ok" if self.ok else "fail", "seconds": round(self.seconds, 3), "log": self.log_path,
                "steps": [s.__dict__ for s in self.steps]}


def _interpreter() -> List[str]:
    """Which Python environment: the same env reached as python, python3 or via a symlink is one."""
    return [os.path.realpath(sys.prefix), platform.python_version()]


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def clone_fingerprint(plan: Plan) -> Dict[str, Any]:
    return {"url": plan.source_url, "ref": plan.manifest.source.ref, "dir": str(plan.source_dir)}


def pull_fingerprint(plan: Plan) -> Dict[str, Any]:
    """What pull would do now: the repos, where they go, and the commits the weights lock pins them to."""
    from bootstrap.pull import pins_of, repos_to_pull

    return {"repos": repos_to_pull(plan), "weights_dir": str(plan.weights_dir), "pins": pins_of(plan)}


def pull_summary(result: Dict[str, Any]) -> str:
    repos = result.get("repos", [])
    n_dl = sum(len(r["downloaded"]) for r in repos)
    n_ok = sum(len(r["files"]) for r in repos)
    n_size = sum(len(r.get("size_only") or {}) for r in repos)
    size = sum(r["bytes_total"] for r in repos)
    commits = ", ".join(f"{r['repo_id']}@{r['commit'][:12]}" for r in repos)
    text = f"{size / 1e9:.3f} GB in place ({commits}); {n_dl} downloaded, {n_ok} verified by hash"
    if n_size:
        text += f", {n_size} checked by size only (NOT verified)"
    return text + ("; pinned by the weights lock" if result.get("pinned") else
                   "; NOT pinned (`llama-bootstrap lock --weights` pins it)")


def smoke_fingerprint(plan: Plan, pull_result: Dict[str, Any]) -> Dict[str, Any]:
    files = {r["repo_id"]: {"commit": r["commit"], "files": {k: (v.get("sha256") or v.get("blob_id"))
                                                            for k, v in r["files"].items()}}
             for r in pull_result.get("repos", [])}
    smoke = plan.manifest.smoke
    return {"weights": _digest(files), "prompt": smoke.prompt, "template": smoke.template,
            "max_new_tokens": smoke.max_new_tokens, "precision": smoke.precision, "python": _interpreter()}


def smoke_request(plan: Plan):
    from bootstrap.smoke import SmokeRequest

    model = plan.model
    lora = model.kind == "lora" and model.base is not None
    return SmokeRequest(
        model_dir=plan.model_dir(model.repo_id),
        base_dir=plan.model_dir(model.base) if lora else None,
        prompt=plan.manifest.smoke.prompt, template=plan.manifest.smoke.template,
        max_new_tokens=plan.manifest.smoke.max_new_tokens, precision=plan.manifest.smoke.precision,
        size_gb=(model.base_size_gb or 0.0) + model.size_gb if lora else model.size_gb,
    )


def _check_fingerprint(plan: Plan) -> Dict[str, Any]:
    return {"model": plan.model_key, "requirements": plan.manifest.requirements.as_dict(),
            "python": _interpreter(), "platform": platform.platform()}


#: errno values of the file system's ordinary failures (not the network's, which are OSErrors too).
_PATH_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOSPC,
                errno.ELOOP, errno.ENAMETOOLONG, errno.EBUSY)


def _path_failure(plan: Plan, step: str, exc: OSError) -> Optional[errors.BootstrapError]:
    """A step's unmapped file-system OSError as a PathError naming the path and the setting it lies in."""
    if isinstance(exc, errors.BootstrapError) or exc.errno not in _PATH_ERRNOS or not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    for what, folder in (("weights.dir", plan.weights_dir), ("source.dir", plan.source_dir.parent),
                         ("the state folder", plan.state_dir)):
        if path == folder or folder in path.parents:
            return path_error(exc, path, what)
    return path_error(exc, path, f"the {step} step")


def run(plan: Plan, options: RunOptions, *, echo: Callable[[str], None] = lambda _: None,
        probes: Any = None) -> RunResult:
    """Run the pipeline. Raises the first failing step's error (after logging it and recording nothing)."""
    from bootstrap.pull import PullOptions, pull, unchanged_since

    for name in list(options.skip) + list(options.force) + list(options.only):
        if name not in STEPS:
            raise errors.UsageError(f"--skip/--force: unknown step {name!r}", argument="--skip/--force",
                                    remedy=f"use one of: {', '.join(STEPS)}")
    skip = set(options.skip) | ((set(STEPS) - set(options.only)) if options.only else set())
    fresh = set(options.force) | set(options.only)
    started = time.perf_counter()
    recorder = Recorder(plan, warn=lambda message: echo(f"warning: {message}"))  # what existed before this run
    logger, log_path = open_log(plan.state_dir, "run", secrets=[plan.token] if plan.token else [])

    def log(message: str) -> None:
        logger.info(message)
        echo(message)

    outcomes: List[StepOutcome] = []
    try:
        with run_lock(plan.state_dir, wait_s=options.wait_s), recorder:
            state = State(plan.state_dir)
            if state.problem:
                logger.warning(state.problem)
                echo(f"warning: {state.problem}")
            log(f"run: model {plan.model_key} ({plan.model.repo_id}), profile {plan.profile_key}, "
                f"endpoint {plan.endpoint}, manifest {plan.manifest_path}")
            pull_options = PullOptions(
                verify=options.verify or "pull" in options.force, progress=options.progress,
                require_lock=options.require_lock, allow_size_only=options.allow_size_only,
                **{k: v for k, v in (("retries", options.pull_retries), ("backoff_s", options.pull_backoff_s),
                                     ("connections", options.connections)) if v is not None})

            # What is already done (decided without network, hashing or model load)?
            pull_rec = state.get("pull", pull_fingerprint(plan))
            try:
                pull_done = bool(pull_rec) and "pull" not in fresh and not options.verify and \
                    unchanged_since(pull_rec["result"]) and \
                    (options.allow_size_only or not any(r.get("size_only") for r in pull_rec["result"]["repos"]))
                smoke_rec = state.get("smoke", smoke_fingerprint(plan, pull_rec["result"])) if pull_done else None
            except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a hand-edited record
                log(f"the state file's pull record is not in the right shape ({type(exc).__name__}); "
                    "checking the files again")
                pull_rec, pull_done, smoke_rec = None, False, None
                state.forget("pull")
            smoke_done = bool(smoke_rec) and "smoke" not in fresh
            clone_rec = state.get("clone", clone_fingerprint(plan))
            clone_done = bool(clone_rec) and "clone" not in fresh and \
                (plan.source_dir / ".git").is_dir()
            work_left = [s for s, done in (("clone", clone_done), ("pull", pull_done), ("smoke", smoke_done))
                         if not done and s not in skip]

            def step(name: str, fn: Callable[[], StepOutcome]) -> None:
                if name in skip:
                    if not options.only:
                        outcomes.append(StepOutcome(name, "skipped", 0.0, "skipped (--skip)"))
                        log(f"[{name}] skipped (--skip)")
                    return
                t0 = time.perf_counter()
                log(f"[{name}] start")
                try:
                    try:
                        out = fn()
                    except OSError as exc:
                        mapped = _path_failure(plan, name, exc)
                        if mapped is None:
                            raise
                        raise mapped from exc
                except (errors.BootstrapError, KeyboardInterrupt) as exc:
                    seconds = time.perf_counter() - t0
                    outcomes.append(StepOutcome(name, "failed", round(seconds, 3), str(exc)))
                    logger.exception(f"[{name}] failed after {seconds:.2f}s")
                    raise
                out.seconds = round(time.perf_counter() - t0, 3)
                outcomes.append(out)
                log(f"[{name}] {out.status} in {out.seconds:.2f}s: {out.detail}")

            def do_check() -> StepOutcome:
                from bootstrap.checks import run_checks

                if not work_left and "check" not in fresh:
                    return StepOutcome("check", "cached", 0, "nothing left to do; not re-checked")
                report = run_checks(plan, probes, offline=options.offline_check)
                for c in report.checks:
                    logger.info(f"check {c.name}: {c.status}: {c.detail}" + (f" -> {c.remedy}" if c.remedy else ""))
                if report.failed:
                    first = next(c for c in report.checks if c.status == "fail")
                    why = f"{first.name}: {first.detail}. {first.remedy or ''}".strip()
                    raise errors.ChecksFailed(report.failed, remedy=why)
                state.put("check", _check_fingerprint(plan), report.to_json())
                return StepOutcome("check", "done", 0, f"overall {report.status}", report.to_json())

            def do_clone() -> StepOutcome:
                from bootstrap.vcs import clone

                result = clone(plan.source_url, plan.manifest.source.ref, plan.source_dir)
                state.put("clone", clone_fingerprint(plan), result.__dict__)
                status = "cached" if result.action == "present" else "done"
                return StepOutcome("clone", status, 0, f"{result.path} at {result.commit[:12]} ({result.action})",
                                   result.__dict__)

            def do_pull() -> StepOutcome:
                if pull_done:
                    return StepOutcome("pull", "cached", 0, "all files verified earlier and unchanged; "
                                       + pull_summary(pull_rec["result"]), pull_rec["result"])
                previous = (state.get("pull") or {}).get("result")
                result = pull(plan, previous, pull_options, log)
                state.put("pull", pull_fingerprint(plan), result)
                state.forget("smoke")
                return StepOutcome("pull", "done", 0, pull_summary(result), result)

            def do_smoke() -> StepOutcome:
                if smoke_done:
                    return StepOutcome("smoke", "cached", 0, f"passed earlier: {smoke_rec['result']['answer']!r}",
                                       smoke_rec["result"])
                from bootstrap.smoke import smoke

                pulled = (state.get("pull") or {}).get("result", {})
                result = smoke(smoke_request(plan), log).to_json()
                state.put("smoke", smoke_fingerprint(plan, pulled), result)
                return StepOutcome("smoke", "done", 0,
                                   f"{result['precision']} on {result['device']}, load {result['load_s']}s, "
                                   f"first token {result['ttft_s']}s, {result['tokens_per_s']} tok/s: "
                                   f"{result['answer']!r}", result)

            for name, fn in (("check", do_check), ("clone", do_clone), ("pull", do_pull), ("smoke", do_smoke)):
                step(name, fn)
            log(f"run: finished in {time.perf_counter() - started:.2f}s")
    except KeyboardInterrupt:
        logger.warning("interrupted")
        raise errors.Interrupted(
            "interrupted", remedy=f"state is consistent; run again to continue (log: {log_path})") from None
    except errors.BootstrapError as exc:
        base = exc.remedy or "see the log for details"
        exc.remedy = f"{base} (log: {log_path})"
        raise
    finally:
        problem = close_log(logger)
        if problem:
            echo(f"warning: {problem}")
    return RunResult(outcomes, str(log_path), time.perf_counter() - started)
