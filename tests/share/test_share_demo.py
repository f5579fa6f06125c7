"""The demo's own project, shared: the real huggingface_hub and another project's ``run`` (pull + smoke) through it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootstrap.demo.scenario import DEMO_REPO_ID, run_demo
from bootstrap.share import ShareOptions, open_share
from tests.pipeline.helpers import plan_for
from tests.reliability.conftest import Cli, cli_env, sha256_of


@pytest.mark.torch
@pytest.mark.slow
def test_the_demo_project_shared_to_another_project(tiny_model_dir: Path, tmp_path: Path,
                                                     isolated_hf_env: Path) -> None:
    from huggingface_hub import snapshot_download

    workdir = tmp_path / "demo"
    shutil.copytree(tiny_model_dir, workdir / "cache" / tiny_model_dir.name)  # the demo's own cache, prebuilt
    demo = run_demo(workdir)
    assert demo.first.ok and demo.second.ok
    plan = plan_for(Path(demo.manifest))
    served = plan.model_dir(DEMO_REPO_ID)

    other = tmp_path / "project-b"
    other.mkdir()
    shutil.copy2(demo.manifest, other / "manifest.yaml")  # the same model, its own folders
    cli = Cli(cli_env(isolated_hf_env), tmp_path / "cli-output")
    share = open_share(plan, ShareOptions(port=0)).start()
    try:
        copy = Path(snapshot_download(DEMO_REPO_ID, local_dir=tmp_path / "copy", endpoint=share.url))
        names = {p.relative_to(served).as_posix() for p in served.rglob("*") if p.is_file() and ".cache" not in p.parts}
        assert names and {p.relative_to(copy).as_posix() for p in copy.rglob("*")
                          if p.is_file() and ".cache" not in p.parts} == names
        assert all(sha256_of(copy / n) == sha256_of(served / n) for n in names)

        result = cli("run", "--manifest", str(other / "manifest.yaml"), "--endpoint", share.url, "--json",
                     timeout=300)
    finally:
        share.close()
        cli.cleanup()
    assert result.code == 0, result.output[-3000:]
    assert result.steps() == {"check": "done", "clone": "done", "pull": "done", "smoke": "done"}
    smoke = next(s for s in result.doc["steps"] if s["step"] == "smoke")
    assert smoke["result"]["answer"].strip()
    log = share.log_path.read_text()
    assert f"GET /{DEMO_REPO_ID}/resolve/" in log and "model.safetensors 200" in log
