"""Secrets never leave (issue 10, point 5): HF_TOKEN, URL passwords and proxy passwords are scrubbed from
stdout, stderr, --json, every log file (exception chains included) and the state file.

The hostile source is :class:`EchoHub`: the real LocalHub (bootstrap.demo.hubserver) on 127.0.0.1 with a
handler that sends the ``Authorization`` header it received back in a response header on every answer
and quotes it in the error message (``X-Error-Message`` and the JSON body) of every error, so the real
``huggingface_hub`` puts the token into its own exception text. Everything runs through the CLI as a
subprocess (``python -m bootstrap``), so these tests hold whatever the download path becomes.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import pytest

from bootstrap import redact
from bootstrap.demo.hubserver import HubError, LocalHub, _LocalHandler
from bootstrap.demo.scenario import DEMO_MODEL_KEY, DEMO_REPO_ID
from bootstrap.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

from .conftest import MiB, Project, Result, cli_env, make_model_folder, write_manifest

# -- the echoing hub ------------------------------------------------------------------------------


class _EchoHandler(_LocalHandler):
    def end_headers(self) -> None:
        auth = self.headers.get("Authorization")
        if auth:
            self.hub.seen.append(auth)  # type: ignore[attr-defined]
            self.send_header("X-Echo-Authorization", auth)
        super().end_headers()

    def send_error_json(self, err: HubError) -> None:
        auth = self.headers.get("Authorization") or "(none)"
        self.hub.echoed += 1  # type: ignore[attr-defined]
        super().send_error_json(HubError(err.status, err.code, f"{err.message}; you sent Authorization: {auth} "
                                                      f"(token {auth.split()[-1]})"))


class EchoHub(LocalHub):
    """LocalHub that echoes the token back: in a header of every response and in every error message."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[str] = []
        self.echoed = 0

    def start(self) -> EchoHub:
        super().start()
        self._server.RequestHandlerClass = _EchoHandler  # type: ignore[union-attr]
        return self


@pytest.fixture
def echo_hub() -> Iterator[EchoHub]:
    with EchoHub() as hub:
        yield hub


def new_token() -> str:
    """Not shaped like a Hub token (hf_...): only the registry can know it is a secret."""
    return "tok-" + secrets.token_hex(16)


def files_containing(roots: List[Path], needle: str, exclude: Sequence[Path] = ()) -> List[str]:
    data = needle.encode()
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path not in exclude and data in path.read_bytes():
                found.append(str(path))
    return found


def assert_nowhere(token: str, results: Dict[str, Result], roots: List[Path], exclude: Sequence[Path] = ()) -> None:
    """Neither the token nor its random part in any output, --json document or file under ``roots``
    (but the ``exclude`` files the test wrote it into)."""
    fragment = token.split("-", 1)[-1]
    for name, result in results.items():
        for text in (result.stdout, result.stderr):
            assert fragment not in text, f"the token was shown by: {name}\n{text[-3000:]}"
    leaks = files_containing(roots, fragment, exclude)
    assert leaks == [], f"the token was written to: {leaks}"


# -- a hub that echoes the token -----------------------------------------------------------------

