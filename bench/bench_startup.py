"""Start-up: ``llama-bootstrap --help`` and ``llama-bootstrap models`` (target < 0.5 s each), and
the claim that neither imports torch, transformers or huggingface_hub.

Each command is run as a fresh process several times after a discarded warm-up (which also
writes the package's bytecode cache, as a normal install has it); the median wall time is
reported, next to a bare ``python -c pass`` for the interpreter's own floor. The import claim is
checked with ``python -X importtime``: every module the command imported is listed there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO_ROOT,
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

TARGET_S = 0.5
HEAVY = ("torch", "transformers", "huggingface_hub")


def imported_modules(stderr: str) -> Dict[str, Tuple[int, int]]:
    """``-X importtime`` output as {module: (nesting depth, cumulative microseconds)}."""
    mods: Dict[str, Tuple[int, int]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, raw = line[len("import time:"):].split("|")
        name = raw.strip()
        if cumulative.strip().isdigit():
            mods[name] = ((len(raw) - len(raw.lstrip()) - 1) // 2, int(cumulative))
    return mods


def run(quick: bool = False) -> List[Row]:
    reps = 5 if quick else 11
    cli = cli_path()
    manifest = REPO_ROOT / "manifest.yaml"
    commands: Dict[str, Sequence[str]] = {
        "llama-bootstrap --help": ["--help"],
        "llama-bootstrap models": ["models", "--manifest", str(manifest)],
    }
    rows: List[Row] = []
    with workspace("startup") as ws:
        env = bench_env(ws / "hf-home")
        floor = []
        run_child([sys.executable, "-c", "pass"], env=env)
        for _ in range(reps):
            floor.append(run_child([sys.executable, "-c", "pass"], env=env).wall_s)
        say(f"startup: {reps} runs of each command; load {load_average()}")
        for label, args in commands.items():
            run_child([cli, *args], env=env).check()  # warm-up (and bytecode cache)
            times = [run_child([cli, *args], env=env).check().wall_s for _ in range(reps)]
            traced = run_child([sys.executable, "-X", "importtime", cli, *args], env=env).check()
            mods = imported_modules(traced.stderr)
            heavy = sorted({m.split(".")[0] for m in mods} & set(HEAVY))
            top = sorted(((us, m) for m, (depth, us) in mods.items() if depth == 0), reverse=True)[:4]
            m = median(times)
            rows.append(Row(label, fmt_s(m), f"< {TARGET_S} s", m < TARGET_S, [
                f"samples {spread(times)} s; bare `python -c pass` {median(floor):.3f} s; {len(mods)} modules, "
                f"slowest top-level imports: " + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top),
            ]))
            rows.append(Row(f"{label}: heavy imports", ", ".join(heavy) or "none", "none of " + "/".join(HEAVY),
                            not heavy))
    return rows


if __name__ == "__main__":
    sys.exit(main_for(run))
