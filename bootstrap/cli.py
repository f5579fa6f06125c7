"""The ``llama-bootstrap`` command line: parse options, call the core, print the result.

Commands only parse, build a request, call the core and print; errors are mapped to messages
and exit codes in :mod:`bootstrap.exits`. Heavy libraries (torch, transformers, huggingface_hub)
are imported inside the commands that need them, never at import time.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import click

from bootstrap import __version__, redact
from bootstrap import settings as settings_mod
from bootstrap.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, outcome, unexpected
from bootstrap.output import print_check_report, print_json, print_models, print_run_result, say
from bootstrap.state import STEPS


class Request:
    """What every command was asked, before the manifest is read."""

    def __init__(self, manifest: Optional[str], model: Optional[str], profile: Optional[str],
                 endpoint: Optional[str], as_json: bool, sources: Sequence[str] = ()) -> None:
        from bootstrap.plan import Overrides

        self.as_json = as_json
        self.settings = settings_mod.from_env()
        self.overrides = Overrides(
            manifest=Path(manifest) if manifest else None, model=model, profile=profile, endpoint=endpoint,
            sources=tuple(sources) or None,
        )

    def plan(self):
        from bootstrap.plan import build_plan

        return build_plan(self.overrides, self.settings)


def common_options(endpoint: bool = False) -> Callable:
    """--manifest, --model, --profile, --json (and --endpoint) for every command that reads the manifest."""

    def decorate(fn: Callable) -> Callable:
        @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
        @click.option("--profile", metavar="NAME", help="Mirror profile (global, cn). Env: LLAMA_BOOTSTRAP_PROFILE.")
        @click.option("--model", metavar="KEY", help="Model key from the manifest. Env: LLAMA_BOOTSTRAP_MODEL.")
        @click.option("--manifest", metavar="PATH",
                      help="Manifest file (default ./manifest.yaml). Env: LLAMA_BOOTSTRAP_MANIFEST.")
        @functools.wraps(fn)
        def wrapper(manifest, model, profile, as_json, endpoint=None, sources=(), **kwargs):
            return fn(Request(manifest, model, profile, endpoint, as_json, sources), **kwargs)

        if endpoint:
            wrapper = click.option("--endpoint", metavar="URL",
                                   help="Hub endpoint (https). Env: HF_ENDPOINT. Default: the profile's.")(wrapper)
            wrapper = click.option("--source", "sources", multiple=True, metavar="SPEC",
                                   help="Where weights may come from, tried in order (repeatable): hub, hub=URL, "
                                   "modelscope, modelscope=URL, dir=PATH. Env: LLAMA_BOOTSTRAP_SOURCES "
                                   "(';'-separated). Default: the profile's sources.")(wrapper)
        return wrapper

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="llama-bootstrap")
def cli() -> None:
    """Provision and verify FlagAlpha/Llama2-Chinese on your own hardware.

    \b
    Typical use:
      llama-bootstrap check        can this machine run the model? (alias: doctor)
      llama-bootstrap run          check -> clone -> pull -> smoke, resumable
      llama-bootstrap demo         the whole pipeline offline on a tiny model

    Exit codes: 0 ok, 1 a check or step failed, 2 bad input, 3 another run holds the lock,
    130 interrupted. Set LLAMA_BOOTSTRAP_DEBUG=1 for tracebacks.
    """


@cli.command("check")
@common_options(endpoint=True)
@click.option("--offline", is_flag=True, help="Skip the network reachability check.")
def check_cmd(req: Request, offline: bool) -> int:
    """Check GPU, VRAM, driver, torch, Python, disk, git and network against the model."""
    from bootstrap.checks import run_checks

    report = run_checks(req.plan(), offline=offline)
    if req.as_json:
        print_json(report.to_json())
    else:
        print_check_report(report)
    return EXIT_OK if report.status != "fail" else EXIT_FAILED


cli.add_command(check_cmd, name="doctor")


@cli.command("models")
@common_options()
def models_cmd(req: Request) -> int:
    """List the model catalog of the manifest."""
    plan = req.plan()
    rows = []
    for key, spec in plan.manifest.models.items():
        rows.append({
            "key": key, "repo_id": spec.repo_id, "revision": spec.revision, "kind": spec.kind,
            "size_gb": spec.size_gb, "total_gb": spec.total_gb, "min_vram_gb": spec.min_vram_gb,
            "base": spec.base, "gated": spec.needs_token, "default": key == plan.model_key,
        })
    if req.as_json:
        print_json({"models": rows})
    else:
        print_models(rows)
    return EXIT_OK


def _step_options(fn: Callable) -> Callable:
    fn = click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=0.0, show_default=True,
                      metavar="SECONDS", help="Wait this long for another run's lock before giving up.")(fn)
    return fn


def _pull_options(fn: Callable) -> Callable:
    fn = click.option("--allow-size-only", is_flag=True,
                      help="Accept files the source gives no hash for, checked by size only and recorded as NOT "
                      "verified (default: such a file fails the pull).")(fn)
    fn = click.option("--require-lock", is_flag=True,
                      help="Fail for a repo the weights lock does not pin (manifest: weights.require_lock; env: "
                      "LLAMA_BOOTSTRAP_REQUIRE_LOCK).")(fn)
    fn = click.option("--connections", type=click.IntRange(1, 16), default=None, metavar="N",
                      help="Connections per file for large files (default 4; 8 in all).")(fn)
    return fn


def _run(req: Request, options) -> int:
    from bootstrap.pipeline import run

    plan = req.plan()
    progress = (lambda _: None) if req.as_json else (lambda m: say(m, err=True))
    result = run(plan, options, echo=progress)
    if req.as_json:
        print_json(result.to_json())
    else:
        print_run_result(result)
    return EXIT_OK if result.ok else EXIT_FAILED


@cli.command("clone")
@common_options()
@_step_options
def clone_cmd(req: Request, wait_s: float) -> int:
    """Clone the Llama2-Chinese source at the pinned commit (atomic, idempotent)."""
    from bootstrap.pipeline import RunOptions

    return _run(req, RunOptions(only=("clone",), wait_s=wait_s))


@cli.command("pull")
@common_options(endpoint=True)
@_step_options
@click.option("--verify", is_flag=True, help="Hash every file again, even if unchanged since it was verified.")
@click.option("--retries", type=click.IntRange(0, 20), default=None, help="Retries per request on 5xx/drops.")
@_pull_options
def pull_cmd(req: Request, wait_s: float, verify: bool, retries: Optional[int], connections: Optional[int],
             require_lock: bool, allow_size_only: bool) -> int:
    """Download the model (and a LoRA's base) into weights.dir, every file verified by its hash (against the
    weights lock when it pins the repo)."""
    from bootstrap.pipeline import RunOptions

    return _run(req, RunOptions(only=("pull",), verify=verify, wait_s=wait_s, progress=_tty(req),
                                pull_retries=retries, connections=connections, require_lock=require_lock,
                                allow_size_only=allow_size_only))


@cli.command("smoke")
@common_options()
@_step_options
def smoke_cmd(req: Request, wait_s: float) -> int:
    """Load the pulled model and generate an answer to the smoke prompt."""
    from bootstrap.pipeline import RunOptions

    return _run(req, RunOptions(only=("smoke",), wait_s=wait_s))


@cli.command("run")
@common_options(endpoint=True)
@_step_options
@click.option("--skip", multiple=True, type=click.Choice(STEPS), help="Skip a step (repeatable).")
@click.option("--force", multiple=True, type=click.Choice(STEPS), help="Redo a step even if recorded as done.")
@click.option("--verify", is_flag=True, help="Hash every model file again.")
@click.option("--offline", is_flag=True, help="Skip the network reachability check.")
@_pull_options
def run_cmd(req: Request, wait_s: float, skip: Sequence[str], force: Sequence[str], verify: bool,
            offline: bool, connections: Optional[int], require_lock: bool, allow_size_only: bool) -> int:
    """check -> clone -> pull -> smoke; a second run with nothing changed does nothing."""
    from bootstrap.pipeline import RunOptions

    return _run(req, RunOptions(skip=tuple(skip), force=tuple(force), verify=verify, offline_check=offline,
                                wait_s=wait_s, progress=_tty(req), connections=connections,
                                require_lock=require_lock, allow_size_only=allow_size_only))


@cli.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Where the demo builds and runs (default ./llama-bootstrap-demo).")
@click.option("--fresh", is_flag=True, help="Delete the work folder first and build everything anew.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def demo_cmd(workdir: Optional[Path], fresh: bool, as_json: bool) -> int:
    """The whole pipeline offline: a tiny model on a local Hub, a local git source, the real steps."""
    from bootstrap.demo.scenario import DEFAULT_WORKDIR, run_demo

    echo = (lambda m: None) if as_json else (lambda m: say(m, err=True))
    result = run_demo(workdir or Path(DEFAULT_WORKDIR), fresh=fresh, echo=echo)
    if as_json:
        print_json(result.to_json())
    else:
        say("first run:")
        print_run_result(result.first)
        say("second run (nothing changed):")
        print_run_result(result.second)
        answer = next((s.result.get("answer") for s in result.first.steps if s.step == "smoke"), None)
        say(f"demo passed: the tiny model answered {answer!r}" if answer is not None else "demo passed")
    return EXIT_OK if result.first.ok and result.second.ok else EXIT_FAILED


def _tty(req: Request) -> bool:
    return not req.as_json and sys.stderr.isatty()


@cli.command("chat")
@common_options()
@click.option("--max-new-tokens", type=click.IntRange(1, 32768), default=512, show_default=True, metavar="N",
              help="Longest answer (at most half the context).")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.3, show_default=True, metavar="T",
              help="Sampling temperature; 0 is greedy (the smoke test's answer).")
@click.option("--context-tokens", type=click.IntRange(16), default=None, metavar="N",
              help="Keep prompt + answer within N tokens (default: the model's context).")
def chat_cmd(req: Request, max_new_tokens: int, temperature: float, context_tokens: Optional[int]) -> int:
    """Talk to the pulled model in the terminal (one message per line when stdin is not a terminal)."""
    from bootstrap.chat import ChatOptions, converse, open_session
    from bootstrap.talk_output import chat_banner, chat_events, line_reader

    plan = req.plan()
    interactive = sys.stdin.isatty() and not req.as_json
    session = open_session(plan, ChatOptions(max_new_tokens=max_new_tokens, temperature=temperature,
                                             context_tokens=context_tokens), log=lambda m: say(m, err=True))
    if interactive:
        say(chat_banner(plan.model_key, session), err=True)
    summary = converse(session, line_reader(interactive), chat_events(req.as_json), interactive=interactive)
    return EXIT_FAILED if summary.failed and not interactive else EXIT_OK


@cli.command("serve")
@common_options()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--api-key", envvar="LLAMA_BOOTSTRAP_API_KEY", default=None, metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on /v1. Env: LLAMA_BOOTSTRAP_API_KEY (keeps it out of "
                   "the process list).")
@click.option("--queue", "queue_size", type=click.IntRange(0, 1000), default=4, show_default=True, metavar="N",
              help="Requests that may wait while one generates; one more gets HTTP 429.")
def serve_cmd(req: Request, host: str, port: int, api_key: Optional[str], queue_size: int) -> int:
    """Serve the pulled model with an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    from bootstrap.serve import ServeOptions, serve
    from bootstrap.talk_output import json_line

    options = ServeOptions(host=host, port=port, api_key=api_key, queue_size=queue_size)
    plan = req.plan()

    def ready(service, log_path: str) -> None:
        base = f"{service.url}/v1"
        if req.as_json:
            json_line({"status": "serving", "model": plan.model_key, "base_url": base, "log": log_path,
                       "api_key_required": bool(api_key)})
        else:
            say(f"serving {plan.model_key} at {base} (OpenAI API; Ctrl-C stops; log: {log_path})")
            sys.stdout.flush()

    serve(plan, options, echo=(lambda _: None) if req.as_json else (lambda m: say(m, err=True)), on_ready=ready)


