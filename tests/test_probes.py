"""Probes against real-format outputs (tests/fixtures/nvidia-smi) and real local components."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from bootstrap import probes
from bootstrap.probes import Gpu, GpuReport, nvidia_smi, parse_cuda_driver_version, parse_nvidia_smi_csv
from helpers_core import SMI_DIR, FakeNvidiaSmi, no_nvidia_smi, smi


def fixture(name: str) -> str:
    return (SMI_DIR / name).read_text(encoding="utf-8")


# -- parsing ------------------------------------------------------------------------------------


def test_parse_csv_one_gpu() -> None:
    assert parse_nvidia_smi_csv(fixture("rtx3060.csv")) == [
        Gpu(0, "NVIDIA GeForce RTX 3060", 12288, 11786, "535.104.05", "8.6")
    ]


def test_parse_csv_two_gpus() -> None:
    gpus = parse_nvidia_smi_csv(fixture("two-gpus.csv"))
    assert [g.index for g in gpus] == [0, 1]
    assert [g.memory_free_mib for g in gpus] == [23911, 24253]
    assert {g.name for g in gpus} == {"NVIDIA GeForce RTX 3090"}


def test_parse_csv_without_compute_cap() -> None:
    (gpu,) = parse_nvidia_smi_csv(fixture("old-driver.csv"))
    assert gpu.compute_capability is None
    assert (gpu.name, gpu.memory_total_mib, gpu.driver_version) == ("NVIDIA GeForce GTX 1080 Ti", 11178, "470.82.01")


@pytest.mark.parametrize("name", ["no-driver.txt", "old-driver-compute-cap-error.txt", "rtx3060-q.txt", ""])
def test_parse_csv_ignores_what_is_not_a_gpu_row(name: str) -> None:
    assert parse_nvidia_smi_csv(fixture(name) if name else "") == []


def test_parse_csv_tolerates_header_blank_lines_and_crlf() -> None:
    text = "index, name, memory.total [MiB], memory.free [MiB], driver_version, compute_cap\r\n\r\n" + \
        fixture("rtx4090.csv").replace("\n", "\r\n")
    (gpu,) = parse_nvidia_smi_csv(text)
    assert (gpu.name, gpu.memory_free_mib, gpu.compute_capability) == ("NVIDIA GeForce RTX 4090", 24080, "8.9")


def test_parse_csv_na_compute_cap_is_none() -> None:
    (gpu,) = parse_nvidia_smi_csv("0, Tesla K80, 11441, 11379, 470.82.01, [N/A]\n")
    assert gpu.compute_capability is None


@pytest.mark.parametrize(
    "name, want",
    [("rtx3060-q.txt", "12.2"), ("rtx4090-q.txt", "12.4"), ("two-gpus-q.txt", "12.2"), ("old-driver-q.txt", "11.4"),
     ("rtx3060-banner.txt", "12.2"), ("no-driver.txt", None), ("rtx3060.csv", None)],
)
def test_parse_cuda_driver_version(name: str, want: str) -> None:
    assert parse_cuda_driver_version(fixture(name)) == want


# -- nvidia_smi() with an injected runner -------------------------------------------------------


def test_nvidia_smi_one_gpu() -> None:
    runner = smi("rtx3060")
    report = nvidia_smi(runner)
    assert report == GpuReport([Gpu(0, "NVIDIA GeForce RTX 3060", 12288, 11786, "535.104.05", "8.6")], "12.2")
    assert runner.calls[0] == ["nvidia-smi", "--query-gpu=index,name,memory.total,memory.free,driver_version,"
                               "compute_cap", "--format=csv,noheader,nounits"]
    assert runner.calls[1] == ["nvidia-smi", "-q"]
    assert len(runner.calls) == 2


def test_nvidia_smi_two_gpus() -> None:
    report = nvidia_smi(smi("two-gpus"))
    assert report is not None and len(report.gpus) == 2 and report.cuda_driver_version == "12.2"


def test_nvidia_smi_old_driver_retries_without_compute_cap() -> None:
    runner = smi("old-driver")
    report = nvidia_smi(runner)
    assert report is not None
    assert [g.name for g in report.gpus] == ["NVIDIA GeForce GTX 1080 Ti"]
    assert report.gpus[0].compute_capability is None
    assert report.cuda_driver_version == "11.4"
    queries = [c for c in runner.calls if c[1].startswith("--query-gpu=")]
    assert len(queries) == 2
    assert queries[0][1].endswith(",compute_cap")
    assert "compute_cap" not in queries[1][1]


def test_nvidia_smi_without_a_working_driver_lists_no_gpu() -> None:
    runner = smi("no-driver")
    assert nvidia_smi(runner) == GpuReport([], None)
    assert len(runner.calls) == 2  # asked, retried without compute_cap, gave up: no -q


def test_nvidia_smi_not_installed() -> None:
    assert nvidia_smi(no_nvidia_smi) is None


def test_nvidia_smi_q_failing_keeps_the_gpus() -> None:
    report = nvidia_smi(FakeNvidiaSmi("rtx3060.csv", "rtx3060-q.txt", q_fails=True))
    assert report is not None and len(report.gpus) == 1 and report.cuda_driver_version is None


# -- run_command, disk_free ----------------------------------------------------------------------


def test_run_command_real_program() -> None:
    out = probes.run_command([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); "
                                                    "sys.exit(3)"])
    assert out is not None
    assert (out.returncode, out.stdout.strip(), out.stderr.strip()) == (3, "out", "err")


def test_run_command_missing_program_and_timeout(tmp_path: Path) -> None:
    assert probes.run_command([str(tmp_path / "no-such-program")]) is None
    assert probes.run_command([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2) is None


def test_disk_free_on_a_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    where, free = probes.disk_free(tmp_path / "models" / "FlagAlpha" / "x")
    assert where == tmp_path
    assert isinstance(free, int) and free > 0
    assert not (tmp_path / "models").exists()  # measuring creates nothing


def test_folder_problem_walks_up_and_creates_nothing(tmp_path: Path) -> None:
    assert probes.folder_problem(tmp_path / "models" / "FlagAlpha") == (tmp_path, None)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert probes.folder_problem(tmp_path / "file" / "models") == (tmp_path / "file", "not a folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert probes.folder_problem(tmp_path / "dangling" / "models") == (tmp_path / "dangling", "not a folder")


# -- reachable() against a real local server ------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def local_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachable_200(local_server: str) -> None:
    assert probes.reachable(local_server + "/", 5.0) == (True, "HTTP 200")


def test_reachable_404_still_counts(local_server: str) -> None:
    assert probes.reachable(local_server + "/FlagAlpha/missing", 5.0) == (True, "HTTP 404")


def test_unreachable_closed_port() -> None:
    ok, why = probes.reachable(f"http://127.0.0.1:{_closed_port()}/", 2.0)
    assert ok is False
    assert why  # the reason is shown to the user ("Connection refused" on Linux)


def test_unreachable_bad_url() -> None:
    """Probes raise nothing (module docstring): a URL urllib cannot parse is 'unreachable'."""
    assert probes.reachable("not a url", 1.0)[0] is False


# -- the default Probes --------------------------------------------------------------------------


def test_default_probes_describe_this_machine() -> None:
    p = probes.Probes()
    assert p.python_version == tuple(sys.version_info[:3])
    assert p.system() and p.machine()
    assert p.which("definitely-not-a-program-xyz") is None


def test_injected_gpus_bypass_nvidia_smi() -> None:
    report = GpuReport([], None)
    p = probes.Probes(run=lambda *a, **k: pytest.fail("nvidia-smi must not run"), gpus=lambda: report)
    assert p.gpu_report() is report


def test_probes_use_the_injected_runner_for_nvidia_smi() -> None:
    p = probes.Probes(run=smi("rtx4090"))
    report = p.gpu_report()
    assert report is not None and report.gpus[0].compute_capability == "8.9"
