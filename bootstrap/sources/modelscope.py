"""``modelscope``: ModelScope (modelscope.cn), through its HTTP API.

Why the HTTP API and not the ``modelscope`` library: the library follows redirects and retries on
its own ``requests`` calls, so our per-hop policy (https only, no token off-origin) and our ranged,
resumable, hash-once fetcher could not apply; it also brings a large dependency tree into ``myenv``.
The two calls used are the ones the library itself makes: the file list
(``/api/v1/models/<id>/repo/files?Revision=<rev>&Recursive=true``: path, size, sha256 of every file)
and the file download (``/api/v1/models/<id>/repo?Revision=<rev>&FilePath=<path>``). ModelScope ids
differ from the Hub's, so each model names its own (``modelscope_id``, ``base_modelscope_id``).
The Hub token is never sent to ModelScope.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional
from urllib.parse import quote, quote_plus

from bootstrap import errors
from bootstrap.sources.base import HttpSource, RemoteFile, RemoteRepo, RepoRef, field_of

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ModelScopeSource(HttpSource):
    kind = "modelscope"

    def __init__(self, spec: Any, token: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(spec, None, **kwargs)  # never the Hub's token

    def listing(self, ref: RepoRef, pin: Any) -> RemoteRepo:
        if not ref.modelscope_id:
            raise errors.NotFoundError(f"{ref.repo_id}: the manifest names no ModelScope id for it",
                                       repo_id=ref.repo_id, url=self.label,
                                       remedy="add modelscope_id (base_modelscope_id for a LoRA's base) to the model")
        model, revision = ref.modelscope_id, ref.modelscope_revision
        what = f"{model}@{revision} on ModelScope"
        url = (f"{self.base}/api/v1/models/{quote(model, safe='/')}/repo/files?Revision={quote_plus(revision)}"
               "&Recursive=true")
        doc = self.get_json(url, what, lambda response: self._status_error(response, ref))
        if doc.get("Code", 200) != 200 if isinstance(doc, dict) else True:
            raise errors.NotFoundError(f"{what}: ModelScope answered code {ascii(str(doc.get('Code'))[:20])}",
                                       repo_id=ref.repo_id, url=self.label, remedy="check modelscope_id")
        data = field_of(doc, "Data", dict, what, self.label)
        entries = field_of(data, "Files", list, what, self.label)
        files = [self._file(e, what) for e in entries if isinstance(e, dict) and e.get("Type", "blob") != "tree"]
        return RemoteRepo(ref.repo_id, revision, f"modelscope:{revision}", files, self.label)

    def _file(self, entry: Any, what: str) -> RemoteFile:
        name = field_of(entry, "Path", str, what, self.label)
        size = field_of(entry, "Size", int, what, self.label)
        sha = field_of(entry, "Sha256", str, what, self.label, optional=True) or None
        if size < 0 or (sha is not None and not _HEX64.match(sha)):
            raise errors.UntrustedSource(f"{what}: bad size or sha256 for {ascii(name)}", source=self.label)
        return RemoteFile(name, size, sha, None)

    def _status_error(self, response: Any, ref: RepoRef) -> Optional[BaseException]:
        if response.status_code in (401, 403):
            return errors.GatedRepoError(f"{ref.modelscope_id}: ModelScope refused access (HTTP "
                                         f"{response.status_code})", repo_id=ref.repo_id, url=self.label,
                                         remedy="the model is private or gated on ModelScope; use another source")
        if response.status_code == 404:
            return errors.NotFoundError(f"{ref.modelscope_id} not found on {self.label}", repo_id=ref.repo_id,
                                        url=self.label, remedy="check modelscope_id / modelscope_revision")
        return None

    def file_urls(self, ref: RepoRef, repo: RemoteRepo, names: List[str]) -> List[str]:
        model = quote(ref.modelscope_id or "", safe="/")
        revision = quote_plus(ref.modelscope_revision)
        return [f"{self.base}/api/v1/models/{model}/repo?Revision={revision}&FilePath={quote_plus(name)}"
                for name in names]
