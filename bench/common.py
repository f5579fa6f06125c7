"""Shared helpers for the benchmarks: timed child processes, medians, the local Hub, manifests, the table.

Everything here is the standard library plus the project's own demo builders (LocalHub, the tiny
model, the git source). Children are timed with ``os.wait4``, which returns the child's own
resource usage (peak RSS), so no ``/usr/bin/time`` is needed. POSIX only (Linux, macOS).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PROBE = BENCH_DIR / "probe.py"
MIB = 1024 * 1024
# Hub files are served in chunks of this size (LocalHub's default is 64 KiB): the server should not
# be the bottleneck, so that our own overhead (hashing) shows at its largest.
HUB_CHUNK = 1 * MIB
# Environment variables that would point a child at another Hub, token or state: removed.
_DROP_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_OFFLINE",
             "PYTHONDONTWRITEBYTECODE")


def cli_path() -> str:
    """The ``llama-bootstrap`` console script next to this interpreter (else on PATH)."""
    here = Path(sys.executable).parent / "llama-bootstrap"
    if here.is_file():
        return str(here)
    found = shutil.which("llama-bootstrap")
    if not found:
        raise SystemExit("llama-bootstrap is not installed in this environment: pip install -e .")
    return found


def cli_python() -> str:
    """The interpreter the console script runs on (its shebang), e.g. ``.../bin/python3``.

    The probe must run on the very same path: the pipeline's fingerprints record ``sys.executable``
    as given, so ``.../python`` and ``.../python3`` (the same venv) count as different interpreters.
    """
    with open(cli_path(), "rb") as fh:
        first = fh.readline().decode("utf-8", "replace").strip()
    if first.startswith("#!") and " " not in first[2:].strip() and Path(first[2:].strip()).exists():
        return first[2:].strip()
    return sys.executable


def bench_env(hf_home: Path, **extra: str) -> Dict[str, str]:
    """The children's environment: ours, minus anything that points elsewhere, plus a private HF_HOME.

    PYTHONDONTWRITEBYTECODE is dropped so the package's bytecode is cached like in a normal install
    (the first, discarded repetition writes it).
    """
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV and not k.startswith("LLAMA_BOOTSTRAP_")}
    env.update({"HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


# ------------------------------------------------------------------------------ timing


@dataclass
class Child:
    cmd: List[str]
    wall_s: float
    maxrss_bytes: int
    user_s: float
    sys_s: float
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Child:
        if self.returncode != 0:
            raise RuntimeError(f"command failed ({self.returncode}): {' '.join(self.cmd)}\n"
                               f"--- stdout\n{self.stdout[-2000:]}\n--- stderr\n{self.stderr[-4000:]}")
        return self

    def json(self) -> Any:
        return json.loads(self.stdout)


# A small launcher process starts each measured command. On Linux a child's ru_maxrss starts at the
# RSS of the process that exec'd it (the kernel carries the old image's high-water mark across
# exec), so a child started straight from this (large) process would report our RSS as its own.
_LAUNCHER = """\
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL)
_, status, ru = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as fh:
    json.dump({"wall_s": wall, "maxrss": ru.ru_maxrss, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
               "returncode": os.waitstatus_to_exitcode(status)}, fh)
"""


def run_child(cmd: Sequence[str], *, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None) -> Child:
    """Run ``cmd``: wall time from spawn to reap, the child's own peak RSS and CPU times (os.wait4)."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as stats:
        subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, stats.name, *cmd], stdin=subprocess.DEVNULL,
                       stdout=out, stderr=err, env=env, cwd=str(cwd) if cwd else None, check=False)
        doc = json.loads(stats.read() or "{}")
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
        if not doc:
            raise RuntimeError(f"launcher failed for {' '.join(cmd)}: {stderr[-2000:]}")
        rss = doc["maxrss"] if sys.platform == "darwin" else doc["maxrss"] * 1024
        return Child(cmd, doc["wall_s"], rss, doc["user_s"], doc["sys_s"], doc["returncode"], stdout, stderr)