@cli.command("share")
@common_options()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 0.0.0.0 serves the LAN in plain HTTP (no TLS).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on; 0 picks a free one (the URL is printed).")
@click.option("--max-connections", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Connections served at once; more are answered 503 with Retry-After.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              metavar="SECONDS", help="A client that sends or reads nothing for this long is disconnected.")
def share_cmd(req: Request, host: str, port: int, max_connections: int, timeout_s: float) -> int:
    """Serve this machine's verified weights read-only as a Hub endpoint for other machines (Ctrl-C stops).

    Only the files the last pull of the model verified by a hash are served. Other machines pull with
    `--endpoint http://HOST:PORT`; every request is logged to stderr and the state folder's logs.
    """
    from bootstrap.share import ShareOptions, open_share

    share = open_share(req.plan(), ShareOptions(host=host, port=port, max_connections=max_connections,
                                                timeout_s=timeout_s), echo=lambda m: say(m, err=True))
    ready = share.describe()
    for warning in ready["warnings"]:
        say(f"WARNING: {warning}", err=True)
    if req.as_json:
        print_json(ready)
    else:
        for repo in ready["repos"]:
            say(f"sharing {repo['repo_id']}@{repo['revision']} ({repo['commit'][:12]}): {repo['files']} verified "
                f"files, {repo['bytes'] / 1e9:.3f} GB")
        say(f"serving {ready['url']} (pull with --endpoint {ready['url']}); log: {ready['log']}; Ctrl-C stops")
    sys.stdout.flush()
    share.serve_forever()


