"""The shipped manifest honours the contract, and the loader's rules hold (in-process).

The bad-input corpus, run through the real CLI, is in test_bad_input.py; here are the loader's
own guarantees: what loads, what the models say, and that errors carry field, line and path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bootstrap.errors import ManifestError
from bootstrap.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    ModelSpec,
    Weights,
    from_data,
    load_manifest,
    parse_manifest,
)
from bootstrap.schema import Invalid
from helpers_core import DEFAULT_MODEL, MODEL_KEYS, SHIPPED_MANIFEST, manifest_data, shipped_text

PINNED_REF = "e789431453ecbee9d8c5d466351765bc3718ed60"
PROMPT = "介绍一下中国"
TEMPLATE = "<s>Human: {prompt}\n</s><s>Assistant: "


@pytest.fixture(scope="module")
def shipped() -> Manifest:
    return load_manifest(SHIPPED_MANIFEST)


# -- the shipped manifest -------------------------------------------------------------------


def test_shipped_manifest_loads(shipped: Manifest) -> None:
    assert shipped.version == 1
    assert shipped.model == DEFAULT_MODEL
    assert shipped.profile == "global"
    assert shipped.env.name == "myenv" and shipped.env.python == "3.9"
    assert shipped.requirements.gpu == "required"


def test_shipped_manifest_has_the_contract_keys() -> None:
    """Checked on the raw YAML, so a key that only exists as a model default does not count."""
    raw = manifest_data()
    for key in ("version", "model", "profile", "env", "requirements", "source", "weights", "models", "profiles",
                "smoke"):
        assert key in raw, key
    assert {"name", "python"} <= set(raw["env"])
    assert {"python", "gpu", "disk_margin_gb"} <= set(raw["requirements"])
    assert {"url", "ref", "dir"} <= set(raw["source"])
    assert "dir" in raw["weights"]
    for key, model in raw["models"].items():
        assert {"repo_id", "revision", "size_gb", "min_vram_gb", "base"} <= set(model), key
    assert set(raw["profiles"]) == {"global", "cn"}
    for name, profile in raw["profiles"].items():
        assert "hf_endpoint" in profile, name
    assert {"prompt", "max_new_tokens", "precision"} <= set(raw["smoke"])


def test_four_models(shipped: Manifest) -> None:
    assert tuple(shipped.models) == MODEL_KEYS
    repos = {k: m.repo_id for k, m in shipped.models.items()}
    assert repos["llama2-chinese-7b-chat"] == "FlagAlpha/Llama2-Chinese-7b-Chat"
    assert repos["llama2-chinese-13b-chat"] == "FlagAlpha/Llama2-Chinese-13b-Chat"
    assert all(r.startswith("FlagAlpha/") for r in repos.values())
    for key, model in shipped.models.items():
        assert model.base and model.base.startswith("meta-llama/Llama-2-"), key
        assert 0 < model.min_vram_gb < model.total_gb + 1, key
    # the 13B needs more than the 7B, in download and in VRAM
    assert shipped.models["llama2-chinese-13b-chat"].size_gb > shipped.models["llama2-chinese-7b-chat"].size_gb
    assert shipped.models["llama2-chinese-13b-chat"].min_vram_gb > shipped.models["llama2-chinese-7b-chat"].min_vram_gb


def test_lora_models_download_their_gated_base(shipped: Manifest) -> None:
    for key in ("llama2-chinese-7b-chat-lora", "llama2-chinese-13b-chat-lora"):
        m = shipped.models[key]
        assert m.kind == "lora" and m.base_gated and m.needs_token
        assert m.total_gb == pytest.approx(m.size_gb + m.base_size_gb)
    full = shipped.models[DEFAULT_MODEL]
    assert full.kind == "full" and not full.needs_token
    assert full.total_gb == full.size_gb  # a full model's base is not downloaded


def test_source_is_pinned(shipped: Manifest) -> None:
    assert shipped.source.ref == PINNED_REF
    assert shipped.source.url == "https://github.com/FlagAlpha/Llama2-Chinese.git"
    assert shipped.source.dir == "Llama2-Chinese"
    assert shipped.weights.dir == "models"


def test_profiles(shipped: Manifest) -> None:
    assert shipped.profiles["global"].hf_endpoint == "https://huggingface.co"
    assert shipped.profiles["cn"].hf_endpoint == "https://hf-mirror.com"
    assert shipped.profiles["cn"].source_url and shipped.profiles["cn"].source_url.startswith("https://")


def test_smoke_template_is_the_llama2_chinese_chat_format(shipped: Manifest) -> None:
    assert shipped.smoke.template == TEMPLATE
    assert shipped.smoke.prompt == PROMPT
    assert shipped.smoke.template.format(prompt=shipped.smoke.prompt) == "<s>Human: 介绍一下中国\n</s><s>Assistant: "
    assert shipped.smoke.precision == "auto"
    assert 1 <= shipped.smoke.max_new_tokens <= 4096


def test_defaults_match_the_shipped_values() -> None:
    """Leaving out an optional section gives what the shipped file spells out."""
    data = manifest_data()
    for key in ("env", "requirements", "weights", "smoke"):
        del data[key]
    m = from_data(data)
    shipped = load_manifest(SHIPPED_MANIFEST)
    assert m.env == shipped.env and m.weights == shipped.weights and m.smoke == shipped.smoke
    assert m.requirements.gpu == shipped.requirements.gpu


# -- loading: encodings and files ----------------------------------------------------------------


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + shipped_text().replace("\n", "\r\n").encode("utf-8"))
    m = load_manifest(path)
    assert m.smoke.prompt == PROMPT
    assert m.smoke.template == TEMPLATE  # the \n inside the quoted string is YAML's, not the file's


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(shipped_text() + "#" * MAX_MANIFEST_BYTES, encoding="utf-8")
    with pytest.raises(ManifestError, match="larger than") as err:
        load_manifest(path)
    assert err.value.path == str(path)


def test_errors_name_path_field_and_line(tmp_path: Path) -> None:
    text = shipped_text()
    lines = text.splitlines()
    want = next(i for i, line in enumerate(lines, 1) if "size_gb: 26.03" in line and "base" not in line)
    path = tmp_path / "manifest.yaml"
    path.write_text(text.replace("    size_gb: 26.03\n", "    size_gb: -26\n", 1), encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.field == "models.llama2-chinese-13b-chat.size_gb"
    assert err.value.line == want
    assert err.value.path == str(path)
    assert f"line {want}" in str(err.value)


def test_every_error_is_listed_not_just_the_first() -> None:
    text = shipped_text().replace("gpu: required", "gpu: maybe").replace("precision: auto", "precision: fp8")
    with pytest.raises(ManifestError) as err:
        parse_manifest(text)
    assert "requirements.gpu" in str(err.value) and "smoke.precision" in str(err.value)
    assert err.value.field == "requirements.gpu"  # the first, in file order


def test_yaml_error_has_the_line_of_the_problem() -> None:
    lines = shipped_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("  ref: "))
    lines[i] = "  ref: [unclosed"
    with pytest.raises(ManifestError) as err:
        parse_manifest("\n".join(lines) + "\n")
    # PyYAML notices the unclosed flow sequence at the ':' of the next line ("  dir: ..."):
    # the line after the defect (i is 0-based, so the defect is on line i + 1)
    assert err.value.line == i + 2
    assert "invalid YAML" in str(err.value)


def test_yaml_tags_are_not_constructed() -> None:
    text = shipped_text().replace("version: 1", "version: !!python/object/apply:os.system ['true']")
    with pytest.raises(ManifestError, match="invalid YAML") as err:
        parse_manifest(text)
    assert err.value.line == 5


def test_unknown_key_message_points_at_the_schema() -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(shipped_text().replace("  dir: models", "  dir: models\n  cache: /tmp"))
    assert err.value.field == "weights.cache"
    assert "manifest.schema.json" in str(err.value)


# -- the rules inside the models -------------------------------------------------------------


@pytest.mark.parametrize("value", ["models", "./models", "a/../b", "data/models", "/srv/models", "C:\\models",
                                   "D:/models", "\\\\server\\share\\models"])
def test_weights_dir_accepts_paths_inside_or_absolute(value: str) -> None:
    assert Weights.validate({"dir": value}).dir == value


@pytest.mark.parametrize("value", ["..", "../outside", "a/../..", "a/../../x", ".", "a/..", "", "  ", "..\\x",
                                   "a\\..\\..\\x", "a\x00b"])
def test_weights_dir_refuses_escapes_and_the_folder_itself(value: str) -> None:
    with pytest.raises(Invalid):
        Weights.validate({"dir": value})


@pytest.mark.parametrize("endpoint", ["https://huggingface.co", "https://hf-mirror.com/", "http://127.0.0.1:8080",
                                      "http://localhost:5000", "http://[::1]:8000"])
def test_endpoints_https_or_loopback_http(endpoint: str) -> None:
    data = manifest_data()
    data["profiles"]["global"]["hf_endpoint"] = endpoint
    m = from_data(data)
    assert m.profiles["global"].hf_endpoint == endpoint.rstrip("/")


@pytest.mark.parametrize("endpoint", ["http://example.com", "http://127.0.0.1.example.com", "ftp://example.com",
                                      "https://user:pass@example.com", "huggingface.co", "https://"])
def test_endpoints_refused(endpoint: str) -> None:
    data = manifest_data()
    data["profiles"]["global"]["hf_endpoint"] = endpoint
    with pytest.raises(ManifestError):
        from_data(data)


@pytest.mark.parametrize("url", ["https://github.com/FlagAlpha/Llama2-Chinese.git", "git@github.com:FlagAlpha/x.git",
                                 "ssh://git@github.com/FlagAlpha/x.git", "file:///srv/git/x.git", "../mirror/x.git",
                                 "http://127.0.0.1:9418/x.git", "git://localhost/x.git"])
def test_source_urls_accepted(url: str) -> None:
    data = manifest_data()
    data["source"]["url"] = url
    assert from_data(data).source.url == url


@pytest.mark.parametrize("url", ["http://example.com/x.git", "git://github.com/x.git", "ftp://example.com/x.git",
                                 "https://user:secret@github.com/x.git"])
def test_source_urls_refused(url: str) -> None:
    data = manifest_data()
    data["source"]["url"] = url
    with pytest.raises(ManifestError):
        from_data(data)


@pytest.mark.parametrize("ref", ["main", "e789431", PINNED_REF.upper(), PINNED_REF + "0", "v1.0", PINNED_REF + "\n"])
def test_ref_must_be_a_full_lowercase_commit(ref: str) -> None:
    data = manifest_data()
    data["source"]["ref"] = ref
    with pytest.raises(ManifestError):
        from_data(data)


def test_strict_types_do_not_coerce() -> None:
    for dotted, value in (("smoke.max_new_tokens", "32"), ("smoke.max_new_tokens", True),
                          ("requirements.disk_margin_gb", "2"), ("env.python", 3.9)):
        data = manifest_data()
        section, key = dotted.split(".")
        data[section][key] = value
        with pytest.raises(ManifestError):
            from_data(data)


@pytest.mark.parametrize("dotted, value, phrase", [
    ("models.llama2-chinese-7b-chat.size_gb", 10 ** 400, "finite"),
    ("models.llama2-chinese-7b-chat.size_gb", True, "number"),
    ("smoke.max_new_tokens", 10 ** 400, "4096"),
    ("env", None, "mapping"),
    ("models", [], "mapping"),
])
def test_odd_values_are_refused_by_name(dotted: str, value: object, phrase: str) -> None:
    data = manifest_data()
    *parents, key = dotted.split(".")
    target = data
    for part in parents:
        target = target[part]
    target[key] = value
    with pytest.raises(ManifestError) as err:
        from_data(data)
    assert err.value.field == dotted and phrase in str(err.value)


def test_a_trailing_newline_does_not_slip_through_a_pattern() -> None:
    """``$`` matches before a final newline in Python's re: patterns must match the whole value."""
    data = manifest_data()
    data["models"]["bad-key\n"] = data["models"].pop("llama2-chinese-13b-chat")
    data["env"]["name"] = "myenv\n"
    with pytest.raises(ManifestError) as err:
        from_data(data)
    assert "models.bad-key" in str(err.value) and "env.name" in str(err.value)