SCENARIOS = {  # name: (the fault, the exit code of pull)
    "api-error-400": (("/api/*", 400), EXIT_FAILED),  # the library's exception text quotes the server's message
    "file-error-400": (("*/resolve/*", 400), EXIT_FAILED),
    "server-error-500": (("/api/*", 500), EXIT_FAILED),  # retried once: the retry is logged with the error
    "gated-wrong-token": (None, EXIT_FAILED),  # 403 from a gated repo that wants another token
    "ok-with-echo-header": (None, EXIT_OK),  # every answer carries the token back; the state file is written
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_token_echoed_by_the_hub_is_never_shown_logged_or_written(scenario, cli, echo_hub, source_repo, tmp_path,
                                                                   isolated_hf_env):
    fault, want = SCENARIOS[scenario]
    token = new_token()
    folder = make_model_folder(tmp_path / "upstream", big_bytes=1 * MiB)
    gated = scenario == "gated-wrong-token"
    echo_hub.add_repo(DEMO_REPO_ID, folder, gated=gated, token=new_token() if gated else None)
    if fault is not None:
        echo_hub.inject(fault[0], "status", times=None, code=fault[1])
    manifest = write_manifest(tmp_path / "proj", echo_hub.url, str(source_repo.path), source_repo.sha,
                              requirements__disk_margin_gb=0, **{f"models__{DEMO_MODEL_KEY}__gated": gated})
    project = Project(manifest, folder)
    quiet = cli_env(isolated_hf_env, HF_TOKEN=token)
    # LLAMA_BOOTSTRAP_DEBUG prints tracebacks (with the library's exception chained); HF_DEBUG and
    # HF_HUB_VERBOSITY make huggingface_hub log its requests on stderr itself.
    loud = cli_env(isolated_hf_env, HF_TOKEN=token, LLAMA_BOOTSTRAP_DEBUG="1", HF_DEBUG="1",
                   HF_HUB_VERBOSITY="debug")
    m = ("--manifest", str(manifest))
    results = {
        "pull": cli("pull", *m, "--retries", "1", env=quiet),
        "pull --json (debug)": cli("pull", *m, "--json", "--retries", "1", env=loud),
        "run --json (debug)": cli("run", *m, "--skip", "smoke", "--offline", "--json", env=loud),
    }
    for name, result in results.items():
        assert result.code == want, f"{name}: exit {result.code}\n{result.stderr[-3000:]}"
        doc = result.doc if "--json" in name else None
        if doc is not None:
            assert doc["status"] in (("ok",) if want == EXIT_OK else ("error", "fail")), doc
    assert_nowhere(token, results, [tmp_path, isolated_hf_env])

    # The hostile part happened: the token was sent, and sent back.
    assert f"Bearer {token}" in echo_hub.seen
    logs = sorted((project.state_dir / "logs").glob("*.log"))
    assert logs, "there were logs to search"
    if want == EXIT_OK:
        assert (project.state_dir / "state.json").is_file() and project.big_is_right()
        assert "pull" in project.recorded()
    else:
        assert echo_hub.echoed > 0
        assert "Traceback (most recent call last)" not in results["pull"].stderr
        assert "Traceback (most recent call last)" in results["pull --json (debug)"].stderr
        assert "pull" not in project.recorded()
        # What a server says is quoted in errors only for requests that did not carry the token (a server could
        # echo it in a form no scrubbing recognises): here every request carried it, so no echo is quoted at all.
        shown = "".join(r.stdout + r.stderr for r in results.values()) + project.logs()
        assert "you sent Authorization" not in shown


# -- a URL password, a proxy password ----------------------------------------------------------------


def test_a_secret_in_the_source_url_is_never_shown(cli, local_hub, tmp_path, isolated_hf_env):
    """A token as the URL's user name (allowed: no password) of a source that cannot be reached."""
    secret = "ghp" + secrets.token_hex(16)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, f"https://{secret}@127.0.0.1:9/Llama2-Chinese.git",
                              "0" * 40)
    results = {form: cli("clone", "--manifest", str(manifest), *extra,
                         env=cli_env(isolated_hf_env, LLAMA_BOOTSTRAP_DEBUG=debug))
               for form, extra, debug in (("human", (), ""), ("json debug", ("--json",), "1"))}
    for result in results.values():
        assert result.code == EXIT_FAILED, result.stderr
        assert "https://***@127.0.0.1:9" in result.stderr  # named, without its secret
    assert_nowhere(secret, results, [tmp_path], exclude=[manifest])


def test_a_proxy_password_is_never_shown(cli, local_hub, served, tmp_path, isolated_hf_env):
    """The download library reads HTTPS_PROXY/HTTP_PROXY itself; its error names the proxy."""
    password = "pw" + secrets.token_hex(16)
    proxy = f"http://user:{password}@127.0.0.1:9"
    manifest = write_manifest(tmp_path / "proj", local_hub.url, requirements__disk_margin_gb=0)
    env = cli_env(isolated_hf_env, HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy,
                  NO_PROXY="", no_proxy="", LLAMA_BOOTSTRAP_DEBUG="1")
    results = {"pull --json (debug)": cli("pull", "--manifest", str(manifest), "--json", "--retries", "0", env=env)}
    result = results["pull --json (debug)"]
    assert result.code == EXIT_FAILED, result.stderr
    assert local_hub.requests == []  # it did go to the proxy
    assert_nowhere(password, results, [tmp_path])


# -- a token that cannot be a header value ------------------------------------------------------------

