"""The tiny Llama2-Chinese-like chat model: real tokenizer, real transformers load and generation."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.demo import tinymodel
from bootstrap.demo.tinymodel import (
    BROKEN_KINDS,
    CHAT_PROMPT_TEMPLATE,
    DEMO_PROMPT,
    build_broken_model,
    build_tiny_chat_model,
    cached_tiny_model,
    corpus_lines,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
EXPECTED_FILES = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model",
                  "tokenizer_config.json", "special_tokens_map.json"}


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def generate(folder: Path, prompt: str = DEMO_PROMPT) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    text = CHAT_PROMPT_TEMPLATE.format(prompt=prompt)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=64, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


# ------------------------------------------------------------------------------ no torch


def test_imports_are_light() -> None:
    heavy = "('torch', 'transformers', 'sentencepiece', 'safetensors', 'huggingface_hub')"
    code = ("import sys, bootstrap.demo.tinymodel, bootstrap.demo.hubserver, bootstrap.demo.gitsource; "
            f"print(sorted(m for m in {heavy} if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=str(root), capture_output=True, text=True,  # noqa: S603
                         check=True)
    assert out.stdout.strip() == "[]"


def test_corpus_is_deterministic() -> None:
    lines = corpus_lines(0)
    assert lines == corpus_lines(0) and lines != corpus_lines(1)
    assert len(lines) >= 3000
    assert any(CJK.search(line) for line in lines) and any(line.isascii() for line in lines)


def test_hand_written_configs() -> None:
    config = tinymodel.tokenizer_config()
    assert config["tokenizer_class"] == "LlamaTokenizer" and config["add_bos_token"] is True
    assert config["add_eos_token"] is False and config["legacy"] is True
    model = tinymodel.model_config(1000)
    assert model["model_type"] == "llama" and model["vocab_size"] == 1000
    assert (model["hidden_size"], model["num_hidden_layers"], model["num_attention_heads"]) == (64, 2, 4)
    assert (model["bos_token_id"], model["eos_token_id"]) == (1, 2)


def test_broken_kind_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown broken-model kind"):
        build_broken_model(tmp_path / "x", kind="melted")


# ------------------------------------------------------------------------------ torch


@pytest.mark.torch
def test_folder_layout_and_size(tiny_model_dir: Path) -> None:
    assert {p.name for p in tiny_model_dir.iterdir()} == EXPECTED_FILES
    assert sum(p.stat().st_size for p in tiny_model_dir.iterdir()) < 1_000_000
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 1000


@pytest.mark.torch
def test_sentencepiece_model_has_llama2_settings(tiny_model_dir: Path) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb2

    data = (tiny_model_dir / "tokenizer.model").read_bytes()
    proto = pb2.ModelProto()
    proto.ParseFromString(data)
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    assert trainer.model_type == pb2.TrainerSpec.BPE
    assert trainer.byte_fallback and trainer.split_digits
    assert (trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id) == (0, 1, 2, -1)
    assert normalizer.name == "identity" and normalizer.add_dummy_prefix
    assert not normalizer.remove_extra_whitespaces

    sp = spm.SentencePieceProcessor(model_proto=data)
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.get_piece_size() == 1000
    rare = "龘"  # not in the training text: must fall back to its UTF-8 bytes, never <unk>
    pieces = sp.encode(rare, out_type=str)
    assert [p for p in pieces if p.startswith("<0x")] == ["<0xE9>", "<0xBE>", "<0x98>"]
    assert sp.unk_id() not in sp.encode(rare)
    assert sp.decode(sp.encode(rare)) == rare
    assert sp.encode("2023", out_type=str)[-4:] == ["2", "0", "2", "3"]  # split_digits


@pytest.mark.torch
def test_autotokenizer_matches_training_tokenization(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer("你好")["input_ids"][0] == 1  # add_bos_token
    assert tokenizer.decode(tokenizer("龘 x")["input_ids"], skip_special_tokens=True) == "龘 x"
    encoder = tinymodel._Encoder((tiny_model_dir / "tokenizer.model").read_bytes())
    for prompt, _ in tinymodel.CHAT_PAIRS:
        ids = tokenizer(CHAT_PROMPT_TEMPLATE.format(prompt=prompt), add_special_tokens=False)["input_ids"]
        assert ids == encoder.prompt(prompt), prompt


@pytest.mark.torch
def test_greedy_generation_answers_in_chinese(tiny_model_dir: Path) -> None:
    answer = generate(tiny_model_dir)
    assert answer.strip()
    assert len(CJK.findall(answer)) >= 5, answer
    assert answer.strip() == tinymodel.CHAT_PAIRS[0][1]


@pytest.mark.torch
@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_model_fails_to_load(tiny_model_dir: Path, tmp_path: Path, kind: str) -> None:
    from transformers import AutoModelForCausalLM

    broken = build_broken_model(tmp_path / kind, kind=kind, source=tiny_model_dir)
    with pytest.raises(Exception):  # noqa: B017 - RuntimeError / SafetensorError / OSError by kind
        AutoModelForCausalLM.from_pretrained(broken)


@pytest.mark.torch
def test_cached_tiny_model_is_reused(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tinymodel, "build_tiny_chat_model", no_rebuild)
    assert cached_tiny_model(tiny_model_dir.parent) == tiny_model_dir
    assert not [p for p in tiny_model_dir.parent.iterdir() if p.name.startswith(".building-")]


@pytest.mark.torch
@pytest.mark.slow
def test_build_is_bitwise_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_chat_model(tmp_path / "again")
    assert digests(again) == digests(tiny_model_dir)


@pytest.mark.torch
def test_build_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "file").write_text("x")
    with pytest.raises(FileExistsError):
        build_tiny_chat_model(tmp_path / "occupied")
