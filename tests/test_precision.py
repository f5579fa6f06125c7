"""Which precision fits: arithmetic worked out by hand from the documented factors.

7B chat: 13.5 GB of fp16 weights. Need = size x factor + 1 GB allowance:
fp16 14.5, int8 13.5*0.55+1 = 8.425, int4 13.5*0.3+1 = 5.05, fp32 28.0.
"""

from __future__ import annotations

from typing import Optional

import pytest

from bootstrap import precision
from bootstrap.errors import NotEnoughMemory

SEVEN_B = 13.5
THIRTEEN_B = 26.03


@pytest.mark.parametrize("p, want", [("fp16", 14.5), ("bf16", 14.5), ("int8", 8.425), ("int4", 5.05), ("fp32", 28.0)])
def test_needed_gb(p: str, want: float) -> None:
    assert precision.needed_gb(SEVEN_B, p) == pytest.approx(want)


def test_needed_gb_orders_precisions() -> None:
    for size in (0.5, SEVEN_B, THIRTEEN_B):
        n = {p: precision.needed_gb(size, p) for p in precision.FACTORS}
        assert n["int4"] < n["int8"] < n["fp16"] == n["bf16"] < n["fp32"]


@pytest.mark.parametrize(
    "free, want",
    [
        (25.2, ("fp16", "cuda")),  # RTX 4090: 24080 MiB free
        (14.5, ("fp16", "cuda")),  # exactly enough counts as fitting
        (14.49, ("int8", "cuda")),
        (12.36, ("int8", "cuda")),  # RTX 3060 12 GB: 11786 MiB free; the example
        (8.425, ("int8", "cuda")),
        (8.4, ("int4", "cuda")),
        (5.05, ("int4", "cuda")),
        (4.09, ("fp32", "cpu")),  # GTX 1650 4 GB: nothing fits, run on the CPU
        (0.0, ("fp32", "cpu")),
        (None, ("fp32", "cpu")),  # no GPU
    ],
)
def test_pick_auto(free: Optional[float], want: tuple) -> None:
    assert precision.pick(SEVEN_B, free, "auto") == want


def test_pick_auto_13b() -> None:
    # fp16 27.03, int8 15.32, int4 8.81
    assert precision.pick(THIRTEEN_B, 25.2) == ("int8", "cuda")
    assert precision.pick(THIRTEEN_B, 2 * 24.5) == ("fp16", "cuda")  # two 24 GB cards together
    assert precision.pick(THIRTEEN_B, 12.36) == ("int4", "cuda")


@pytest.mark.parametrize("requested", ["fp16", "bf16", "int8", "int4", "fp32"])
def test_pick_explicit_is_taken_as_asked(requested: str) -> None:
    assert precision.pick(SEVEN_B, 12.36, requested) == (requested, "cuda")  # even fp16, which does not fit
    assert precision.pick(SEVEN_B, None, requested) == (requested, "cpu")


def test_fits_table() -> None:
    assert precision.fits_table(SEVEN_B, 12.36) == {"fp32": False, "fp16": False, "bf16": False, "int8": True,
                                                    "int4": True}
    assert precision.fits_table(SEVEN_B, 30.0) == dict.fromkeys(precision.FACTORS, True)
    assert precision.fits_table(SEVEN_B, None) == dict.fromkeys(precision.FACTORS, False)
    assert set(precision.fits_table(SEVEN_B, 1.0)) == set(precision.FACTORS)


def test_auto_only_tries_gpu_precisions_in_order() -> None:
    assert precision.GPU_ORDER == ("fp16", "int8", "int4")
    assert set(precision.GPU_ORDER) <= set(precision.FACTORS)


# -- host RAM ----------------------------------------------------------------------------------------
# GPU load: min(size, largest shard or 10 GB) + 1.5 GB. CPU: size x factor + 1.5 GB.


@pytest.mark.parametrize(
    "size, p, device, shard, want",
    [(SEVEN_B, "fp16", "cuda", None, 11.5), (SEVEN_B, "int4", "cuda", None, 11.5),  # same peak at any GPU precision
     (SEVEN_B, "int8", "cuda", 4.95, 6.45), (0.5, "fp16", "cuda", None, 2.0),  # a small model is one shard
     (SEVEN_B, "fp32", "cpu", None, 28.5), (SEVEN_B, "bf16", "cpu", None, 15.0),
     (THIRTEEN_B, "fp32", "cpu", 9.9, 53.56)],  # the shard does not matter on the CPU
)
def test_ram_needed_gb(size: float, p: str, device: str, shard: Optional[float], want: float) -> None:
    assert precision.ram_needed_gb(size, p, device, shard) == pytest.approx(want)


@pytest.mark.parametrize(
    "ram, want",
    [(64.0, ("fp32", "cpu")), (28.5, ("fp32", "cpu")), (28.49, ("bf16", "cpu")), (15.0, ("bf16", "cpu")),
     (None, ("fp32", "cpu"))],  # None: unknown RAM keeps the old unconditional fallback
)
def test_pick_cpu_fallback_follows_ram(ram: Optional[float], want: tuple) -> None:
    assert precision.pick(SEVEN_B, None, ram_available_gb=ram) == want
    assert precision.pick(SEVEN_B, 4.09, "auto", ram_available_gb=ram) == want  # a GPU too small for int4


def test_pick_refuses_a_cpu_fallback_that_cannot_fit() -> None:
    with pytest.raises(NotEnoughMemory) as info:
        precision.pick(SEVEN_B, None, ram_available_gb=14.99)
    exc = info.value
    assert (exc.need_gb, exc.available_gb) == (15.0, 14.99)
    assert "no GPU" in str(exc) and "fp32 28.5 GB, bf16 15.0 GB" in str(exc) and "15.0 GB is available" in str(exc)
    assert ">= 15.0 GB" in exc.remedy and ">= 5.0 GB free VRAM" in exc.remedy
    with pytest.raises(NotEnoughMemory, match="4.1 GB free VRAM"):
        precision.pick(SEVEN_B, 4.09, ram_available_gb=8.0)


def test_ram_does_not_change_a_gpu_choice() -> None:
    assert precision.pick(SEVEN_B, 25.2, ram_available_gb=0.5) == ("fp16", "cuda")
    assert precision.pick(SEVEN_B, 12.36, "fp16", ram_available_gb=0.5) == ("fp16", "cuda")


@pytest.mark.parametrize("requested, ram, ok", [("fp32", 28.5, True), ("fp32", 28.4, False), ("bf16", 15.0, True),
                                                ("fp16", 14.9, False), ("int8", 1.0, True)])
def test_explicit_cpu_precision_against_ram(requested: str, ram: float, ok: bool) -> None:
    """int8/int4 on the CPU are smoke's to refuse (they need a GPU), not a memory question."""
    if ok:
        assert precision.pick(SEVEN_B, None, requested, ram_available_gb=ram) == (requested, "cpu")
    else:
        with pytest.raises(NotEnoughMemory):
            precision.pick(SEVEN_B, None, requested, ram_available_gb=ram)


def test_pick_result_is_a_named_pair() -> None:
    chosen = precision.pick(SEVEN_B, 12.36)
    assert (chosen.precision, chosen.device) == ("int8", "cuda")
    p, device = chosen  # the way smoke unpacks it
    assert (p, device) == tuple(chosen)
