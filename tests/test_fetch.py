"""The ranged fetcher and the transport policy: pieces reassembled, connection caps, fallback without
Range, lies about ranges and sizes, the per-hop policy table. Real HTTP on 127.0.0.1 (tests/lookalikes.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bootstrap import errors
from bootstrap.fetch import Downloader, FetchOptions, FileJob
from bootstrap.transport import Transport
from tests.lookalikes import HostileHub, git_blob

MiB = 1024 * 1024


def blob(size: int, seed: int = 1) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(bytes([seed]) + i.to_bytes(8, "little")).digest() * 1024
        i += 1
    return bytes(out[:size])


def job(tmp_path: Path, hub: HostileHub, name: str, data: bytes) -> FileJob:
    commit = hub.repos["o/n"].commit
    return FileJob(name, len(data), "sha256", hashlib.sha256(data).hexdigest(), tmp_path / "out" / name,
                   tmp_path / "out" / ".partial", f"{hub.url}/o/n/resolve/{commit}/{name}", commit)


@pytest.fixture
def hub():
    with HostileHub() as server:
        yield server


def run(hub, jobs, **options):
    jobs[0].target.parent.mkdir(parents=True, exist_ok=True)
    return Downloader(Transport(hub.url), FetchOptions(backoff_s=0.01, **options), lambda _: None).run(jobs)


def test_pieces_over_several_connections_are_reassembled_exactly(hub, tmp_path):
    data = blob(21 * MiB + 12345)  # not a multiple of the piece size
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.rate = 30 * MiB  # slow enough that the pieces overlap
    (outcome,) = run(hub, [job(tmp_path, hub, "w.safetensors", data)], per_file=4, piece_size=4 * MiB)
    assert outcome.ok and (tmp_path / "out" / "w.safetensors").read_bytes() == data
    ranges = sorted(s.headers["range"] for s in hub.file_gets())
    assert len(ranges) == 6 and hub.max_active >= 2  # 6 pieces, fetched in parallel
    assert hub.max_active <= 4  # never more than per_file for one file
    assert not list((tmp_path / "out" / ".partial").iterdir())  # nothing left over


def test_the_total_connection_cap_holds_across_files(hub, tmp_path):
    files = {f"f{i}.safetensors": blob(6 * MiB, seed=i) for i in range(3)}
    hub.add_repo("o/n", files)
    hub.rate = 20 * MiB
    outcomes = run(hub, [job(tmp_path, hub, n, d) for n, d in files.items()], per_file=4, total=5,
                   piece_size=1 * MiB)
    assert all(o.ok for o in outcomes)
    assert 2 <= hub.max_active <= 5


def test_a_server_without_ranges_gets_one_connection(hub, tmp_path):
    data = blob(9 * MiB)
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.no_ranges = True
    lines = []
    target = job(tmp_path, hub, "w.safetensors", data)
    target.target.parent.mkdir(parents=True)
    (outcome,) = Downloader(Transport(hub.url), FetchOptions(per_file=4, piece_size=2 * MiB), lines.append).run(
        [target])
    assert outcome.ok and target.target.read_bytes() == data
    assert len(hub.file_gets()) == 1 and any("does not serve byte ranges" in line for line in lines)


def test_a_lying_content_range_is_refused(hub, tmp_path):
    data = blob(3 * MiB)
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.range_lie = True
    with pytest.raises(errors.UntrustedSource, match="Content-Range"):
        run(hub, [job(tmp_path, hub, "w.safetensors", data)], piece_size=1 * MiB)


def test_more_bytes_than_listed_are_refused(hub, tmp_path):
    data = blob(1 * MiB)
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.no_ranges = True
    hub.extra_bytes = 4096
    with pytest.raises(errors.UntrustedSource, match="sends"):
        run(hub, [job(tmp_path, hub, "w.safetensors", data)])
    assert not (tmp_path / "out" / "w.safetensors").exists()


def test_resume_state_survives_and_is_exact(hub, tmp_path):
    """A run stopped after some pieces resumes with the missing pieces only (recorded in <key>.json)."""
    data = blob(8 * MiB)
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.drop_after["w.safetensors"] = 0  # first request: headers, then nothing
    first = job(tmp_path, hub, "w.safetensors", data)
    with pytest.raises(errors.DownloadError):
        run(hub, [first], per_file=1, piece_size=2 * MiB, retries=0)
    meta = json.loads(first.meta.read_text())
    assert meta["name"] == "w.safetensors" and meta["size"] == len(data)
    hub.seen.clear()
    (outcome,) = run(hub, [job(tmp_path, hub, "w.safetensors", data)], per_file=2, piece_size=2 * MiB)
    assert outcome.ok
    asked = sum(int(s.headers["range"].split("-")[1]) + 1 - int(s.headers["range"][6:].split("-")[0])
                for s in hub.file_gets())
    assert asked == len(data) - sum(meta["written"].values())


@pytest.mark.parametrize("base, url, allowed", [
    ("https://hub.example", "https://cdn.example/x", True),
    ("https://hub.example", "http://hub.example/x", False),  # downgrade
    ("https://hub.example", "ftp://hub.example/x", False),
    ("https://hub.example", "file:///etc/passwd", False),
    ("http://127.0.0.1:8000", "http://127.0.0.1:9000/x", True),  # loopback stays loopback
    ("http://127.0.0.1:8000", "http://localhost:9/x", True),
    ("http://127.0.0.1:8000", "http://10.0.0.1/x", False),
    ("http://10.0.0.5:8000", "http://10.0.0.5:8000/x", True),  # a LAN mirror: its own origin only
    ("http://10.0.0.5:8000", "http://10.0.0.6:8000/x", False),
    ("http://10.0.0.5:8000", "https://cdn.example/x", True),
])
def test_hop_policy(base, url, allowed):
    assert (Transport(base).refusal(url) is None) is allowed


@pytest.mark.parametrize("base, url, sent", [
    ("https://hub.example", "https://hub.example/a", True),
    ("https://hub.example", "https://hub.example:443/a", True),
    ("https://hub.example", "https://hub.example:8443/a", False),  # another origin
    ("https://hub.example", "https://cdn.example/a", False),
    ("https://hub.example", "http://hub.example/a", False),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/a", True),  # a server on this machine the user configured
    ("http://127.0.0.1:8000", "http://127.0.0.1:8001/a", False),
    ("http://10.0.0.5:8000", "http://10.0.0.5:8000/a", False),  # plain http off this machine: never
])
def test_token_scope(base, url, sent):
    assert Transport(base, "hf_token1234").sends_token_to(url) is sent


def test_a_server_that_drips_is_cut_as_stalled_and_the_pull_ends(hub, tmp_path, monkeypatch):
    import bootstrap.transport as transport

    monkeypatch.setattr(transport, "STALL_S", 0.5)
    monkeypatch.setattr(transport, "STALL_MIN_BYTES", 64 * 1024)
    data = blob(1 * MiB)
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.rate = 2000  # 2 KB/s: a slow-drip server (a socket timeout alone would wait forever)
    lines = []
    target = job(tmp_path, hub, "w.safetensors", data)
    target.target.parent.mkdir(parents=True)
    with pytest.raises(errors.DownloadError, match="dropped"):
        Downloader(Transport(hub.url), FetchOptions(retries=1, backoff_s=0.01), lines.append).run([target])
    assert any("Stalled" in line for line in lines)


def test_many_files_use_a_bounded_number_of_threads_and_descriptors(hub, tmp_path):
    import threading
    import time

    files = {f"f{i:04d}.json": b"x" * (i % 7 + 1) for i in range(1500)}
    hub.add_repo("o/n", files)
    peak = {"threads": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["threads"] = max(peak["threads"], threading.active_count())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    jobs = []
    for n, d in files.items():
        j = job(tmp_path, hub, n, d)
        jobs.append(FileJob(j.name, j.size, "git-blob", git_blob(d), j.target, j.partial_dir, j.url, j.commit))
    try:
        outcomes = run(hub, jobs, total=8)
    finally:
        stop.set()
    assert all(o.ok for o in outcomes) and len(outcomes) == 1500
    assert peak["threads"] < 60  # workers + a hasher per file in flight, not one per file


def test_a_server_that_drips_its_headers_is_cut_at_the_deadline(hub, tmp_path, monkeypatch):
    import time

    import bootstrap.transport as transport

    monkeypatch.setattr(transport, "HEADERS_DEADLINE_S", 1.0)
    data = blob(1 * MiB)
    hub.add_repo("o/n", {"w.safetensors": data})
    hub.drip_headers = 0.2  # a byte every 0.2 s: every read brings something, the headers never end
    target = job(tmp_path, hub, "w.safetensors", data)
    target.target.parent.mkdir(parents=True)
    started = time.monotonic()
    with pytest.raises(errors.DownloadError, match="dropped"):
        Downloader(Transport(hub.url), FetchOptions(retries=1, backoff_s=0.01), lambda _: None).run([target])
    assert time.monotonic() - started < 20 and len(hub.file_gets()) == 2  # one try, one retry, each cut
