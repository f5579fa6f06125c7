"""The terminal side of ``chat`` and ``serve``: reading messages, printing answers and events.

Part of the CLI layer (like :mod:`bootstrap.output`): answers and JSON documents go to stdout,
everything else to stderr. ``--json`` prints one JSON document per line (one per answer).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict, Optional

import click

from bootstrap.output import say


def json_line(doc: Dict[str, Any]) -> None:
    click.echo(json.dumps(doc, ensure_ascii=False, default=str))
    sys.stdout.flush()


def line_reader(interactive: bool) -> Callable[[], Optional[str]]:
    """Read one message: with a prompt and line editing on a terminal, else one line of stdin."""
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input(), where available
        except ImportError:
            pass

        def read_tty() -> Optional[str]:
            try:
                return input("> ")
            except EOFError:  # Ctrl-D
                click.echo(err=True)
                return None

        return read_tty

    def read_pipe() -> Optional[str]:
        line = sys.stdin.readline()
        return line if line else None

    return read_pipe


def chat_events(as_json: bool):
    """ChatEvents that print: the answer streamed to stdout, or one JSON line per answer."""
    from bootstrap.chat import ChatEvents

    def stream(piece: str) -> None:
        if piece:
            sys.stdout.write(piece)
            sys.stdout.flush()

    def error(message: str, exc: Any) -> None:
        say(f"error: {exc}", err=True)
        if exc.remedy:
            say(f"  hint: {exc.remedy}", err=True)
        if as_json:
            json_line({"message": message, "error": {"kind": type(exc).__name__, "message": str(exc),
                                                     "remedy": exc.remedy}})

    def stopped(message: str, tokens: int) -> None:
        if as_json:
            json_line({"message": message, "stopped": True, "completion_tokens": tokens})
        else:
            click.echo()
            say(f"[stopped after {tokens} tokens]", err=True)

    def command(name: str) -> None:
        if name == "reset":
            say("(history cleared)", err=True)

    if as_json:
        return ChatEvents(on_reply=lambda r: json_line(r.to_json()), on_stopped=stopped, on_error=error,
                          on_command=command)
    return ChatEvents(on_text=stream, on_reply=lambda _r: click.echo(), on_stopped=stopped, on_error=error,
                      on_command=command)


def chat_banner(model_key: str, session: Any) -> str:
    loaded = session.loaded
    return (f"chat with {model_key} ({loaded.precision} on {loaded.device}, context {session.context} tokens, "
            f"answers up to {session.max_new_tokens} tokens). /reset clears the history, /exit or Ctrl-D "
            "quits, Ctrl-C stops an answer.")
