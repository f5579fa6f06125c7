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

from bootstrap import chatformat, loader
from bootstrap.chatformat import chat_prompt
from bootstrap.errors import SmokeError

__all__ = ["SmokeRequest", "SmokeResult", "chat_prompt", "smoke"]


@dataclass(frozen=True)
class SmokeRequest:
    model_dir: Path
    prompt: str
    template: str
    max_new_tokens: int
    precision: str = "auto"
    size_gb: float = 0.0  # fp16 weight size, for the `auto` precision choice
    base_dir: Optional[Path] = None  # LoRA: the base model; model_dir is then the adapter

    def load_request(self) -> loader.LoadRequest:
        return loader.LoadRequest(model_dir=self.model_dir, precision=self.precision, size_gb=self.size_gb,
                                  base_dir=self.base_dir)


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


def smoke(req: SmokeRequest, log: Callable[[str], None] = lambda _: None) -> SmokeResult:
    """Load and generate. Raises SmokeError with a remedy on every failure."""
    torch, _ = loader.import_libraries()
    from transformers import StoppingCriteria, StoppingCriteriaList

    _reset_peak_rss()
    loaded = loader.load(req.load_request(), log)
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    text = chat_prompt(req.template, req.prompt)
    inputs = chatformat.tokenize(tokenizer, text)
    target = loaded.input_device
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
    pad = loaded.pad_token_id
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
    device_map = loaded.device_map()
    ttft = first_token_at[0] - gen_started if first_token_at else None
    result = SmokeResult(
        passed=bool(answer.strip()) and n_new > 0, answer=answer, precision=loaded.precision, device=device,
        device_map=device_map, load_s=round(loaded.load_s, 3), ttft_s=None if ttft is None else round(ttft, 4),
        generate_s=round(generate_s, 3), new_tokens=n_new,
        tokens_per_s=round(n_new / generate_s, 2) if generate_s > 0 else None, peak_memory_bytes=peak,
        prompt_tokens=prompt_tokens, warnings=list(loaded.warnings),
    )
    if not result.passed:
        raise SmokeError(f"the model generated no visible text ({n_new} new tokens: {answer!r})",
                         remedy="the weights or the tokenizer are wrong; run `llama-bootstrap pull --verify`")
    return result
