"""LoRA variants: the (gated) base model and the adapter are both pulled; smoke loads base + adapter with peft."""

from __future__ import annotations

import pytest

from bootstrap import errors
from bootstrap.pipeline import RunOptions, run
from tests.pipeline.helpers import plan_for, write_manifest

pytestmark = pytest.mark.torch

BASE = "meta-llama/Llama-2-tiny-chat-hf"
ADAPTER = "FlagAlpha/Llama2-Chinese-tiny-Chat-LoRA"
TOKEN = "hf_tinytesttoken0123456789"


@pytest.fixture
def lora_project(local_hub, tiny_model_dir, source_repo, tmp_path):
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM"))
    adapter_dir = tmp_path / "adapter"
    adapter.save_pretrained(str(adapter_dir))
    local_hub.add_repo(BASE, tiny_model_dir, gated=True, token=TOKEN)
    local_hub.add_repo(ADAPTER, adapter_dir)
    key = "llama2-chinese-tiny-demo"
    return write_manifest(
        tmp_path / "proj", local_hub.url, str(source_repo.path), source_repo.sha, smoke__max_new_tokens=6,
        **{f"models__{key}__repo_id": ADAPTER, f"models__{key}__kind": "lora", f"models__{key}__base": BASE,
           f"models__{key}__base_size_gb": 0.001, f"models__{key}__base_gated": True},
    )


def test_lora_without_token_fails_at_check_with_the_remedy(lora_project):
    with pytest.raises(errors.ChecksFailed) as info:
        run(plan_for(lora_project), RunOptions())
    assert "token" in info.value.failed and "HF_TOKEN" in info.value.remedy


def test_lora_pulls_base_and_adapter_and_smoke_uses_both(lora_project):
    plan = plan_for(lora_project, token=TOKEN)
    result = run(plan, RunOptions())
    pulled = {r["repo_id"] for r in next(s for s in result.steps if s.step == "pull").result["repos"]}
    assert pulled == {BASE, ADAPTER}
    assert (plan.model_dir(ADAPTER) / "adapter_model.safetensors").is_file()
    assert (plan.model_dir(BASE) / "model.safetensors").is_file()
    smoke = next(s for s in result.steps if s.step == "smoke").result
    assert smoke["answer"].strip()
