"""A no-op ``llama-bootstrap run``: everything done, nothing changed (target < 2 s, no model load,
no network transfer, no re-hash).

Set-up: the tiny model plus one big random file (256 MiB; 64 MiB with --quick, so a re-hash
would show in the time) on LocalHub, a local git source, and one full ``run`` (check, clone,
pull, smoke). Then:

1. one ``run --json`` with the Hub still up: every step must be ``cached`` and the Hub's request
   log must stay empty;
2. the Hub is stopped, and ``run --json`` is timed several times: it must still succeed, all cached;
3. one run under bench/probe.py: no sha256/blob hashing, no TCP connection, torch /
   transformers / huggingface_hub not imported, and the bytes it read.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HUB_CHUNK,
    MIB,
    PROBE,
    Row,
    bench_cache_dir,
    bench_env,
    cli_path,
    cli_python,
    fmt_s,
    load_average,
    main_for,
    median,
    random_files,
    run_child,
    say,
    spread,
    tiny_model,
    workspace,
    write_manifest,
)

TARGET_S = 2.0
HEAVY = ("torch", "transformers", "huggingface_hub")


def statuses(doc) -> dict:
    return {s["step"]: s["status"] for s in doc["steps"]}


def run(quick: bool = False) -> List[Row]:
    from bootstrap.demo.gitsource import make_source_repo
    from bootstrap.demo.hubserver import LocalHub
    from bootstrap.demo.scenario import DEMO_REPO_ID

    reps = 5 if quick else 11
    pad = (64 if quick else 256) * MIB
    cli = cli_path()
    say("noop: building/reusing the tiny model")
    model = tiny_model(bench_cache_dir())
    with workspace("noop") as ws:
        served = ws / "served"
        shutil.copytree(model, served)
        random_files(served, {"padding.npy": pad})  # an LFS file, verified with sha256
        sha = make_source_repo(ws / "upstream")
        root = ws / "project"
        env = bench_env(ws / "hf-home")
        hub = LocalHub(chunk_size=HUB_CHUNK).start()
        try:
            hub.add_repo(DEMO_REPO_ID, served)
            manifest = write_manifest(root, hub.url, str(ws / "upstream"), sha, size_gb=pad / 1e9)
            first = run_child([cli, "run", "--manifest", manifest, "--json"], env=env).check()
            first_status = statuses(first.json())
            hub.reset_counters()
            second = run_child([cli, "run", "--manifest", manifest, "--json"], env=env).check()
            hub_requests = list(hub.requests)
            with_hub = statuses(second.json())
        finally:
            hub.stop()
        say(f"noop: first run {first.wall_s:.2f} s {first_status}; now {reps} no-op runs with the Hub stopped; "
            f"load {load_average()}")
        times, all_cached = [], True
        for _ in range(reps):
            child = run_child([cli, "run", "--manifest", manifest, "--json"], env=env).check()
            times.append(child.wall_s)
            all_cached &= set(statuses(child.json()).values()) == {"cached"}
        # The same interpreter by another path (python vs python3 symlink in the same venv): still a no-op?
        other = str(Path(cli_python()).with_name("python"))
        if other == cli_python():
            other = str(Path(cli_python()).with_name("python3"))
        alias = run_child([other, "-m", "bootstrap", "run", "--manifest", manifest, "--json"], env=env)
        alias_doc = alias.json() if alias.stdout.strip() else {}
        alias_seen = statuses(alias_doc) if "steps" in alias_doc else alias_doc.get("error", {}).get("message", "?")
        report = ws / "probe.json"
        run_child([cli_python(), PROBE, report, "--", "run", "--manifest", manifest, "--json"], env=env).check()
        probe = json.loads(report.read_text(encoding="utf-8"))
    m = median(times)
    heavy = [x for x in probe["imported"] if x in HEAVY]
    cached_ok = all_cached and set(with_hub.values()) == {"cached"}
    return [
        Row("no-op run (hub stopped)", fmt_s(m), f"< {TARGET_S:g} s", m < TARGET_S and cached_ok, [
            f"samples {spread(times)} s; first full run {first.wall_s:.2f} s ({first_status}); "
            f"every no-op step cached: {cached_ok}",
        ]),
        Row("no-op run: network", f"{len(hub_requests)} req, {len(probe['connects'])} conn", "0 requests",
            not hub_requests and not probe["connects"],
            [f"Hub request log during a no-op run with the Hub up: {hub_requests or 'empty'}; "
             "timed runs had the Hub stopped"]),
        Row("no-op run: re-hash", f"{len(probe['hash_calls'])} calls", "0 hashes", not probe["hash_calls"],
            [f"bytes read by the process: {probe['io'].get('rchar', 0) / 1e6:.1f} MB "
             f"(model files: {pad / 1e6:.0f} MB padding + tiny model)"]),
        Row("no-op run: model load", ", ".join(heavy) or "none imported", "no torch/transformers", not heavy),
        Row("no-op run via `python -m bootstrap`", "no-op" if alias.returncode == 0 and set(
            alias_seen.values()) == {"cached"} else "redoes work", "(info) same venv, other path", None,
            [f"{other} -m bootstrap run (Hub stopped): exit {alias.returncode}, {alias_seen}; the fingerprints "
             f"record sys.executable as given ({cli_python()} for the console script)"]),
    ]


if __name__ == "__main__":
    sys.exit(main_for(run))
