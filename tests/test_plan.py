"""Resolving manifest + environment + flags into a Plan: paths, precedence, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import pytest

from bootstrap.errors import UsageError
from bootstrap.plan import STATE_DIR_NAME, Overrides, build_plan
from bootstrap.settings import Settings, from_env
from helpers_core import DEFAULT_MODEL, LORA_7B, SHIPPED_MANIFEST, make_plan, write_manifest

THIRTEEN = "llama2-chinese-13b-chat"
SECRET = "hf_abcdefSECRETtoken0123456789"


# -- paths --------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project" / "kit"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plan = make_plan(folder, cwd=elsewhere)
    root = folder.resolve()
    assert plan.root == root
    assert plan.source_dir == root / "Llama2-Chinese"
    assert plan.weights_dir == root / "models"
    assert plan.state_dir == root / STATE_DIR_NAME
    repo = "FlagAlpha/Llama2-Chinese-7b-Chat"
    assert plan.model_dir(repo) == root / "models" / "FlagAlpha" / "Llama2-Chinese-7b-Chat"
    assert not (elsewhere / "models").exists() and list(elsewhere.iterdir()) == []


def test_relative_manifest_path_is_relative_to_cwd(tmp_path: Path) -> None:
    write_manifest(tmp_path / "kit")
    plan = build_plan(Overrides(manifest=Path("kit/manifest.yaml")), Settings(), cwd=tmp_path)
    assert plan.manifest_path == tmp_path / "kit" / "manifest.yaml"
    assert plan.weights_dir == (tmp_path / "kit").resolve() / "models"


def test_default_manifest_is_manifest_yaml_in_cwd(tmp_path: Path) -> None:
    write_manifest(tmp_path)
    plan = build_plan(Overrides(), Settings(), cwd=tmp_path)
    assert plan.manifest_path == tmp_path / "manifest.yaml"


def test_manifest_flag_beats_env(tmp_path: Path) -> None:
    flag = write_manifest(tmp_path / "flag", {"model": THIRTEEN})
    env = write_manifest(tmp_path / "env")
    settings = from_env({"LLAMA_BOOTSTRAP_MANIFEST": str(env)})
    assert build_plan(Overrides(), settings, cwd=tmp_path).manifest_path == env
    assert build_plan(Overrides(manifest=flag), settings, cwd=tmp_path).manifest_path == flag


def test_absolute_dirs_stay_absolute(tmp_path: Path) -> None:
    weights = tmp_path / "big-disk" / "weights"
    plan = make_plan(tmp_path / "kit", {"weights.dir": str(weights), "source.dir": "src/Llama2-Chinese"})
    assert plan.weights_dir == weights
    assert plan.source_dir == (tmp_path / "kit").resolve() / "src" / "Llama2-Chinese"


@pytest.mark.parametrize("value, want", [("state", "kit/state"), ("/ABS", "/ABS")])
def test_state_dir_from_env(tmp_path: Path, value: str, want: str) -> None:
    value = value.replace("/ABS", str(tmp_path / "abs-state"))
    plan = make_plan(tmp_path / "kit", env={"LLAMA_BOOTSTRAP_STATE_DIR": value})
    expected = tmp_path / "abs-state" if want == "/ABS" else (tmp_path / "kit").resolve() / "state"
    assert plan.state_dir == expected


def test_relative_local_source_url_resolves_against_the_manifest_folder(tmp_path: Path) -> None:
    plan = make_plan(tmp_path / "kit", {"source.url": "../mirror/Llama2-Chinese.git"})
    assert Path(plan.source_url) == (tmp_path / "kit").resolve() / ".." / "mirror" / "Llama2-Chinese.git"


# -- precedence: flag > env > profile > manifest --------------------------------------------


@pytest.mark.parametrize(
    "flag, env, want",
    [
        (None, None, THIRTEEN),  # the manifest's `model:` (changed from the shipped default below)
        (None, DEFAULT_MODEL, DEFAULT_MODEL),
        (LORA_7B, None, LORA_7B),
        (LORA_7B, DEFAULT_MODEL, LORA_7B),
    ],
    ids=["manifest", "env", "flag", "flag-beats-env"],
)
def test_model_precedence(tmp_path: Path, flag: Optional[str], env: Optional[str], want: str) -> None:
    environ = {"LLAMA_BOOTSTRAP_MODEL": env} if env else {}
    plan = make_plan(tmp_path, {"model": THIRTEEN}, env=environ, model=flag)
    assert plan.model_key == want
    assert plan.model is plan.manifest.models[want]


@pytest.mark.parametrize(
    "flag, env, want_profile, want_endpoint",
    [
        (None, None, "cn", "https://hf-mirror.com"),
        (None, "global", "global", "https://huggingface.co"),
        ("cn", "global", "cn", "https://hf-mirror.com"),
        ("global", None, "global", "https://huggingface.co"),
    ],
    ids=["manifest", "env", "flag-beats-env", "flag"],
)
def test_profile_precedence(tmp_path: Path, flag: Optional[str], env: Optional[str], want_profile: str,
                            want_endpoint: str) -> None:
    environ = {"LLAMA_BOOTSTRAP_PROFILE": env} if env else {}
    plan = make_plan(tmp_path, {"profile": "cn"}, env=environ, profile=flag)
    assert plan.profile_key == want_profile
    assert plan.endpoint == want_endpoint  # the profile's endpoint, nothing overriding it


def test_profile_brings_its_source_mirror(tmp_path: Path) -> None:
    assert make_plan(tmp_path / "a").source_url == "https://github.com/FlagAlpha/Llama2-Chinese.git"
    assert make_plan(tmp_path / "b", profile="cn").source_url.startswith("https://gitclone.com/")


@pytest.mark.parametrize(
    "flag, env, profile, want",
    [
        (None, None, None, "https://huggingface.co"),
        (None, None, "cn", "https://hf-mirror.com"),
        (None, "https://hub.internal.example", "cn", "https://hub.internal.example"),
        ("http://127.0.0.1:8080/", "https://hub.internal.example", "cn", "http://127.0.0.1:8080"),
    ],
    ids=["manifest-profile", "chosen-profile", "env-beats-profile", "flag-beats-env"],
)
def test_endpoint_precedence(tmp_path: Path, flag: Optional[str], env: Optional[str], profile: Optional[str],
                             want: str) -> None:
    environ = {"HF_ENDPOINT": env} if env else {}
    plan = make_plan(tmp_path, env=environ, profile=profile, endpoint=flag)
    assert plan.endpoint == want
    if profile:
        assert plan.profile_key == profile  # an endpoint override does not change the profile


@pytest.mark.parametrize(
    "kwargs, env, argument",
    [
        ({"model": "llama3"}, {}, "--model"),
        ({}, {"LLAMA_BOOTSTRAP_MODEL": "llama3"}, "LLAMA_BOOTSTRAP_MODEL"),
        ({"profile": "mars"}, {}, "--profile"),
        ({}, {"LLAMA_BOOTSTRAP_PROFILE": "mars"}, "LLAMA_BOOTSTRAP_PROFILE"),
        ({"endpoint": "ftp://x"}, {}, "--endpoint"),
        ({}, {"HF_ENDPOINT": "http://example.com"}, "HF_ENDPOINT"),
        ({}, {"HF_ENDPOINT": "https://user:pw@example.com"}, "HF_ENDPOINT"),
    ],
    ids=["flag-model", "env-model", "flag-profile", "env-profile", "flag-endpoint", "env-endpoint-http",
         "env-endpoint-credentials"],
)
def test_bad_overrides_name_their_source(tmp_path: Path, kwargs: Dict[str, str], env: Dict[str, str],
                                         argument: str) -> None:
    with pytest.raises(UsageError) as err:
        make_plan(tmp_path, env=env, **kwargs)
    assert err.value.argument == argument
    assert str(err.value).startswith(argument + ":")
    assert err.value.remedy


def test_a_valid_flag_hides_a_bad_env_value(tmp_path: Path) -> None:
    """The flag wins, so a stale LLAMA_BOOTSTRAP_MODEL is never consulted."""
    plan = make_plan(tmp_path, env={"LLAMA_BOOTSTRAP_MODEL": "llama3"}, model=THIRTEEN)
    assert plan.model_key == THIRTEEN


# -- settings and the token ---------------------------------------------------------------------


def test_token_is_carried_but_never_shown(tmp_path: Path) -> None:
    settings = from_env({"HF_TOKEN": SECRET})
    assert settings.hf_token == SECRET
    plan = build_plan(Overrides(manifest=SHIPPED_MANIFEST), settings)
    assert plan.token == SECRET
    for text in (repr(settings), str(settings), repr(plan), str(plan)):
        assert SECRET not in text
        assert "SECRET" not in text


def test_token_fallback_and_blank_values() -> None:
    assert from_env({"HUGGING_FACE_HUB_TOKEN": SECRET}).hf_token == SECRET
    assert from_env({"HF_TOKEN": "a", "HUGGING_FACE_HUB_TOKEN": "b"}).hf_token == "a"
    assert from_env({"HF_TOKEN": "  "}).hf_token is None
    assert from_env({"LLAMA_BOOTSTRAP_MODEL": ""}).model is None


def test_settings_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BOOTSTRAP_MODEL", THIRTEEN)
    assert from_env().model == THIRTEEN
    monkeypatch.setenv("LLAMA_BOOTSTRAP_MODEL", LORA_7B)
    assert from_env().model == LORA_7B


@pytest.mark.parametrize("value, want", [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False),
                                         ("", False), ("no", False), ("2", False)])
def test_debug_flag(value: str, want: bool) -> None:
    assert from_env({"LLAMA_BOOTSTRAP_DEBUG": value}).debug is want


def test_conda_env_is_read() -> None:
    s = from_env({"CONDA_DEFAULT_ENV": "myenv", "CONDA_PREFIX": "/opt/conda/envs/myenv"})
    assert (s.conda_env, s.conda_prefix) == ("myenv", "/opt/conda/envs/myenv")
