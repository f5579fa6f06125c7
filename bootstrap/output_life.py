"""Printing ``status`` and ``uninstall`` for people (``--json`` prints the cores' own documents)."""

from __future__ import annotations

from typing import Any, List

from bootstrap.output import say


def size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def print_status(report: Any) -> None:
    say(f"receipt: {report.receipt}" + ("" if report.receipt_exists else " (none: nothing recorded yet)"))
    if report.items:
        say("installed (from the receipt):")
        width = max(len(i["kind"]) for i in report.items)
        for i in report.items:
            where = i["path"] + (f" -> {i['symlink_to']}" if i["symlink_to"] else "")
            state = i["status"] if i["exists"] else f"{i['status']}, gone"
            say(f"  {i['kind']:<{width}}  {state:<7}  {size(i['bytes']) if i['exists'] else '-':>9}  {where}")
        say(f"  disk used by what llama-bootstrap created: {size(report.disk_bytes)}")
    for env in report.envs:
        versions = ", ".join(f"{k} {v or '-'}" for k, v in env.versions.items())
        say(f"{env.kind} {env.path} ({env.role}{', switched in at ' + env.name if env.name != env.path else ''}):")
        say(f"  python {env.python or '-'}, {versions}")
        lock = {True: "matches its lock", False: "does NOT match its lock", None: "lock not known"}[env.matches_lock]
        say(f"  {lock}: {env.lock_detail}")
    for w in report.weights:
        if not w["pulled"]:
            say(f"weights {w['repo_id']}: not pulled yet ({w['dir']})")
            continue
        verified = "verified by hash, unchanged since" if w["verified"] else "NOT verified (changed since, or " \
            "size-only files): run `llama-bootstrap pull --verify`"
        pinned = "pinned by the weights lock" if w["pinned_by_lock"] else "NOT pinned"
        say(f"weights {w['repo_id']}@{(w['commit'] or '')[:12]}: {w['files_verified']} files {verified}; {pinned}; "
            f"{size(w['bytes'])} at {w['dir']}")
    smoke = report.smoke
    if smoke is None:
        say("smoke: never run")
    else:
        current = "" if smoke["current"] else " (recorded for other weights or settings)"
        say(f"smoke: {'passed' if smoke['passed'] else 'FAILED'}{current}: {smoke['precision']} on {smoke['device']}, "
            f"{smoke['tokens_per_s']} tok/s: {smoke['answer']!r}")


#: What each action is called in the report: (planned, done).
_VERBS = {"remove": ("remove", "removed"), "unlink": ("unlink", "unlinked"), "undo-block": ("edit", "edited"),
          "rmdir-if-empty": ("rmdir", "removed"), "keep": ("keep", "kept")}


def _lines(items: List[Any], done: bool, verb: str = "") -> None:
    for item in items:
        shown = verb or _VERBS.get(item.action, (item.action, item.action))[1 if done else 0]
        extra = f" ({item.reason})" if item.reason else ""
        amount = f"{size(item.bytes):>9}  " if item.bytes else " " * 11
        say(f"  {shown:<8} {amount}{item.entry.kind:<18} {item.entry.path}{extra}")


def print_uninstall_plan(plan: Any) -> None:
    say("uninstall would:")
    _lines(plan.items, False)
    _lines(plan.kept, False)
    say(f"freeing {size(plan.bytes)}")


def print_uninstall(result: Any) -> None:
    if result.dry_run:
        say("dry run: nothing was changed. uninstall would:")
    _lines(result.removed, not result.dry_run)
    _lines(result.kept, not result.dry_run, "keep" if result.dry_run else "kept")
    _lines(result.failed, False, "FAILED")
    for entry in result.gone:
        say(f"  {'gone':<8} {'':11}{entry.kind:<18} {entry.path} (already removed)")
    freed = "would free" if result.dry_run else "freed"
    left = "the receipt stays (it lists what was kept)" if result.receipt_left else "the receipt is removed too"
    say(f"{freed} {size(result.bytes_freed)}; {left}")


