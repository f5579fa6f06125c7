"""Helpers for the memory/CPU probe and check tests: machine roots from fixtures, a stand-in kernel32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from helpers_core import CPUINFO_DIR, FIXTURES, MEMINFO_DIR

CGROUP_DIR = FIXTURES / "cgroup"
WINDOWS_DIR = FIXTURES / "windows"


def machine_root(tmp_path: Path, meminfo: str = "workstation-64g", cgroup: Optional[str] = None,
                 cpuinfo: str = "ryzen-9-5950x") -> Path:
    """A folder laid out like a machine's root: a cgroup scenario (or none) + meminfo + cpuinfo."""
    root = tmp_path / "root"
    if cgroup:
        shutil.copytree(CGROUP_DIR / cgroup, root)
    (root / "proc").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MEMINFO_DIR / f"{meminfo}.txt", root / "proc" / "meminfo")
    shutil.copyfile(CPUINFO_DIR / f"{cpuinfo}.txt", root / "proc" / "cpuinfo")
    return root


class StandInKernel32:
    """Answers like kernel32 would on the machine a fixture describes (kernel32 cannot run here)."""

    def __init__(self, name: str) -> None:
        self.data: Dict[str, Any] = json.loads((WINDOWS_DIR / f"{name}.json").read_text(encoding="utf-8"))
        self.asked: list = []

    def GlobalMemoryStatusEx(self, ref: Any) -> int:  # noqa: N802 - the Win32 name
        status = ref._obj  # what ctypes.byref points at
        if status.dwLength != 64:  # Windows refuses a structure whose dwLength is not sizeof(MEMORYSTATUSEX)
            return 0
        for key, value in self.data["GlobalMemoryStatusEx"].items():
            setattr(status, key, value)
        return 1

    def IsProcessorFeaturePresent(self, feature: int) -> int:  # noqa: N802 - the Win32 name
        self.asked.append(feature)
        return int(self.data["IsProcessorFeaturePresent"].get(str(feature), 0))
