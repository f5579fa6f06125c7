"""``share``: a pulled project served to the real huggingface_hub and to our own ``pull``, and nothing else."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, snapshot_download  # noqa: E402

from bootstrap import errors  # noqa: E402
from bootstrap.demo.scenario import DEMO_REPO_ID  # noqa: E402
from bootstrap.share import ShareOptions, open_share, unsafe_name  # noqa: E402
from tests.pipeline.helpers import write_manifest  # noqa: E402
from tests.reliability.conftest import Cli, Running, cli_env  # noqa: E402
from tests.share.conftest import BIG, BIG_SIZE, CuttingProxy, sha256_of  # noqa: E402

VERIFIED = {BIG, "tokenizer.model", "config.json", "sub/notes.json"}


@pytest.fixture
def cli(tmp_path: Path, isolated_hf_env: Path):
    runner = Cli(cli_env(isolated_hf_env), tmp_path / "cli-output")
    yield runner
    runner.cleanup()


def request(url: str, method: str = "GET", path: str = "/",
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    """One raw request (the path is sent exactly as given: no client-side normalisation)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def resolve(name: str, rev: str = "main") -> str:
    return f"/{DEMO_REPO_ID}/resolve/{rev}/{name}"


# -- the real clients ---------------------------------------------------------------------------------


def test_snapshot_download_gets_exactly_the_verified_files(pulled, shared, tmp_path: Path) -> None:
    (pulled.model_dir / "unverified.bin").write_bytes(b"placed here after the pull")
    out = Path(snapshot_download(DEMO_REPO_ID, local_dir=tmp_path / "copy", endpoint=shared.url))
    got = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert got == VERIFIED
    for name in VERIFIED:
        assert sha256_of(out / name) == sha256_of(pulled.model_dir / name)
    info = HfApi(endpoint=shared.url).model_info(DEMO_REPO_ID, files_metadata=True)
    assert info.sha == pulled.record["commit"]
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == VERIFIED
    assert siblings[BIG].lfs.sha256 == pulled.record["files"][BIG]["sha256"]
    assert siblings["config.json"].blob_id == pulled.record["files"]["config.json"]["blob_id"]
    tree = {e.path for e in HfApi(endpoint=shared.url).list_repo_tree(DEMO_REPO_ID, recursive=True)}
    assert tree == VERIFIED | {"sub"}


def test_our_pull_from_a_share_verifies_and_logs_every_request(pulled, shared, cli, tmp_path: Path) -> None:
    other = write_manifest(tmp_path / "project-b", shared.url, requirements__disk_margin_gb=0)
    result = cli("pull", "--manifest", str(other), "--json")
    assert result.code == 0, result.output
    repo = result.doc["steps"][0]["result"]["repos"][0]
    assert repo["commit"] == pulled.record["commit"]
    assert sorted(repo["hashed"]) == sorted(VERIFIED)
    log = shared.log_text()
    commit = pulled.record["commit"]
    pieces = [line for line in log.splitlines() if f"GET /{DEMO_REPO_ID}/resolve/{commit}/{BIG} 206 " in line]
    assert sum(int(line.split(" 206 ")[1].split()[0]) for line in pieces) == BIG_SIZE  # in ranges, each byte once
    assert f"GET /api/models/{DEMO_REPO_ID}/revision/main" in log
    assert any(f"/resolve/{commit}/{BIG} 206 " in line for line in shared.lines)  # and to stderr


# -- HTTP details -------------------------------------------------------------------------------------


