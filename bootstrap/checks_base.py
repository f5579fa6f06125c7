"""What every check shares: the result types, the statuses and the facts gathered once per run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from bootstrap.probes import GpuReport, Probes, TorchInfo
from bootstrap.probes_host import CpuInfo, MemoryInfo

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
REPORT_SCHEMA_VERSION = 1
GB = 1e9
MIB = 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    remedy: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    checks: List[CheckResult]

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK

    @property
    def failed(self) -> List[str]:
        return [c.name for c in self.checks if c.status == FAIL]

    def to_json(self) -> Dict[str, Any]:
        return {"schema": REPORT_SCHEMA_VERSION, "status": self.status, "checks": [asdict(c) for c in self.checks]}


_UNSET: Any = object()


class Facts:
    """Probe results shared by several checks, each gathered at most once."""

    def __init__(self, probes: Probes) -> None:
        self.probes = probes
        self._cache: Dict[str, Any] = {}

    def once(self, key: str, compute: Any) -> Any:
        value = self._cache.get(key, _UNSET)
        if value is _UNSET:
            value = self._cache[key] = compute()
        return value

    @property
    def gpu(self) -> Optional[GpuReport]:
        return self.once("gpu", self.probes.gpu_report)

    @property
    def torch(self) -> Optional[TorchInfo]:
        return self.once("torch", self.probes.torch)

    @property
    def memory(self) -> Optional[MemoryInfo]:
        return self.once("memory", self.probes.memory)

    @property
    def cpu(self) -> Optional[CpuInfo]:
        return self.once("cpu", self.probes.cpu)

    @property
    def free_vram_gb(self) -> Optional[float]:
        """Free VRAM over all GPUs (device_map="auto" spreads layers across them)."""
        if not self.gpu or not self.gpu.gpus:
            return None
        return sum(g.memory_free_mib for g in self.gpu.gpus) * MIB / GB
