"""pull under faults: dropped connections, corrupted bytes, 5xx, a full disk; no orphans after success.

Each fault ends with the right bytes (sha256 of the served file) or a clear error with exit 1, and never
with a bad file recorded as done. The CLI runs as a subprocess where exit codes and messages are the
point; ``bootstrap.pipeline.run`` runs in-process where backoff and request counts are the point.
"""

from __future__ import annotations

import threading
import time

import pytest

from bootstrap import errors
from bootstrap.demo.scenario import DEMO_REPO_ID
from bootstrap.exits import EXIT_FAILED, outcome
from bootstrap.pipeline import RunOptions, run

from .conftest import (
    BIG,
    BIG_SIZE,
    PIECE,
    SMALL_FILES,
    MiB,
    Project,
    SleepRecorder,
    api_gets,
    body_gets,
    fill_disk,
    leftovers,
    make_model_folder,
    posix_only,
    range_start,
    sha256_of,
    unexpected_files,
    write_manifest,
)

PULL_ONLY = RunOptions(only=("pull",), pull_retries=4, pull_backoff_s=0.01)


def pull_args(project: Project, *extra: str):
    return ("pull", "--manifest", str(project.manifest), "--json", *extra)


# -- 1. dropped connections ---------------------------------------------------------------------


def test_drop_mid_file_is_resumed_within_the_same_command(cli, local_hub, project):
    local_hub.inject(f"*/{BIG}", "drop", times=1, after=3 * MiB)  # one piece's connection dies after 3 MiB
    result = cli(*pull_args(project, "--retries", "2"))
    assert result.code == 0, result.stderr
    starts = sorted(range_start(r) for r in body_gets(local_hub))
    pieces = list(range(0, BIG_SIZE, PIECE))
    assert len(starts) == len(pieces) + 1  # every piece once, and the cut one again
    extra = [s for s in starts if s not in pieces]
    assert len(extra) == 1 and extra[0] % PIECE == 3 * MiB  # resumed where it stopped, not restarted
    assert local_hub.bytes_sent == BIG_SIZE + sum(len(t) for t in SMALL_FILES.values())  # no byte twice
    assert project.big_is_right()
    assert project.recorded() == ["pull"]
    assert project.partials() == []