BAD_TOKENS = {
    "newline": "tok-abcdef\nghijkl987",
    "carriage-return": "tok-abcdef\rghijkl987",
    "control-char": "tok-abcdef\x01ghijkl987",
    "delete-char": "tok-abcdef\x7fghijkl987",
    "non-ascii": "tok-abcdéfghijkl987",
    "space-inside": "tok-abcdef ghijkl987",
    "tab-inside": "tok-abcdef\tghijkl987",
}


TOKEN_CASES = [(kind, "HF_TOKEN") for kind in BAD_TOKENS] + [(kind, "HUGGING_FACE_HUB_TOKEN")
                                                               for kind in ("newline", "non-ascii")]


@pytest.mark.parametrize("kind,var", TOKEN_CASES, ids=[f"{v}-{k}" for k, v in TOKEN_CASES])
def test_a_token_that_cannot_be_a_header_is_bad_input(kind, var, cli, local_hub, served, tmp_path, isolated_hf_env):
    token = BAD_TOKENS[kind]
    manifest = write_manifest(tmp_path / "proj", local_hub.url, requirements__disk_margin_gb=0)
    before = sorted(p.name for p in manifest.parent.iterdir())
    for extra in ((), ("--json",)):
        result = cli("pull", "--manifest", str(manifest), *extra, env=cli_env(isolated_hf_env, **{var: token}))
        assert result.code == EXIT_USAGE, result.stderr
        assert "Traceback" not in result.stderr
        assert var in result.stderr and "hint:" in result.stderr, result.stderr
        for part in ("abcdef", "ghijkl987"):
            assert part not in result.output, f"part of the token shown: {result.output}"
        if extra:
            assert result.doc["error"]["kind"] == "UsageError" and var in result.doc["error"]["message"]
    assert local_hub.requests == []  # refused before any request
    assert sorted(p.name for p in manifest.parent.iterdir()) == before  # nothing written


def test_a_token_with_surrounding_whitespace_is_accepted(cli, local_hub, served, tmp_path, isolated_hf_env):
    """The other side: a trailing newline (as `$(cat tokenfile)` in some shells leaves) is not an error."""
    manifest = write_manifest(tmp_path / "proj", local_hub.url, requirements__disk_margin_gb=0)
    result = cli("pull", "--manifest", str(manifest), "--json", env=cli_env(isolated_hf_env,
                                                                           HF_TOKEN=new_token() + "\n"))
    assert result.code == EXIT_OK, result.stderr


# -- a bug's traceback, a library's own log line --------------------------------------------------------