def test_lora_without_base_is_refused() -> None:
    with pytest.raises(Invalid, match="base_size_gb"):
        ModelSpec.validate({"repo_id": "a/b", "kind": "lora", "size_gb": 0.1, "min_vram_gb": 12, "base": "c/d"})
    assert ModelSpec.validate({"repo_id": "a/b", "size_gb": 1, "min_vram_gb": 1}).total_gb == 1


def test_manifest_is_immutable(shipped: Manifest) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        shipped.model = "llama2-chinese-13b-chat"  # type: ignore[misc]


def test_shipped_file_is_plain_yaml() -> None:
    """No anchors, aliases or tags: what you read is what is loaded."""
    text = shipped_text()
    events = list(yaml.parse(text))
    assert not any(getattr(e, "anchor", None) for e in events)
    assert not any(isinstance(e, yaml.AliasEvent) for e in events)


SOURCES_PROFILE = """\
  lan:
    hf_endpoint: https://huggingface.co
    sources:
      - kind: hub
        endpoint: http://10.0.0.5:8000
      - {kind: dir}
      - kind: ftp
      - kind: modelscope
        path: /mnt/x
"""


def test_source_entries_are_checked_with_field_and_line() -> None:
    text = shipped_text().replace("profiles:\n", "profiles:\n" + SOURCES_PROFILE, 1)
    lines = text.splitlines()
    dir_line = next(i for i, line in enumerate(lines, 1) if "{kind: dir}" in line)
    with pytest.raises(ManifestError) as err:
        parse_manifest(text)
    message = str(err.value)
    assert f"line {dir_line}: profiles.lan.sources.1.path: kind: dir needs path" in message
    assert "profiles.lan.sources.2.kind: must be one of 'hub', 'modelscope', 'dir'" in message
    assert "profiles.lan.sources.3.path: kind: modelscope takes an endpoint, not a path" in message
    assert "sources.0" not in message  # a plain-http LAN mirror is accepted here (pull allows it for pinned repos)


