#!/usr/bin/env python3
"""Write the fleet's report on the controller and print its table (run by the role's report tasks).

    fleet_report.py REPORT_DIR < {"hosts": {"<name>": {"status": "ok|fail", "check": ..., "run": ..., ...}}}

Writes REPORT_DIR/fleet-report.json ({"hosts": {name: {"status", "check", "run"[, "reason"]}}}) and
REPORT_DIR/hosts/<name>/{check,run}.json, each atomically, then prints one table line per host: host,
GPU, VRAM, precision, smoke tokens/s, status.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

KEYS = ("status", "check", "run")


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _step(run: Any, name: str) -> Dict[str, Any]:
    for step in (run or {}).get("steps", []) if isinstance(run, dict) else []:
        if step.get("step") == name and isinstance(step.get("result"), dict):
            return step["result"]
    return {}


def _gpus(check: Any) -> List[Dict[str, Any]]:
    for item in (check or {}).get("checks", []) if isinstance(check, dict) else []:
        if item.get("name") == "gpu" and isinstance(item.get("data"), dict):
            return [g for g in item["data"].get("gpus", []) if isinstance(g, dict)]
    return []


def row(name: str, entry: Dict[str, Any]) -> List[str]:
    gpus = _gpus(entry.get("check"))
    smoke = _step(entry.get("run"), "smoke")
    vram: Optional[float] = None
    if gpus and isinstance(gpus[0].get("memory_total_mib"), (int, float)):
        vram = gpus[0]["memory_total_mib"] / 1024
    status = str(entry.get("status", "fail"))
    if status != "ok" and entry.get("reason"):
        status += f": {entry['reason']}"
    return [name, (str(gpus[0].get("name")) + (f" (+{len(gpus) - 1})" if len(gpus) > 1 else "")) if gpus else
            "none (CPU)", f"{vram:.1f} GiB" if vram is not None else "-", str(smoke.get("precision", "-")),
            str(smoke.get("tokens_per_s", "-")), status]


def table(hosts: Dict[str, Dict[str, Any]]) -> List[str]:
    rows = [["HOST", "GPU", "VRAM", "PRECISION", "TOK/S", "STATUS"]] + [row(n, e) for n, e in sorted(hosts.items())]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    report_dir = Path(argv[0])
    hosts = json.load(sys.stdin).get("hosts", {})
    report = {"hosts": {}}
    for name, entry in sorted(hosts.items()):
        clean = {k: entry.get(k) for k in KEYS}
        if entry.get("status") != "ok":
            clean["reason"] = entry.get("reason") or "failed"
        report["hosts"][name] = clean
        for kind in ("check", "run"):
            if isinstance(entry.get(kind), dict):
                write_json(report_dir / "hosts" / name / f"{kind}.json", entry[kind])
    write_json(report_dir / "fleet-report.json", report)
    print("\n".join(table(report["hosts"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
