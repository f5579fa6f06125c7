"""Which precision fits: pure arithmetic shared by ``check`` and ``smoke``.

``size_gb`` is the fp16 weight size on disk (the Hub's numbers for these repos). Two memories count:

**VRAM** (``needed_gb``): the weights at the chosen precision plus a fixed allowance for the CUDA
context, activations and the KV cache of a short smoke prompt.

**Host RAM** (``ram_needed_gb``), by device:

- on the GPU (fp16/bf16, and int8/int4 through bitsandbytes) transformers loads with accelerate's
  ``device_map="auto"``: the checkpoint is read shard by shard and each tensor goes to the GPU
  (int8/int4 are quantised as they arrive, from the fp16 shard held in CPU memory), so the host
  peak is about **the largest shard + HOST_OVERHEAD_GB**, whatever the precision;
- on the CPU the whole model lives in RAM at the chosen precision: fp32 is **2x the fp16 size**
  (+ HOST_OVERHEAD_GB), bf16/fp16 1x.

Before the files are downloaded the largest shard is unknown; ``DEFAULT_SHARD_GB`` (transformers'
``max_shard_size`` of the era these checkpoints were saved in, 10 GB) is assumed, capped at the
model size. Swap is deliberately not counted for the CPU: every generated token reads every
weight, so a model that spills into swap reads it from disk per token and a smoke test would
run for hours. The caller passes RAM only (``ram_available_gb``).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional

from bootstrap.errors import NotEnoughMemory

# Bytes per fp16 byte. int8/int4 keep some layers (norms, lm_head) in fp16, hence > 0.5 / 0.25.
FACTORS: Dict[str, float] = {"fp32": 2.0, "fp16": 1.0, "bf16": 1.0, "int8": 0.55, "int4": 0.3}
OVERHEAD_GB = 1.0
GPU_ORDER = ("fp16", "int8", "int4")  # what `auto` tries on a GPU, best first
# What `auto` tries on the CPU, best first, when the caller says how much RAM there is. fp32 is
# fastest on most CPUs; bf16 halves the memory (fast only with AVX512-BF16/AMX, else emulated).
CPU_ORDER = ("fp32", "bf16")
# Python + torch + transformers (+ the CUDA runtime's host side) resident while loading.
HOST_OVERHEAD_GB = 1.5
DEFAULT_SHARD_GB = 10.0


class Pick(NamedTuple):
    """What ``smoke`` will use; unpacks like the ``(precision, device)`` tuple it replaces."""

    precision: str
    device: str  # "cuda" or "cpu"


def needed_gb(size_gb: float, precision: str) -> float:
    """VRAM for the weights at ``precision`` + the fixed allowance."""
    return size_gb * FACTORS[precision] + OVERHEAD_GB


def ram_needed_gb(size_gb: float, precision: str, device: str, largest_shard_gb: Optional[float] = None) -> float:
    """Peak host RAM for loading (and, on the CPU, running) the model; see the module docstring."""
    if device == "cuda":
        shard = DEFAULT_SHARD_GB if largest_shard_gb is None else largest_shard_gb
        return min(size_gb, shard) + HOST_OVERHEAD_GB
    return size_gb * FACTORS[precision] + HOST_OVERHEAD_GB


def fits_table(size_gb: float, free_vram_gb: Optional[float]) -> Dict[str, bool]:
    """For each GPU precision: does it fit in ``free_vram_gb``? (all False without a GPU)."""
    return {p: free_vram_gb is not None and needed_gb(size_gb, p) <= free_vram_gb for p in FACTORS}


def pick(size_gb: float, free_vram_gb: Optional[float], requested: str = "auto", *,
         ram_available_gb: Optional[float] = None) -> Pick:
    """(precision, device) that ``smoke`` will use. device is "cuda" or "cpu".

    ``auto``: fp16 when it fits the free VRAM, else int8, else int4 (bitsandbytes), else the CPU:
    fp32, or bf16 when only that fits ``ram_available_gb``. An explicit precision is taken as asked,
    on the GPU when there is one (int8/int4 need one: ``smoke`` refuses them on the CPU).

    ``ram_available_gb`` (optional; None keeps the CPU fallback unconditional, as before): RAM this
    process can still use. With it, a CPU run that cannot fit is refused with
    :class:`~bootstrap.errors.NotEnoughMemory` instead of being started and killed by the OS.
    RAM does not change the choice on a GPU (every GPU precision needs the same host RAM).
    """
    if requested != "auto":
        device = "cpu" if free_vram_gb is None else "cuda"
        if device == "cpu" and ram_available_gb is not None and requested in CPU_ORDER + ("fp16",):
            need = ram_needed_gb(size_gb, requested, "cpu")
            if need > ram_available_gb:
                raise _refusal(size_gb, free_vram_gb, ram_available_gb, {requested: need})
        return Pick(requested, device)
    if free_vram_gb is not None:
        for precision in GPU_ORDER:
            if needed_gb(size_gb, precision) <= free_vram_gb:
                return Pick(precision, "cuda")
    if ram_available_gb is None:
        return Pick("fp32", "cpu")
    ram_needs = {p: ram_needed_gb(size_gb, p, "cpu") for p in CPU_ORDER}
    for precision in CPU_ORDER:
        if ram_needs[precision] <= ram_available_gb:
            return Pick(precision, "cpu")
    raise _refusal(size_gb, free_vram_gb, ram_available_gb, ram_needs)


def _refusal(size_gb: float, free_vram_gb: Optional[float], ram_available_gb: float,
             ram_needs: Dict[str, float]) -> NotEnoughMemory:
    smallest_gpu = needed_gb(size_gb, GPU_ORDER[-1])
    smallest_ram = min(ram_needs.values())
    cpu = ", ".join(f"{p} {need:.1f} GB" for p, need in ram_needs.items())
    gpu = "no GPU" if free_vram_gb is None else \
        f"{free_vram_gb:.1f} GB free VRAM (the smallest, {GPU_ORDER[-1]}, needs {smallest_gpu:.1f} GB)"
    return NotEnoughMemory(
        f"nothing fits: {gpu}; on the CPU the model needs {cpu} of RAM, {ram_available_gb:.1f} GB is available",
        need_gb=round(smallest_ram, 2), available_gb=round(ram_available_gb, 2),
        remedy=f"close programs to free RAM (>= {smallest_ram:.1f} GB needed), raise the container's memory "
               f"limit, or use an NVIDIA GPU with >= {smallest_gpu:.1f} GB free VRAM",
    )
