"""The manifest: typed models, strict loading, and errors that name the field and line.

``load_manifest(path)`` reads YAML with a safe loader, rejects duplicate keys, validates the
document against :class:`Manifest` (unknown keys forbidden, strict types) and turns every
problem into one :class:`~bootstrap.errors.ManifestError` naming the field and, where YAML
knows it, the line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, List, Literal, Optional, Tuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bootstrap.errors import ManifestError
from bootstrap.urls import check_endpoint, check_source_url

MANIFEST_VERSION = 1
DEFAULT_MANIFEST_NAME = "manifest.yaml"
MAX_MANIFEST_BYTES = 1 << 20
PRECISIONS = ("auto", "fp16", "bf16", "int8", "int4", "fp32")
GPU_POLICIES = ("required", "preferred", "none")
DEFAULT_PROMPT = "介绍一下中国"
CHAT_TEMPLATE = "<s>Human: {prompt}\n</s><s>Assistant: "

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_PY_SPEC = re.compile(r"^(>=|==|>|<=|<|~=)?\s*\d+(\.\d+){0,2}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _relative_inside(value: str) -> str:
    """Relative paths must stay inside the manifest's folder; absolute paths are a deliberate choice."""
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    for flavour in (PurePosixPath, PureWindowsPath):
        p = flavour(value)
        if p.is_absolute():
            return value
    parts = PureWindowsPath(value).parts
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise ValueError(f"{value!r} escapes the manifest's folder; use a path inside it or an absolute path")
    if depth == 0:
        raise ValueError(f"{value!r} is the manifest's folder itself; name a subfolder")
    return value


