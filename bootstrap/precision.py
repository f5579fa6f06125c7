"""Which precision fits: pure arithmetic shared by ``check`` and ``smoke``.

``size_gb`` is the fp16 weight size on disk (the Hub's numbers for these repos). Loading needs the
weights at the chosen precision plus a fixed allowance for the CUDA context, activations and the
KV cache of a short smoke prompt.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

# Bytes per fp16 byte. int8/int4 keep some layers (norms, lm_head) in fp16, hence > 0.5 / 0.25.
FACTORS: Dict[str, float] = {"fp32": 2.0, "fp16": 1.0, "bf16": 1.0, "int8": 0.55, "int4": 0.3}
OVERHEAD_GB = 1.0
GPU_ORDER = ("fp16", "int8", "int4")  # what `auto` tries on a GPU, best first


def needed_gb(size_gb: float, precision: str) -> float:
    return size_gb * FACTORS[precision] + OVERHEAD_GB


def fits_table(size_gb: float, free_vram_gb: Optional[float]) -> Dict[str, bool]:
    """For each GPU precision: does it fit in ``free_vram_gb``? (all False without a GPU)."""
    return {p: free_vram_gb is not None and needed_gb(size_gb, p) <= free_vram_gb for p in FACTORS}


def pick(size_gb: float, free_vram_gb: Optional[float], requested: str = "auto") -> Tuple[str, str]:
    """(precision, device) that ``smoke`` will use. device is "cuda" or "cpu".

    ``auto``: fp16 when it fits the free VRAM, else int8, else int4 (bitsandbytes), else CPU fp32.
    An explicit precision is taken as asked, on the GPU when there is one (int8/int4 need one:
    ``smoke`` refuses them on the CPU with a clear error).
    """
    if requested != "auto":
        return requested, ("cpu" if free_vram_gb is None else "cuda")
    if free_vram_gb is not None:
        for precision in GPU_ORDER:
            if needed_gb(size_gb, precision) <= free_vram_gb:
                return precision, "cuda"
    return "fp32", "cpu"