@cli.command("bundle")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write the bundle (a plain tar) here, and its sha256 to FILE.sha256.")
@click.option("--verify", "verify_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Check a bundle against its index instead (exit 1 naming the first bad member).")
@click.option("--platform", "target", type=click.Choice(("linux-64", "win-64")), default="linux-64",
              show_default=True, help="The platform the bundle installs on.")
@click.option("--torch", type=click.Choice(("cuda", "cpu")), default="cuda", show_default=True,
              help="The pip layer: requirements/<platform>-<torch>.txt (not with --demo).")
@click.option("--demo", is_flag=True, help="Bundle the demo's tiny model and the demo pip layer instead.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="With --demo: where the demo project is prepared; its cache/ (the tiny model) is reused "
              "(default: a temp folder).")
@click.option("--find-links", "find_links", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A folder of wheels that exist only on this disk (repeatable); pip's own configuration is "
              "ignored.")
@click.option("--repo", "repo_root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The llama-bootstrap project to pack (default: the one this command runs from, else ./).")
@common_options()
def bundle_cmd(req: Request, output: Optional[Path], verify_file: Optional[Path], target: str, torch: str,
               demo: bool, workdir: Optional[Path], find_links: Sequence[Path], repo_root: Optional[Path]) -> int:
    """Build one archive that installs the environment, the source and the weights on a machine with no network
    (`install.sh --from-bundle FILE`), or check one with --verify."""
    if (output is None) == (verify_file is None):
        raise click.UsageError("give exactly one of --output FILE and --verify FILE")
    echo = (lambda m: None) if req.as_json else (lambda m: say(m, err=True))
    if verify_file is not None:
        from bootstrap.bundle import verify

        info = verify(verify_file, log=echo)
        if req.as_json:
            print_json({"status": "ok", **info.to_json()})
        else:
            say(f"bundle OK: {info.path}: {info.members} members, {info.bytes / 1e6:.1f} MB unpacked, "
                f"{info.index.get('platform')}, model {info.index.get('model')}, made {info.index.get('created_at')}")
            say(f"  id (sha256 of SHA256SUMS): {info.id}")
        return EXIT_OK
    from bootstrap.bundle_build import BundleRequest, build

    if demo and (req.overrides.manifest or req.overrides.model or req.overrides.profile):
        raise click.UsageError("--demo bundles the demo project: --manifest, --model and --profile do not apply")
    if workdir is not None and not demo:
        raise click.UsageError("--workdir goes with --demo")
    if repo_root is None:
        here = Path(__file__).resolve().parent.parent
        repo_root = here if (here / "install.sh").is_file() else Path.cwd()
    report = build(BundleRequest(output=output, platform=target, repo_root=repo_root,  # type: ignore[arg-type]
                                 plan=None if demo else req.plan(), demo=demo, torch=torch,
                                 find_links=tuple(find_links), workdir=workdir), log=echo)
    if req.as_json:
        print_json({"status": "ok", **report.to_json()})
    else:
        idx = report.index
        say(f"wrote {report.path}: {report.bytes / 1e6:.1f} MB, {report.members} members, in {report.seconds:.1f}s")
        say(f"  {idx['platform']}, Python {idx['python']}, model {idx['model']}, conda layer: {idx['conda']}"
            + (f" ({idx['conda_reason']})" if idx["conda_reason"] else ""))
        say(f"  sha256 of the file: {report.sha256} (also in {report.path}.sha256)")
        say(f"  id (sha256 of SHA256SUMS): {report.id}")
        say(f"install on the target: tar -xf {Path(report.path).name} install.sh && "
            f"./install.sh --from-bundle {Path(report.path).name}")


