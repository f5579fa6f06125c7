"""Fixtures for chat and serve: a project whose model is pulled, a real uvicorn server in a thread.

The server is the real ``bootstrap.serve`` stack (uvicorn on a socket bound to 127.0.0.1 port 0,
FastAPI, the tiny model through transformers) run by ``Service.run`` in a thread, so a test can
also read what the server measured (``service.engine.recent()``).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from bootstrap.demo.scenario import DEMO_REPO_ID
from bootstrap.pipeline import RunOptions, run
from tests.pipeline.helpers import plan_for, write_manifest

LONG_CONTEXT = 4096


def pull_project(folder: Path, hub, model: Path, **changes) -> Path:
    """A project in ``folder`` whose manifest serves ``model`` as the demo repo, with ``pull`` done."""
    hub.add_repo(DEMO_REPO_ID, model)
    manifest = write_manifest(folder, hub.url, **changes)
    run(plan_for(manifest), RunOptions(only=("pull",)))
    return manifest


@pytest.fixture
def project(local_hub, tiny_model_dir, tmp_path) -> Path:
    """The manifest of a project with the tiny chat model pulled."""
    return pull_project(tmp_path / "proj", local_hub, tiny_model_dir)


def never_ending_model(source: Path, dest: Path) -> Path:
    """A copy of the tiny model that never writes </s> and takes a long context: it generates until stopped."""
    shutil.copytree(source, dest)
    for name in ("config.json", "generation_config.json"):
        doc = json.loads((dest / name).read_text(encoding="utf-8"))
        doc["eos_token_id"] = None
        if name == "config.json":
            doc["max_position_embeddings"] = LONG_CONTEXT
        (dest / name).write_text(json.dumps(doc), encoding="utf-8")
    return dest


@pytest.fixture
def long_project(local_hub, tiny_model_dir, tmp_path) -> Path:
    """A project whose pulled model only stops at max_tokens (or when cancelled)."""
    model = never_ending_model(tiny_model_dir, tmp_path / "tiny-never-ending")
    return pull_project(tmp_path / "long-proj", local_hub, model)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serving(manifest: Path, log: Optional[List[str]] = None, **options) -> Iterator[object]:
    """A started ``bootstrap.serve.Service`` for ``manifest`` on 127.0.0.1:0; stopped afterwards."""
    from bootstrap.serve import ServeOptions, prepare

    lines = log if log is not None else []
    service = prepare(plan_for(manifest), ServeOptions(port=0, **options), lines.append)
    errors: List[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-serve", daemon=True)
    thread.start()
    wait_for(lambda: service.started or errors or not thread.is_alive(), "the server to start")
    assert not errors, errors
    try:
        yield service
    finally:
        service.stop()
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"
        assert not errors, errors


def client(service, api_key: str = "unused"):
    """The official OpenAI client pointed at ``service`` (no retries: a 429 must show as one)."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=service.url + "/v1", api_key=api_key, max_retries=0, timeout=120)
