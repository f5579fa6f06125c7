"""``llama-bootstrap demo`` end to end (target < 60 s on 2 cores).

Cold: a fresh work folder (``--fresh``), so the demo builds its tiny model (trains the tokenizer
and the model), its git source, serves them and runs the pipeline twice: what a first-time user
waits for. Warm: the same folder again (the built model is reused; the pipeline still runs in
full). Both must report the first run's steps done and the second run's steps cached.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    bench_env,
    cli_path,
    fmt_s,
    load_average,
    main_for,
    median,
    run_child,
    say,
    spread,
    workspace,
)

TARGET_S = 60.0


def _check(doc: dict) -> None:
    second = {s["step"]: s["status"] for s in doc["second_run"]["steps"]}
    if doc["status"] != "ok" or set(second.values()) != {"cached"}:
        raise RuntimeError(f"demo did not pass as expected: status {doc['status']}, second run {second}")


def run(quick: bool = False) -> List[Row]:
    cold_reps, warm_reps = (1, 1) if quick else (1, 2)
    cli = cli_path()
    cold, warm, build = [], [], []
    with workspace("demo") as ws:
        env = bench_env(ws / "hf-home")
        workdir = ws / "demo"
        say(f"demo: {cold_reps} cold (--fresh) and {warm_reps} warm runs; load {load_average()}")
        for _ in range(cold_reps):
            child = run_child([cli, "demo", "--workdir", workdir, "--fresh", "--json"], env=env).check()
            doc = child.json()
            _check(doc)
            cold.append(child.wall_s)
            build.append(doc["build_s"])
            say(f"  cold: {child.wall_s:.2f} s (building the tiny model and git source {doc['build_s']:.2f} s)")
        for _ in range(warm_reps):
            child = run_child([cli, "demo", "--workdir", workdir, "--json"], env=env).check()
            doc = child.json()
            _check(doc)
            warm.append(child.wall_s)
            first = {s["step"]: s["seconds"] for s in doc["first_run"]["steps"]}
            say(f"  warm: {child.wall_s:.2f} s; first run steps {first}")
    m = median(cold)
    return [
        Row("demo end to end (cold, builds the model)", fmt_s(m), f"< {TARGET_S:g} s", m < TARGET_S,
            [f"samples {spread(cold)} s, of which building the tiny model + git source {median(build):.2f} s"]),
        Row("demo end to end (warm, model cached)", fmt_s(median(warm)), f"< {TARGET_S:g} s",
            median(warm) < TARGET_S, [f"samples {spread(warm)} s"]),
    ]


if __name__ == "__main__":
    sys.exit(main_for(run))