def test_more_drops_than_retries_is_a_clear_error_and_the_next_run_resumes(cli, local_hub, project):
    local_hub.inject(f"*/{BIG}", "drop", times=None, after=3 * MiB)  # every response dies after 3 MiB
    failed = cli(*pull_args(project, "--retries", "1"), timeout=60)
    assert failed.code == EXIT_FAILED, failed.output
    per_piece = {}
    for r in body_gets(local_hub):
        per_piece.setdefault(range_start(r) // PIECE, []).append(range_start(r))
    assert all(len(tries) <= 2 for tries in per_piece.values())  # the first try and one retry, no more
    assert failed.doc["status"] == "error" and failed.doc["error"]["exit_code"] == EXIT_FAILED
    assert not (project.model_dir / BIG).exists()  # nothing half-written in place
    assert "pull" not in project.recorded()
    kept = project.partial_bytes()
    assert kept >= 3 * MiB  # what arrived is recorded for the next run

    local_hub.clear_faults()
    local_hub.reset_counters()
    again = cli(*pull_args(project))
    assert again.code == 0, again.stderr
    asked = sum(int(r.split("-")[1]) + 1 - range_start(r) for r in body_gets(local_hub))
    assert asked == BIG_SIZE - kept  # only what was missing
    assert project.big_is_right() and project.partials() == []
    assert project.recorded() == ["pull"]
    # The message says what happened and that running again resumes.
    message = failed.doc["error"]["message"]
    assert "[Errno None]" not in message and "None: None" not in message, message
    assert "dropped" in message, message
    assert "resumes" in failed.doc["error"]["remedy"]


# -- 3. corrupted bytes ---------------------------------------------------------------------------


def test_corrupted_once_is_caught_and_fetched_again_automatically(cli, local_hub, project):
    local_hub.inject(f"*/{BIG}", "corrupt", times=1, count=16)
    result = cli(*pull_args(project))
    assert result.code == 0, result.stderr
    n = len(range(0, BIG_SIZE, PIECE))
    assert len(body_gets(local_hub)) == 2 * n  # verified, found bad, fetched again whole
    assert project.big_is_right()
    assert "verification failed" in project.logs()
    record = project.state()["steps"]["pull"]["result"]["repos"][0]["files"][BIG]
    assert record["sha256"] == sha256_of(project.upstream / BIG)


def test_always_corrupt_is_an_integrity_error_the_bad_file_removed_and_nothing_recorded(cli, local_hub, project):
    local_hub.inject(f"*/{BIG}", "corrupt", times=None)
    failed = cli(*pull_args(project))
    assert failed.code == EXIT_FAILED, failed.output
    error = failed.doc["error"]
    want = sha256_of(project.upstream / BIG)
    assert error["kind"] == "IntegrityError"
    assert f"want: {want}" in error["message"] and "got: " in error["message"]
    assert "removed" in error["remedy"] and "run the command again" in error["remedy"]
    assert "error:" in failed.stderr and want in failed.stderr
    assert not (project.model_dir / BIG).exists()  # the bad file is not left in place
    assert project.partials() == []  # nor its partial download
    assert "pull" not in project.recorded()
    assert len(body_gets(local_hub)) == 2 * len(range(0, BIG_SIZE, PIECE))  # one automatic re-download, then stop

    local_hub.clear_faults()
    again = cli(*pull_args(project))
    assert again.code == 0, again.stderr
    assert project.big_is_right() and project.recorded() == ["pull"]


# -- 4. 5xx answers ---------------------------------------------------------------------------------


def test_api_503_a_few_times_then_recovers_with_exponential_backoff(local_hub, project, monkeypatch):
    import bootstrap.sources.base as base

    clock = SleepRecorder(cap=0.05)
    monkeypatch.setattr(base, "time", clock)
    local_hub.inject("/api/models/*", "status", times=3, code=503)
    result = run(project.plan(), PULL_ONLY)
    assert result.ok
    assert api_gets(local_hub) == 4  # three 503s, then the answer
    assert clock.sleeps == [0.01, 0.02, 0.04]  # bounded, doubling
    assert project.big_is_right()


def test_file_500_a_few_times_then_recovers(local_hub, project):
    local_hub.inject(f"*/resolve/*/{BIG}", "status", times=2, code=500, method="GET")
    result = run(project.plan(), PULL_ONLY)
    assert result.ok
    assert len(body_gets(local_hub)) == len(range(0, BIG_SIZE, PIECE)) + 2
    assert project.big_is_right()


def test_api_503_forever_stops_after_the_bounded_retries(cli, local_hub, project):
    local_hub.inject("/api/models/*", "status", times=None, code=503)
    failed = cli(*pull_args(project, "--retries", "2"), timeout=60)
    assert failed.code == EXIT_FAILED, failed.output
    assert api_gets(local_hub) == 3  # first try + 2 retries
    assert failed.seconds < 30  # backoff 1 s + 2 s, no hang
    error = failed.doc["error"]
    assert error["kind"] == "DownloadError" and "HTTP 503" in error["message"]
    assert "try again later" in error["remedy"]
    assert body_gets(local_hub) == [] and "pull" not in project.recorded()


def test_file_503_forever_is_bounded_and_records_nothing(local_hub, project):
    local_hub.inject(f"*/resolve/*/{BIG}", "status", times=None, code=503, method="GET")
    started = time.monotonic()
    with pytest.raises(errors.DownloadError) as info:
        run(project.plan(), RunOptions(only=("pull",), pull_retries=1, pull_backoff_s=0.01))
    assert time.monotonic() - started < 30
    assert "HTTP 503" in str(info.value)
    assert outcome(info.value).code == EXIT_FAILED
    # each piece is tried 1 + pull_retries times at most; the first piece that gives up stops the others
    assert len(body_gets(local_hub)) <= 2 * len(range(0, BIG_SIZE, PIECE))
    assert not (project.model_dir / BIG).exists() and "pull" not in project.recorded()


# -- 5. a full disk (a real tmpfs) ----------------------------------------------------------------


@posix_only
def test_disk_precheck_refuses_before_downloading(cli, local_hub, served, small_disk, tmp_path):
    disk = small_disk("2m")
    manifest = write_manifest(tmp_path / "proj", local_hub.url, weights__dir=str(disk / "models"),
                              requirements__disk_margin_gb=0)
    project = Project(manifest, served)
    failed = cli(*pull_args(project))
    assert failed.code == EXIT_FAILED, failed.output
    error = failed.doc["error"]
    assert error["kind"] == "DiskSpaceError"
    assert "not enough disk" in error["message"] and "need" in error["message"] and "free" in error["message"]
    assert str(disk) in error["message"]  # names where
    assert "weights.dir" in error["remedy"]
    assert body_gets(local_hub) == [] and local_hub.bytes_sent == 0  # nothing was downloaded
    assert not (disk / "models").exists() or not any((disk / "models").rglob(BIG))
    assert "pull" not in project.recorded()


@posix_only
def test_disk_fills_during_the_download_is_a_clear_disk_full_error(cli, local_hub, small_disk, tmp_path):
    disk = small_disk("3m")
    upstream = make_model_folder(tmp_path / "upstream-small", big_bytes=1 * MiB)
    local_hub.add_repo(DEMO_REPO_ID, upstream)
    manifest = write_manifest(tmp_path / "proj", local_hub.url, weights__dir=str(disk / "models"),
                              requirements__disk_margin_gb=0)
    project = Project(manifest, upstream)
    download_dir = disk / "models" / DEMO_REPO_ID / ".partial"
    # The body trickles in for ~1.6 s; meanwhile "another program" fills the disk after the precheck passed.
    local_hub.inject(f"*/{BIG}", "slow", times=1, delay=0.1, chunk=64 * 1024)
    filled = []

    def other_program() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not filled:
            if download_dir.is_dir() and any(download_dir.glob("*.incomplete")):
                filled.append(fill_disk(disk))
            time.sleep(0.005)

    filler = threading.Thread(target=other_program, daemon=True)
    filler.start()
    failed = cli(*pull_args(project), timeout=60)
    filler.join(timeout=5)
    assert filled, "the download never started"
    assert failed.code == EXIT_FAILED, failed.output
    error = failed.doc["error"]
    assert error["kind"] == "DiskSpaceError" and "disk full" in error["message"], error
    assert "free space" in error["remedy"]
    assert "pull" not in project.recorded()
    assert not (disk / "models" / DEMO_REPO_ID / BIG).exists()

    filled[0].unlink()  # space is freed: the next run finishes the job
    again = cli(*pull_args(project))
    assert again.code == 0, again.stderr
    assert sha256_of(disk / "models" / DEMO_REPO_ID / BIG) == sha256_of(upstream / BIG)
    assert project.recorded() == ["pull"]


def test_enospc_at_the_write_is_a_disk_full_error(local_hub, project, monkeypatch):
    """The same without root: ENOSPC raised where the fetcher writes the file body."""
    import errno

    import bootstrap.fetch as fetch

    real_write = fetch._pwrite_all

    def full_disk(fd, data, pos):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch, "_pwrite_all", full_disk)
    with pytest.raises(errors.DiskSpaceError) as info:
        run(project.plan(), PULL_ONLY)
    assert "disk full" in str(info.value) and outcome(info.value).code == EXIT_FAILED
    assert "pull" not in project.recorded() and not (project.model_dir / BIG).exists()
    monkeypatch.setattr(fetch, "_pwrite_all", real_write)
    assert run(project.plan(), PULL_ONLY).ok and project.big_is_right()


# -- 6. no orphans ------------------------------------------------------------------------------------


def test_no_orphan_temp_files_after_a_successful_run_even_after_faults(cli, local_hub, project):
    """Allowed leftovers: the run lock, logs, state file and install receipt (state dir); the empty .partial/
    folder."""
    local_hub.inject(f"*/{BIG}", "drop", times=1, after=3 * MiB)
    local_hub.inject("*/config.json", "corrupt", times=1)
    result = cli("run", "--manifest", str(project.manifest), "--json", "--skip", "smoke")
    assert result.code == 0, result.stderr
    assert result.steps() == {"check": "done", "clone": "done", "pull": "done", "smoke": "skipped"}
    assert leftovers(project.root) == []
    assert leftovers(project.root.parent) == []  # nothing next to the project either (clone temps)
    models = "models/" + "/".join(project.model_dir.relative_to(project.root / "models").parts)
    expected = ["manifest.yaml", "Llama2-Chinese/", ".llama-bootstrap/state.json", ".llama-bootstrap/run.lock",
                ".llama-bootstrap/logs/", ".llama-bootstrap/receipt.json"]
    expected += [f"{models}/{name}" for name in (BIG, "config.json", "tokenizer_config.json")]
    assert unexpected_files(project.root, expected) == []
