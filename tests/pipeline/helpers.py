"""Helpers for the pipeline tests: a manifest pointing at a LocalHub and a local git source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from bootstrap.demo.scenario import DEMO_MODEL_KEY, DEMO_REPO_ID, demo_manifest
from bootstrap.plan import Overrides, build_plan
from bootstrap.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_manifest(folder: Path, endpoint: str, source_url: str = "unused", ref: str = "0" * 40,
                   **changes: Any) -> Path:
    """The demo's manifest with ``changes`` applied: keys like ``smoke__max_new_tokens=4``."""
    doc = demo_manifest(endpoint, source_url, ref)
    for key, value in changes.items():
        node = doc
        parts = key.split("__")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def model_spec_key() -> str:
    return DEMO_MODEL_KEY


def plan_for(manifest: Path, token: Optional[str] = None):
    return build_plan(Overrides(manifest=manifest), Settings(hf_token=token))


def random_model(folder: Path, sizes: Dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(os.urandom(size))
    return folder


def cli(args: List[str], *, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI as a subprocess (``python -m bootstrap``)."""
    full_env = dict(os.environ)
    full_env.pop("HF_TOKEN", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bootstrap", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout, check=False)


__all__ = ["DEMO_REPO_ID", "write_manifest", "plan_for", "random_model", "cli", "REPO_ROOT"]
