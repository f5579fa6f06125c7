"""Strict, declarative rules for the manifest's sections: one table drives validation and the JSON Schema.

A section is a frozen dataclass whose fields carry their rule in ``metadata`` (see :func:`value`,
:func:`section`, :func:`mapping`). ``Section.validate(data)`` checks a parsed YAML mapping against
the rules without coercing anything (``"32"`` is not an integer, ``true`` is not a number, ``3.9`` is
not a string), collects *every* problem with its location, and raises :class:`Invalid` with all of
them; ``json_schema(cls)`` renders the same rules for editors.

This replaces a pydantic model on purpose: the rules are few and simple, and building pydantic
models cost ~0.15 s at every start of the CLI (``pull`` included) for nothing the user sees.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

Loc = Tuple[str, ...]
S = TypeVar("S", bound="Section")

UNKNOWN_KEY = "unknown key (check its spelling; see manifest.schema.json for the allowed keys)"
MISSING_KEY = "required key is missing"
_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false"}


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    missing: bool = False  # the key is absent: point at its parent's line

    @property
    def field(self) -> str:
        return ".".join(self.loc) or "(top level)"


class Invalid(ValueError):
    """One or more problems, in the order they were found."""

    def __init__(self, problems: List[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Rule:
    """What one scalar field accepts. ``check`` runs last and may normalise (raise ValueError to refuse)."""

    type: str  # "string" | "integer" | "number" | "boolean"
    choices: Tuple[Any, ...] = ()
    gt: Optional[float] = None
    ge: Optional[float] = None
    le: Optional[float] = None
    min_length: Optional[int] = None
    max_length: Optional[int] = None
    pattern: Optional[str] = None
    pattern_hint: str = ""  # how to say the pattern to a person
    nullable: bool = False
    check: Optional[Callable[[Any], Any]] = None
    description: str = ""

    def apply(self, raw: Any) -> Any:
        """The accepted value, or ValueError with a message that says what to write instead."""
        if raw is None and self.nullable:
            return None
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ValueError(f"{raw!r} is not a finite number; use an ordinary number")
        if not _is_type(raw, self.type):
            message = f"must be {_TYPE_WORDS[self.type]} (got {_got(raw)})"
            if self.type == "string" and isinstance(raw, (int, float)) and not isinstance(raw, bool):
                message += '; quote it, e.g. "3.9"'
            raise ValueError(message)
        try:
            accepted = float(raw) if self.type == "number" else raw
        except OverflowError:  # an integer with hundreds of digits
            raise ValueError("is not a finite number; use an ordinary number") from None
        if self.choices and accepted not in self.choices:
            if len(self.choices) == 1:
                raise ValueError(f"must be {self.choices[0]!r} (got {_got(raw)})")
            raise ValueError(f"must be one of {', '.join(repr(c) for c in self.choices)} (got {_got(raw)})")
        if self.gt is not None and not accepted > self.gt:
            raise ValueError(f"must be greater than {_num(self.gt)} (got {_got(raw)})")
        if self.ge is not None and not accepted >= self.ge:
            raise ValueError(f"must be at least {_num(self.ge)} (got {_got(raw)})")
        if self.le is not None and not accepted <= self.le:
            raise ValueError(f"must be at most {_num(self.le)} (got {_got(raw)})")
        if self.type == "string":
            if self.min_length is not None and len(accepted) < self.min_length:
                raise ValueError("must not be empty" if self.min_length == 1 else
                                 f"must be at least {self.min_length} characters")
            if self.max_length is not None and len(accepted) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters (got {len(accepted)})")
            if self.pattern is not None and not re.fullmatch(self.pattern, accepted):
                raise ValueError(f"{_got(accepted)} is not {self.pattern_hint}" if self.pattern_hint else
                                 f"{_got(accepted)} does not match {self.pattern}")
        return self.check(accepted) if self.check is not None else accepted

    def schema(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": self.type}
        if len(self.choices) == 1:
            out["const"] = self.choices[0]
        elif self.choices:
            out["enum"] = list(self.choices)
        for key, bound in (("exclusiveMinimum", self.gt), ("minimum", self.ge), ("maximum", self.le)):
            if bound is not None:
                out[key] = _num(bound)
        for key, limit in (("minLength", self.min_length), ("maxLength", self.max_length)):
            if limit is not None:
                out[key] = limit
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.nullable:
            out = {"anyOf": [out, {"type": "null"}]}
        return out


def value(rule: Rule, default: Any = dataclasses.MISSING) -> Any:
    """A scalar field; without ``default`` it is required (its dataclass default is None)."""
    required = default is dataclasses.MISSING
    return dataclasses.field(default=None if required else default, metadata={"rule": rule, "required": required})


def section(cls: Type[Section], *, required: bool = False) -> Any:
    """A nested section; left out, an optional one is ``cls()`` (all defaults)."""
    if required:
        return dataclasses.field(default=None, metadata={"section": cls, "required": True})
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "required": False})


def mapping(cls: Type[Section], *, key_pattern: str, key_hint: str, description: str = "",
            min_entries: int = 1) -> Any:
    """A required mapping of at least ``min_entries`` ``name: section`` entries; names must match ``key_pattern``."""
    return dataclasses.field(default_factory=dict, metadata={
        "mapping": cls, "required": True, "key_pattern": key_pattern, "key_hint": key_hint,
        "description": description, "min_entries": min_entries})


def sequence(cls: Type[Section], *, required: bool = False, min_items: int = 0, max_items: int = 1000,
             description: str = "") -> Any:
    """A list of ``cls`` entries (a tuple once built); left out, an optional one is empty."""
    return dataclasses.field(default=(), metadata={
        "sequence": cls, "required": required, "min_items": min_items, "max_items": max_items,
        "description": description})


class Section:
    """Base of the manifest's frozen dataclasses."""

    def cross_check(self) -> List[Tuple[Loc, str]]:
        """Rules between fields, run once every field is valid: (location relative to here, message)."""
        return []

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def validate(cls: Type[S], data: Any) -> S:
        """The section built from ``data``, or Invalid listing every problem."""
        problems: List[Problem] = []
        built = _build(cls, data, (), problems)
        if problems or built is None:
            raise Invalid(problems)
        return built


