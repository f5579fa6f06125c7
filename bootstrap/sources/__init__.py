"""Where weights may come from: the ``hub``, ``modelscope`` and ``dir`` sources (see base.py).

``parse_spec`` reads a source as written on the command line or in ``LLAMA_BOOTSTRAP_SOURCES``
(``hub``, ``hub=URL``, ``modelscope``, ``modelscope=URL``, ``dir=PATH``); ``open_source`` makes one.
"""

from __future__ import annotations

from typing import Optional

from bootstrap.sources.base import RemoteFile, RemoteRepo, RepoRef, Source, SourceSpec

__all__ = ["RemoteFile", "RemoteRepo", "RepoRef", "Source", "SourceSpec", "open_source", "KINDS"]

KINDS = ("hub", "modelscope", "dir")


def open_source(spec: SourceSpec, token: Optional[str], *, retries: int = 4, backoff_s: float = 1.0) -> Source:
    if spec.kind == "hub":
        from bootstrap.sources.hub import HubSource

        return HubSource(spec, token, retries=retries, backoff_s=backoff_s)
    if spec.kind == "modelscope":
        from bootstrap.sources.modelscope import ModelScopeSource

        return ModelScopeSource(spec, None, retries=retries, backoff_s=backoff_s)
    if spec.kind == "dir":
        from bootstrap.sources.localdir import DirSource

        return DirSource(spec)
    raise ValueError(f"unknown source kind {spec.kind!r}")
