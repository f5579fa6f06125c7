"""Security: the Hub token never shows, written files are private, plain-http endpoints are refused
before any connection, and model folders never run their own code."""

from __future__ import annotations

import json
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from bootstrap.demo.scenario import DEMO_MODEL_KEY, DEMO_REPO_ID
from bootstrap.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

from .conftest import MiB, Project, Result, cli_env, make_model_folder, write_manifest

# -- 11. the token -------------------------------------------------------------------------------------


def _files_containing(roots: List[Path], needle: str) -> List[str]:
    found = []
    data = needle.encode()
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if data in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    pass
    return found


@pytest.fixture
def gated(local_hub, source_repo, tmp_path):
    """A gated repo on LocalHub that accepts only ``good``; a manifest whose model is marked gated."""
    good = "hf_SECRET" + secrets.token_hex(12)
    folder = make_model_folder(tmp_path / "gated-model", big_bytes=1 * MiB)
    local_hub.add_repo(DEMO_REPO_ID, folder, gated=True, token=good)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha,
                              requirements__disk_margin_gb=0, **{f"models__{DEMO_MODEL_KEY}__gated": True})
    return good, Project(manifest, folder)


@pytest.mark.parametrize("which", ["right", "wrong"])
def test_the_token_is_never_printed_or_logged(which, cli, gated, isolated_hf_env, tmp_path):
    good, project = gated
    token = good if which == "right" else "hf_SECRET" + secrets.token_hex(12)
    results: Dict[str, Result] = {}
    # Human output without tracebacks, then --json with LLAMA_BOOTSTRAP_DEBUG=1 (errors print tracebacks).
    for form, debug in (((), ""), (("--json",), "1")):
        env = cli_env(isolated_hf_env, HF_TOKEN=token, LLAMA_BOOTSTRAP_DEBUG=debug)
        for command in (("check",), ("pull",), ("run", "--skip", "smoke")):
            args = (*command, "--manifest", str(project.manifest), *form)
            results[" ".join(args) + f" debug={debug}"] = cli(*args, env=env, timeout=120)
    for name, result in results.items():
        assert token not in result.stdout and token not in result.stderr, f"token printed by: {name}"
        assert token[len("hf_SECRET"):] not in result.output, f"part of the token printed by: {name}"
    leaks = _files_containing([tmp_path, isolated_hf_env], token[len("hf_SECRET"):])
    assert leaks == [], f"token written to: {leaks}"
    assert list((project.state_dir / "logs").glob("*.log"))  # there were logs to search

    pulls = [r for n, r in results.items() if n.startswith("pull")]
    if which == "right":
        assert all(r.code == EXIT_OK for r in results.values()), {n: r.stderr[-500:] for n, r in results.items()}
        assert project.big_is_right()
    else:
        assert all(r.code == EXIT_FAILED for r in pulls)
        for r in pulls:
            assert "accept the license" in r.stderr and "HF_TOKEN" in r.stderr
            assert "the token that is set was refused" in r.stderr
        assert "pull" not in project.recorded()


def test_a_refused_token_error_says_what_is_wrong(cli, gated, isolated_hf_env):
    _, project = gated
    env = cli_env(isolated_hf_env, HF_TOKEN="hf_SECRET" + secrets.token_hex(12))
    failed = cli("pull", "--manifest", str(project.manifest), "--json", env=env)
    assert failed.code == EXIT_FAILED
    error = failed.doc["error"]
    assert error["kind"] == "GatedRepoError"
    # GatedRepoError is a PermissionError (OSError): its message must still be ours (see the report).
    assert "needs authorisation" in error["message"] and "403" in error["message"], error["message"]


# -- 12. file modes -----------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_the_tool_writes_are_not_world_writable_even_with_umask_0(cli, project):
    project.state_dir.mkdir(parents=True)
    project.state_dir.chmod(0o777)  # a state dir someone made world-writable before
    result = cli("run", "--manifest", str(project.manifest), "--json", "--skip", "smoke", umask=0)
    assert result.code == 0, result.stderr
    failed = cli("pull", "--manifest", str(project.manifest), "--json", "--endpoint", "http://127.0.0.1:9",
                 "--retries", "0", umask=0)  # a failing run writes a log too
    assert failed.code == EXIT_FAILED
    written = [project.state_dir, project.state_dir / "state.json", project.state_dir / "run.lock",
               project.state_dir / "logs", *sorted((project.state_dir / "logs").glob("*.log"))]
    assert len(written) >= 6
    everything = sorted({*written, *project.state_dir.rglob("*")})
    modes = {str(p.relative_to(project.root)): oct(_mode(p)) for p in everything}
    assert all(not _mode(p) & stat.S_IWOTH for p in everything), modes  # not world-writable
    assert all(not _mode(p) & stat.S_IWGRP for p in everything), modes  # nor group-writable
    assert _mode(project.state_dir) == 0o700 and _mode(project.state_dir / "logs") == 0o700, modes
    assert _mode(project.state_dir / "state.json") == 0o600, modes
    assert all(_mode(p) == 0o600 for p in (project.state_dir / "logs").glob("*.log")), modes


# -- 13. plain-http endpoints -----------------------------------------------------------------------

#: The CLI with an audit hook that reports every socket connect and name lookup on stderr.
_AUDITED_CLI = r"""
import sys
def _hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        sys.__stderr__.write("NETWORK-ATTEMPT %s %r\n" % (event, args[1:2] if event == "socket.connect" else args[:2]))
sys.addaudithook(_hook)
from bootstrap.cli import main
main(sys.argv[1:])
"""


def _audited(args, env, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _AUDITED_CLI, *args], env=env, capture_output=True,  # noqa: S603
                          text=True, encoding="utf-8", errors="replace", timeout=timeout, check=False)


