"""Streaming file hashes: sha256 (what the Hub records for LFS files) and git's blob sha1 (the
``oid`` of every other file). Memory stays flat whatever the file size; hashlib releases the GIL,
so several files hash in parallel on several cores."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def git_blob_sha1(path: Path, chunk: int = CHUNK) -> str:
    """git hash-object: sha1 of ``b"blob <size>\\0" + content``."""
    size = path.stat().st_size
    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)  # git's object id
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()

