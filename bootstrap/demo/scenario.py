"""``llama-bootstrap demo``: the real pipeline, end to end, with no GPU and no internet.

It builds a tiny Llama-architecture chat model with a real SentencePiece tokenizer, serves it
from a Hub-compatible server on 127.0.0.1, makes a local git repository as the clone source,
writes a manifest pointing at both and runs the real ``run`` (check -> clone -> pull -> smoke)
against them, then runs it a second time to show the no-op re-run.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import yaml

DEMO_REPO_ID = "FlagAlpha/Llama2-Chinese-tiny-demo"
DEMO_MODEL_KEY = "llama2-chinese-tiny-demo"
DEFAULT_WORKDIR = "llama-bootstrap-demo"
RUN_PARTS = ("models", "Llama2-Chinese", ".llama-bootstrap", "weights.lock.yaml")


@dataclass
class DemoResult:
    workdir: str
    manifest: str
    build_s: float
    first: Any  # pipeline.RunResult
    second: Any

    def to_json(self) -> Dict[str, Any]:
        return {"status": "ok" if self.first.ok and self.second.ok else "fail", "workdir": self.workdir,
                "manifest": self.manifest, "build_s": round(self.build_s, 3),
                "first_run": self.first.to_json(), "second_run": self.second.to_json()}


def demo_manifest(endpoint: str, source_url: str, source_ref: str, *,
                  dead_endpoint: Optional[str] = None) -> Dict[str, Any]:
    """A manifest for the demo: the same schema as the real one, pointing at local stand-ins.

    With ``dead_endpoint`` the profile lists it as the first weights source (nothing listens there), so
    the run shows the fallback to the next source.
    """
    from bootstrap.manifest import CHAT_TEMPLATE, DEFAULT_PROMPT

    profile: Dict[str, Any] = {"hf_endpoint": endpoint, "description": "the demo's Hub on 127.0.0.1"}
    if dead_endpoint:
        profile["sources"] = [{"kind": "hub", "endpoint": dead_endpoint}, {"kind": "hub"}]

    return {
        "version": 1,
        "model": DEMO_MODEL_KEY,
        "profile": "demo",
        "env": {"name": "myenv", "python": "3.9"},
        "requirements": {"python": ">=3.9.6", "gpu": "preferred", "disk_margin_gb": 0.05},
        "source": {"url": source_url, "ref": source_ref, "dir": "Llama2-Chinese"},
        "weights": {"dir": "models"},
        "models": {DEMO_MODEL_KEY: {
            "repo_id": DEMO_REPO_ID, "revision": "main", "size_gb": 0.001, "min_vram_gb": 0, "params_b": 0.0002,
            "description": "tiny Llama-architecture chat model built by the demo (not a real Llama2-Chinese)",
        }},
        "profiles": {"demo": profile},
        "smoke": {"prompt": DEFAULT_PROMPT, "template": CHAT_TEMPLATE, "max_new_tokens": 24, "precision": "auto"},
    }


def _dead_endpoint() -> str:
    """A loopback URL where nothing listens (a port that was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def prepare(workdir: Path, *, echo: Callable[[str], None]) -> Dict[str, Any]:
    """Build (or reuse) the tiny model and the git source under ``workdir``."""
    from bootstrap.demo.gitsource import head_sha, make_source_repo
    from bootstrap.demo.tinymodel import cached_tiny_model

    t0 = time.perf_counter()
    model_dir = cached_tiny_model(workdir / "cache")
    upstream = workdir / "upstream" / "Llama2-Chinese"
    sha = head_sha(upstream) if (upstream / ".git").is_dir() else make_source_repo(upstream)
    echo(f"demo: tiny model at {model_dir}, git source at {upstream} ({sha[:12]}) "
         f"in {time.perf_counter() - t0:.1f}s")
    return {"model_dir": model_dir, "upstream": upstream, "sha": sha, "build_s": time.perf_counter() - t0}


@contextmanager
def _served_project(workdir: Path, echo: Callable[[str], None], settings: Optional[Any]) -> Iterator[Any]:
    """The demo project under ``workdir`` with its Hub running: tiny model served, manifest written, weights
    pinned. Yields the plan; the Hub stops when the block ends."""
    from bootstrap.demo.hubserver import LocalHub
    from bootstrap.plan import Overrides, build_plan
    from bootstrap.settings import Settings
    from bootstrap.weightspin import lock_weights

    parts = prepare(workdir, echo=echo)
    with LocalHub() as hub:
        hub.add_repo(DEMO_REPO_ID, parts["model_dir"])
        manifest_path = workdir / "manifest.yaml"
        doc = demo_manifest(hub.url, str(parts["upstream"]), parts["sha"], dead_endpoint=_dead_endpoint())
        manifest_path.write_text("# Written by `llama-bootstrap demo`: local stand-ins for the Hub and GitHub.\n"
                                 + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        # The demo's own endpoint and no token: the user's HF_ENDPOINT/HF_TOKEN do not apply here.
        plan = build_plan(Overrides(manifest=manifest_path), settings or Settings())
        echo(f"demo: Hub stand-in at {hub.url}; manifest {manifest_path}")
        lock_weights([(DEMO_MODEL_KEY, plan)], update=True, log=echo)
        echo(f"demo: pinned the weights in {plan.weights_lock_path}; the first source of the profile is dead on "
             "purpose (the run falls back to the second)")
        yield plan, parts


def _clean(workdir: Path) -> Path:
    """Remove what an earlier run left (only the built inputs cache/ and upstream/ are reused)."""
    workdir = workdir.resolve()
    for name in RUN_PARTS:
        if (workdir / name).is_dir() and not (workdir / name).is_symlink():
            shutil.rmtree(workdir / name)
        elif os.path.lexists(workdir / name):
            os.unlink(workdir / name)
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def prepare_pulled(workdir: Path, *, echo: Callable[[str], None] = lambda _: None,
                   settings: Optional[Any] = None) -> Path:
    """The demo project without the smoke test: tiny model, git source, manifest, weights lock and the weights
    pulled (verified against the lock) under ``workdir``; the Hub is stopped again. Returns the manifest path.
    ``llama-bootstrap bundle --demo`` packs this project."""
    from bootstrap.pipeline import RunOptions, run

    workdir = _clean(workdir)
    with _served_project(workdir, echo, settings) as (plan, _):
        run(plan, RunOptions(only=("pull",)), echo=echo)
    return plan.manifest_path


def run_demo(workdir: Path, *, fresh: bool = False, echo: Callable[[str], None] = lambda _: None,
             settings: Optional[Any] = None) -> DemoResult:
    """Run the whole pipeline twice against local stand-ins. Raises the first step's error."""
    from bootstrap.pipeline import RunOptions, run

    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    # Each demo shows the whole pipeline: only the built inputs (cache/, upstream/) are reused.
    workdir = _clean(workdir)
    with _served_project(workdir, echo, settings) as (plan, parts):
        first = run(plan, RunOptions(), echo=echo)
        echo("demo: running again; nothing changed, so nothing should be done")
        second = run(plan, RunOptions(), echo=echo)
    echo(f"demo: talk to the tiny model: llama-bootstrap chat --manifest {plan.manifest_path}")
    echo(f"demo: or serve it (OpenAI API on http://127.0.0.1:8000/v1): llama-bootstrap serve --manifest "
         f"{plan.manifest_path}")
    return DemoResult(str(workdir), str(plan.manifest_path), parts["build_s"], first, second)
