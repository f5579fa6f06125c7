"""Prototype: overlap sha256 verification with the download, measured against the alternatives.

Not product code: it shows what a change to ``bootstrap/pull.py`` would buy. Each variant is a
fresh subprocess downloading the same files from the same LocalHub into a fresh folder:

- ``none``:    ``snapshot_download`` only (the baseline of bench_pull)
- ``serial``:  ``snapshot_download``, then hash every file (2 threads): what ``pull`` does today
- ``perfile``: ``hf_hub_download`` per file in a thread pool, each file hashed as soon as it is done
- ``follow``:  ``snapshot_download`` while one thread per file hashes huggingface_hub's ``.incomplete``
               file as it grows; the descriptor stays open across the library's rename, so the
               final inode is checked and only the tail is read after the download returns

Run twice: at full loopback speed (both cores busy with server + client) and with the server
throttled to a link-like rate (where the download waits on the network, as it does for real).

    python bench/proto_overlap.py [--quick]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 8 * 1024 * 1024
VARIANTS = ("none", "serial", "perfile", "follow")


# ------------------------------------------------------------------------------ child side


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                return digest.hexdigest()
            digest.update(view[:n])


class Follower(threading.Thread):
    """Hash ``<local_dir>/.cache/huggingface/download/*.<sha256>.incomplete`` while it is written.

    huggingface_hub appends in order (``open(..., "ab")``) and renames the finished file into place
    (same filesystem: same inode). Any surprise (the file shrinks, another inode ends up in place,
    the tail cannot be read) makes ``result`` None, and the caller hashes the final file instead.
    """

    def __init__(self, local_dir: Path, name: str, sha256: str, size: int, finished: threading.Event) -> None:
        super().__init__(daemon=True)
        self.local_dir, self.name, self.sha256, self.size, self.finished = local_dir, name, sha256, size, finished
        self.result: Optional[str] = None
        self.tail_bytes = 0  # bytes still to read after the download returned

    def run(self) -> None:
        download_dir = self.local_dir / ".cache" / "huggingface" / "download"
        fh = None
        while fh is None:  # wait for the library to create the .incomplete file
            for path in download_dir.glob(f"*.{self.sha256}.incomplete") if download_dir.is_dir() else ():
                try:
                    fh = open(path, "rb", buffering=0)
                except FileNotFoundError:
                    continue
                break
            if fh is None:
                if self.finished.is_set():
                    return  # never saw it (already there, or renamed too fast): caller hashes
                time.sleep(0.005)
        with fh:
            digest = hashlib.sha256()
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            pos = 0
            while pos < self.size:
                n = fh.readinto(buf)
                if n:
                    digest.update(view[:n])
                    pos += n
                    continue
                if os.fstat(fh.fileno()).st_size < pos:
                    return  # truncated under us (server ignored Range): give up, caller hashes
                if self.finished.is_set():
                    break
                time.sleep(0.005)
            # All bytes may be read before the library renames the file: wait for the download to return.
            self.finished.wait()
            start = pos
            while True:  # what was written after the last poll
                n = fh.readinto(buf)
                if not n:
                    break
                digest.update(view[:n])
                pos += n
            self.tail_bytes = pos - start
            st = os.fstat(fh.fileno())
            try:
                final = os.stat(self.local_dir / self.name)
            except FileNotFoundError:
                return
            if pos == self.size == st.st_size and (final.st_ino, final.st_dev) == (st.st_ino, st.st_dev):
                self.result = digest.hexdigest()


def child(mode: str, repo_id: str, commit: str, local_dir: str, endpoint: str, expected_json: str) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    expected: Dict[str, Dict[str, object]] = json.loads(expected_json)
    root = Path(local_dir)
    t0 = time.perf_counter()
    got: Dict[str, str] = {}
    extra: Dict[str, object] = {}
    if mode in ("none", "serial"):
        snapshot_download(repo_id, revision=commit, local_dir=local_dir, endpoint=endpoint)
        t_dl = time.perf_counter()
        if mode == "serial":
            with ThreadPoolExecutor(max_workers=min(len(expected), os.cpu_count() or 1)) as pool:
                got = dict(zip(expected, pool.map(lambda n: sha256_file(root / n), expected)))
    elif mode == "perfile":
        def one(name: str) -> str:
            hf_hub_download(repo_id, name, revision=commit, local_dir=local_dir, endpoint=endpoint)
            return sha256_file(root / name)

        with ThreadPoolExecutor(max_workers=8) as pool:
            got = dict(zip(expected, pool.map(one, expected)))
        t_dl = time.perf_counter()
    elif mode == "follow":
        finished = threading.Event()
        followers = [Follower(root, n, str(e["sha256"]), int(e["size"]), finished) for n, e in expected.items()]
        for f in followers:
            f.start()
        try:
            snapshot_download(repo_id, revision=commit, local_dir=local_dir, endpoint=endpoint)
        finally:
            finished.set()
        t_dl = time.perf_counter()
        for f in followers:
            f.join()
        fallback = [f.name for f in followers if f.result is None]
        got = {f.name: f.result or sha256_file(root / f.name) for f in followers}
        extra = {"fallback": fallback, "tail_mb": round(sum(f.tail_bytes for f in followers) / 1e6, 1)}
    else:
        raise SystemExit(f"unknown mode {mode}")
    t_end = time.perf_counter()
    if mode != "none":
        bad = [n for n, e in expected.items() if got.get(n) != e["sha256"]]
        if bad:
            raise SystemExit(f"verification failed: {bad}")
    print(json.dumps({"download_s": round(t_dl - t0, 4), "after_s": round(t_end - t_dl, 4), **extra}))


# ------------------------------------------------------------------------------ bench side


def run(quick: bool = False) -> List[Row]:  # noqa: F821 - imported below
    from bench.common import (
        HUB_CHUNK,
        MIB,
        Row,
        bench_env,
        fmt_ratio,
        fresh_dir,
        median,
        random_files,
        run_child,
        say,
        spread,
        workspace,
    )
    from bootstrap.demo.hubserver import LocalHub
    from bootstrap.demo.scenario import DEMO_REPO_ID

    reps = 2 if quick else 3
    size = (64 if quick else 256) * MIB
    names = [f"model-{i + 1:05d}-of-00003.safetensors" for i in range(3)]
    rows: List[Row] = []
    with workspace("overlap") as ws, LocalHub(chunk_size=HUB_CHUNK) as hub:
        commit = hub.add_repo(DEMO_REPO_ID, random_files(ws / "served", {n: size for n in names}))
        expected = {n: {"sha256": hub.file_info(DEMO_REPO_ID, n).sha256, "size": size} for n in names}
        env = bench_env(ws / "hf-home")
        # Link-like: 1 MiB per 10 ms per connection = ~100 MiB/s per file, ~300 MiB/s in all.
        for label, slow in (("loopback", None), ("~300 MiB/s link", {"delay": 0.01, "chunk": MIB})):
            hub.clear_faults()
            if slow:
                hub.inject("*/resolve/*", "slow", times=None, method="GET", **slow)
            samples: Dict[str, List[float]] = {v: [] for v in VARIANTS}
            notes: Dict[str, List[str]] = {v: [] for v in VARIANTS}
            say(f"overlap ({label}): {reps} rounds of {', '.join(VARIANTS)} (rotating order)")
            for i in range(reps + 1):  # round 0 is a warm-up
                order = VARIANTS[i % len(VARIANTS):] + VARIANTS[:i % len(VARIANTS)]
                order = order if i % 2 == 0 else tuple(reversed(order))
                for mode in order:
                    target = fresh_dir(ws / "runs" / f"{mode}{i}")
                    c = run_child([sys.executable, __file__, "child", mode, DEMO_REPO_ID, commit, target,
                                   hub.url, json.dumps(expected)], env=env).check()
                    shutil.rmtree(target, ignore_errors=True)
                    if i:
                        samples[mode].append(c.wall_s)
                        notes[mode].append(json.loads(c.stdout))
            base = median(samples["none"])
            for mode in VARIANTS[1:]:
                m = median(samples[mode])
                after = median([n["after_s"] for n in notes[mode]])
                fallbacks = sum(len(n.get("fallback", [])) for n in notes[mode])
                rows.append(Row(f"overlap {label}: {mode} vs none", fmt_ratio(m / base), "<= 1.05x (proposal)",
                                None, [f"none {base:.3f} s ({spread(samples['none'])}), {mode} {m:.3f} s "
                                       f"({spread(samples[mode])}); verification left after the download "
                                       f"returned: median {after:.3f} s" +
                                       (f"; follower fallbacks {fallbacks}" if mode == "follow" else "")]))
        hub.clear_faults()
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(*sys.argv[2:8])
    else:
        from bench.common import main_for

        sys.exit(main_for(run))