def test_sources_must_be_a_list_and_weights_lock_must_stay_inside() -> None:
    data = manifest_data()
    data["profiles"]["global"]["sources"] = {"kind": "hub"}
    data["weights"]["lock"] = "../elsewhere.yaml"
    with pytest.raises(ManifestError) as err:
        parse_manifest(yaml.safe_dump(data))
    assert "profiles.global.sources: must be a list of entries" in str(err.value)
    assert "weights.lock: '../elsewhere.yaml' escapes the manifest's folder" in str(err.value)


def test_the_default_sources_are_the_profile_hub(tmp_path: Path) -> None:
    from bootstrap.plan import Overrides, build_plan
    from bootstrap.settings import Settings

    path = tmp_path / "manifest.yaml"
    path.write_text(shipped_text(), encoding="utf-8")
    plan = build_plan(Overrides(manifest=path, profile="cn"), Settings())
    assert [(s.kind, s.location) for s in plan.sources] == [("hub", "https://hf-mirror.com")]
    plan = build_plan(Overrides(manifest=path, sources=("dir=usb", "modelscope", "hub=http://10.0.0.5:8000/")),
                      Settings())
    assert [(s.kind, s.location) for s in plan.sources] == [
        ("dir", str(Path.cwd() / "usb")), ("modelscope", "https://www.modelscope.cn"), ("hub", "http://10.0.0.5:8000")]
    plan = build_plan(Overrides(manifest=path), Settings(sources=("hub=https://mirror.example",)))
    assert plan.sources[0].origin == "LLAMA_BOOTSTRAP_SOURCES"
