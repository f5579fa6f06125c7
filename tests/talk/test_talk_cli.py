"""chat and serve on the command line, where no model is needed (runs on the Python 3.9 gate too)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from bootstrap.demo.scenario import DEMO_REPO_ID
from bootstrap.pipeline import RunOptions, run
from tests.helpers_core import bootstrap_cmd, clean_env, listing
from tests.pipeline.helpers import plan_for, random_model, write_manifest

SECRET = "sk-never-shown-0123456789"
LIGHT_ONLY = ("fastapi", "uvicorn", "starlette", "pydantic", "openai", "torch", "transformers", "huggingface_hub")


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(bootstrap_cmd(*args), cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          encoding="utf-8", timeout=120, check=False)


@pytest.fixture
def unpulled(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "proj", "http://127.0.0.1:9")


@pytest.fixture
def pulled(local_hub, tmp_path: Path) -> Path:
    """A project whose 'model' (a few files; never loaded here) is pulled."""
    folder = random_model(tmp_path / "files", {"config.json": 64, "model.safetensors": 4096})
    local_hub.add_repo(DEMO_REPO_ID, folder)
    manifest = write_manifest(tmp_path / "proj", local_hub.url)
    run(plan_for(manifest), RunOptions(only=("pull",)))
    return manifest


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_serving_beyond_loopback_without_a_key_is_exit_2_and_writes_nothing(unpulled, host):
    before = listing(unpulled.parent)
    result = cli("serve", "--manifest", str(unpulled), "--host", host, cwd=unpulled.parent)
    assert result.returncode == 2, result.stderr
    assert "--host" in result.stderr and "--api-key" in result.stderr and "Traceback" not in result.stderr
    assert listing(unpulled.parent) == before


def test_an_empty_key_is_exit_2(unpulled):
    result = cli("serve", "--manifest", str(unpulled), "--api-key", " ", cwd=unpulled.parent)
    assert result.returncode == 2 and "--api-key" in result.stderr


@pytest.mark.parametrize("command", [["chat"], ["serve"], ["serve", "--host", "0.0.0.0", "--api-key", SECRET]])
def test_chat_and_serve_refuse_until_pull_has_completed(unpulled, command: List[str]):
    result = cli(*command, "--manifest", str(unpulled), "--json", cwd=unpulled.parent)
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "NotPulledError" and "has not been pulled" in error["message"]
    assert "llama-bootstrap pull" in error["remedy"] and str(unpulled) in error["remedy"]
    assert SECRET not in result.stdout + result.stderr


def test_files_changed_since_the_pull_count_as_not_pulled(pulled):
    weights = next(pulled.parent.rglob("model.safetensors"))
    weights.write_bytes(b"changed")
    result = cli("chat", "--manifest", str(pulled), cwd=pulled.parent)
    assert result.returncode == 1 and "changed on disk since it was pulled" in result.stderr


def test_a_port_in_use_fails_before_loading_the_model(pulled):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("serve", "--manifest", str(pulled), "--port", str(port), cwd=pulled.parent)
    assert result.returncode == 1, result.stderr
    assert "already in use" in result.stderr and "--port" in result.stderr
    assert "loading" not in result.stderr  # the bad weights here were never read


_IMPORT_PROBE = """
import json, sys
from bootstrap.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("@@" + json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
"""


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["chat", "--help"]])
def test_help_imports_no_server_or_model_library(tmp_path: Path, args: List[str]):
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE % (LIGHT_ONLY,), *args], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, encoding="utf-8", timeout=60, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@")]
    assert line, proc.stdout + proc.stderr
    result = json.loads(line[-1][2:])
    assert result == {"code": 0, "loaded": []}
    if args[0] == "serve":
        assert "LLAMA_BOOTSTRAP_API_KEY" in proc.stdout and "--api-key" in proc.stdout