@cli.command("status")
@common_options()
def status_cmd(req: Request) -> int:
    """What is installed where (the install receipt), versions, whether the env matches its lock, whether the
    weights are pinned and verified, the last smoke result and the disk each item uses."""
    from bootstrap.output_life import print_status
    from bootstrap.status import status

    report = status(req.plan())
    if req.as_json:
        print_json(report.to_json())
    else:
        print_status(report)
    return EXIT_OK


@cli.command("uninstall")
@common_options()
@click.option("--dry-run", is_flag=True, help="List what would be removed and how much it frees; change nothing.")
@click.option("--keep-weights", is_flag=True, help="Keep the downloaded weights.")
@click.option("--keep-conda", is_flag=True, help="Keep Miniforge, ~/.conda and conda's shell start-up edits.")
@click.option("--yes", is_flag=True, help="Remove without asking (required when not at a terminal).")
def uninstall_cmd(req: Request, dry_run: bool, keep_weights: bool, keep_conda: bool, yes: bool) -> int:
    """Remove exactly what the install receipt says llama-bootstrap created (never what it found), in a safe
    order, symlinks not followed. Without a receipt it refuses."""
    from bootstrap import uninstall as core
    from bootstrap.errors import UsageError
    from bootstrap.output_life import print_uninstall, print_uninstall_plan
    from bootstrap.plan import manifest_path
    from bootstrap.receipt import receipt_path, state_dir_for
    from bootstrap.state import run_lock

    state_dir = state_dir_for(manifest_path(req.overrides, req.settings), req.settings.state_dir)
    plan = core.plan(receipt_path(state_dir), keep_weights=keep_weights, keep_conda=keep_conda)
    if not dry_run and not yes:
        if req.as_json or not sys.stdin.isatty():
            raise UsageError("uninstall removes files and needs consent: --yes was not given and there is no "
                             "terminal to ask", argument="--yes",
                             remedy="look first with `llama-bootstrap uninstall --dry-run`, then run it with --yes")
        print_uninstall_plan(plan)
        if not click.confirm("remove these?", default=False, err=True):
            say("nothing was removed", err=True)
            return EXIT_FAILED
    if not dry_run:  # not while a run is working on these folders (the lock is not held while they go)
        had_lock = (state_dir / "run.lock").exists()
        with run_lock(state_dir):
            pass
        if not had_lock and (state_dir / "run.lock").is_file():
            (state_dir / "run.lock").unlink()
    progress = (lambda _: None) if req.as_json else (lambda m: say(m, err=True))
    result = core.run(plan, dry_run=dry_run, log=progress)
    if req.as_json:
        print_json(result.to_json())
    else:
        print_uninstall(result)
    if result.failed:
        raise core.incomplete(result)
    return EXIT_OK


