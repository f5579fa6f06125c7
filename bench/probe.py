"""Run the real CLI (``bootstrap.cli.main``) with counters, for the claims a stopwatch cannot prove.

    python bench/probe.py REPORT.json [--phases] -- ARGS...

writes REPORT.json with: which heavy modules were imported, how many files were hashed (and
how long that took), how many TCP connections were opened, the bytes read and written by the
process (/proc/self/io) and, with ``--phases``, the time spent inside ``snapshot_download`` and
in our verification. Only wrappers are added; the product code is not changed. The timed
repetitions of each benchmark run the plain ``llama-bootstrap`` entry point instead.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from typing import Any, Dict

HEAVY = ("torch", "transformers", "huggingface_hub", "safetensors", "requests", "httpx")
_lock = threading.Lock()
report: Dict[str, Any] = {"hash_calls": [], "connects": [], "phases": {}}


def _add_phase(name: str, seconds: float) -> None:
    with _lock:
        report["phases"][name] = report["phases"].get(name, 0.0) + seconds


def _timed(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _add_phase(name, time.perf_counter() - t0)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def _count_hashes() -> None:
    import bootstrap.integrity as integrity
    import bootstrap.pull as pull

    for name in ("sha256_file", "git_blob_sha1"):
        original = getattr(integrity, name)

        def counted(path: Any, *args: Any, _orig: Any = original, _name: str = name, **kwargs: Any) -> str:
            t0 = time.perf_counter()
            try:
                return _orig(path, *args, **kwargs)
            finally:
                with _lock:
                    report["hash_calls"].append({"fn": _name, "path": str(path),
                                                 "seconds": round(time.perf_counter() - t0, 4)})

        setattr(integrity, name, counted)
        setattr(pull, name, counted)

    import bootstrap.follow as follow

    original_follow = follow.HashFollower._follow

    def followed(self: Any) -> Any:
        t0 = time.perf_counter()
        digest = original_follow(self)
        with _lock:
            report["hash_calls"].append({"fn": "follower", "path": self.rel_path, "digest": digest,
                                         "seconds": round(time.perf_counter() - t0, 4)})
        return digest

    follow.HashFollower._follow = followed  # type: ignore[method-assign]


def _count_connects() -> None:
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            with _lock:
                report["connects"].append(str(address))
        return original(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]


def _phases() -> None:
    """Time snapshot_download (the library's download) and _verify_all (our hashing) separately."""
    import huggingface_hub

    import bootstrap.pull as pull

    huggingface_hub.snapshot_download = _timed("download_s", huggingface_hub.snapshot_download)
    pull._verify_all = _timed("verify_s", pull._verify_all)
    pull.remote_repo = _timed("model_info_s", pull.remote_repo)


def _proc_io() -> Dict[str, int]:
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            return {k: int(v) for k, v in (line.split(": ") for line in fh if ": " in line)}
    except OSError:
        return {}


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    phases = "--phases" in rest[: rest.index("--")] if "--" in rest else False
    args = rest[rest.index("--") + 1:] if "--" in rest else rest
    t0 = time.perf_counter()
    _count_hashes()
    _count_connects()
    if phases:
        _phases()
    from bootstrap.cli import main as cli_main

    report["heavy_preloaded"] = sorted(m for m in HEAVY if m in sys.modules and phases)
    code: Any = 0
    try:
        cli_main(args)
    except SystemExit as exc:
        code = exc.code
    finally:
        report["exit_code"] = code
        report["seconds"] = round(time.perf_counter() - t0, 4)
        report["imported"] = sorted(m for m in HEAVY if m in sys.modules)
        report["io"] = _proc_io()
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    sys.exit(code)


if __name__ == "__main__":
    main()
