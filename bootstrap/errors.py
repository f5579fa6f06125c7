"""The error hierarchy of llama-bootstrap.

Every error the core raises on purpose is a :class:`BootstrapError`. Each carries the data
needed to explain it (field, path, url, ...) and a ``remedy``: what the user should do.
The CLI maps these to messages and exit codes in one place (:mod:`bootstrap.exits`);
the core never prints and never exits.
"""

from __future__ import annotations

from typing import Optional


class BootstrapError(Exception):
    """Base class. ``remedy`` is one sentence that says what to do."""

    remedy: Optional[str] = None

    def __init__(self, message: str, *, remedy: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if remedy is not None:
            self.remedy = remedy

    def __str__(self) -> str:
        # Not Exception.__str__: OSError-based subclasses would print "[Errno None] None: None".
        return self.message


# -- usage / input errors (exit code 2) -------------------------------------------------


class UsageError(BootstrapError):
    """Bad command-line input or environment variable."""

    def __init__(self, message: str, *, argument: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.argument = argument


class ManifestError(BootstrapError):
    """The manifest cannot be read or is invalid. ``field`` is a dotted path like ``models.x.size_gb``."""

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        field: Optional[str] = None,
        line: Optional[int] = None,
        remedy: Optional[str] = None,
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path
        self.field = field
        self.line = line


# -- step failures (exit code 1) ----------------------------------------------------------


class StepFailed(BootstrapError):
    """A pipeline step could not finish."""


class ChecksFailed(StepFailed):
    """``check`` found at least one failing check."""

    def __init__(self, failed: list, *, remedy: Optional[str] = None) -> None:
        names = ", ".join(failed)
        super().__init__(f"checks failed: {names}", remedy=remedy)
        self.failed = failed


class ToolMissing(StepFailed, FileNotFoundError):
    """An external program (git, conda-lock, uv, ...) is not on PATH."""

    def __init__(self, tool: str, *, remedy: Optional[str] = None) -> None:
        super().__init__(f"{tool} was not found on PATH", remedy=remedy)
        self.tool = tool


class CloneError(StepFailed):
    """Cloning or verifying the source checkout failed."""

    def __init__(self, message: str, *, target: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.target = target


class CheckoutConflict(CloneError):
    """A checkout exists at the target but is not the pinned one; it is never overwritten."""


class DownloadError(StepFailed):
    """Downloading model files failed."""

    def __init__(
        self,
        message: str,
        *,
        repo_id: Optional[str] = None,
        filename: Optional[str] = None,
        url: Optional[str] = None,
        remedy: Optional[str] = None,
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.repo_id = repo_id
        self.filename = filename
        self.url = url


class GatedRepoError(DownloadError, PermissionError):
    """401/403: the repo needs a token and an accepted license."""


class NotFoundError(DownloadError, LookupError):
    """404: the repo, revision or file does not exist at the endpoint."""


class EndpointUnreachable(DownloadError, ConnectionError):
    """The Hub endpoint cannot be reached."""


class IntegrityError(DownloadError):
    """A downloaded file's sha256 or size does not match the Hub's metadata."""

    def __init__(self, filename: str, *, want: str, got: str, repo_id: Optional[str] = None) -> None:
        super().__init__(
            f"{filename}: sha256 mismatch (want: {want}, got: {got})",
            repo_id=repo_id,
            filename=filename,
            remedy="The corrupt file was removed; run the command again to download it anew.",
        )
        self.want = want
        self.got = got


class DiskSpaceError(StepFailed, OSError):
    """Not enough free disk for the download (checked before) or the disk filled up (during)."""

    def __init__(self, message: str, *, path: Optional[str] = None, need: int = 0, free: int = 0,
                 remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path
        self.need = need
        self.free = free


class SmokeError(StepFailed):
    """Loading the model or generating failed, or the answer was blank."""


class LockedError(StepFailed):
    """Another llama-bootstrap run holds the lock."""

    def __init__(self, lock_path: str, *, remedy: Optional[str] = None) -> None:
        super().__init__(f"another llama-bootstrap run is in progress (lock: {lock_path})", remedy=remedy)
        self.lock_path = lock_path


class Interrupted(BootstrapError):
    """The user pressed Ctrl-C; state was left consistent."""


class ShareError(StepFailed):
    """``share`` cannot serve: nothing verified to share, or the address cannot be used."""

    def __init__(self, message: str, *, address: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.address = address
