"""Talking to the Hub through huggingface_hub: its exceptions as ours, retries, interruptibility.

``translate`` turns a library, network or disk exception into one of :mod:`bootstrap.errors` with
the remedy; ``with_retries`` backs off and calls again on a dropped connection or a 5xx (the
download resumes); ``in_background`` keeps Ctrl-C immediate while the library's thread pool works.
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import errors
from bootstrap.plan import Plan

RETRY_STATUS = (429, 500, 502, 503, 504)



def _network_errors() -> Tuple[type, ...]:
    kinds: List[type] = [ConnectionError, TimeoutError]
    try:
        import requests

        kinds += [requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                  requests.exceptions.ChunkedEncodingError]
    except ImportError:  # huggingface_hub >= 1.0 uses httpx
        pass
    try:
        import httpx

        kinds += [httpx.TransportError]
    except ImportError:
        pass
    return tuple(kinds)


def _dropped(exc: BaseException) -> bool:
    """A transfer that started and was cut (not a host that cannot be reached)."""
    names = {"ChunkedEncodingError", "ProtocolError", "IncompleteRead", "RemoteProtocolError", "ReadError"}
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in names:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _status_of(exc: BaseException) -> Optional[int]:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def translate(exc: BaseException, repo_id: str, plan: Plan, filename: Optional[str] = None) -> errors.BootstrapError:
    """A huggingface_hub / network / disk exception as one of ours, with the remedy."""
    from huggingface_hub import errors as hf

    url = f"{plan.endpoint}/{repo_id}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return errors.DiskSpaceError(
            f"disk full while downloading {repo_id}{'/' + filename if filename else ''}", path=str(plan.weights_dir),
            remedy="free space (or set weights.dir to a bigger disk) and run again: the download resumes",
        )
    if isinstance(exc, hf.GatedRepoError) or _status_of(exc) in (401, 403):
        return errors.GatedRepoError(
            f"{repo_id} needs authorisation (HTTP {_status_of(exc) or 401})", repo_id=repo_id, url=url,
            remedy=f"accept the license on {url}, create a read token and export HF_TOKEN=<token>"
            + (" (the token that is set was refused)" if plan.token else ""),
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return errors.NotFoundError(f"{repo_id} has no revision {exc}", repo_id=repo_id, url=url,
                                    remedy="check the model's revision in the manifest")
    if isinstance(exc, hf.EntryNotFoundError):
        return errors.NotFoundError(f"{repo_id}: file not found: {filename or exc}", repo_id=repo_id,
                                    filename=filename, url=url, remedy="check the manifest's model entry")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return errors.NotFoundError(f"{repo_id} not found at {plan.endpoint}", repo_id=repo_id, url=url,
                                    remedy="check repo_id in the manifest (and the endpoint: --profile)")
    if _dropped(exc):
        return errors.DownloadError(
            f"the connection to {plan.endpoint} dropped while downloading {repo_id} ({type(exc).__name__})",
            repo_id=repo_id, url=url,
            remedy="run the same command again: the download resumes where it stopped"
            + ("; if it keeps dropping, try --profile cn" if plan.profile_key != "cn" else ""),
        )
    if isinstance(exc, hf.LocalEntryNotFoundError) or isinstance(exc, _network_errors()):
        hint = "try --profile cn (a Hub mirror reachable from mainland China)" if plan.profile_key != "cn" else \
            "check the network, proxy (HTTPS_PROXY) and firewall"
        return errors.EndpointUnreachable(f"cannot reach {plan.endpoint}: {type(exc).__name__}: {exc}",
                                          repo_id=repo_id, url=plan.endpoint, remedy=hint)
    status = _status_of(exc)
    if status is not None:
        return errors.DownloadError(f"{url}: HTTP {status}", repo_id=repo_id, url=url,
                                    remedy="the server failed; run again later (downloads resume)")
    return errors.DownloadError(f"{repo_id}: {type(exc).__name__}: {exc}", repo_id=repo_id, url=url)


def retryable(exc: BaseException) -> bool:
    from huggingface_hub import errors as hf

    if isinstance(exc, (hf.RepositoryNotFoundError, hf.RevisionNotFoundError, hf.EntryNotFoundError)):
        return False
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return False
    return _status_of(exc) in RETRY_STATUS or isinstance(exc, _network_errors())


def with_retries(fn: Callable[[], Any], retries: int, backoff_s: float, log: Callable[[str], None]) -> Any:
    """Call ``fn``; on a dropped connection or 5xx, back off and call again (the download resumes)."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered by retryable, re-raised otherwise
            attempt += 1
            if attempt > retries or not retryable(exc):
                raise
            delay = backoff_s * (2 ** (attempt - 1))
            log(f"attempt {attempt} failed ({type(exc).__name__}: {exc}); retrying in {delay:.1f}s")
            time.sleep(delay)


def in_background(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a daemon thread and wait for it in short slices, so Ctrl-C is handled at once.

    huggingface_hub downloads in a thread pool that would finish every file in flight before a
    KeyboardInterrupt got through; the partial files stay for the next run to resume.
    """
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="download", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if "error" in box:
        raise box["error"]
    return box.get("value")
