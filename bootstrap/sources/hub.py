"""``hub``: the Hugging Face Hub, a Hub mirror (hf-mirror.com, a company mirror) or ``share``.

The listing is the Hub's model info with file metadata (``/api/models/<repo>/revision/<rev>?blobs=true``:
the commit, and every file's size, git blob id and, for LFS files, sha256); files come from
``/<repo>/resolve/<commit>/<path>`` over plain HTTP with ranges. Xet is never used: huggingface.co
advertises Xet storage (``X-Xet-Hash``) for most repos, but its ``resolve`` URLs serve every file over
HTTP too (a redirect to a CDN), which keeps resume by range, one sha256 pass and the redirect policy
(see the README, "Reliability and security").
"""

from __future__ import annotations

import re
from typing import Any, List, Optional
from urllib.parse import quote

from bootstrap import errors
from bootstrap.sources.base import HttpSource, RemoteFile, RemoteRepo, RepoRef, field_of

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class HubSource(HttpSource):
    kind = "hub"

    def listing(self, ref: RepoRef, pin: Any) -> RemoteRepo:
        revision = pin.commit if pin is not None else ref.revision
        what = f"{ref.repo_id}@{revision}"
        url = f"{self.base}/api/models/{ref.repo_id}/revision/{quote(revision, safe='')}?blobs=true"
        doc = self.get_json(url, what, lambda response: self._status_error(response, ref, revision))
        sha = field_of(doc, "sha", str, what, self.label)
        if not _HEX40.match(sha):
            raise errors.UntrustedSource(f"{what}: {self.label} gave {sha[:50]!r} as the commit id (not 40 hex "
                                         "digits)", source=self.label, repo_id=ref.repo_id)
        siblings = field_of(doc, "siblings", list, what, self.label)
        return RemoteRepo(ref.repo_id, revision, sha, [self._file(s, what) for s in siblings], self.label)

    def _file(self, entry: Any, what: str) -> RemoteFile:
        if not isinstance(entry, dict):
            raise errors.UntrustedSource(f"{what}: {self.label} sent a file entry that is not an object",
                                         source=self.label)
        name = field_of(entry, "rfilename", str, what, self.label)
        size = field_of(entry, "size", int, what, self.label)
        blob = field_of(entry, "blobId", str, what, self.label, optional=True)
        lfs = field_of(entry, "lfs", dict, what, self.label, optional=True)
        sha = None
        if lfs is not None:
            sha = field_of(lfs, "sha256", str, what, self.label)
            lfs_size = field_of(lfs, "size", int, what, self.label, optional=True)
            if not _HEX64.match(sha) or (lfs_size is not None and lfs_size != size):
                raise errors.UntrustedSource(f"{what}: {self.label} sent inconsistent LFS data for {ascii(name)}",
                                             source=self.label)
        if size < 0 or (blob is not None and not _HEX40.match(blob)):
            raise errors.UntrustedSource(f"{what}: {self.label} sent a bad size or blob id for {ascii(name)}",
                                         source=self.label)
        return RemoteFile(name, size, sha, None if sha else blob)

    def _status_error(self, response: Any, ref: RepoRef, revision: str) -> Optional[BaseException]:
        status = response.status_code
        code = (response.headers.get("X-Error-Code") or "").strip()
        url = f"{self.label}/{ref.repo_id}"
        if status in (401, 403):
            refused = " (the token that is set was refused)" if self.transport.has_token else ""
            return errors.GatedRepoError(f"{ref.repo_id} needs authorisation at {self.label} (HTTP {status})",
                                         repo_id=ref.repo_id, url=url,
                                         remedy=f"accept the license on the model page, create a read token and "
                                         f"export HF_TOKEN=<token>{refused}")
        if status == 404 and code == "RevisionNotFound":
            return errors.NotFoundError(f"{ref.repo_id} has no revision {revision!r} at {self.label}",
                                        repo_id=ref.repo_id, url=url, remedy="check the model's revision in the "
                                        "manifest (or the weights lock's commit)")
        if status == 404:
            return errors.NotFoundError(f"{ref.repo_id} not found at {self.label}", repo_id=ref.repo_id, url=url,
                                        remedy="check repo_id in the manifest (and the source: --profile, --source)")
        return None

    def file_urls(self, ref: RepoRef, repo: RemoteRepo, names: List[str]) -> List[str]:
        return [f"{self.base}/{repo.repo_id}/resolve/{repo.commit}/{quote(name)}" for name in names]
