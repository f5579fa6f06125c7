"""HashFollower: hashing a download as it is written, and refusing every doubtful case."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from bootstrap.follow import NICE, HashFollower, incomplete_dir

CHUNK = 64 * 1024


def _writer(local: Path, name: str, data: bytes, sha: str, *, shrink_at=None, new_inode=False) -> None:
    """Write like huggingface_hub: append chunks to <x>.<sha>.incomplete, then rename into place."""
    folder = incomplete_dir(local)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"abc123.{sha}.incomplete"
    with open(tmp, "ab") as fh:
        for start in range(0, len(data), CHUNK):
            fh.write(data[start:start + CHUNK])
            fh.flush()
            if shrink_at is not None and start >= shrink_at:
                fh.truncate(CHUNK)
                shrink_at = None
                fh.seek(0, os.SEEK_END)
            time.sleep(0.002)
    if new_inode:  # a restart that wrote a fresh file instead of appending
        other = folder / "other.incomplete"
        other.write_bytes(data)
        os.replace(other, tmp)
    os.replace(tmp, local / name)


def _follow(tmp_path: Path, data: bytes, **writer_kw):
    sha = hashlib.sha256(data).hexdigest()
    finished = threading.Event()
    follower = HashFollower(tmp_path, "model.safetensors", sha, len(data), finished)
    follower.start()
    _writer(tmp_path, "model.safetensors", data, sha, **writer_kw)
    finished.set()
    follower.join(timeout=10)
    return follower.digest, sha


def test_follower_hashes_while_the_file_grows(tmp_path):
    data = os.urandom(40 * CHUNK + 123)
    digest, sha = _follow(tmp_path, data)
    assert digest == sha
    assert (tmp_path / "model.safetensors").read_bytes() == data


def test_follower_gives_up_when_the_file_shrinks(tmp_path):
    data = os.urandom(40 * CHUNK)
    digest, _ = _follow(tmp_path, data, shrink_at=20 * CHUNK)
    assert digest is None


def test_follower_gives_up_when_another_inode_ends_up_in_place(tmp_path):
    data = os.urandom(10 * CHUNK)
    digest, _ = _follow(tmp_path, data, new_inode=True)
    assert digest is None


def test_follower_never_seeing_the_file_returns_none(tmp_path):
    finished = threading.Event()
    follower = HashFollower(tmp_path, "x.bin", "0" * 64, 10, finished)
    follower.start()
    finished.set()
    follower.join(timeout=5)
    assert not follower.is_alive() and follower.digest is None


def test_follower_reports_the_digest_of_what_it_read_even_if_wrong(tmp_path):
    """A corrupt download gives a digest that does not match: pull then re-hashes, never trusts it blindly."""
    data = os.urandom(8 * CHUNK)
    sha = hashlib.sha256(b"something else").hexdigest()
    finished = threading.Event()
    follower = HashFollower(tmp_path, "m.bin", sha, len(data), finished)
    follower.start()
    _writer(tmp_path, "m.bin", data, sha)
    finished.set()
    follower.join(timeout=10)
    assert follower.digest == hashlib.sha256(data).hexdigest() != sha


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_follower_hashes_at_a_lower_priority_than_the_download(tmp_path):
    """The hashing thread is niced; the thread that started it (the download's side) is not."""
    seen = {}

    class Probe(HashFollower):
        def _follow(self):
            seen["follower"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return None

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    follower = Probe(tmp_path, "x.bin", "0" * 64, 10, threading.Event())
    follower.start()
    follower.join(timeout=5)
    assert seen["follower"] == max(before, NICE)  # already nicer than NICE: left alone
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
