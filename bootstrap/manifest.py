"""The manifest: typed models, strict loading, and errors that name the field and line.

``load_manifest(path)`` reads YAML with a safe loader, rejects duplicate keys, validates the
document against :class:`Manifest` (unknown keys forbidden, strict types) and turns every
problem into one :class:`~bootstrap.errors.ManifestError` naming the field and, where YAML
knows it, the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, List, Optional, Tuple, Type

import yaml

from bootstrap.errors import ManifestError
from bootstrap.fsutil import NotARegularFile, read_regular
from bootstrap.schema import Invalid, Loc, Problem, Rule, Section, mapping, section, sequence, value
from bootstrap.schema import json_schema as _schema_of
from bootstrap.urls import check_endpoint, check_mirror_url, check_source_url

MANIFEST_VERSION = 1
DEFAULT_MANIFEST_NAME = "manifest.yaml"
MAX_MANIFEST_BYTES = 1 << 20
MAX_DEPTH = 32  # nesting of mappings and lists; the manifest needs 3
PRECISIONS = ("auto", "fp16", "bf16", "int8", "int4", "fp32")
GPU_POLICIES = ("required", "preferred", "none")
SOURCE_KINDS = ("hub", "modelscope", "dir")
MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
DEFAULT_WEIGHTS_LOCK = "weights.lock.yaml"
DEFAULT_PROMPT = "介绍一下中国"
CHAT_TEMPLATE = "<s>Human: {prompt}\n</s><s>Assistant: "

_COMMIT = r"^[0-9a-f]{40}$"
_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
_KEY = r"^[a-z0-9][a-z0-9._-]*$"
_PY_SPEC = re.compile(r"^(>=|==|>|<=|<|~=)?\s*\d+(\.\d+){0,2}$")
_GB = 10_000  # upper bound of every size in GB: a typo guard


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


def _python_spec(value: str) -> str:
    if not _PY_SPEC.match(value.strip()):
        raise ValueError(f"{value!r} is not a version specifier like '>=3.9.6'")
    return value.strip()


def _template(value: str) -> str:
    if value.count("{prompt}") != 1:
        raise ValueError("must contain {prompt} exactly once")
    return value


_REVISION = Rule("string", min_length=1, max_length=255, pattern=r"^[^\s]+$", pattern_hint="a revision without spaces")
_REPO = dict(pattern=_REPO_ID, pattern_hint="a Hub repo id like 'owner/name'")
_PATH = Rule("string", check=_relative_inside, description="relative to the manifest's folder, or absolute")


@dataclass(frozen=True)
class EnvSpec(Section):
    """The conda environment the installers create."""

    name: str = value(Rule("string", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                           pattern_hint="letters, digits, '_', '.' or '-'"), "myenv")
    python: str = value(Rule("string", pattern=r"^3\.\d+$", pattern_hint='a Python minor version like "3.9"',
                             description='Python minor version of the env, quoted: "3.9"'), "3.9")


@dataclass(frozen=True)
class Requirements(Section):
    """What the machine must have."""

    python: str = value(Rule("string", check=_python_spec,
                             description="version specifier for the running Python, e.g. '>=3.9.6'"), ">=3.9.6")
    gpu: str = value(Rule("string", choices=GPU_POLICIES), "required")
    disk_margin_gb: float = value(Rule("number", ge=0, le=_GB, description="free disk kept beyond the download"),
                                  2.0)


@dataclass(frozen=True)
class Source(Section):
    """The Llama2-Chinese repository, pinned to one commit."""

    url: str = value(Rule("string", min_length=1, check=check_source_url))
    ref: str = value(Rule("string", pattern=_COMMIT, pattern_hint="a full commit id (40 lowercase hex digits)",
                          description="the pinned commit: 40 lowercase hex digits"))
    dir: str = value(_PATH, "Llama2-Chinese")


@dataclass(frozen=True)
class Weights(Section):
    """Where the model files go (``dir/owner/name``) and the lock that pins them."""

    dir: str = value(_PATH, "models")
    lock: str = value(Rule("string", check=_relative_inside,
                           description="the weights lock (commit + sha256 of every file), relative to the manifest's "
                           "folder or absolute; written by `llama-bootstrap lock --weights`"), DEFAULT_WEIGHTS_LOCK)
    require_lock: bool = value(Rule("boolean", description="refuse to pull a repo the weights lock does not pin"),
                               False)


@dataclass(frozen=True)
class ModelSpec(Section):
    """One model of the catalog."""

    repo_id: str = value(Rule("string", **_REPO))  # type: ignore[arg-type]
    revision: str = value(_REVISION, "main")
    kind: str = value(Rule("string", choices=("full", "lora")), "full")
    size_gb: float = value(Rule("number", gt=0, le=_GB, description="download size of the weights in GB"))
    min_vram_gb: float = value(Rule("number", ge=0, le=_GB, description="smallest VRAM it runs in (at int8/int4)"))
    params_b: Optional[float] = value(Rule("number", gt=0, le=_GB, nullable=True,
                                           description="parameters, in billions"), None)
    base: Optional[str] = value(Rule("string", nullable=True, description="the base model repo (downloaded too "
                                     "for kind: lora)", **_REPO), None)  # type: ignore[arg-type]
    base_revision: str = value(_REVISION, "main")
    base_size_gb: Optional[float] = value(Rule("number", gt=0, le=_GB, nullable=True), None)
    modelscope_id: Optional[str] = value(Rule("string", nullable=True, description="the same model on ModelScope "
                                              "(ids differ from the Hub's)", **_REPO), None)  # type: ignore[arg-type]
    modelscope_revision: str = value(_REVISION, "master")
    base_modelscope_id: Optional[str] = value(Rule("string", nullable=True, description="the base model on ModelScope",
                                                   **_REPO), None)  # type: ignore[arg-type]
    gated: bool = value(Rule("boolean"), False)
    base_gated: bool = value(Rule("boolean"), False)
    description: str = value(Rule("string"), "")

    def cross_check(self) -> List[Tuple[Loc, str]]:
        if self.kind == "lora" and (self.base is None or self.base_size_gb is None):
            return [((), "kind: lora needs base and base_size_gb (the base model is downloaded too)")]
        return []

    @property
    def needs_token(self) -> bool:
        return self.gated or (self.kind == "lora" and self.base_gated)

    @property
    def total_gb(self) -> float:
        base = (self.base_size_gb or 0.0) if self.kind == "lora" else 0.0
        return self.size_gb + base


@dataclass(frozen=True)
class SourceEntry(Section):
    """One place the weights may come from; a profile's sources are tried in order."""

    kind: str = value(Rule("string", choices=SOURCE_KINDS,
                           description="hub (a Hub or Hub mirror), modelscope (ModelScope's API), dir (a local or "
                           "mounted folder)"))
    endpoint: Optional[str] = value(Rule("string", nullable=True, check=check_mirror_url,
                                         description="hub/modelscope: base URL (default: the profile's hf_endpoint / "
                                         "ModelScope); plain http only for pinned repos"), None)
    path: Optional[str] = value(Rule("string", nullable=True, check=_relative_inside,
                                     description="dir: a folder holding <owner>/<name>/... or a Hugging Face cache"),
                                None)

    def cross_check(self) -> List[Tuple[Loc, str]]:
        if self.kind == "dir" and not self.path:
            return [(("path",), "kind: dir needs path (the folder that holds the weights)")]
        if self.kind == "dir" and self.endpoint:
            return [(("endpoint",), "kind: dir takes a path, not an endpoint")]
        if self.kind != "dir" and self.path:
            return [(("path",), f"kind: {self.kind} takes an endpoint, not a path")]
        return []


