"""Load the pulled model the one way ``smoke``, ``chat`` and ``serve`` all use.

The tokenizer and the model come from the pulled folder, at the precision
:func:`bootstrap.precision.pick` chooses (``int8``/``int4`` through bitsandbytes, refused on the
CPU), with ``device_map="auto"`` on a GPU; a LoRA variant is its base model with the peft adapter
on top. ``trust_remote_code`` is always off. Failures raise :class:`~bootstrap.errors.SmokeError`
(the smoke test is the load's health check), with a remedy.

:func:`pulled_request` is how ``chat`` and ``serve`` find the model: the same request ``run``
builds for ``smoke``, but only once ``pull`` has completed and its files are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bootstrap import precision as precision_mod
from bootstrap.errors import NotPulledError, SmokeError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: When the model's config names no context length (Llama-2's is 4096).
FALLBACK_CONTEXT_TOKENS = 2048


@dataclass(frozen=True)
class LoadRequest:
    model_dir: Path
    precision: str = "auto"
    size_gb: float = 0.0  # fp16 weight size, for the `auto` precision choice
    base_dir: Optional[Path] = None  # LoRA: the base model; model_dir is then the adapter


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    precision: str
    device: str  # "cuda" or "cpu": where precision.pick put it
    load_s: float
    context_tokens: int  # positions the model was trained for (prompt + answer)
    warnings: List[str] = field(default_factory=list)

    @property
    def input_device(self) -> str:
        """Where input ids go (with ``device_map="auto"`` the first layers sit on cuda:0)."""
        return "cuda" if self.device == "cuda" else "cpu"

    @property
    def pad_token_id(self) -> Optional[int]:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def device_map(self) -> Dict[str, str]:
        mapping = getattr(self.model, "hf_device_map", None) or {"": self.input_device}
        return {str(k): str(v) for k, v in mapping.items()}


def import_libraries() -> Tuple[Any, Any]:
    """(torch, transformers), or a SmokeError that says which pip layer to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise SmokeError(f"cannot import the model libraries: {exc}",
                         remedy="install the pip layer: pip install --require-hashes -r requirements/<platform>.txt"
                         ) from exc
    return torch, transformers


def free_vram_gb(torch: Any) -> Optional[float]:
    if not torch.cuda.is_available():
        return None
    return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())) / 1e9


def choose(req: LoadRequest, torch: Any) -> Tuple[str, str, List[str]]:
    """(precision, device, warnings) for ``req``; int8/int4 without a GPU are refused."""
    from bootstrap.probes_host import host_memory

    memory = host_memory()  # a CPU fallback must fit in RAM: pick refuses one that cannot (NotEnoughMemory)
    chosen, device = precision_mod.pick(size_gb=req.size_gb, free_vram_gb=free_vram_gb(torch),
                                        requested=req.precision,
                                        ram_available_gb=memory.available_gb if memory else None)
    if device == "cpu" and chosen in ("int8", "int4"):
        raise SmokeError(f"precision {chosen} needs a CUDA GPU (bitsandbytes); none is usable here",
                         remedy="set smoke.precision: auto (CPU fp32) or run on a machine with an NVIDIA GPU")
    warnings: List[str] = []
    if device == "cpu" and req.precision == "auto" and req.size_gb > 1:
        factor = precision_mod.FACTORS.get(chosen, 2.0)
        warnings.append(f"NO USABLE GPU: running {req.size_gb:g} GB of weights on the CPU in {chosen}; this is very "
                        f"slow and needs ~{req.size_gb * factor:.0f} GB of RAM")
    weights_dir = req.base_dir or req.model_dir
    files = [p.name for p in weights_dir.iterdir()] if weights_dir.is_dir() else []
    if not any(name.endswith(".safetensors") for name in files) and any(n.endswith(PICKLE_SUFFIXES) for n in files):
        warnings.append("only pickle weights (*.bin) are present: loading them can run code; transformers loads "
                        "them with torch.load(weights_only=True)")
    return chosen, device, warnings


def model_kwargs(torch: Any, precision: str, device: str) -> Dict[str, Any]:
    """``from_pretrained`` keyword arguments for ``precision`` on ``device``."""
    kwargs: Dict[str, Any] = {"trust_remote_code": False, "low_cpu_mem_usage": True}
    if precision in ("int8", "int4"):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True) if precision == "int8" else \
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16)
    else:
        kwargs["dtype"] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    if device == "cuda":
        kwargs["device_map"] = "auto"
    return kwargs


def context_tokens(model: Any, tokenizer: Any) -> int:
    """The model's context: its config's max_position_embeddings, else a sane tokenizer limit."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else FALLBACK_CONTEXT_TOKENS


def load(req: LoadRequest, log: Callable[[str], None] = lambda _: None) -> LoadedModel:
    """Load tokenizer and model for ``req``. Raises SmokeError with a remedy on every failure."""
    torch, transformers = import_libraries()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    chosen, device, warnings = choose(req, torch)
    for w in warnings:
        log("WARNING: " + w)
    log(f"loading {req.model_dir} with transformers {transformers.__version__}, {chosen} on {device}")
    weights_dir = req.base_dir or req.model_dir
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(weights_dir), trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(weights_dir), **model_kwargs(torch, chosen, device))
        if req.base_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(req.model_dir))
        model.eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is the load failing
        oom = "out of memory" in str(exc).lower()
        raise SmokeError(
            f"loading the model failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            remedy="set smoke.precision: int8 or int4 (or free GPU memory)" if oom else
            "run `llama-bootstrap pull --verify` to re-check the files; see the log for the full error",
        ) from exc
    load_s = time.perf_counter() - started
    return LoadedModel(model=model, tokenizer=tokenizer, precision=chosen, device=device, load_s=load_s,
                       context_tokens=context_tokens(model, tokenizer), warnings=warnings)


def pulled_request(plan: Any) -> LoadRequest:
    """The load request for ``plan``'s model, once ``pull`` has completed and nothing changed since.

    Raises NotPulledError (exit 1, remedy ``llama-bootstrap pull``) otherwise. No network, no hashing.
    """
    from bootstrap import pipeline
    from bootstrap.pull import unchanged_since
    from bootstrap.state import State

    record = State(plan.state_dir).get("pull", pipeline.pull_fingerprint(plan))
    if not record or not unchanged_since(record.get("result") or {}):
        why = "has not been pulled" if not record else "has changed on disk since it was pulled"
        again = f"llama-bootstrap pull --manifest {plan.manifest_path} --model {plan.model_key}"
        raise NotPulledError(f"model {plan.model_key} ({plan.model.repo_id}) {why}", model=plan.model_key,
                             remedy=f"run `{again}` first (it downloads and verifies the weights)")
    smoke = pipeline.smoke_request(plan)
    return LoadRequest(model_dir=smoke.model_dir, precision=smoke.precision, size_gb=smoke.size_gb,
                       base_dir=smoke.base_dir)