@cli.command("lock")
@click.option("--repo", "repo_root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=".",
              show_default=True, help="The llama-bootstrap checkout whose locks to regenerate.")
@click.option("--weights", is_flag=True, help="Pin the weights instead: write the weights lock from the Hub.")
@click.option("--all", "all_models", is_flag=True, help="With --weights: every model of the manifest.")
@click.option("--update", is_flag=True, help="With --weights: accept changed commits/hashes (shown as a diff).")
@common_options(endpoint=True)
def lock_cmd(req: Request, repo_root: Path, weights: bool, all_models: bool, update: bool) -> int:
    """Regenerate conda-lock.yml, the explicit conda locks and requirements/*.txt (conda-lock + uv); or, with
    --weights, pin the model's weights (commit + sha256 of every file) into the weights lock.

    The env locks need a network that reaches conda-forge, the package index and PyTorch's wheel index.
    conda-lock 4 needs Python >= 3.10, so run that outside myenv (`pipx run --spec . llama-bootstrap lock`).
    `lock --weights [--model KEY | --all] [--update]` needs a Hub over TLS (the profile's endpoint).
    """
    if weights:
        return _lock_weights(req, all_models, update)
    if all_models or update:
        raise click.UsageError("--all and --update go with --weights")
    from bootstrap.lock import relock

    for path in relock(repo_root.resolve()):
        say(f"wrote {path}")
    return EXIT_OK


