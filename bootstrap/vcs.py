"""``clone``: the Llama2-Chinese source at a pinned commit, with real git, atomically.

The checkout is made in a temporary folder next to the target, its HEAD is verified against the
pinned commit, and only then is it moved into place. An existing checkout is left alone when it
is the pinned one and refused (never overwritten) when it is not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

from bootstrap.errors import CheckoutConflict, CloneError, ToolMissing
from bootstrap.fsutil import ensure_dir, path_error

TMP_MARK = ".tmp-clone-"
WHAT = "source.dir"
# Abort a transfer that stays below 1 kB/s for 60 s instead of hanging on a dead link.
GIT_NETWORK_OPTS = ["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60", "-c", "core.askPass="]

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class CloneResult:
    path: str
    commit: str
    remote: str
    action: str  # "cloned" | "present"


def run_git(argv: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[Mapping[str, str]] = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - argument list, no shell
        list(argv), cwd=cwd, env=dict(env) if env is not None else None, capture_output=True, text=True,
        encoding="utf-8", errors="replace", check=False,
    )


def git_env(base: Optional[Mapping[str, str]] = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANG": "C", "GIT_ASKPASS": "", "SSH_ASKPASS": ""})
    return env


class Git:
    """git as argument lists, with stderr mapped to typed errors."""

    def __init__(self, runner: Runner = run_git, which: Callable[[str], Optional[str]] = shutil.which,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        exe = which("git")
        if exe is None:
            raise ToolMissing("git", remedy="install git (apt-get install git / winget install Git.Git) and retry")
        self.exe = exe
        self.runner = runner
        self.env = git_env(environ)

    def __call__(self, *args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
        return self.runner([self.exe, *args], cwd=cwd, env=self.env)

    def out(self, *args: str, cwd: Optional[Path] = None) -> Optional[str]:
        proc = self(*args, cwd=cwd)
        return proc.stdout.strip() if proc.returncode == 0 else None


def _explain(stderr: str, url: str) -> CloneError:
    text = stderr.strip().splitlines()
    last = text[-1] if text else "git failed"
    low = stderr.lower()
    if any(s in low for s in ("could not resolve host", "unable to access", "connection timed out",
                              "failed to connect", "connection refused", "operation too slow", "early eof",
                              "rpc failed", "network is unreachable")):
        return CloneError(f"cannot reach {url}: {last}",
                          remedy="check the network; from mainland China use --profile cn (a GitHub mirror)")
    if any(s in low for s in ("not found", "does not appear to be a git repository", "does not exist",
                              "authentication failed")):
        return CloneError(f"no git repository at {url}: {last}", remedy="check source.url in the manifest")
    return CloneError(f"git failed for {url}: {last}", remedy="run the git command by hand to see the full error")


def _stale_temps(target: Path) -> List[Path]:
    try:
        return list(target.parent.glob(f".{target.name}{TMP_MARK}*")) if target.parent.is_dir() else []
    except OSError:  # an unreadable parent: reported when the parent is checked
        return []


def _is_empty_dir(target: Path) -> bool:
    try:
        return target.is_dir() and not any(target.iterdir())
    except OSError as exc:
        raise path_error(exc, target, WHAT) from exc


def inspect_checkout(git: Git, target: Path, url: str, ref: str) -> CloneResult:
    """An existing checkout: the pinned one (returned) or a conflict (raised)."""
    if not target.is_dir():
        kind = "a dangling symlink" if target.is_symlink() and not target.exists() else "a file"
        raise CheckoutConflict(
            f"{WHAT}: {target} is {kind}, not a folder", target=str(target),
            remedy="move it away or set source.dir to another folder; it is never overwritten",
        )
    if not (target / ".git").exists():
        raise CheckoutConflict(
            f"{target} exists and is not a git checkout", target=str(target),
            remedy="move it away or set source.dir to another folder; it is never overwritten",
        )
    head = git.out("rev-parse", "HEAD", cwd=target)
    remote = git.out("config", "--get", "remote.origin.url", cwd=target) or ""
    if head != ref:
        raise CheckoutConflict(
            f"{target} is at commit {head or '(none)'}, not the pinned {ref}", target=str(target),
            remedy=f"git -C {target} checkout {ref} (if it has that commit), or move the folder away",
        )
    if remote.rstrip("/") != url.rstrip("/"):
        raise CheckoutConflict(
            f"{target} was cloned from {remote or '(no remote)'}, not {url}", target=str(target),
            remedy=f"git -C {target} remote set-url origin {url}, or move the folder away",
        )
    dirty = git.out("status", "--porcelain", "--untracked-files=no", cwd=target)
    if dirty:
        raise CheckoutConflict(
            f"{target} has local changes:\n{dirty}", target=str(target),
            remedy=f"commit or stash them (git -C {target} stash), or move the folder away",
        )
    return CloneResult(str(target), head, remote, "present")


def clone(url: str, ref: str, target: Path, *, git: Optional[Git] = None) -> CloneResult:
    """Make ``target`` a checkout of ``url`` at commit ``ref``. Idempotent; atomic; never overwrites."""
    git = git or Git()
    for stale in _stale_temps(target):  # left by a killed run (callers hold the run lock)
        shutil.rmtree(stale, ignore_errors=True)
    if (target.exists() or target.is_symlink()) and not _is_empty_dir(target):
        return inspect_checkout(git, target, url, ref)
    ensure_dir(target.parent, WHAT)
    tmp = target.parent / f".{target.name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        proc = git(*GIT_NETWORK_OPTS, "clone", "--no-checkout", "--quiet", "--", url, str(tmp))
        if proc.returncode != 0:
            raise _explain(proc.stderr, url)
        proc = git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", ref, "--", cwd=tmp)
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["git checkout failed"])[-1]
            raise CloneError(
                f"commit {ref} is not in {url}: {why}",
                remedy="check source.ref in the manifest (a full commit id of that repository), "
                       "or the mirror may be behind: try --profile global",
            )
        head = git.out("rev-parse", "HEAD", cwd=tmp)
        if head != ref:
            raise CloneError(f"checkout verification failed: HEAD is {head}, want {ref}",
                             remedy="the source may have been tampered with; check source.url")
        try:
            if target.exists():
                target.rmdir()  # an empty folder, checked above
            os.replace(tmp, target)
        except OSError as exc:
            raise path_error(exc, target, WHAT) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CloneResult(str(target), ref, url, "cloned")