def _build(cls: Type[S], data: Any, loc: Loc, problems: List[Problem]) -> Optional[S]:
    if not isinstance(data, dict):
        problems.append(Problem(loc, f"must be a mapping of keys (got {_kind(data)})"))
        return None
    before = len(problems)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            problems.append(Problem(loc + (str(key),), UNKNOWN_KEY))
    values: Dict[str, Any] = {}
    for name, f in fields.items():
        where = loc + (name,)
        if name not in data:
            if f.metadata.get("required"):
                problems.append(Problem(where, MISSING_KEY, missing=True))
            continue
        raw = data[name]
        if "section" in f.metadata:
            values[name] = _build(f.metadata["section"], raw, where, problems)
        elif "mapping" in f.metadata:
            values[name] = _build_mapping(f.metadata, raw, where, problems)
        elif "sequence" in f.metadata:
            values[name] = _build_sequence(f.metadata, raw, where, problems)
        else:
            try:
                values[name] = f.metadata["rule"].apply(raw)
            except ValueError as exc:
                problems.append(Problem(where, str(exc)))
    if len(problems) > before:
        return None
    built = cls(**values)
    for rel, message in built.cross_check():
        problems.append(Problem(loc + rel, message))
    return built if len(problems) == before else None


def _build_mapping(meta: Any, data: Any, loc: Loc, problems: List[Problem]) -> Dict[str, Any]:
    if not isinstance(data, dict):
        problems.append(Problem(loc, f"must be a mapping of names to entries (got {_kind(data)})"))
        return {}
    if len(data) < meta.get("min_entries", 1):
        problems.append(Problem(loc, "must have at least one entry"))
    out: Dict[str, Any] = {}
    for key, item in data.items():
        if not isinstance(key, str) or not re.fullmatch(meta["key_pattern"], key):
            problems.append(Problem(loc + (str(key),), f"key {key!r} must be {meta['key_hint']}"))
            continue
        out[key] = _build(meta["mapping"], item, loc + (key,), problems)
    return out


