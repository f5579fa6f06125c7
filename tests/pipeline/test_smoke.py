"""smoke: real transformers on the tiny model the tests build."""

from __future__ import annotations

import shutil

import pytest

from bootstrap.errors import SmokeError
from bootstrap.manifest import CHAT_TEMPLATE
from bootstrap.smoke import SmokeRequest, chat_prompt, smoke

pytestmark = pytest.mark.torch


def request(model_dir, **kw):
    base = dict(model_dir=model_dir, prompt="介绍一下中国", template=CHAT_TEMPLATE, max_new_tokens=12)
    base.update(kw)
    return SmokeRequest(**base)


def test_chat_prompt_is_the_literal_llama2_chinese_format():
    assert chat_prompt(CHAT_TEMPLATE, "你好{x}") == "<s>Human: 你好{x}\n</s><s>Assistant: "


def test_smoke_passes_on_the_tiny_model(tiny_model_dir):
    lines = []
    result = smoke(request(tiny_model_dir), lines.append)
    assert result.passed and result.answer.strip()
    assert result.precision == "fp32" and result.device == "cpu"
    assert 0 < result.new_tokens <= 12
    assert result.load_s > 0 and result.ttft_s is not None and result.ttft_s <= result.generate_s
    assert result.tokens_per_s and result.tokens_per_s > 0
    assert result.peak_memory_bytes and result.peak_memory_bytes > 10 * 1024 * 1024
    assert result.device_map == {"": "cpu"}
    assert any("fp32 on cpu" in line for line in lines)


def test_prompt_is_tokenized_without_added_specials(tiny_model_dir):
    """The template carries <s> itself: one BOS, not two."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids = tok(chat_prompt(CHAT_TEMPLATE, "介绍一下中国"), add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    result = smoke(request(tiny_model_dir))
    assert result.prompt_tokens == len(ids)


def test_smoke_fails_clearly_on_a_broken_model(tiny_model_dir, tmp_path):
    from bootstrap.demo.tinymodel import build_broken_model

    broken = build_broken_model(tmp_path / "broken", source=tiny_model_dir)
    with pytest.raises(SmokeError) as info:
        smoke(request(broken))
    assert "loading the model failed" in str(info.value)
    assert "pull --verify" in info.value.remedy


def test_missing_weights_fail_clearly(tiny_model_dir, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(SmokeError, match="loading the model failed"):
        smoke(request(copy))


def test_int8_without_a_gpu_is_refused(tiny_model_dir):
    with pytest.raises(SmokeError, match="needs a CUDA GPU"):
        smoke(request(tiny_model_dir, precision="int8"))


def test_explicit_bf16_on_cpu_loads_in_bf16(tiny_model_dir):
    result = smoke(request(tiny_model_dir, precision="bf16", max_new_tokens=4))
    assert result.precision == "bf16" and result.device == "cpu"
