"""sha256 verification speed: ``bootstrap.integrity.sha256_file`` on one core, streaming.

A file of random bytes (256 MiB; 64 MiB with --quick) is read once so it sits in the page cache
(the state right after a download), then hashed several times in this process; the median
throughput is reported (target >= 1 GB/s per core). For reference: hashlib on bytes already in
memory, and two files hashed at once on two threads (what ``pull`` does; hashlib releases the
GIL). That hashing happens once per file and never on a no-op run is checked by bench_pull and
bench_noop_run with the probe's counters.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, Row, load_average, main_for, median, random_files, say, spread, workspace

TARGET_GBPS = 1.0


def run(quick: bool = False) -> List[Row]:
    from bootstrap.integrity import CHUNK, sha256_file

    reps = 3 if quick else 5
    size = (64 if quick else 256) * MIB
    with workspace("hash") as ws:
        files = random_files(ws, {"a.bin": size, "b.bin": size})
        paths = [files / "a.bin", files / "b.bin"]
        for p in paths:  # into the page cache, like a file that was just downloaded
            sha256_file(p)
        say(f"hash: {reps} x sha256_file on {size // MIB} MiB; load {load_average()}")
        one: List[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            sha256_file(paths[0])
            one.append(size / (time.perf_counter() - t0) / 1e9)
        two: List[float] = []
        workers = min(2, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in range(reps):
                t0 = time.perf_counter()
                list(pool.map(sha256_file, paths))
                two.append(2 * size / (time.perf_counter() - t0) / 1e9)
        data = paths[0].read_bytes()
        mem: List[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            hashlib.sha256(data).hexdigest()
            mem.append(size / (time.perf_counter() - t0) / 1e9)
        del data
    m = median(one)
    return [
        Row("sha256_file, one core (page cache)", f"{m:.2f} GB/s", f">= {TARGET_GBPS:g} GB/s", m >= TARGET_GBPS, [
            f"samples {spread(one)} GB/s, {CHUNK // MIB} MiB reads into one reused buffer (flat memory); "
            f"hashlib on bytes in memory {median(mem):.2f} GB/s; {workers} files on {workers} threads "
            f"{median(two):.2f} GB/s in all",
        ]),
    ]


if __name__ == "__main__":
    sys.exit(main_for(run))