def test_head_range_suffix_and_416(pulled, shared) -> None:
    data = (pulled.model_dir / BIG).read_bytes()
    digest, commit = pulled.record["files"][BIG]["sha256"], pulled.record["commit"]
    status, headers, body = request(shared.url, "HEAD", resolve(BIG))
    assert status == 200 and body == b""
    assert headers["etag"] == headers["x-linked-etag"] == f'"{digest}"'
    assert headers["x-repo-commit"] == commit
    assert headers["content-length"] == headers["x-linked-size"] == str(BIG_SIZE)
    assert headers["accept-ranges"] == "bytes"

    status, headers, body = request(shared.url, path=resolve(BIG, commit), headers={"Range": "bytes=100-199"})
    assert (status, headers["content-range"], body) == (206, f"bytes 100-199/{BIG_SIZE}", data[100:200])
    status, headers, body = request(shared.url, path=resolve(BIG), headers={"Range": "bytes=-10"})
    assert (status, headers["content-range"], body) == (206, f"bytes {BIG_SIZE - 10}-{BIG_SIZE - 1}/{BIG_SIZE}",
                                                        data[-10:])
    status, headers, _ = request(shared.url, path=resolve(BIG), headers={"Range": f"bytes={BIG_SIZE}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{BIG_SIZE}")
    status, headers, _ = request(shared.url, path=resolve(BIG), headers={"Range": "bytes=-0"})
    assert status == 416
    status, _, body = request(shared.url, path=resolve("config.json"), headers={"Range": "bytes=0-1,4-5"})
    assert status == 200 and body == (pulled.model_dir / "config.json").read_bytes()  # several ranges: all

    status, headers, _ = request(shared.url, "HEAD", resolve("config.json"))
    assert headers["etag"] == f'"{pulled.record["files"]["config.json"]["blob_id"]}"'
    assert "x-linked-etag" not in headers


def test_resume_through_the_share_after_the_network_cuts_a_download(pulled, shared, cli, tmp_path: Path) -> None:
    proxy = CuttingProxy(shared.url, marker=f"GET /{DEMO_REPO_ID}/resolve/".encode(), name=BIG.encode(),
                         cut_after=3 * 1024 * 1024, ranged=True)
    try:
        other = write_manifest(tmp_path / "project-b", proxy.url, requirements__disk_margin_gb=0)
        result = cli("pull", "--manifest", str(other), "--json", "--retries", "3")
    finally:
        proxy.close()
    assert result.code == 0, result.output
    assert proxy.cuts == 1
    assert sha256_of(tmp_path / "project-b" / "models" / DEMO_REPO_ID / BIG) == pulled.record["files"][BIG]["sha256"]
    gets = [line for line in shared.lines if f"GET /{DEMO_REPO_ID}/resolve/" in line and f"/{BIG} " in line]
    starts = sorted(int(line.split("range=bytes=")[1].split("-")[0]) for line in gets)
    piece = 8 * 1024 * 1024
    pieces = list(range(0, BIG_SIZE, piece))
    assert len(gets) == len(pieces) + 1, gets  # every piece, and the cut one once more
    resumed = [s for s in starts if s not in pieces]
    assert len(resumed) == 1 and 0 < resumed[0] % piece <= 3 * 1024 * 1024  # from where the cut left it


# -- nothing outside the verified set -----------------------------------------------------------------


@pytest.mark.parametrize("path", [
    f"/{DEMO_REPO_ID}/resolve/main/../../../../etc/passwd",
    f"/{DEMO_REPO_ID}/resolve/main/%2e%2e/%2e%2e/.llama-bootstrap/state.json",
    f"/{DEMO_REPO_ID}/resolve/main/..%2F..%2F.llama-bootstrap%2Fstate.json",
    f"/{DEMO_REPO_ID}/resolve/main/sub%5Cnotes.json",
    f"/{DEMO_REPO_ID}/resolve/main/sub\\notes.json",
    f"/{DEMO_REPO_ID}/resolve/main//etc/passwd",
    f"/{DEMO_REPO_ID}/resolve/main/%2Fetc%2Fpasswd",
    f"/{DEMO_REPO_ID}/resolve/main/./config.json",
    f"/{DEMO_REPO_ID}/resolve/main/config.json%00",
    f"/{DEMO_REPO_ID}/resolve/main/.cache/huggingface/download/config.json.metadata",
    f"/{DEMO_REPO_ID}/resolve/main/sub",
    "/etc/passwd",
    "/../../../etc/passwd",
    "/api/models/../../../../etc/passwd",
    f"/api/models/{DEMO_REPO_ID}/tree/main/..",
    f"/api/models/{DEMO_REPO_ID}/tree/main/../..",
])
def test_paths_outside_the_verified_set_are_refused(shared, path: str) -> None:
    status, _, body = request(shared.url, path=path)
    assert status in (400, 404), (path, status, body[:200])
    assert b"root:" not in body and b'"steps"' not in body


def test_unverified_changed_and_swapped_files_are_not_served(pulled, shared, tmp_path: Path) -> None:
    (pulled.model_dir / "planted.bin").write_bytes(b"x" * 100)
    assert request(shared.url, path=resolve("planted.bin"))[0] == 404
    # a verified file changed since: refused, and said so in the log
    config = pulled.model_dir / "config.json"
    config.write_text('{"model_type": "llama", "edited": 1}\n')
    assert request(shared.url, path=resolve("config.json"))[0] == 409
    assert "config.json: changed or gone since it was described" in shared.log_text()
    # a verified file swapped for a symlink to a copy outside (same size and mtime): refused
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(pulled.model_dir / "tokenizer.model", outside / "tokenizer.model")
    (pulled.model_dir / "tokenizer.model").unlink()
    (pulled.model_dir / "tokenizer.model").symlink_to(outside / "tokenizer.model")
    assert request(shared.url, path=resolve("tokenizer.model"))[0] in (404, 409)
    # a verified folder swapped for a symlink to a copy outside: refused (it resolves outside the model folder)
    shutil.copytree(pulled.model_dir / "sub", outside / "sub", copy_function=shutil.copy2)
    shutil.rmtree(pulled.model_dir / "sub")
    (pulled.model_dir / "sub").symlink_to(outside / "sub", target_is_directory=True)
    assert request(shared.url, path=resolve("sub/notes.json"))[0] == 404
    assert "resolves outside" in shared.log_text()
    # the untouched weight is still served
    assert request(shared.url, "HEAD", resolve(BIG))[0] == 200


def test_a_tampered_state_file_cannot_name_files_outside(pulled, shared, tmp_path: Path) -> None:
    secret = pulled.model_dir.parent / "secret.txt"
    secret.write_text("not for sharing\n")
    state_path = pulled.plan.state_dir / "state.json"
    doc = json.loads(state_path.read_text())
    files = doc["steps"]["pull"]["result"]["repos"][0]["files"]
    st = secret.stat()
    for name in ("../secret.txt", "/etc/passwd", "sub\\..\\..\\secret.txt", "a/./b"):
        files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None, "blob_id": "0" * 40}
    state_path.write_text(json.dumps(doc))
    for path in ("../secret.txt", "..%2Fsecret.txt", "%2E%2E/secret.txt"):
        status, _, body = request(shared.url, path=resolve(path))
        assert status == 404 and b"not for sharing" not in body
    names = {s["rfilename"] for s in json.loads(request(shared.url, path=f"/api/models/{DEMO_REPO_ID}")[2])["siblings"]}
    assert names == VERIFIED
    assert "../secret.txt is not served" in shared.log_text() or "reloaded" in shared.log_text()