def abba(reps: int) -> Iterator[Tuple[int, str]]:
    """(repetition, side) in the order A B B A A B B A ...: linear drift cancels between the sides."""
    for i in range(reps):
        for side in (("A", "B") if i % 2 == 0 else ("B", "A")):
            yield i, side


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``min..max`` of the samples, for the notes."""
    return f"{min(values):.3f}..{max(values):.3f}" if values else "-"


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ------------------------------------------------------------------------------ results


@dataclass
class Row:
    what: str
    measured: str
    target: str
    ok: Optional[bool]  # None: informational
    notes: List[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "FAIL")


def print_rows(rows: Sequence[Row], out: Any = None) -> None:
    out = out or sys.stdout
    widths = [max([len(h)] + [len(getattr(r, a)) for r in rows]) for h, a in
              (("what", "what"), ("median", "measured"), ("target", "target"))]
    header = f"{'what':<{widths[0]}}  {'median':>{widths[1]}}  {'target':<{widths[2]}}  verdict"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(f"{r.what:<{widths[0]}}  {r.measured:>{widths[1]}}  {r.target:<{widths[2]}}  {r.verdict}", file=out)
    notes = [(r.what, n) for r in rows for n in r.notes]
    if notes:
        print("\nnotes:", file=out)
        for what, note in notes:
            print(f"  [{what}] {note}", file=out)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main_for(run: Callable[[bool], List[Row]], argv: Optional[Sequence[str]] = None) -> int:
    """``python bench/bench_x.py [--quick]``: run one benchmark and print its rows."""
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    rows = run(quick)
    print_rows(rows)
    return 0 if all(r.ok is not False for r in rows) else 1


# ------------------------------------------------------------------------------ workspace


@contextlib.contextmanager
def workspace(name: str) -> Iterator[Path]:
    """A temp folder, removed afterwards (TMPDIR decides where)."""
    path = Path(tempfile.mkdtemp(prefix=f"llama-bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def random_files(folder: Path, sizes: Dict[str, int], block: int = 16 * MIB) -> Path:
    """Files of random bytes (os.urandom, written in blocks so memory stays flat)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        with open(folder / name, "wb") as fh:
            left = size
            while left:
                n = min(block, left)
                fh.write(os.urandom(n))
                left -= n
    return folder


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_manifest(folder: Path, endpoint: str, source_url: str, ref: str, *, size_gb: float,
                   max_new_tokens: Optional[int] = None, precision: Optional[str] = None) -> Path:
    """The demo's manifest (bootstrap.demo.scenario.demo_manifest) for a model of ``size_gb``, in ``folder``."""
    import yaml

    from bootstrap.demo.scenario import DEMO_MODEL_KEY, demo_manifest

    doc = demo_manifest(endpoint, source_url, ref)
    doc["models"][DEMO_MODEL_KEY]["size_gb"] = size_gb
    if max_new_tokens is not None:
        doc["smoke"]["max_new_tokens"] = max_new_tokens
    if precision is not None:
        doc["smoke"]["precision"] = precision
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def pulled_project(ws: Path, model: Path, env: Dict[str, str], *, size_gb: float,
                   max_new_tokens: Optional[int] = None, precision: Optional[str] = None) -> Path:
    """A project folder ``ws/project`` whose manifest's model (``model``, served once) is pulled; its manifest."""
    from bootstrap.demo.hubserver import LocalHub
    from bootstrap.demo.scenario import DEMO_REPO_ID

    with LocalHub() as hub:
        hub.add_repo(DEMO_REPO_ID, model)
        manifest = write_manifest(ws / "project", hub.url, str(ws / "upstream"), PLACEHOLDER_REF, size_gb=size_gb,
                                  max_new_tokens=max_new_tokens, precision=precision)
        run_child([cli_path(), "pull", "--manifest", manifest, "--json"], env=env).check()
    return manifest


def model_dir(root: Path) -> Path:
    """Where pull puts the demo repo under a manifest folder ``root`` (weights.dir = models)."""
    from bootstrap.demo.scenario import DEMO_REPO_ID

    return root / "models" / DEMO_REPO_ID


PLACEHOLDER_REF = "0" * 40  # a well-formed source ref for manifests whose clone step is never run


def tiny_model(cache: Path) -> Path:
    """The demo's tiny chat model, built once per cache folder (takes ~15 s on 2 cores)."""
    from bootstrap.demo.tinymodel import cached_tiny_model

    return cached_tiny_model(cache)


def bench_cache_dir() -> Path:
    """A cache kept between benchmark runs for the tiny model (LLAMA_BOOTSTRAP_BENCH_CACHE, else ~/.cache)."""
    value = os.environ.get("LLAMA_BOOTSTRAP_BENCH_CACHE", "").strip()
    return Path(value) if value else Path.home() / ".cache" / "llama-bootstrap-bench"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3f}x"
