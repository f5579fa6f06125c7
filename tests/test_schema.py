"""manifest.schema.json is current, and the shipped manifest satisfies it."""

from __future__ import annotations

import json

import pytest
import yaml

from bootstrap.manifest import json_schema
from helpers_core import SCHEMA_FILE, SHIPPED_MANIFEST, shipped_text

REGENERATE = "run `llama-bootstrap schema > manifest.schema.json` and commit the result"


def _committed() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_committed_schema_is_current() -> None:
    current = json.loads(json.dumps(json_schema()))  # tuples -> lists, as in the file
    assert _committed() == current, f"manifest.schema.json is out of date: {REGENERATE}"


def test_committed_schema_is_what_the_command_prints() -> None:
    """Byte for byte, so regenerating gives no spurious diff."""
    printed = json.dumps(json_schema(), ensure_ascii=False, indent=2) + "\n"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == printed, REGENERATE


def test_schema_forbids_unknown_keys_and_requires_version() -> None:
    schema = _committed()
    assert "version" in schema["required"]
    assert schema["additionalProperties"] is False
    for name, definition in schema.get("$defs", {}).items():
        if definition.get("type") == "object" and "properties" in definition:
            assert definition.get("additionalProperties") is False, name


def test_editors_find_the_schema() -> None:
    assert shipped_text().splitlines()[0] == "# yaml-language-server: $schema=manifest.schema.json"


def test_shipped_manifest_validates_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _committed()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    jsonschema.validate(yaml.safe_load(SHIPPED_MANIFEST.read_text(encoding="utf-8")), schema)


@pytest.mark.parametrize(
    "section, key, value",
    [("smoke", "precision", "fp8"), ("requirements", "gpu", "maybe"), (None, "version", 2),
     (None, "mirrors", {}), ("smoke", "max_new_tokens", 5000)],
)
def test_schema_rejects_what_the_loader_rejects(section: str, key: str, value: object) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load(SHIPPED_MANIFEST.read_text(encoding="utf-8"))
    (data[section] if section else data)[key] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, _committed())
