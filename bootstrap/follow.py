"""Hash a file while huggingface_hub downloads it, so verification costs no extra wall time.

huggingface_hub writes ``<local_dir>/.cache/huggingface/download/<x>.<etag>.incomplete`` by
appending whole chunks in order (resuming appends too), then renames it into place on the same
filesystem: the same inode. For LFS files the etag is the sha256, so the follower finds the file
by the hash it is meant to have, reads it as it grows and keeps it open across the rename.

A follower's digest is only a shortcut: it is used when the follower read exactly the expected
number of bytes from the very inode that ended up in place and that file never shrank. In every
other case (never saw the file, a retry or restart, another inode in place) ``digest`` is None and
the caller hashes the final file itself. A follower's mismatch is never taken as proof of
corruption either: the caller hashes again before it condemns a file.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from bootstrap.integrity import CHUNK

POLL_S = 0.01
NICE = 10  # hashing yields the CPU to the download (and, on a small box, to everything else)


def incomplete_dir(local_dir: Path) -> Path:
    """huggingface_hub's bookkeeping for ``local_dir`` downloads: ``.incomplete`` and ``.metadata`` files."""
    return local_dir / ".cache" / "huggingface" / "download"


class HashFollower(threading.Thread):
    """Follow one LFS file's ``.incomplete`` download; ``digest`` is its sha256 or None (see module doc)."""

    def __init__(self, local_dir: Path, rel_path: str, sha256: str, size: int, finished: threading.Event) -> None:
        super().__init__(name=f"hash {rel_path}", daemon=True)
        self.local_dir, self.rel_path, self.sha256, self.size = local_dir, rel_path, sha256, size
        self.finished = finished
        self.digest: Optional[str] = None

    def _open(self):
        folder = incomplete_dir(self.local_dir)
        while True:
            for path in folder.glob(f"*.{self.sha256}.incomplete") if folder.is_dir() else ():
                try:
                    return open(path, "rb", buffering=0)
                except FileNotFoundError:
                    continue
            if self.finished.is_set():
                return None  # already complete, or renamed before we looked: the caller hashes
            time.sleep(POLL_S)

    def run(self) -> None:
        _lower_priority()
        try:
            self.digest = self._follow()
        except OSError:
            self.digest = None

    def _follow(self) -> Optional[str]:
        fh = self._open()
        if fh is None:
            return None
        with fh:
            digest = hashlib.sha256()
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            pos = 0
            while True:
                n = fh.readinto(buf)
                if n:
                    digest.update(view[:n])
                    pos += n
                    if pos > self.size:
                        return None
                    continue
                if os.fstat(fh.fileno()).st_size < pos:
                    return None  # rewritten under us
                if self.finished.is_set():
                    # The download returned: whatever was written is readable now; one more pass.
                    n = fh.readinto(buf)
                    if n:
                        digest.update(view[:n])
                        pos += n
                        continue
                    break
                time.sleep(POLL_S)
            held = os.fstat(fh.fileno())
            try:
                final = os.stat(self.local_dir / self.rel_path)
            except FileNotFoundError:
                return None
            same_file = (final.st_ino, final.st_dev) == (held.st_ino, held.st_dev)
            if same_file and pos == self.size == held.st_size:
                return digest.hexdigest()
            return None


def _lower_priority() -> None:
    """Make the calling thread nicer (Linux only: there a thread id is a valid PRIO_PROCESS target).

    The hash has time to spare while the link is the limit; the download must never wait for it.
    """
    if sys.platform != "linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), NICE))
    except OSError:
        pass  # not permitted (seccomp, containers): hashing at normal priority is still correct