def _build_sequence(meta: Any, data: Any, loc: Loc, problems: List[Problem]) -> Tuple[Any, ...]:
    if not isinstance(data, list):
        problems.append(Problem(loc, f"must be a list of entries (got {_kind(data)})"))
        return ()
    if len(data) < meta["min_items"]:
        plural = "entry" if meta["min_items"] == 1 else "entries"
        problems.append(Problem(loc, f"must have at least {meta['min_items']} {plural}"))
    if len(data) > meta["max_items"]:
        problems.append(Problem(loc, f"must have at most {meta['max_items']} entries (got {len(data)})"))
        return ()
    return tuple(_build(meta["sequence"], item, loc + (str(i),), problems) for i, item in enumerate(data))


def json_schema(cls: Type[Section]) -> Dict[str, Any]:
    """Draft 2020-12 JSON Schema of ``cls``: sections become ``$defs`` entries."""
    defs: Dict[str, Any] = {}
    top = _object_schema(cls, defs)
    top["$defs"] = dict(sorted(defs.items()))
    return top


def _object_schema(cls: Type[Section], defs: Dict[str, Any]) -> Dict[str, Any]:
    properties: Dict[str, Any] = {}
    required: List[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = f.metadata
        if "section" in meta:
            prop: Dict[str, Any] = {"$ref": _ref(meta["section"], defs)}
            if not meta["required"]:
                prop["default"] = meta["section"]().as_dict()
        elif "mapping" in meta:
            prop = {"type": "object", "additionalProperties": {"$ref": _ref(meta["mapping"], defs)},
                    "propertyNames": {"pattern": meta["key_pattern"]}}
            if meta["min_entries"]:
                prop["minProperties"] = meta["min_entries"]
            if meta["description"]:
                prop["description"] = meta["description"]
        elif "sequence" in meta:
            prop = {"type": "array", "items": {"$ref": _ref(meta["sequence"], defs)}, "maxItems": meta["max_items"]}
            if meta["min_items"]:
                prop["minItems"] = meta["min_items"]
            if meta["description"]:
                prop["description"] = meta["description"]
            if not meta["required"]:
                prop["default"] = []
        else:
            rule: Rule = meta["rule"]
            prop = rule.schema()
            if rule.description:
                prop["description"] = rule.description
            if not meta["required"]:
                prop["default"] = f.default
        if meta.get("required"):
            required.append(f.name)
        properties[f.name] = prop
    out: Dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    return out


def _ref(cls: Type[Section], defs: Dict[str, Any]) -> str:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}  # placeholder first: a section never contains itself, but be safe
        defs[cls.__name__] = _object_schema(cls, defs)
    return f"#/$defs/{cls.__name__}"


def _is_type(raw: Any, kind: str) -> bool:
    if isinstance(raw, bool):
        return kind == "boolean"
    if kind == "integer":
        return isinstance(raw, int)
    if kind == "number":
        return isinstance(raw, (int, float))
    return isinstance(raw, {"string": str, "boolean": bool}[kind])


def _kind(raw: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "an integer",
             float: "a number", type(None): "nothing (null)"}
    return names.get(type(raw), type(raw).__name__)


def _got(raw: Any) -> str:
    """A scalar as written (shortened), anything else by its kind."""
    if raw is None:
        return "nothing (null)"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (str, int, float)):
        shown = repr(raw)
        return shown if len(shown) <= 60 else shown[:57] + "..."
    return _kind(raw)


def _num(x: float) -> Any:
    return int(x) if float(x).is_integer() else x