@dataclass(frozen=True)
class Profile(Section):
    """Where to download from."""

    hf_endpoint: str = value(Rule("string", check=check_endpoint))
    source_url: Optional[str] = value(Rule("string", nullable=True, check=check_source_url,
                                           description="a git mirror of source.url; HEAD is still checked"), None)
    conda_channel: Optional[str] = value(Rule("string", nullable=True, check=check_endpoint,
                                              description="conda-forge mirror used by the installers"), None)
    sources: Tuple[SourceEntry, ...] = sequence(SourceEntry, max_items=16, description="where weights may come "
                                                "from, tried in order (default: the hub at hf_endpoint)")
    description: str = value(Rule("string"), "")


@dataclass(frozen=True)
class Smoke(Section):
    """The smoke test: one prompt through the chat template."""

    prompt: str = value(Rule("string", min_length=1, max_length=4000), DEFAULT_PROMPT)
    template: str = value(Rule("string", check=_template, description="chat format; must contain {prompt}"),
                          CHAT_TEMPLATE)
    max_new_tokens: int = value(Rule("integer", ge=1, le=4096), 32)
    precision: str = value(Rule("string", choices=PRECISIONS), "auto")


_KEYS = dict(key_pattern=_KEY, key_hint="lowercase letters, digits, '.', '_' or '-'")


@dataclass(frozen=True)
class Manifest(Section):
    """The llama-bootstrap manifest."""

    version: int = value(Rule("integer", choices=(MANIFEST_VERSION,),
                              description="manifest format version; this tool reads 1"))
    model: str = value(Rule("string", description="key into models"))
    profile: str = value(Rule("string", description="key into profiles"), "global")
    env: EnvSpec = section(EnvSpec)
    requirements: Requirements = section(Requirements)
    source: Source = section(Source, required=True)
    weights: Weights = section(Weights)
    models: Dict[str, ModelSpec] = mapping(ModelSpec, description="the model catalog", **_KEYS)
    profiles: Dict[str, Profile] = mapping(Profile, description="download locations", **_KEYS)
    smoke: Smoke = section(Smoke)

    def cross_check(self) -> List[Tuple[Loc, str]]:
        out: List[Tuple[Loc, str]] = []
        if self.model not in self.models:
            out.append((("model",), f"{self.model!r} is not in models (known: {', '.join(self.models)})"))
        if self.profile not in self.profiles:
            out.append((("profile",), f"{self.profile!r} is not in profiles (known: {', '.join(self.profiles)})"))
        return out


