"""``smoke``: load the model with transformers and prove it answers.

The prompt is the Llama2-Chinese chat format, tokenized with ``add_special_tokens=False`` (the
template carries its own ``<s>``/``</s>``); generation is greedy; only the new tokens are decoded.
It passes when at least one non-blank token came out and nothing raised. It reports load time,
time to first token, tokens/s, peak memory, the device map and the precision.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bootstrap import precision as precision_mod
from bootstrap.errors import SmokeError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class SmokeRequest:
    model_dir: Path
    prompt: str
    template: str
    max_new_tokens: int
    precision: str = "auto"
    size_gb: float = 0.0  # fp16 weight size, for the `auto` precision choice
    base_dir: Optional[Path] = None  # LoRA: the base model; model_dir is then the adapter


@dataclass
class SmokeResult:
    passed: bool
    answer: str
    precision: str
    device: str
    device_map: Dict[str, str]
    load_s: float
    ttft_s: Optional[float]
    generate_s: float
    new_tokens: int
    tokens_per_s: Optional[float]
    peak_memory_bytes: Optional[int]
    prompt_tokens: int
    warnings: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def chat_prompt(template: str, prompt: str) -> str:
    """The literal Llama2-Chinese chat text (no str.format: the prompt may contain braces)."""
    return template.replace("{prompt}", prompt)


PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> None:
    """Linux: restart the process's high-water mark, so the peak is this load's, not the caller's."""
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        pass


def _peak_rss_bytes() -> Optional[int]:
    try:  # Linux: VmHWM, reset by _reset_peak_rss()
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _load_kwargs(torch: Any, precision: str, device: str) -> Dict[str, Any]:
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


def _free_vram_gb(torch: Any) -> Optional[float]:
    if not torch.cuda.is_available():
        return None
    return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())) / 1e9


def smoke(req: SmokeRequest, log: Callable[[str], None] = lambda _: None) -> SmokeResult:
    """Load and generate. Raises SmokeError with a remedy on every failure."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
    except ImportError as exc:
        raise SmokeError(f"cannot import the model libraries: {exc}",
                         remedy="install the pip layer: pip install --require-hashes -r requirements/<platform>.txt"
                         ) from exc
    warnings: List[str] = []
    chosen, device = precision_mod.pick(req.size_gb, _free_vram_gb(torch), req.precision)
    if device == "cpu" and chosen in ("int8", "int4"):
        raise SmokeError(f"precision {chosen} needs a CUDA GPU (bitsandbytes); none is usable here",
                         remedy="set smoke.precision: auto (CPU fp32) or run on a machine with an NVIDIA GPU")
    if device == "cpu" and req.precision == "auto" and req.size_gb > 1:
        warnings.append(f"NO USABLE GPU: running {req.size_gb:g} GB of weights on the CPU in fp32; this is very "
                        "slow and needs ~2x that in RAM")
    weights_dir = req.base_dir or req.model_dir
    files = [p.name for p in weights_dir.iterdir()] if weights_dir.is_dir() else []
    if not any(name.endswith(".safetensors") for name in files) and any(n.endswith(PICKLE_SUFFIXES) for n in files):
        warnings.append("only pickle weights (*.bin) are present: loading them can run code; transformers loads "
                        "them with torch.load(weights_only=True)")
    for w in warnings:
        log("WARNING: " + w)
    log(f"loading {req.model_dir} with transformers {transformers.__version__}, {chosen} on {device}")

    _reset_peak_rss()
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(weights_dir), trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(weights_dir), **_load_kwargs(torch, chosen, device))
        if req.base_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(req.model_dir))
        model.eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is the smoke test failing
        oom = "out of memory" in str(exc).lower()
        raise SmokeError(
            f"loading the model failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            remedy="set smoke.precision: int8 or int4 (or free GPU memory)" if oom else
            "run `llama-bootstrap pull --verify` to re-check the files; see the log for the full error",
        ) from exc
    load_s = time.perf_counter() - started

    text = chat_prompt(req.template, req.prompt)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    target = "cuda" if device == "cuda" else "cpu"
    inputs = {k: v.to(target) for k, v in inputs.items()}
    prompt_tokens = int(inputs["input_ids"].shape[1])
    first_token_at: List[float] = []

    class _FirstToken(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if not first_token_at:
                first_token_at.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen_started = time.perf_counter()
    try:
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=req.max_new_tokens, do_sample=False,
                                    pad_token_id=pad, stopping_criteria=StoppingCriteriaList([_FirstToken()]))
    except Exception as exc:  # noqa: BLE001
        raise SmokeError(f"generation failed: {type(exc).__name__}: {exc}",
                         remedy="see the log; for out-of-memory set smoke.precision: int8 or int4") from exc
    generate_s = time.perf_counter() - gen_started
    new_ids = output[0, prompt_tokens:]
    answer = tokenizer.decode(new_ids, skip_special_tokens=True)
    n_new = int(new_ids.shape[0])
    peak = int(sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))) \
        if device == "cuda" else _peak_rss_bytes()
    device_map = {str(k): str(v) for k, v in (getattr(model, "hf_device_map", None) or {"": target}).items()}
    ttft = first_token_at[0] - gen_started if first_token_at else None
    result = SmokeResult(
        passed=bool(answer.strip()) and n_new > 0, answer=answer, precision=chosen, device=device,
        device_map=device_map, load_s=round(load_s, 3), ttft_s=None if ttft is None else round(ttft, 4),
        generate_s=round(generate_s, 3), new_tokens=n_new,
        tokens_per_s=round(n_new / generate_s, 2) if generate_s > 0 else None, peak_memory_bytes=peak,
        prompt_tokens=prompt_tokens, warnings=warnings,
    )
    if not result.passed:
        raise SmokeError(f"the model generated no visible text ({n_new} new tokens: {answer!r})",
                         remedy="the weights or the tokenizer are wrong; run `llama-bootstrap pull --verify`")
    return result