class EnvSpec(_Strict):
    name: str = Field("myenv", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    python: str = Field("3.9", pattern=r"^3\.\d+$", description='Python minor version of the env, quoted: "3.9"')


class Requirements(_Strict):
    python: str = Field(">=3.9.6", description="version specifier for the running Python, e.g. '>=3.9.6'")
    gpu: Literal["required", "preferred", "none"] = "required"
    disk_margin_gb: float = Field(2.0, ge=0, le=10_000)

    @field_validator("python")
    @classmethod
    def _spec(cls, value: str) -> str:
        if not _PY_SPEC.match(value.strip()):
            raise ValueError(f"{value!r} is not a version specifier like '>=3.9.6'")
        return value.strip()


class Source(_Strict):
    url: str = Field(..., min_length=1)
    ref: str = Field(..., description="the pinned commit: 40 lowercase hex digits")
    dir: str = "Llama2-Chinese"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_source_url(value)

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not _COMMIT.match(value):
            raise ValueError(f"{value!r} is not a full commit id (40 lowercase hex digits)")
        return value

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        return _relative_inside(value)


class Weights(_Strict):
    dir: str = "models"

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        return _relative_inside(value)


class ModelSpec(_Strict):
    repo_id: str
    revision: str = Field("main", min_length=1, max_length=255, pattern=r"^[^\s]+$")
    kind: Literal["full", "lora"] = "full"
    size_gb: float = Field(..., gt=0, le=10_000, description="download size of the weights in GB")
    min_vram_gb: float = Field(..., ge=0, le=10_000, description="smallest VRAM it runs in (at int8/int4)")
    params_b: Optional[float] = Field(None, gt=0, le=10_000, description="parameters, in billions")
    base: Optional[str] = Field(None, description="the base model repo (downloaded too for kind: lora)")
    base_revision: str = Field("main", min_length=1, max_length=255, pattern=r"^[^\s]+$")
    base_size_gb: Optional[float] = Field(None, gt=0, le=10_000)
    gated: bool = False
    base_gated: bool = False
    description: str = ""

    @field_validator("repo_id", "base")
    @classmethod
    def _repo(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _REPO_ID.match(value):
            raise ValueError(f"{value!r} is not a Hub repo id like 'owner/name'")
        return value

    @model_validator(mode="after")
    def _lora_needs_base(self) -> ModelSpec:
        if self.kind == "lora" and (self.base is None or self.base_size_gb is None):
            raise ValueError("kind: lora needs base and base_size_gb (the base model is downloaded too)")
        return self

    @property
    def needs_token(self) -> bool:
        return self.gated or (self.kind == "lora" and self.base_gated)

    @property
    def total_gb(self) -> float:
        base = (self.base_size_gb or 0.0) if self.kind == "lora" else 0.0
        return self.size_gb + base


class Profile(_Strict):
    hf_endpoint: str
    source_url: Optional[str] = Field(None, description="a git mirror of source.url; HEAD is still checked")
    conda_channel: Optional[str] = Field(None, description="conda-forge mirror used by the installers")
    description: str = ""

    @field_validator("hf_endpoint", "conda_channel")
    @classmethod
    def _https(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_endpoint(value)

    @field_validator("source_url")
    @classmethod
    def _source(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_source_url(value)


class Smoke(_Strict):
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, max_length=4000)
    template: str = Field(CHAT_TEMPLATE, description="chat format; must contain {prompt}")
    max_new_tokens: int = Field(32, ge=1, le=4096)
    precision: Literal["auto", "fp16", "bf16", "int8", "int4", "fp32"] = "auto"

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count("{prompt}") != 1:
            raise ValueError("must contain {prompt} exactly once")
        return value


class Manifest(_Strict):
    version: Literal[1] = Field(..., description="manifest format version; this tool reads 1")
    model: str = Field(..., description="key into models")
    profile: str = Field("global", description="key into profiles")
    env: EnvSpec = EnvSpec()
    requirements: Requirements = Requirements()
    source: Source
    weights: Weights = Weights()
    models: Dict[str, ModelSpec] = Field(..., min_length=1)
    profiles: Dict[str, Profile] = Field(..., min_length=1)
    smoke: Smoke = Smoke()

    @field_validator("models", "profiles")
    @classmethod
    def _keys(cls, value: Dict[str, Any], info: ValidationInfo) -> Dict[str, Any]:
        for key in value:
            if not _KEY.match(key):
                raise _FieldError(f"{info.field_name}.{key}",
                                  f"key {key!r} must be lowercase letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        if self.model not in self.models:
            raise _FieldError("model", f"{self.model!r} is not in models (known: {', '.join(self.models)})")
        if self.profile not in self.profiles:
            raise _FieldError("profile", f"{self.profile!r} is not in profiles (known: {', '.join(self.profiles)})")
        return self


class _FieldError(ValueError):
    """A cross-field error that knows which field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- loading ------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (no alias bombs, no self-references); duplicates are checked after."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (*name) are not allowed in the manifest; write the value out",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)


def _check_duplicates(node: yaml.Node, path: Tuple[str, ...] = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: Dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ManifestError(
                    f"{'.'.join(path + (key,))}: duplicate key (first on line {seen[key]})",
                    field=".".join(path + (key,)),
                    line=key_node.start_mark.line + 1,
                    remedy="remove one of the two entries",
                )
            seen[key] = key_node.start_mark.line + 1
            _check_duplicates(value_node, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, path + (str(i),))


def _line_of(node: Optional[yaml.Node], loc: Tuple[Any, ...]) -> Optional[int]:
    """The 1-based line of the deepest node on ``loc`` that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    node, line = value_node, key_node.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _describe(err: Dict[str, Any]) -> Tuple[str, str]:
    """(dotted field, message) for one pydantic error."""
    loc = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
    field = ".".join(loc) or "(top level)"
    kind = err.get("type", "")
    msg = err.get("msg", "invalid")
    if kind == "extra_forbidden":
        msg = "unknown key (check its spelling; see manifest.schema.json for the allowed keys)"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind.startswith("value_error"):
        ctx_error = err.get("ctx", {}).get("error")
        if isinstance(ctx_error, _FieldError):
            field = ctx_error.field
        msg = msg.replace("Value error, ", "")
    elif kind in ("string_type", "int_type", "float_type", "bool_type", "dict_type", "model_type"):
        got = type(err.get("input")).__name__
        msg = f"{msg} (got {got})"
        if kind == "string_type" and isinstance(err.get("input"), (int, float)):
            msg += "; quote it, e.g. \"3.9\""
    return field, msg


def parse_manifest(text: str, *, source: str = DEFAULT_MANIFEST_NAME) -> Manifest:
    """Parse and validate manifest text. Raises ManifestError."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            try:
                _check_duplicates(node)
            except ManifestError as exc:
                exc.path = source
                raise
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        hint = " (YAML does not allow tabs for indentation; use spaces)" if "'\\t'" in problem else ""
        raise ManifestError(
            f"invalid YAML: {problem}{hint}", path=source, line=line, remedy="fix the YAML syntax at that line"
        ) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}", path=source, remedy="fix the YAML syntax") from exc
    finally:
        loader.dispose()
    if data is None:
        raise ManifestError("the manifest is empty", path=source, remedy="start from the repository's manifest.yaml")
    if not isinstance(data, dict):
        raise ManifestError(
            f"the manifest must be a mapping of keys, not a {type(data).__name__}", path=source, line=1,
            remedy="start from the repository's manifest.yaml",
        )
    _reject_non_finite(data, (), node, source)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines: List[str] = []
        first_field, first_line = None, None
        for err in errors:
            field, msg = _describe(err)
            loc = tuple(field.split("."))
            if err.get("type") == "missing":  # the key is not there: point at its parent, if any
                loc = loc[:-1]
            line = _line_of(node, loc) if loc and field != "(top level)" else None
            if first_field is None:
                first_field, first_line = field, line
            where = f"line {line}: " if line else ""
            lines.append(f"{where}{field}: {msg}")
        raise ManifestError(
            "; ".join(lines), path=source, field=first_field, line=first_line,
            remedy="fix the field named above (see the README's manifest reference)",
        ) from None


def _reject_non_finite(data: Any, path: Tuple[str, ...], node: Optional[yaml.Node], source: str) -> None:
    """YAML reads .inf/.nan and 1e999 as floats; pydantic says 'finite' but name it plainly."""
    if isinstance(data, float) and not math.isfinite(data):
        field = ".".join(path)
        line = _line_of(node, path)
        raise ManifestError(f"line {line}: {field}: {data!r} is not a finite number", path=source, field=field,
                            line=line, remedy="use an ordinary number")
    if isinstance(data, dict):
        for key, value in data.items():
            _reject_non_finite(value, path + (str(key),), node, source)


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest at ``path``. Raises ManifestError for every problem."""
    shown = str(path)
    if path.is_dir():
        raise ManifestError(
            "is a directory, not a manifest file", path=shown,
            remedy=f"pass the file, e.g. {path / DEFAULT_MANIFEST_NAME}",
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(
            "no such file", path=shown,
            remedy="pass --manifest PATH or set LLAMA_BOOTSTRAP_MANIFEST (the repository ships manifest.yaml)",
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", path=shown,
                            remedy="check the path and its permissions") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"larger than {MAX_MANIFEST_BYTES} bytes; not a manifest", path=shown)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(
            f"not valid UTF-8 (byte {exc.start})", path=shown, line=line, remedy="save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse_manifest(text, source=shown)


def json_schema() -> Dict[str, Any]:
    """The JSON Schema for editors (committed as manifest.schema.json; a test keeps it current)."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llama-bootstrap manifest"
    return schema