#: The CLI with a bug planted in ``check``: an exception chain whose every link carries the token, and a
#: library-style log line (through logging's last-resort handler, as urllib3's warnings reach stderr).
_BUGGY_CLI = r"""
import logging, os, sys
import bootstrap.checks as checks
def boom(*args, **kwargs):
    token = os.environ["HF_TOKEN"]
    logging.getLogger("urllib3.connectionpool").warning("Retrying after %s for %s", "a reset", token)
    try:
        raise ConnectionError("library said: bad credentials " + token)
    except ConnectionError as exc:
        raise ValueError("wrapped: " + token) from exc
checks.run_checks = boom
from bootstrap.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("debug", ["", "1"])
def test_an_unexpected_exception_shows_a_scrubbed_traceback(debug, local_hub, tmp_path, isolated_hf_env):
    token = new_token()
    manifest = write_manifest(tmp_path / "proj", local_hub.url)
    results = {}
    for extra in ((), ("--json",)):
        proc = subprocess.run([sys.executable, "-c", _BUGGY_CLI, "check", "--offline", "--manifest", str(manifest),
                               *extra], env=cli_env(isolated_hf_env, HF_TOKEN=token, LLAMA_BOOTSTRAP_DEBUG=debug),
                              capture_output=True, text=True, encoding="utf-8", timeout=60, check=False)
        results[" ".join(extra) or "human"] = Result(proc.returncode, proc.stdout, proc.stderr, 0.0)
    for name, result in results.items():
        assert result.code == EXIT_FAILED, result.stderr
        err = result.stderr
        # A bug always shows where it is: the whole chain, with the secret replaced.
        assert "Traceback (most recent call last)" in err
        assert "ConnectionError: library said: bad credentials ***" in err
        assert "The above exception was the direct cause" in err and "ValueError: wrapped: ***" in err
        assert "Retrying after a reset for ***" in err  # the library's log line, scrubbed
        assert "error: unexpected ValueError" in err and "hint:" in err
        if name == "--json":
            assert result.doc["error"]["kind"] == "InternalError"
            assert result.doc["error"]["message"] == "unexpected ValueError: wrapped: ***"
    assert_nowhere(token, results, [tmp_path])


# -- the parts, in process -----------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[None]:
    redact.reset()
    yield
    redact.reset()


def test_scrub_replaces_registered_secrets_and_secret_shapes(registry):
    redact.add_secret("s3cr3t-value")
    redact.add_secret("abc")  # too short to register: it would blank out ordinary words
    redact.add_secret(None)
    redact.add_secret("")
    assert redact.scrub("x s3cr3t-value y abc") == "x *** y abc"
    assert redact.scrub("q=s3cr3t%2Dvalue") == "q=s3cr3t%2Dvalue"  # "-" needs no quoting: same form
    redact.add_secret("p@ss/word")
    assert redact.scrub("url?pw=p%40ss%2Fword") == "url?pw=***"  # the URL-encoded form too
    assert redact.scrub("https://user:pass@host/x and ssh://tok@git.host/y") == \
        "https://***@host/x and ssh://***@git.host/y"
    assert redact.scrub("git@github.com:owner/repo.git") == "git@github.com:owner/repo.git"  # no secret there
    assert redact.scrub("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"
    assert redact.scrub("{'authorization': 'Basic dXNlcjpwYXNzd29yZA=='}") == "{'authorization': 'Basic ***'}"
    assert redact.scrub("Authorization: token 0123456789abcdef") == "Authorization: token ***"
    assert redact.scrub("hf_" + "A1" * 17 + " done") == "*** done"
    assert redact.scrub("this repo needs authorization: accept the license") == \
        "this repo needs authorization: accept the license"  # prose is left alone


def test_scrub_obj_scrubs_keys_values_and_nested_lists(registry):
    redact.add_secret("s3cr3t-value")
    doc = {"s3cr3t-value": ["a s3cr3t-value", 1, None, ("s3cr3t-value",)], "ok": {"n": 2.5, "b": True}}
    assert redact.scrub_obj(doc) == {"***": ["a ***", 1, None, ["***"]], "ok": {"n": 2.5, "b": True}}


def test_the_stream_catches_a_secret_written_in_pieces(registry):
    import io

    redact.add_secret("s3cr3t-value")
    target = io.StringIO()
    stream = redact.ScrubbingStream(target)
    for piece in ("token: s3c", "r3t-", "value\nnext s3cr3t", "-value"):
        stream.write(piece)
    assert target.getvalue() == "token: ***\n"  # the unfinished line waits
    stream.flush()
    assert target.getvalue() == "token: ***\nnext ***"


def test_the_log_scrubs_the_message_and_the_whole_exception_chain(registry, tmp_path):
    from bootstrap.state import close_log, open_log

    token = new_token()
    logger, path = open_log(tmp_path / "state", "run", secrets=[token])

    def fail_in_a_thread() -> None:  # a record from another thread goes through the same filter
        try:
            try:
                raise OSError(f"inner {token}")
            except OSError:
                raise RuntimeError(f"outer {token}")  # noqa: B904 - the implicit chain is the point
        except RuntimeError:
            logger.exception("step failed with %s", token, stack_info=True)

    worker = threading.Thread(target=fail_in_a_thread)
    worker.start()
    worker.join()
    close_log(logger)
    text = path.read_text(encoding="utf-8")
    assert token not in text and token.split("-", 1)[1] not in text
    assert "step failed with ***" in text
    assert "OSError: inner ***" in text and "RuntimeError: outer ***" in text
    assert "During handling of the above exception" in text  # the chain is there, scrubbed
    assert "Stack (most recent call last)" in text


def test_the_state_file_is_scrubbed_and_still_matches_its_fingerprints(registry, tmp_path):
    from bootstrap.state import State

    secret = new_token()
    redact.add_secret(secret)
    state = State(tmp_path / "state")
    fingerprint = {"url": f"https://{secret}@example.com/repo.git"}
    state.put("clone", fingerprint, {"remote": f"https://{secret}@example.com/repo.git"})
    raw = (tmp_path / "state" / "state.json").read_text(encoding="utf-8")
    assert secret not in raw and "https://***@example.com/repo.git" in raw
    again = State(tmp_path / "state")
    assert again.get("clone", fingerprint) is not None  # a scrubbed record still counts as done
    assert again.get("clone", {"url": f"https://{secret}@example.org/repo.git"}) is None
    json.loads(raw)
