"""Environment variables, read in one place, at call time.

The installers and the CLI share the ``LLAMA_BOOTSTRAP_*`` names (see the README's table).
Nothing here runs at import time: call :func:`from_env` when a command starts and pass the
result down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Tuple

TRUTHY = ("1", "true", "yes", "on")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in TRUTHY


def _text(environ: Mapping[str, str], name: str) -> Optional[str]:
    value = environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    """What the environment says. ``hf_token`` is never shown by ``repr``."""

    manifest: Optional[Path] = None  # LLAMA_BOOTSTRAP_MANIFEST
    model: Optional[str] = None  # LLAMA_BOOTSTRAP_MODEL
    profile: Optional[str] = None  # LLAMA_BOOTSTRAP_PROFILE
    state_dir: Optional[Path] = None  # LLAMA_BOOTSTRAP_STATE_DIR
    debug: bool = False  # LLAMA_BOOTSTRAP_DEBUG
    hf_endpoint: Optional[str] = None  # HF_ENDPOINT
    hf_token: Optional[str] = field(default=None, repr=False)  # HF_TOKEN (or HUGGING_FACE_HUB_TOKEN)
    conda_env: Optional[str] = None  # CONDA_DEFAULT_ENV, set by `conda activate` / `conda run`
    conda_prefix: Optional[str] = None  # CONDA_PREFIX
    sources: Optional[Tuple[str, ...]] = None  # LLAMA_BOOTSTRAP_SOURCES: "hub;dir=/mnt/usb" (tried in order)
    require_lock: bool = False  # LLAMA_BOOTSTRAP_REQUIRE_LOCK


def from_env(environ: Optional[Mapping[str, str]] = None) -> Settings:
    env = os.environ if environ is None else environ
    manifest = _text(env, "LLAMA_BOOTSTRAP_MANIFEST")
    state_dir = _text(env, "LLAMA_BOOTSTRAP_STATE_DIR")
    return Settings(
        manifest=Path(manifest) if manifest else None,
        model=_text(env, "LLAMA_BOOTSTRAP_MODEL"),
        profile=_text(env, "LLAMA_BOOTSTRAP_PROFILE"),
        state_dir=Path(state_dir) if state_dir else None,
        debug=_flag(env, "LLAMA_BOOTSTRAP_DEBUG"),
        hf_endpoint=_text(env, "HF_ENDPOINT"),
        hf_token=_text(env, "HF_TOKEN") or _text(env, "HUGGING_FACE_HUB_TOKEN"),
        conda_env=_text(env, "CONDA_DEFAULT_ENV"),
        conda_prefix=_text(env, "CONDA_PREFIX"),
        sources=_list(env, "LLAMA_BOOTSTRAP_SOURCES"),
        require_lock=_flag(env, "LLAMA_BOOTSTRAP_REQUIRE_LOCK"),
    )


def _list(environ: Mapping[str, str], name: str) -> Optional[Tuple[str, ...]]:
    """``a;b;c`` (``;`` because Windows paths hold ``:`` and user names hold spaces and commas)."""
    items = tuple(part.strip() for part in environ.get(name, "").split(";") if part.strip())
    return items or None