def _lock_weights(req: Request, all_models: bool, update: bool) -> int:
    from dataclasses import replace

    from bootstrap.plan import build_plan
    from bootstrap.weightspin import lock_weights

    plan = req.plan()
    if all_models and req.overrides.model:
        raise click.UsageError("--model and --all exclude each other")
    keys = list(plan.manifest.models) if all_models else [plan.model_key]
    plans = [(key, plan if key == plan.model_key else build_plan(replace(req.overrides, model=key), req.settings))
             for key in keys]
    echo = (lambda m: None) if req.as_json else (lambda m: say(m, err=True))
    report = lock_weights(plans, update=update, log=echo)
    if req.as_json:
        print_json({"status": "ok", **report.to_json()})
    else:
        for kind in ("added", "updated", "unchanged"):
            for line in getattr(report, kind):
                say(f"{kind:<9} {line}")
        for line in report.drift:
            say(f"  {line}")
        say(f"wrote {report.path}")
    return EXIT_OK


@cli.command("schema")
def schema_cmd() -> int:
    """Print the manifest's JSON Schema (the repository ships it as manifest.schema.json)."""
    from bootstrap.manifest import json_schema

    print_json(json_schema())
    return EXIT_OK


def _json_requested(argv: Sequence[str]) -> bool:
    return "--json" in argv


def _report_error(message: str, remedy: Optional[str], kind: str, code: int, as_json: bool) -> None:
    say(f"error: {message}", err=True)
    if remedy:
        say(f"  hint: {remedy}", err=True)
    if as_json:
        print_json({"status": "error", "error": {"kind": kind, "message": message, "remedy": remedy,
                                                 "exit_code": code}})


def _print_traceback(exc: BaseException) -> None:
    """The traceback with its whole exception chain, scrubbed of secrets, on stderr."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    say(text.rstrip("\n"), err=True)


def _show_click_error(exc: click.ClickException) -> None:
    text = io.StringIO()
    exc.show(file=text)
    say(text.getvalue().rstrip("\n"), err=True)


def run_cli(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; turn every known error into a message and return the exit code.

    Secrets from the environment are registered first; from then on everything printed, on purpose or
    by a library, is scrubbed (:mod:`bootstrap.redact`). An unknown exception is a bug: its traceback is
    shown (scrubbed) and the exit code is 1.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    settings = settings_mod.from_env()
    for secret in settings.secrets:
        redact.add_secret(secret)
    with redact.scrubbed_std_streams():
        return _run_cli(args, settings.debug, _json_requested(args))


def _run_cli(args: List[str], debug: bool, as_json: bool) -> int:
    try:
        code = cli.main(args=args, prog_name="llama-bootstrap", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt
        out = outcome(KeyboardInterrupt())
        _report_error(out.message, out.remedy, out.kind, out.code, as_json)
        code = out.code
    except click.ClickException as exc:
        if debug:
            _print_traceback(exc)
        _show_click_error(exc)
        code = EXIT_USAGE if isinstance(exc, click.UsageError) else (exc.exit_code or EXIT_USAGE)
        if as_json:
            print_json({"status": "error", "error": {"kind": type(exc).__name__, "message": exc.format_message(),
                                                     "remedy": None, "exit_code": code}})
    except Exception as exc:  # noqa: BLE001 - known ones mapped; unknown ones shown as a bug
        out = outcome(exc)
        if out is None or debug:
            _print_traceback(exc)
        out = out or unexpected(exc)
        _report_error(out.message, out.remedy, out.kind, out.code, as_json)
        code = out.code
    return code if isinstance(code, int) else EXIT_OK


def main(argv: Optional[List[str]] = None) -> None:
    """The ``llama-bootstrap`` process: run the CLI and exit with its code."""
    # Printing never fails on the console's encoding: Python 3.9 writes a redirected stream in the
    # ANSI code page on Windows (cp1252 on en-US), which has no Chinese; what a stream cannot encode
    # is written as \uXXXX instead of raising UnicodeEncodeError (inside JSON strings that is still
    # valid JSON). The installers also set PYTHONUTF8=1, so there the streams are UTF-8 anyway.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    code = run_cli(argv)
    if code == EXIT_INTERRUPTED:
        # Do not wait for the download library's worker threads to finish their files: state is
        # written atomically and partial downloads resume, so the process leaves now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

