"""Fixtures for the ``share`` tests: a project pulled for real, and a share of it on 127.0.0.1.

The project is made by the real ``pull`` (huggingface_hub against LocalHub), so its state file holds
exactly what ``pull`` verified. The only stand-in is :class:`CuttingProxy`, a TCP relay that pulls the
cable once in the middle of a download, as a broken network would.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import pytest

from bootstrap.demo.scenario import DEMO_REPO_ID
from bootstrap.pipeline import RunOptions, run
from bootstrap.share import Share, ShareOptions, open_share
from tests.pipeline.helpers import plan_for, random_model, write_manifest
from tests.reliability.conftest import sha256_of  # noqa: F401 - used by the share tests

MiB = 1024 * 1024
BIG = "model.safetensors"
BIG_SIZE = 25 * MiB + 321  # more than huggingface_hub's 10 MiB write chunk: a cut download resumes with Range


class Pulled(NamedTuple):
    manifest: Path
    plan: object  # bootstrap.plan.Plan
    model_dir: Path  # where pull put the verified files
    record: dict  # the pull record's result["repos"][0]


@pytest.fixture
def pulled(local_hub, tmp_path: Path) -> Pulled:
    """A project whose model was pulled (and verified) from LocalHub: an LFS weight, small and nested files."""
    folder = random_model(tmp_path / "upstream", {BIG: BIG_SIZE, "tokenizer.model": 4000})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}) + "\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.json").write_text('{"nested": true}\n')
    local_hub.add_repo(DEMO_REPO_ID, folder)
    manifest = write_manifest(tmp_path / "project-a", local_hub.url, requirements__disk_margin_gb=0)
    plan = plan_for(manifest)
    result = run(plan, RunOptions(only=("pull",), pull_retries=1, pull_backoff_s=0.01))
    assert result.ok
    from bootstrap.state import State

    record = State(plan.state_dir).get("pull")["result"]["repos"][0]
    assert set(record["files"]) == {BIG, "tokenizer.model", "config.json", "sub/notes.json"}
    return Pulled(manifest, plan, plan.model_dir(DEMO_REPO_ID), record)


class Served(NamedTuple):
    share: Share
    lines: List[str]  # what share echoed (its request log)

    @property
    def url(self) -> str:
        return self.share.url

    def log_text(self) -> str:
        return self.share.log_path.read_text(encoding="utf-8")


@pytest.fixture
def serve(pulled: Pulled) -> Iterator:
    """``serve(**ShareOptions fields)`` -> a started share of ``pulled`` on a free loopback port."""
    started: List[Share] = []

    def start(**options) -> Served:
        lines: List[str] = []
        share = open_share(pulled.plan, ShareOptions(**{"port": 0, **options}), echo=lines.append).start()
        started.append(share)
        return Served(share, lines)

    yield start
    for share in started:
        share.close()


@pytest.fixture
def shared(serve) -> Served:
    return serve()


class CuttingProxy:
    """A TCP relay to ``upstream`` that cuts, once, the response to the first request that starts with
    ``marker`` and names ``name`` (with ``ranged=False``: only one that asks for no Range), after
    ``cut_after`` bytes of that response went to the client: a network stand-in for a pulled cable."""

    def __init__(self, upstream: str, marker: bytes, name: bytes, cut_after: int, ranged: bool = False) -> None:
        self.ranged = ranged
        host, port = upstream.split("//", 1)[1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.marker, self.name, self.cut_after = marker, name, cut_after
        self.cuts = 0
        self._armed_once = False
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        armed: List[Optional[int]] = [None]  # bytes still allowed downstream before the cut, once armed

        def upward() -> None:
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    with self._lock:
                        first_line = data.split(b"\r\n")[0]
                        if not self._armed_once and data.startswith(self.marker) and self.name in first_line \
                                and (self.ranged or b"\r\nrange:" not in data.lower()):
                            armed[0] = self.cut_after
                            self._armed_once = True
                    server.sendall(data)
            except OSError:
                pass
            finally:
                _close(server)

        threading.Thread(target=upward, daemon=True).start()
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if armed[0] is not None:
                    if len(data) >= armed[0]:
                        client.sendall(data[:armed[0]])
                        with self._lock:
                            self.cuts += 1
                        break
                    armed[0] -= len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(server)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
