"""Printing: results to stdout, progress and errors to stderr; colour only on a terminal.

Everything printed goes through :func:`bootstrap.redact.scrub`: no secret reaches the screen.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

import click

from bootstrap.redact import scrub, scrub_obj

_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "bright_black"}


def _echo(message: str, *, err: bool = False, color: Optional[bool] = None) -> None:
    click.echo(scrub(message), err=err, color=color)


def say(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    click.echo(scrub(message), file=stream, color=stream.isatty() if hasattr(stream, "isatty") else False)


def print_json(doc: Dict[str, Any]) -> None:
    # Scrubbed as data (a secret with a quote or backslash in it is escaped in JSON text) and as text
    # (values that ``default=str`` turns into strings).
    _echo(json.dumps(scrub_obj(doc), ensure_ascii=False, indent=2, default=str))


def _status(status: str) -> str:
    label = status.upper() if status == "fail" else status
    return click.style(f"{label:<5}", fg=_COLOURS.get(status))


def print_check_report(report) -> None:
    width = max(len(c.name) for c in report.checks)
    tty = sys.stdout.isatty()
    for c in report.checks:
        _echo(f"{_status(c.status)} {c.name:<{width}}  {c.detail}", color=tty)
        if c.remedy and c.status in ("warn", "fail"):
            _echo(f"{'':5} {'':<{width}}  -> {c.remedy}", color=tty)
    failed = report.failed
    summary = f"overall: {report.status}" + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else "")
    _echo(summary)


def print_models(rows: List[Dict[str, Any]]) -> None:
    headers = ("key", "repo_id", "size_gb", "min_vram_gb", "base", "gated")
    table = [[("* " if r["default"] else "  ") + r["key"], r["repo_id"], f"{r['total_gb']:g}",
              f"{r['min_vram_gb']:g}", r["base"] or "-", "yes" if r["gated"] else "no"] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(("  " + headers[0],) + headers[1:], *table)]
    _echo("  ".join(h.ljust(w) for h, w in zip(("  " + headers[0],) + headers[1:], widths)).rstrip())
    for row in table:
        _echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    _echo("(* = the manifest's default; size_gb includes the base model for LoRA variants)")


def print_run_result(result) -> None:
    tty = sys.stdout.isatty()
    for step in result.steps:
        status = {"done": "ok", "cached": "ok", "skipped": "skip", "failed": "fail"}[step.status]
        _echo(f"{_status(status)} {step.step:<6} {step.status:<7} {step.seconds:6.2f}s  {step.detail}", color=tty)
    _echo(f"{'ok' if result.ok else 'FAILED'} in {result.seconds:.2f}s (log: {result.log_path})")