@pytest.mark.parametrize("repos", [
    ["not a dict"],
    [{"repo_id": DEMO_REPO_ID, "revision": "main", "commit": "c\r\nX-Evil: 1", "local_dir": "/", "files": {}}],
    [{"repo_id": DEMO_REPO_ID, "revision": "main", "commit": "0" * 40, "local_dir": "/", "files": ["config.json"]}],
    [{"repo_id": DEMO_REPO_ID, "revision": "main\n", "commit": "0" * 40, "local_dir": "/", "files": {}}],
])
def test_a_pull_record_of_another_shape_shares_nothing(pulled, repos) -> None:
    state_path = pulled.plan.state_dir / "state.json"
    doc = json.loads(state_path.read_text())
    doc["steps"]["pull"]["result"]["repos"] = repos
    state_path.write_text(json.dumps(doc))
    with pytest.raises(errors.ShareError, match="not in the shape pull writes"):
        open_share(pulled.plan, ShareOptions(port=0))


def test_unsafe_names() -> None:
    for bad in ("", "../x", "a/../b", "/abs", "a//b", "./a", "a/", "a\\b", "c:x", "a\x00b", "a\nb"):
        assert unsafe_name(bad), bad
    for good in ("config.json", "sub/notes.json", ".gitattributes", "a..b/c"):
        assert unsafe_name(good) is None, good


def test_methods_other_than_get_and_head_are_refused(shared) -> None:
    assert request(shared.url, "POST", resolve("config.json"))[0] == 405
    assert request(shared.url, "PUT", resolve("config.json"))[0] == 501
    assert request(shared.url, "DELETE", resolve("config.json"))[0] == 501


