#!/usr/bin/env python3
"""Keep one ``llama-bootstrap share`` running in the background on this host (run by the role).

    share_service.py --python PY --manifest M --host H --port P --record FILE [--model KEY]

If the share recorded in FILE still answers at its URL (and on POSIX its process is alive) with the
same command, nothing is done. Otherwise an old one (same record) is stopped, a new one is started
detached from this process (its own session; stdout/stderr to files next to FILE), its ready document
is awaited, and FILE is rewritten. Prints one JSON line: {"changed": bool, "url": ..., "pid": ...}.
Standard library only; runs on Linux and Windows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

READY_TIMEOUT_S = 60.0
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
SERVER_NAME = "llama-bootstrap-share/"


def answers(url: str) -> bool:
    """Does a llama-bootstrap share answer at ``url``? (any HTTP status, with its Server header)."""
    request = urllib.request.Request(url.rstrip("/") + "/api/models/llama-bootstrap/probe", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - the share's own URL
            server = resp.headers.get("Server", "")
    except urllib.error.HTTPError as exc:
        server = exc.headers.get("Server", "") if exc.headers else ""
    except (OSError, ValueError):
        return False
    return server.startswith(SERVER_NAME)


def alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate it on Windows; the HTTP answer decides there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(record: Dict[str, Any]) -> None:
    pid = record.get("pid")
    if isinstance(pid, int) and pid > 0 and alive(pid) and answers(str(record.get("url", ""))):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def start(argv: List[str], folder: Path, cwd: Path) -> Dict[str, Any]:
    out_path, err_path = folder / "share.out", folder / "share.err"
    kwargs: Dict[str, Any] = {}
    if os.name == "posix":
        kwargs["start_new_session"] = True
    else:  # detached, and out of the WinRM session's job, which would end it with the session
        kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS  # type: ignore
                                   | CREATE_BREAKAWAY_FROM_JOB)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=str(cwd),  # noqa: S603
                                close_fds=True, **kwargs)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            ready = json.loads(out_path.read_text(encoding="utf-8"))
            return {"pid": proc.pid, "url": ready["url"], "log": ready.get("log"), "argv": argv}
        except (ValueError, KeyError):
            pass
        if proc.poll() is not None:
            tail = err_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"share exited with {proc.returncode}: " + " | ".join(tail))
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"share printed no ready document within {READY_TIMEOUT_S:.0f}s (see {err_path})")


def write_record(path: Path, record: Dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
    os.replace(tmp, path)


def main(args_in: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="8765")
    parser.add_argument("--model", default="")
    parser.add_argument("--record", required=True, type=Path)
    args = parser.parse_args(args_in)
    argv = [args.python, "-m", "bootstrap", "share", "--manifest", str(args.manifest), "--host", args.host,
            "--port", str(args.port), "--json"] + (["--model", args.model] if args.model else [])
    args.record.parent.mkdir(parents=True, exist_ok=True)
    try:
        record = json.loads(args.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if record.get("argv") == argv and isinstance(record.get("pid"), int) and alive(record["pid"]) \
            and answers(str(record.get("url", ""))):
        print(json.dumps({"changed": False, "url": record["url"], "pid": record["pid"]}))
        return 0
    if record:
        stop(record)
    try:
        record = start(argv, args.record.parent, args.manifest.parent)
    except (OSError, RuntimeError) as exc:
        print(json.dumps({"failed": True, "msg": f"cannot start share: {exc}"}))
        return 1
    write_record(args.record, record)
    print(json.dumps({"changed": True, "url": record["url"], "pid": record["pid"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
