"""Run every benchmark and print one table: what, measured median, target, PASS/FAIL.

    python bench/run_all.py [--quick] [--only pull,hash,...]

--quick: fewer repetitions, and 64 MiB files instead of 256 MiB where the size is not part of the
target (hash, no-op run; pull keeps 3 x 256 MiB). Exit code 1 if any target
FAILs. Offline; needs the project installed (``pip install -e .``) in this interpreter.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, load_average, print_rows, say

BENCHES = ("startup", "hash", "pull", "noop_run", "smoke", "load", "demo", "serve")
MODULES = {name: f"bench.bench_{name}" for name in BENCHES}


def main(argv: List[str]) -> int:
    quick = "--quick" in argv
    only = next((a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
                 if a.startswith("--only")), None)
    default = list(BENCHES)
    names = [n.strip() for n in only.split(",")] if only else default
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        say(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
        return 2
    from importlib.metadata import version

    # Versions from the metadata: importing torch here would only make this process bigger.
    header = (f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; Python "
              f"{platform.python_version()}, " + ", ".join(f"{d} {version(d)}" for d in
                                                          ("torch", "transformers", "huggingface_hub")))
    started, load_before = time.perf_counter(), load_average()
    rows: List[Row] = []
    for name in names:
        t0 = time.perf_counter()
        say(f"== {name}")
        rows += importlib.import_module(MODULES[name]).run(quick)
        say(f"== {name}: {time.perf_counter() - t0:.1f} s")
    print(header)
    print(f"mode: {'quick' if quick else 'full'}; took {time.perf_counter() - started:.0f} s; load average "
          f"before {load_before}, after {load_average()}\n")
    print_rows(rows)
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