REFUSED = [  # (command, where the URL comes from, URL)
    *[(command, where, url) for command in ("check", "pull")
      for where, url in (("manifest", "http://example.com"), ("env", "http://example.com"),
                         ("flag", "http://10.0.0.1"))],
    ("pull", "flag", "http://localhost.example.com"),  # looks like loopback, is not
    ("pull", "flag", "http://127.0.0.1.nip.io"),
    ("pull", "flag", "http://0.0.0.0:8080"),
    ("pull", "env", "ftp://example.com"),
    ("pull", "flag", "example.com"),  # no scheme
    ("pull", "manifest", "https://user:pass@huggingface.co"),  # credentials in the URL
]


@pytest.mark.parametrize("command,where,url", REFUSED, ids=[f"{c}-{w}-{u}" for c, w, u in REFUSED])
def test_non_https_non_loopback_endpoints_are_refused_before_any_connection(command, where, url, local_hub,
                                                                            tmp_path, isolated_hf_env):
    endpoint = url if where == "manifest" else local_hub.url
    manifest = write_manifest(tmp_path / "proj", endpoint)
    env = cli_env(isolated_hf_env, **({"HF_ENDPOINT": url} if where == "env" else {}))
    args = [command, "--manifest", str(manifest), *(["--endpoint", url] if where == "flag" else [])]
    proc = _audited(args, env)
    assert proc.returncode == EXIT_USAGE, proc.stdout + proc.stderr
    assert "NETWORK-ATTEMPT" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr and "hint:" in proc.stderr
    label = {"manifest": "hf_endpoint", "env": "HF_ENDPOINT", "flag": "--endpoint"}[where]
    assert label in proc.stderr  # names where the bad value came from
    assert local_hub.requests == []


def test_the_audit_hook_does_see_connections(local_hub, tmp_path, isolated_hf_env):
    """Control for the test above: an allowed loopback endpoint is connected to, and the hook shows it."""
    manifest = write_manifest(tmp_path / "proj", local_hub.url)
    proc = _audited(["pull", "--manifest", str(manifest), "--endpoint", "http://127.0.0.1:9", "--retries", "0"],
                    cli_env(isolated_hf_env))
    assert proc.returncode == EXIT_FAILED
    assert "NETWORK-ATTEMPT socket.connect" in proc.stderr


SECRET_IN_URL = "hf_SECRETinurl123"
ECHO_CASES = [("flag", f"http://user:{SECRET_IN_URL}@example.com"),
              ("manifest", f"ftp://user:{SECRET_IN_URL}@example.com"),
              ("source", f"http://user:{SECRET_IN_URL}@example.com/Llama2-Chinese.git")]


@pytest.mark.parametrize("where,url", ECHO_CASES, ids=[w for w, _ in ECHO_CASES])
def test_a_refused_url_does_not_echo_its_credentials(where, url, cli, local_hub, tmp_path):
    manifest = write_manifest(tmp_path / "proj", url if where == "manifest" else local_hub.url,
                              url if where == "source" else "unused")
    extra = ("--endpoint", url) if where == "flag" else ()
    failed = cli("check", "--manifest", str(manifest), *extra)
    assert failed.code == EXIT_USAGE
    assert SECRET_IN_URL not in failed.output, failed.stderr


# -- 14. no remote code ----------------------------------------------------------------------------------

_EVIL = '''# Written by tests/reliability/test_security.py: proves whether this file is ever imported.
with open({marker!r}, "a") as _fh:
    _fh.write("{name} was imported\\n")
{body}
'''


def _evil_model(tiny_model_dir: Path, folder: Path, marker: Path) -> Path:
    shutil.copytree(tiny_model_dir, folder)
    bodies = {
        "configuration_evil": "from transformers import LlamaConfig\n\n\nclass EvilConfig(LlamaConfig):\n    pass\n",
        "modeling_evil": "from transformers import LlamaForCausalLM\n\n\nclass EvilForCausalLM(LlamaForCausalLM):\n"
                         "    pass\n",
        "tokenization_evil": "from transformers import LlamaTokenizer\n\n\nclass EvilTokenizer(LlamaTokenizer):\n"
                             "    pass\n",
    }
    for name, body in bodies.items():
        (folder / f"{name}.py").write_text(_EVIL.format(marker=str(marker), name=name, body=body), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok, indent=2), encoding="utf-8")
    return folder


@pytest.mark.torch
def test_smoke_never_runs_code_from_the_model_folder(local_hub, tiny_model_dir, tmp_path, isolated_hf_env):
    pytest.importorskip("torch")
    from bootstrap import errors
    from bootstrap.pipeline import RunOptions, run

    marker = tmp_path / "REMOTE-CODE-RAN"
    model = _evil_model(tiny_model_dir, tmp_path / "evil-model", marker)
    local_hub.add_repo(DEMO_REPO_ID, model)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, smoke__max_new_tokens=4)
    project = Project(manifest, model)
    try:
        result = run(project.plan(), RunOptions(only=("pull", "smoke"), pull_backoff_s=0.01))
        outcome = "passed" if result.ok else "failed"
    except errors.SmokeError as exc:  # refusing the folder is fine too
        outcome = f"refused: {exc}"
    assert (project.model_dir / "modeling_evil.py").is_file()  # the code was there to be run
    assert not marker.exists(), f"code from the model folder ran ({outcome}): {marker.read_text()}"
    assert not [m for m in sys.modules if "evil" in m]

    # Control: the trap is real; with trust_remote_code=True transformers would have run it.
    control = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import sys; from transformers import AutoConfig; "
                               "AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)",
         str(project.model_dir)], env=cli_env(isolated_hf_env), capture_output=True, text=True, timeout=120,
        check=False)
    assert marker.exists(), control.stderr[-2000:]
