"""The playbook for real: ansible-core provisions three hosts of one machine in demo mode.

One host (alpha, first of ``llama_share``) gets the demo model and serves it with ``share``; beta and
gamma pull from it with their own manifest; delta cannot meet a precondition (disk) and is reported
as failed with its reason while the others succeed. A second run changes nothing on any host.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.fleet.conftest import Fleet, make_fleet, recap, share_log_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(sys.executable).parent / "ansible-playbook").is_file(),
                       reason="ansible-core is not installed in this environment (the test layer has it)"),
    pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                       reason="the hosts' installer takes its demo venv fallback on Python 3.11 (its demo lock)"),
]

DEMO_REPO = "FlagAlpha/Llama2-Chinese-tiny-demo"


@pytest.fixture
def fleet(tmp_path: Path, blocked_miniforge: str, demo_wheelhouse: Path):
    made = make_fleet(tmp_path, blocked_miniforge, demo_wheelhouse, {
        "alpha": {}, "beta": {}, "gamma": {}, "delta": {"llama_bootstrap_min_free_gb": 10 ** 7},
    }, share="alpha")
    yield made
    made.stop_shares()


def test_fleet_in_demo_mode(fleet: Fleet) -> None:
    first = fleet.run()
    out = first.stdout + first.stderr
    report = fleet.report()
    assert set(report) == {"hosts"}
    hosts = report["hosts"]
    statuses = {h: r["status"] for h, r in hosts.items()}
    assert statuses == {"alpha": "ok", "beta": "ok", "gamma": "ok", "delta": "fail"}, \
        {h: r.get("reason") for h, r in hosts.items()}
    assert first.returncode == 2, out[-5000:]  # the report play fails the run: delta failed
    assert "1 host(s) failed: delta" in out
    assert "not enough disk" in hosts["delta"]["reason"] and "llama_bootstrap_min_free_gb" in hosts["delta"]["reason"]
    assert hosts["delta"]["run"] is None
    for name in ("alpha", "beta", "gamma"):
        assert set(hosts[name]) == {"status", "check", "run"}
        assert hosts[name]["check"]["schema"] == 1 and hosts[name]["check"]["status"] in ("ok", "warn")
        assert hosts[name]["run"]["status"] == "ok"
        smoke = next(s for s in hosts[name]["run"]["steps"] if s["step"] == "smoke")
        assert smoke["result"]["tokens_per_s"] > 0 and smoke["result"]["answer"].strip()
        assert (fleet.reports / "hosts" / name / "run.json").is_file()
    # the table
    table = out.split("Report | the table", 1)[1]
    assert "HOST" in table and "TOK/S" in table and "delta" in table

    # beta and gamma pulled through alpha's share: their pull recorded its URL, its log has their requests
    share_url = fleet.share_record("alpha")["url"]
    for name in ("beta", "gamma"):
        pull = next(s for s in hosts[name]["run"]["steps"] if s["step"] == "pull")
        assert pull["status"] == "done" and pull["result"]["endpoint"] == share_url
        state = json.loads((fleet.hosts[name] / "fleet-demo" / ".llama-bootstrap" / "state.json").read_text())
        assert state["steps"]["pull"]["result"]["endpoint"] == share_url
    served = [line for line in share_log_lines(fleet.hosts["alpha"])
              if f"GET /{DEMO_REPO}/resolve/" in line and (" 200 " in line or " 206 " in line)]
    weights = [line for line in served if "/model.safetensors " in line]
    size = (fleet.hosts["alpha"] / "llama-bootstrap-demo" / "models" / DEMO_REPO / "model.safetensors").stat().st_size
    sent = sum(int(re.search(r" 20[06] (\d+) ", line).group(1)) for line in weights)  # type: ignore[union-attr]
    assert weights and sent == 2 * size, served  # one full download (in ranges) for each of beta and gamma

    second = fleet.run()
    counters = recap(second.stdout)
    assert second.returncode == 2
    assert set(counters) == {"localhost", "alpha", "beta", "gamma", "delta"}
    assert {h: c["changed"] for h, c in counters.items()} == {h: 0 for h in counters}, second.stdout[-5000:]
    assert {h: r["status"] for h, r in fleet.report()["hosts"].items()} == \
        {"alpha": "ok", "beta": "ok", "gamma": "ok", "delta": "fail"}
    assert fleet.share_record("alpha")["url"] == share_url  # the same share kept running