def test_a_token_is_never_needed_and_never_logged(shared) -> None:
    status, _, _ = request(shared.url, path=resolve("config.json"), headers={"Authorization": "Bearer hf_sEcReT123"})
    assert status == 200
    log = shared.log_text() + "\n".join(shared.lines)
    assert "Authorization header: ignored" in log and "hf_sEcReT123" not in log


# -- bounded and timed ----------------------------------------------------------------------------------


def test_connections_beyond_the_limit_get_503_and_a_slot_frees_up(serve) -> None:
    served = serve(max_connections=2)
    host, port = served.url.split("//")[1].rsplit(":", 1)
    held = [socket.create_connection((host, int(port))) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:  # the two held connections occupy both slots
            status = request(served.url, path=resolve("config.json"))[0]
            if status == 503:
                break
            time.sleep(0.05)
        assert status == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if request(served.url, path=resolve("config.json"))[0] == 200:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no slot was freed after the held connections closed")


def test_a_client_that_trickles_its_request_is_disconnected(serve) -> None:
    served = serve(header_timeout_s=0.5)
    host, port = served.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(30)  # a safety net for the test only
        sock.sendall(b"GET /api/models/x HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
        closed = False
        try:
            while True:
                data = sock.recv(1024)
                if not data:
                    closed = True
                    break
        except ConnectionResetError:
            closed = True
    assert closed


# -- the command --------------------------------------------------------------------------------------


def _ready(proc: Running, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.out_path.read_text(encoding="utf-8")
        try:
            return json.loads(text)
        except ValueError:
            if not proc.alive():
                pytest.fail(f"share exited early: {proc.err_path.read_text()}")
            time.sleep(0.05)
    pytest.fail("share printed no ready document")


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a process group")
def test_cli_share_serves_until_ctrl_c(pulled, cli) -> None:
    proc = cli.start("share", "--manifest", str(pulled.manifest), "--port", "0", "--json")
    ready = _ready(proc)
    assert ready["status"] == "serving" and ready["url"].startswith("http://127.0.0.1:")
    assert ready["warnings"] == []
    assert ready["repos"][0]["files"] == len(VERIFIED) and ready["repos"][0]["commit"] == pulled.record["commit"]
    assert HfApi(endpoint=ready["url"]).model_info(DEMO_REPO_ID).sha == pulled.record["commit"]
    proc.signal(signal.SIGINT)
    result = proc.finish(30)
    assert result.code == 130, result.output
    assert "Traceback" not in result.stderr
    assert f"GET /api/models/{DEMO_REPO_ID} 200" in result.stderr
    assert f"GET /api/models/{DEMO_REPO_ID} 200" in Path(ready["log"]).read_text()


def test_cli_share_with_nothing_pulled_says_so(cli, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "empty-project", "https://example.invalid")
    result = cli("share", "--manifest", str(manifest), "--port", "0")
    assert result.code == 1
    assert "nothing verified to share" in result.stderr and "llama-bootstrap pull" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_share_port_in_use_is_a_clear_error(pulled, cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = cli("share", "--manifest", str(pulled.manifest), "--port", str(port))
    assert result.code == 1
    assert "port is in use" in result.stderr and "--port" in result.stderr


def test_a_lan_address_is_announced_loudly(pulled) -> None:
    share = open_share(pulled.plan, ShareOptions(host="0.0.0.0", port=0))  # noqa: S104 - the point of the test
    try:
        warnings = share.describe()["warnings"]
    finally:
        share.close()
    assert len(warnings) == 1 and "PLAIN HTTP" in warnings[0] and "No token" in warnings[0]


def test_open_share_without_a_pull_raises_share_error(tmp_path: Path) -> None:
    from tests.pipeline.helpers import plan_for

    plan = plan_for(write_manifest(tmp_path / "p", "https://example.invalid"))
    with pytest.raises(errors.ShareError, match="nothing verified"):
        open_share(plan, ShareOptions(port=0))


def test_share_module_imports_nothing_heavy() -> None:
    code = ("import sys, bootstrap.share, bootstrap.hubserve; "
            "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,  # noqa: S603
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "[]"

