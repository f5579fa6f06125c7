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


class NotEnoughMemory(StepFailed):
    """No precision fits: no GPU holds the model and the CPU fallback does not fit in RAM (sizes in GB)."""

    def __init__(self, message: str, *, need_gb: float, available_gb: float, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.need_gb = need_gb
        self.available_gb = available_gb


class LockedError(StepFailed):
    """Another llama-bootstrap run holds the lock."""

    def __init__(self, lock_path: str, *, remedy: Optional[str] = None) -> None:
        super().__init__(f"another llama-bootstrap run is in progress (lock: {lock_path})", remedy=remedy)
        self.lock_path = lock_path


class Interrupted(BootstrapError):
    """The user pressed Ctrl-C; state was left consistent."""


# -- weights sources: what a Hub, mirror or folder may not do (exit code 1) -------------------


class UntrustedSource(DownloadError):
    """A source said or did something that cannot be trusted; nothing from it is kept for this repo."""

    remedy = ("the source is not trustworthy: use another one (--source, --profile) or pin the weights "
              "(`llama-bootstrap lock --weights` on a trusted network) so every byte is checked against the lock")

    def __init__(self, message: str, *, source: Optional[str] = None, repo_id: Optional[str] = None,
                 filename: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, repo_id=repo_id, filename=filename, url=source, remedy=remedy)
        self.source = source


class UnsafeName(UntrustedSource):
    """A file name listed by a source is not a plain relative path inside the model folder."""

    def __init__(self, name: str, why: str, *, source: Optional[str] = None, repo_id: Optional[str] = None) -> None:
        shown = ascii(name)
        super().__init__(f"{source or 'the source'} lists a file named {shown} ({why}); refusing the whole repo",
                         source=source, repo_id=repo_id)
        self.name = name
        self.why = why


class RedirectRefused(UntrustedSource):
    """A redirect (or a request) would go somewhere the policy does not allow: plain http, another scheme."""

    def __init__(self, hop: str, why: str, *, source: Optional[str] = None) -> None:
        super().__init__(f"refused a redirect to {hop}: {why}", source=source)
        self.hop = hop
        self.why = why


class CommitMismatch(UntrustedSource):
    """The source answered for another commit than the one pinned."""

    def __init__(self, repo_id: str, *, want: str, got: str, source: Optional[str] = None,
                 where: str = "the manifest") -> None:
        super().__init__(f"{repo_id}: {where} pins commit {want}, but {source or 'the source'} answered with "
                         f"{got}", source=source, repo_id=repo_id)
        self.want = want
        self.got = got


class LockMismatch(UntrustedSource):
    """What a source offers differs from the weights lock (commit, file set or a file's hash)."""


class UnverifiableFile(DownloadError):
    """The source gives no hash for a file, so it cannot be verified."""


class NotPinned(DownloadError):
    """The weights lock has no entry for a repo that must be pinned (--require-lock, or a source without TLS)."""


class SourcesFailed(DownloadError):
    """Every source of the profile failed for a repo; ``failures`` holds (source label, error) in order."""

    def __init__(self, repo_id: str, failures: list) -> None:
        lines = "; ".join(f"{label}: {exc}" for label, exc in failures)
        super().__init__(f"no source could provide {repo_id} ({len(failures)} tried): {lines}", repo_id=repo_id,
                         remedy="fix the first source's problem, or add a working source to the profile (--source)")
        self.failures = failures


class WeightsLockError(ManifestError):
    """The weights lock file cannot be read or is invalid (bad input, exit 2)."""


class LockDrift(StepFailed):
    """``lock --weights`` found a pinned commit or hash that changed upstream; it is only changed with --update."""

    def __init__(self, message: str, *, diff: list, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.diff = diff


class PathError(StepFailed):
    """A folder or file the tool needs cannot be made, read or written: read-only disk, permission denied,
    a file (or a symlink to one) where a folder should be, disk full, a symlink loop.

    ``what`` says what the path is for ("weights.dir", "the state folder", ...); ``errno`` is the OS's.
    """

    def __init__(self, message: str, *, path: str, what: str, errno: Optional[int] = None,
                 remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path
        self.what = what
        self.errno = errno


# -- talking to the model: chat and serve ----------------------------------------------------


class NotPulledError(StepFailed):
    """``chat``/``serve`` need a completed ``pull`` whose files are unchanged."""

    def __init__(self, message: str, *, model: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.model = model


class ContextOverflowError(BootstrapError):
    """A prompt (plus the tokens asked for) does not fit the model's context."""

    def __init__(self, message: str, *, prompt_tokens: int, limit: int, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class ServeError(StepFailed):
    """The server could not start (address in use, no permission for the port, ...)."""

    def __init__(self, message: str, *, address: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.address = address


class ShareError(StepFailed):
    """``share`` cannot serve: nothing verified to share, or the address cannot be used."""

    def __init__(self, message: str, *, address: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.address = address


class GenerationError(StepFailed):
    """``generate`` raised (out of memory, a broken model, ...) while answering."""


class ServerBusyError(BootstrapError):
    """``serve``: one generation runs at a time and the queue behind it is full (HTTP 429)."""

    def __init__(self, message: str, *, queue_size: int, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.queue_size = queue_size




# -- offline bundles (exit code 1) ------------------------------------------------------------


class BundleError(StepFailed):
    """A bundle is unsafe to unpack or differs from its own index; ``member`` names the first bad member."""

    remedy = ("nothing was unpacked or changed; copy the bundle again from the machine that built it (compare "
              "its sha256 with the one printed there), or build it anew with `llama-bootstrap bundle`")

    def __init__(self, message: str, *, path: Optional[str] = None, member: Optional[str] = None,
                 remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path
        self.member = member


class BundleBuildError(StepFailed):
    """A bundle could not be built: a layer could not be fetched, or what would be packed is not what the
    locks pin. Nothing is left at the output path."""

    def __init__(self, message: str, *, layer: Optional[str] = None, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.layer = layer


# -- the life of an install: receipt, uninstall (exit code 1) ------------------------------------------


class ReceiptError(StepFailed):
    """The install receipt cannot be read (damaged, not ours) or lists a path that may not be removed."""

    def __init__(self, message: str, *, path: str, remedy: Optional[str] = None) -> None:
        super().__init__(message, remedy=remedy)
        self.path = path


class NoReceipt(StepFailed):
    """``uninstall`` found no receipt: it removes only what a receipt says was created."""

    def __init__(self, path: str, *, remedy: Optional[str] = None) -> None:
        super().__init__(f"no install receipt at {path}: uninstall removes only what a receipt records as created",
                         remedy=remedy)
        self.path = path


class UninstallIncomplete(StepFailed):
    """Some recorded paths could not be removed; ``failed`` holds (path, reason). The receipt keeps them."""

    def __init__(self, failed: list, *, remedy: Optional[str] = None) -> None:
        shown = "; ".join(f"{path}: {why}" for path, why in failed)
        super().__init__(f"{len(failed)} recorded path(s) could not be removed: {shown}", remedy=remedy)
        self.failed = failed
