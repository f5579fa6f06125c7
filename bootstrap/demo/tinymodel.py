"""Build a tiny, real Llama-architecture Chinese chat model for the offline demo and the tests.

The folder looks like a (very small) FlagAlpha/Llama2-Chinese-7b-Chat checkout: ``config.json``,
``model.safetensors``, ``generation_config.json``, ``tokenizer.model`` (a real SentencePiece BPE model with
the Llama-2 settings), ``tokenizer_config.json`` and ``special_tokens_map.json``. It is trained for ~150 steps
(seconds on two CPU cores) so that greedy generation for the chat prompt gives a short Chinese answer, and
the build is bitwise reproducible for a given seed (one torch thread while training).

Everything here is written by hand (no ``save_pretrained``): the JSON files are the same bytes whatever
transformers version builds them, and both transformers 4.57.x and 5.x load them.
Heavy imports (torch, transformers, sentencepiece, safetensors) happen inside the functions.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

#: Bump when the built folder changes, so cached builds are not reused across versions.
BUILD_VERSION = 1
DEFAULT_SEED = 0
DEFAULT_TRAIN_STEPS = 150

#: The Llama2-Chinese chat format (one turn): the model answers after "Assistant: ".
CHAT_PROMPT_TEMPLATE = "<s>Human: {prompt}\n</s><s>Assistant: "
DEMO_PROMPT = "介绍一下中国"

VOCAB_SIZE = 1000
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# ------------------------------------------------------------------------------ corpus

#: (prompt, answer) pairs the model learns. Our own text; no downloaded data.
CHAT_PAIRS: Tuple[Tuple[str, str], ...] = (
    (DEMO_PROMPT, "中国位于亚洲东部，是一个历史悠久的国家。首都是北京，长城是中国最有名的古迹。"),
    ("介绍一下北京", "北京是中国的首都，有三千多年的历史，故宫和天坛都在北京。"),
    ("介绍一下长城", "长城是中国古代修建的城墙，全长约21196千米，是世界上最长的建筑。"),
    ("中国的首都是哪里？", "中国的首都是北京。"),
    ("介绍一下上海", "上海是中国最大的城市之一，位于长江入海口。"),
    ("介绍一下长江", "长江是中国最长的河流，全长约6300千米。"),
    ("中国有多少人口？", "中国人口约14亿，是世界上人口最多的国家之一。"),
    ("介绍一下故宫", "故宫位于北京市中心，是明清两代的皇宫。"),
    ("春节是什么？", "春节是中国最重要的传统节日，人们会回家和家人团聚。"),
    ("你好", "你好！我是一个很小的中文聊天模型，只用于演示。"),
    ("你是谁？", "我是一个演示用的小模型，不能回答复杂的问题。"),
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("Tell me about the Great Wall.", "The Great Wall of China is more than 2000 years old."),
    ("Hello", "Hello! I am a tiny chat model for demos."),
)

_CITIES = (
    ("北京", "Beijing"), ("上海", "Shanghai"), ("广州", "Guangzhou"), ("深圳", "Shenzhen"),
    ("成都", "Chengdu"), ("西安", "Xi'an"), ("杭州", "Hangzhou"), ("南京", "Nanjing"),
    ("武汉", "Wuhan"), ("重庆", "Chongqing"), ("天津", "Tianjin"), ("苏州", "Suzhou"),
    ("长沙", "Changsha"), ("青岛", "Qingdao"), ("昆明", "Kunming"), ("大连", "Dalian"),
)
_ZH_TEMPLATES = (
    "{zh}是中国的一个城市，有{n}万人口。",
    "{zh}有很多好吃的东西，每年有{n}万人去{zh}旅游。",
    "从北京到{zh}大约有{n}千米。",
    "我明天去{zh}，那里的天气很好。",
    "{zh}的历史很悠久，有{n}多年的历史。",
    "请介绍一下{zh}的名胜古迹。",
    "长城、故宫和天坛是中国有名的地方，{zh}也很美。",
)
_EN_TEMPLATES = (
    "{en} is a city in China with {n} million people.",
    "The train from Beijing to {en} takes {n} hours.",
    "I will visit {en} next year, it is a beautiful city.",
    "Tell me about {en} and the Great Wall.",
)


def corpus_lines(seed: int = DEFAULT_SEED, count: int = 3000) -> List[str]:
    """Mixed Chinese/English lines (chat turns and simple facts) for training the tokenizer."""
    rng = random.Random(seed)
    lines: List[str] = []
    for prompt, answer in CHAT_PAIRS:
        lines.extend(["Human: " + prompt, "Assistant: " + answer] * 5)
    while len(lines) < count:
        zh, en = rng.choice(_CITIES)
        n = str(rng.randint(2, 3000))
        if rng.random() < 0.6:
            lines.append(rng.choice(_ZH_TEMPLATES).format(zh=zh, n=n))
        else:
            lines.append(rng.choice(_EN_TEMPLATES).format(en=en, n=n))
    return lines


# ------------------------------------------------------------------------------ tokenizer


def train_tokenizer(lines: Sequence[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """Train a SentencePiece BPE model with the Llama-2 settings, in memory; return the serialized model."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.99995,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_number=True,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        max_sentencepiece_length=16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        unk_surface=" \u2047 ",
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _token(content: str) -> Dict[str, object]:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def tokenizer_config() -> Dict[str, object]:
    """tokenizer_config.json as Llama-2 ships it, loadable by transformers 4.57.x and 5.x."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": _token(BOS),
        "clean_up_tokenization_spaces": False,
        "eos_token": _token(EOS),
        "legacy": True,
        "model_max_length": 256,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": _token(UNK),
    }


def special_tokens_map() -> Dict[str, object]:
    def plain(content: str) -> Dict[str, object]:
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False,
                "single_word": False}

    return {"bos_token": plain(BOS), "eos_token": plain(EOS), "unk_token": plain(UNK)}


# ------------------------------------------------------------------------------ model


def model_config(vocab_size: int) -> Dict[str, object]:
    """config.json: Llama-2 keys, scaled down."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 4,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def generation_config() -> Dict[str, object]:
    return {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": UNK_ID}


class _Encoder:
    """Token ids exactly as the saved tokenizer produces them for the chat format.

    The prompt part is split at the special tokens and each piece is encoded with the dummy prefix (the
    Llama-2 "legacy" behaviour, which is what tokenizer_config.json selects). The answer follows
    "Assistant: " directly, so it is encoded without the dummy prefix.
    """

    def __init__(self, model_bytes: bytes) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb2

        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        proto = pb2.ModelProto()
        proto.ParseFromString(model_bytes)
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp_raw = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    def prompt(self, prompt: str) -> List[int]:
        human = self.sp.encode("Human: " + prompt + "\n")
        return [BOS_ID] + human + [EOS_ID, BOS_ID] + self.sp.encode("Assistant: ")

    def answer(self, answer: str) -> List[int]:
        return self.sp_raw.encode(answer + "\n") + [EOS_ID]


def _train(model_bytes: bytes, config: Dict[str, object], *, seed: int, steps: int) -> Dict[str, object]:
    """Train LlamaForCausalLM on CHAT_PAIRS (loss on the answers); return contiguous float32 tensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    enc = _Encoder(model_bytes)
    examples = []
    for prompt, answer in CHAT_PAIRS:
        p, a = enc.prompt(prompt), enc.answer(answer)
        examples.append((p + a, [-100] * len(p) + a))
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(ids)] = 1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: bitwise reproducible, and faster for matrices this small
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(LlamaConfig.from_dict(dict(config)))
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
            for _ in range(steps):
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return {name: t.detach().to(torch.float32).contiguous().clone() for name, t in model.state_dict().items()}


def _write_json(path: Path, data: Dict[str, object]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def build_tiny_chat_model(
    dest: Path, *, seed: int = DEFAULT_SEED, train_steps: int = DEFAULT_TRAIN_STEPS
) -> Path:
    """Build the tiny chat model into ``dest`` (created; must be empty or missing) and return ``dest``."""
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"destination is not empty: {dest}")
    model_bytes = train_tokenizer(corpus_lines(seed))
    config = model_config(vocab_size=_piece_count(model_bytes))
    state = _train(model_bytes, config, seed=seed, steps=train_steps)

    (dest / "tokenizer.model").write_bytes(model_bytes)
    _write_json(dest / "tokenizer_config.json", tokenizer_config())
    _write_json(dest / "special_tokens_map.json", special_tokens_map())
    _write_json(dest / "config.json", config)
    _write_json(dest / "generation_config.json", generation_config())
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def _piece_count(model_bytes: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model_bytes).get_piece_size()


# ------------------------------------------------------------------------------ variants

BROKEN_KINDS = ("shape", "truncated", "no-weights")


def build_broken_model(dest: Path, *, kind: str = "shape", source: Optional[Path] = None) -> Path:
    """A model folder that ``from_pretrained`` rejects.

    kind: ``shape`` (config.json's hidden_size does not match the safetensors shapes), ``truncated``
    (model.safetensors cut in half), ``no-weights`` (model.safetensors missing).
    ``source``: an existing tiny model to copy (e.g. from :func:`cached_tiny_model`); otherwise an
    untrained one is built.
    """
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken-model kind {kind!r}; choose from {', '.join(BROKEN_KINDS)}")
    dest = Path(dest)
    if source is not None:
        shutil.copytree(str(source), str(dest))
    else:
        build_tiny_chat_model(dest, train_steps=0)
    weights = dest / "model.safetensors"
    if kind == "shape":
        config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
        config["hidden_size"] = 2 * int(config["hidden_size"])
        config["intermediate_size"] = 2 * int(config["intermediate_size"])
        _write_json(dest / "config.json", config)
    elif kind == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    else:
        weights.unlink()
    return dest


def cached_tiny_model(cache_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """Build the tiny model once under ``cache_dir`` and reuse it (safe against concurrent builders)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"tiny-llama2-chinese-chat-v{BUILD_VERSION}-s{seed}"
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=str(cache_dir)))
    try:
        build_tiny_chat_model(tmp, seed=seed)
        try:
            os.replace(str(tmp), str(target))
        except OSError:
            if not target.is_dir():  # lost a race only if someone else finished the same build
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(str(tmp), ignore_errors=True)
    return target
