"""Resolve manifest + environment + flags into one plan every command works from.

Precedence for each setting: command-line flag > environment variable > profile > manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from bootstrap.errors import UsageError
from bootstrap.manifest import (
    DEFAULT_MANIFEST_NAME,
    MODELSCOPE_ENDPOINT,
    SOURCE_KINDS,
    Manifest,
    ModelSpec,
    load_manifest,
)
from bootstrap.settings import Settings
from bootstrap.sources.base import RepoRef, SourceSpec
from bootstrap.urls import check_endpoint, check_mirror_url

STATE_DIR_NAME = ".llama-bootstrap"


@dataclass(frozen=True)
class Overrides:
    """What the command line said (None: not given)."""

    manifest: Optional[Path] = None
    model: Optional[str] = None
    profile: Optional[str] = None
    endpoint: Optional[str] = None
    sources: Optional[Tuple[str, ...]] = None  # --source (repeatable)
    require_lock: Optional[bool] = None  # --require-lock


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
    sources: Tuple[SourceSpec, ...] = ()
    weights_lock_path: Optional[Path] = None
    require_lock: bool = False

    @property
    def model(self) -> ModelSpec:
        return self.manifest.models[self.model_key]

    def repo_refs(self) -> List[RepoRef]:
        """The repos the model needs, in the order pull fetches them: a LoRA's base first, then the model."""
        model = self.model
        refs = [RepoRef(model.repo_id, model.revision, model.modelscope_id, model.modelscope_revision)]
        if model.kind == "lora" and model.base:
            refs.insert(0, RepoRef(model.base, model.base_revision, model.base_modelscope_id,
                                   model.modelscope_revision))
        return refs

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
    sources = _sources(manifest, profile_key, endpoint, root, overrides, settings)
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
        sources=sources,
        weights_lock_path=_resolve_dir(root, manifest.weights.lock),
        require_lock=bool(overrides.require_lock) or settings.require_lock or manifest.weights.require_lock,
    )


def parse_source(text: str, origin: str, *, hub_endpoint: str, base: Path) -> SourceSpec:
    """``hub``, ``hub=URL``, ``modelscope``, ``modelscope=URL`` or ``dir=PATH`` as a SourceSpec."""
    kind, sep, where = text.strip().partition("=")
    kind = kind.strip().lower()
    if kind not in SOURCE_KINDS:
        raise UsageError(f"{origin}: {text!r} is not a source", argument=origin,
                         remedy="use hub, hub=URL, modelscope, modelscope=URL or dir=PATH")
    where = where.strip()
    if kind == "dir":
        if not where:
            raise UsageError(f"{origin}: dir needs a folder: dir=PATH", argument=origin)
        return SourceSpec("dir", str(_resolve_dir(base, where)), origin)
    if not where:
        where = hub_endpoint if kind == "hub" else MODELSCOPE_ENDPOINT
    try:
        where = check_mirror_url(where)
    except ValueError as exc:
        raise UsageError(f"{origin}: {exc}", argument=origin, remedy="use https://HOST (or http://HOST:PORT for a "
                         "LAN mirror of pinned repos)") from None
    return SourceSpec(kind, where, origin)


def _sources(manifest: Manifest, profile_key: str, endpoint: str, root: Path, overrides: Overrides,
             settings: Settings) -> Tuple[SourceSpec, ...]:
    if overrides.sources:
        return tuple(parse_source(t, "--source", hub_endpoint=endpoint, base=Path.cwd()) for t in overrides.sources)
    if settings.sources:
        return tuple(parse_source(t, "LLAMA_BOOTSTRAP_SOURCES", hub_endpoint=endpoint, base=Path.cwd())
                     for t in settings.sources)
    entries = manifest.profiles[profile_key].sources
    if not entries:
        return (SourceSpec("hub", endpoint, f"profiles.{profile_key}.hf_endpoint"),)
    out = []
    for i, entry in enumerate(entries):
        origin = f"profiles.{profile_key}.sources.{i}"
        if entry.kind == "dir":
            out.append(SourceSpec("dir", str(_resolve_dir(root, entry.path or "")), origin))
        elif entry.kind == "hub":
            out.append(SourceSpec("hub", entry.endpoint or endpoint, origin))
        else:
            out.append(SourceSpec(entry.kind, entry.endpoint or MODELSCOPE_ENDPOINT, origin))
    return tuple(out)


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
