"""Resolve manifest + environment + flags into one plan every command works from.

Precedence for each setting: command-line flag > environment variable > profile > manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bootstrap.errors import UsageError
from bootstrap.manifest import DEFAULT_MANIFEST_NAME, Manifest, ModelSpec, load_manifest
from bootstrap.settings import Settings
from bootstrap.urls import check_endpoint

STATE_DIR_NAME = ".llama-bootstrap"


@dataclass(frozen=True)
class Overrides:
    """What the command line said (None: not given)."""

    manifest: Optional[Path] = None
    model: Optional[str] = None
    profile: Optional[str] = None
    endpoint: Optional[str] = None


@dataclass(frozen=True)
class Plan:
    manifest_path: Path
    manifest: Manifest
    model_key: str
    profile_key: str
    endpoint: str
    source_url: str
    root: Path
    source_dir: Path
    weights_dir: Path
    state_dir: Path
    token: Optional[str] = field(default=None, repr=False)

    @property
    def model(self) -> ModelSpec:
        return self.manifest.models[self.model_key]

    def model_dir(self, repo_id: str) -> Path:
        """Where a repo's files go: ``weights.dir/owner/name``."""
        owner, name = repo_id.split("/", 1)
        return self.weights_dir / owner / name


def manifest_path(overrides: Overrides, settings: Settings, cwd: Optional[Path] = None) -> Path:
    path = overrides.manifest or settings.manifest or Path(DEFAULT_MANIFEST_NAME)
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


def _resolve_dir(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (root / p)


def build_plan(overrides: Overrides, settings: Settings, *, cwd: Optional[Path] = None) -> Plan:
    """Load the manifest and resolve every setting. Raises ManifestError / UsageError."""
    path = manifest_path(overrides, settings, cwd)
    manifest = load_manifest(path)
    return resolve(manifest, path, overrides, settings)


def check_token(token: Optional[str], variable: str) -> None:
    """A token must be sendable as an HTTP header value: visible ASCII only. Raises UsageError (never
    showing the value)."""
    if token is None:
        return
    for i, char in enumerate(token):
        if "\x21" <= char <= "\x7e":
            continue
        what = ("a line break" if char in "\r\n" else "a control character" if ord(char) < 32 or ord(char) == 127
                else "a space" if char.isspace() else "a non-ASCII character")
        raise UsageError(
            f"{variable} cannot be sent as an HTTP header: it contains {what} (character {i + 1} of "
            f"{len(token)}; the value is not shown)", argument=variable,
            remedy=f"set {variable} to the token exactly as the Hub shows it: one word of letters, digits and "
                   "punctuation, no spaces or line breaks",
        )


def resolve(manifest: Manifest, path: Path, overrides: Overrides, settings: Settings) -> Plan:
    check_token(settings.hf_token, settings.hf_token_var)
    model_key, model_from = _pick(overrides.model, "--model", settings.model, "LLAMA_BOOTSTRAP_MODEL", manifest.model)
    if model_key not in manifest.models:
        raise UsageError(
            f"{model_from}: {model_key!r} is not a model in the manifest",
            argument=model_from,
            remedy=f"use one of: {', '.join(manifest.models)} (llama-bootstrap models lists them)",
        )
    profile_key, profile_from = _pick(
        overrides.profile, "--profile", settings.profile, "LLAMA_BOOTSTRAP_PROFILE", manifest.profile
    )
    if profile_key not in manifest.profiles:
        raise UsageError(
            f"{profile_from}: {profile_key!r} is not a profile in the manifest",
            argument=profile_from,
            remedy=f"use one of: {', '.join(manifest.profiles)}",
        )
    profile = manifest.profiles[profile_key]
    endpoint, endpoint_from = _pick(
        overrides.endpoint, "--endpoint", settings.hf_endpoint, "HF_ENDPOINT", profile.hf_endpoint
    )
    try:
        endpoint = check_endpoint(endpoint)
    except ValueError as exc:
        raise UsageError(f"{endpoint_from}: {exc}", argument=endpoint_from,
                         remedy="use an https:// endpoint, or --profile cn for the mirror") from None
    root = path.parent.resolve()
    state_dir = settings.state_dir or root / STATE_DIR_NAME
    return Plan(
        manifest_path=path,
        manifest=manifest,
        model_key=model_key,
        profile_key=profile_key,
        endpoint=endpoint,
        source_url=_resolve_source_url(profile.source_url or manifest.source.url, root),
        root=root,
        source_dir=_resolve_dir(root, manifest.source.dir),
        weights_dir=_resolve_dir(root, manifest.weights.dir),
        state_dir=state_dir if state_dir.is_absolute() else root / state_dir,
        token=settings.hf_token,
    )


def _resolve_source_url(url: str, root: Path) -> str:
    """A relative local path is relative to the manifest's folder, like every other path."""
    if "://" in url or url.startswith("git@") or Path(url).is_absolute():
        return url
    return str(root / url)


def _pick(flag, flag_name, env, env_name, default):
    if flag is not None:
        return flag, flag_name
    if env is not None:
        return env, env_name
    return default, "manifest"
