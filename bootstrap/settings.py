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
from urllib.parse import unquote, urlsplit

TRUTHY = ("1", "true", "yes", "on")
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # the first one set wins
#: Proxy variables whose URL may carry a password (the download libraries read them themselves).
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


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
    hf_token_var: str = "HF_TOKEN"  # which of the two variables hf_token came from
    secrets: Tuple[str, ...] = field(default=(), repr=False)  # every secret value seen: never to be shown
    conda_env: Optional[str] = None  # CONDA_DEFAULT_ENV, set by `conda activate` / `conda run`
    conda_prefix: Optional[str] = None  # CONDA_PREFIX
    sources: Optional[Tuple[str, ...]] = None  # LLAMA_BOOTSTRAP_SOURCES: "hub;dir=/mnt/usb" (tried in order)
    require_lock: bool = False  # LLAMA_BOOTSTRAP_REQUIRE_LOCK


def _secrets(env: Mapping[str, str]) -> Tuple[str, ...]:
    """The token variables as set (raw and stripped) and the passwords of proxy URLs."""
    found = []
    for name in TOKEN_VARS:
        raw = env.get(name, "")
        found += [raw, raw.strip()]
    for name in PROXY_VARS:
        try:
            password = urlsplit(env.get(name, "").strip()).password
        except ValueError:  # not a URL the libraries could use either
            password = None
        if password:
            found += [password, unquote(password)]
    return tuple(dict.fromkeys(s for s in found if s))


def from_env(environ: Optional[Mapping[str, str]] = None) -> Settings:
    env = os.environ if environ is None else environ
    manifest = _text(env, "LLAMA_BOOTSTRAP_MANIFEST")
    state_dir = _text(env, "LLAMA_BOOTSTRAP_STATE_DIR")
    token_var = next((name for name in TOKEN_VARS if _text(env, name)), TOKEN_VARS[0])
    return Settings(
        manifest=Path(manifest) if manifest else None,
        model=_text(env, "LLAMA_BOOTSTRAP_MODEL"),
        profile=_text(env, "LLAMA_BOOTSTRAP_PROFILE"),
        state_dir=Path(state_dir) if state_dir else None,
        debug=_flag(env, "LLAMA_BOOTSTRAP_DEBUG"),
        hf_endpoint=_text(env, "HF_ENDPOINT"),
        hf_token=_text(env, token_var),
        hf_token_var=token_var,
        secrets=_secrets(env),
        conda_env=_text(env, "CONDA_DEFAULT_ENV"),
        conda_prefix=_text(env, "CONDA_PREFIX"),
        sources=_list(env, "LLAMA_BOOTSTRAP_SOURCES"),
        require_lock=_flag(env, "LLAMA_BOOTSTRAP_REQUIRE_LOCK"),
    )


def _list(environ: Mapping[str, str], name: str) -> Optional[Tuple[str, ...]]:
    """``a;b;c`` (``;`` because Windows paths hold ``:`` and user names hold spaces and commas)."""
    items = tuple(part.strip() for part in environ.get(name, "").split(";") if part.strip())
    return items or None
