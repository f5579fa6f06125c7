"""``dir``: a local or mounted folder (a colleague's USB disk, a NAS copy, an unpacked bundle).

It holds ``<owner>/<name>/...`` or a Hugging Face cache (``models--<owner>--<name>/snapshots/<commit>/...``,
directly or under ``hub/``). A folder says nothing trustworthy about what it holds, so it serves only
repos pinned in the weights lock: the lock names the commit and every file; each file is hardlinked
(same filesystem) or copied, hashed once and moved into place only if it matches. Files that lead out
of the folder (symlinks; a Hugging Face cache's links may point into its own ``blobs/``) are refused.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import errors
from bootstrap.fetch import FetchOptions, FileJob, Outcome, copy_local
from bootstrap.sources.base import RemoteFile, RemoteRepo, RepoRef, Source, SourceSpec


class DirSource(Source):
    kind = "dir"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.root = Path(spec.location)
        self._found: Dict[str, Tuple[Path, Path]] = {}  # repo id -> (folder of its files, folder they must stay in)

    def _candidates(self, repo_id: str, commit: str) -> List[Tuple[Path, Path]]:
        owner, name = repo_id.split("/", 1)
        cache = f"models--{owner}--{name}"
        out = [(self.root / owner / name, self.root / owner / name)]
        for base in (self.root, self.root / "hub"):
            out.append((base / cache / "snapshots" / commit, base / cache))
        return out

    def listing(self, ref: RepoRef, pin: Any) -> RemoteRepo:
        if pin is None:
            raise errors.NotPinned(f"{ref.repo_id}: a folder source ({self.root}) serves only repos pinned in the "
                                   "weights lock", repo_id=ref.repo_id, url=str(self.root),
                                   remedy="pin the repo with `llama-bootstrap lock --weights` on a networked machine")
        if not self.root.is_dir():
            raise errors.EndpointUnreachable(f"{self.root} is not a folder (not mounted?)", url=str(self.root),
                                             remedy="mount the disk or fix the path of the dir source")
        for folder, fence in self._candidates(ref.repo_id, pin.commit):
            if folder.is_dir():
                self._found[ref.repo_id] = (folder, fence)
                break
        else:
            raise errors.NotFoundError(f"{ref.repo_id} is not in {self.root} (looked for <owner>/<name>/ and a "
                                       f"Hugging Face cache at commit {pin.commit[:12]})", repo_id=ref.repo_id,
                                       url=str(self.root), remedy="copy the model folder there, or use another source")
        folder, fence = self._found[ref.repo_id]
        files = []
        for f in pin.files:
            path = self.file_path(ref.repo_id, f.path)
            try:
                size = path.stat().st_size if path.is_file() else -1
            except OSError:
                size = -1
            if size != f.size:
                found = "missing" if size < 0 else f"{size} bytes"
                raise errors.LockMismatch(f"{ref.repo_id}: {ascii(f.path)} is {found} in {folder} (the lock says "
                                          f"{f.size} bytes)", source=self.label,
                                          repo_id=ref.repo_id, filename=f.path)
            files.append(RemoteFile(f.path, f.size, f.sha256, None if f.sha256 else f.blob_id))
        return RemoteRepo(ref.repo_id, ref.revision, pin.commit, files, self.label)

    def file_path(self, repo_id: str, name: str) -> Path:
        folder, fence = self._found[repo_id]
        path = folder.joinpath(*name.split("/"))
        real, real_fence = os.path.realpath(path), os.path.realpath(fence)
        if not real.startswith(real_fence.rstrip(os.sep) + os.sep):
            raise errors.UntrustedSource(f"{path} leads out of {fence} (a symlink)", source=self.label,
                                         repo_id=repo_id, filename=name)
        return path

    def fetch(self, ref: RepoRef, jobs: List[FileJob], options: FetchOptions,
              log: Callable[[str], None]) -> List[Outcome]:
        if not jobs:
            return []
        repo_id = ref.repo_id

        def one(job: FileJob) -> Outcome:
            path = Path(os.path.realpath(self.file_path(repo_id, job.name)))  # checked to stay in the folder
            same_fs = _device(path) == _device(job.partial_dir)
            return copy_local(job, path, hardlink=same_fs)

        try:
            with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1, 4))) as pool:
                return list(pool.map(one, jobs))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise errors.DiskSpaceError(f"disk full while copying {ref.repo_id} from {self.root}",
                                            path=str(jobs[0].partial_dir),
                                            remedy="free space (or set weights.dir to a bigger disk) and run again") \
                    from exc
            raise errors.DownloadError(f"copying from {self.root} failed: {exc.strerror or exc}", url=str(self.root),
                                       remedy="check the folder (and the disk it is on), then run again") from exc

    def probe(self) -> Tuple[bool, str]:
        if self.root.is_dir() and os.access(self.root, os.R_OK | os.X_OK):
            return True, f"{self.root} is a readable folder"
        return False, f"{self.root} is not a readable folder"


def _device(path: Path) -> Optional[int]:
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except OSError:
            continue
    return None