# -- loading ------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (no alias bombs, no self-references) and nested at most MAX_DEPTH
    levels (composing is recursive: thousands of levels would end in RecursionError); duplicates are
    checked after."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (*name) are not allowed in the manifest; write the value out",
                self.peek_event().start_mark,
            )
        if not self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep; a manifest needs 3",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
        elif isinstance(node, yaml.SequenceNode) and str(part).isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def parse_manifest(text: str, *, source: str = DEFAULT_MANIFEST_NAME, cls: Type[Any] = None,
                   error: Type[ManifestError] = ManifestError, what: str = "manifest") -> Any:
    """Parse and validate manifest text (or, with ``cls``/``error``/``what``, another YAML document of
    the kit such as the weights lock). Raises ``error`` (a ManifestError)."""
    cls = cls or Manifest
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            try:
                _check_duplicates(node)
            except ManifestError as exc:
                raise error(str(exc), path=source, field=exc.field, line=exc.line, remedy=exc.remedy) from None
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        hint = " (YAML does not allow tabs for indentation; use spaces)" if "'\\t'" in problem else ""
        remedy = "fix the YAML syntax at that line" if "nested more than" not in problem else \
            "write the values out flat, as in the repository's manifest.yaml"
        raise error(f"invalid YAML: {problem}{hint}", path=source, line=line, remedy=remedy) from exc
    except yaml.YAMLError as exc:
        raise error(f"invalid YAML: {exc}", path=source, remedy="fix the YAML syntax") from exc
    except RecursionError:  # a backstop: MAX_DEPTH stops nesting long before the stack ends
        raise error(f"nested too deeply (more than {MAX_DEPTH} levels)", path=source,
                            remedy="start from the repository's manifest.yaml") from None
    finally:
        loader.dispose()
    if data is None:
        raise error(f"the {what} is empty", path=source, remedy=f"start from the repository's {Path(source).name}")
    if not isinstance(data, dict):
        raise error(
            f"the {what} must be a mapping of keys, not a {type(data).__name__}", path=source, line=1,
            remedy=f"start from the repository's {Path(source).name}",
        )
    return from_data(data, source=source, node=node, cls=cls, error=error)


def from_data(data: Any, *, source: str = DEFAULT_MANIFEST_NAME, node: Optional[yaml.Node] = None,
              cls: Type[Any] = None, error: Type[ManifestError] = ManifestError) -> Any:
    """Validate parsed manifest data. Raises ManifestError listing every problem, in file order.

    ``node`` is the YAML tree the data came from, if any: it gives each problem its line.
    """
    try:
        return (cls or Manifest).validate(data)
    except Invalid as exc:
        problems = sorted(exc.problems, key=lambda p: _line_of_problem(node, p) or 0)
    lines: List[str] = []
    for problem in problems:
        line = _line_of_problem(node, problem)
        lines.append(f"{f'line {line}: ' if line else ''}{problem.field}: {problem.message}")
    first = problems[0]
    raise error(
        "; ".join(lines), path=source, field=first.field, line=_line_of_problem(node, first),
        remedy="fix the field named above (see the README's manifest reference)",
    )


def _line_of_problem(node: Optional[yaml.Node], problem: Problem) -> Optional[int]:
    """A missing key is pointed at through its parent (no line for a missing top-level key)."""
    anchor: Loc = problem.loc[:-1] if problem.missing else problem.loc
    return _line_of(node, anchor) if anchor else None


def load_manifest(path: Path, *, cls: Type[Any] = None, error: Type[ManifestError] = ManifestError,
                  what: str = "manifest") -> Any:
    """Read and validate the manifest at ``path`` (or another YAML document: see parse_manifest).
    Raises ManifestError (``error``) for every problem."""
    shown = str(path)
    if path.is_dir():
        raise error(
            f"is a directory, not a {what} file", path=shown,
            remedy=f"pass the file, e.g. {path / DEFAULT_MANIFEST_NAME}" if what == "manifest" else None,
        )
    try:
        raw = read_regular(path, MAX_MANIFEST_BYTES)  # a FIFO or device is refused, never read
    except FileNotFoundError:
        raise error(
            "no such file", path=shown,
            remedy="pass --manifest PATH or set LLAMA_BOOTSTRAP_MANIFEST (the repository ships manifest.yaml)"
            if what == "manifest" else None,
        ) from None
    except NotARegularFile as exc:
        raise error(f"{exc.kind}, not a {what} file", path=shown,
                    remedy=f"pass the {what} file itself (pipes and devices are not read)") from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}", path=shown, remedy="check the path and its permissions") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise error(f"larger than {MAX_MANIFEST_BYTES} bytes; not a {what}", path=shown)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"not valid UTF-8 (byte {exc.start})", path=shown, line=line, remedy="save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse_manifest(text, source=shown, cls=cls, error=error, what=what)


def json_schema() -> Dict[str, Any]:
    """The JSON Schema for editors (committed as manifest.schema.json; a test keeps it current)."""
    schema = _schema_of(Manifest)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llama-bootstrap manifest"
    return schema
