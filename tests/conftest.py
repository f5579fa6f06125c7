"""Shared fixtures: an isolated Hugging Face environment per test, tiny model, local Hub, git source."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Give the children a working Ctrl-C even when the suite itself was started in the background.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across
    exec: the CLI under test would then never see the SIGINT the Ctrl-C tests send. A handled
    signal is reset to the default on exec, so handling it here restores Python's KeyboardInterrupt
    in every child.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

#: Environment variables that would let the developer's machine leak into a test.
_HF_LEAKY_VARS = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE",
    "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_DISABLE_XET", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT",
    "HF_HUB_USER_AGENT_ORIGIN", "HF_STORED_TOKENS_PATH",
)


@pytest.fixture(autouse=True)
def isolated_hf_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME per test, telemetry and progress bars off, no token from the environment.

    huggingface_hub reads these into ``huggingface_hub.constants`` at import time, so when it is already
    imported its constants are patched too (for the current test only).
    """
    home = tmp_path_factory.mktemp("hf-home")
    for var in _HF_LEAKY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        patched = {
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_PROGRESS_BARS": True,
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
            "HF_HUB_ENABLE_HF_TRANSFER": False,
        }
        for name, value in patched.items():
            if hasattr(constants, name):
                monkeypatch.setattr(constants, name, value)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama2-Chinese-like chat model, built once per session (needs torch + transformers)."""
    for module in ("torch", "transformers", "sentencepiece", "safetensors"):
        pytest.importorskip(module)
    from bootstrap.demo.tinymodel import cached_tiny_model

    return cached_tiny_model(tmp_path_factory.mktemp("tiny-model-cache"))


@pytest.fixture
def local_hub() -> Iterator[object]:
    """A started :class:`bootstrap.demo.hubserver.LocalHub`, stopped after the test."""
    from bootstrap.demo.hubserver import LocalHub

    with LocalHub() as hub:
        yield hub


class SourceRepo(NamedTuple):
    path: Path
    sha: str


@pytest.fixture
def source_repo(tmp_path: Path) -> SourceRepo:
    """A fresh local git repository resembling the Llama2-Chinese checkout, and its HEAD sha."""
    from bootstrap.demo.gitsource import make_source_repo

    path = tmp_path / "Llama2-Chinese"
    return SourceRepo(path, make_source_repo(path))
