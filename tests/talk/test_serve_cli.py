"""`llama-bootstrap serve` as a real process: ready line, the openai client, Ctrl-C/SIGTERM, the key kept secret."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.demo.scenario import DEMO_MODEL_KEY

pytestmark = pytest.mark.torch
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

KEY = "sk-local-test-key-9f8e7d6c5b4a"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_process_answers_stops_cleanly_and_never_shows_the_key(project: Path, stop: int):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LLAMA_BOOTSTRAP_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "bootstrap", "serve", "--manifest", str(project), "--port", "0",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            env=env)
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("status") == "serving", proc.stderr.read() if proc.poll() is not None else ready
        assert ready["base_url"].startswith("http://127.0.0.1:") and ready["api_key_required"] is True
        api = openai.OpenAI(base_url=ready["base_url"], api_key=KEY, max_retries=0, timeout=120)
        reply = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=[{"role": "user", "content": "你好"}],
                                            temperature=0)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=ready["base_url"], api_key="sk-other", max_retries=0).models.list()
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert reply.choices[0].message.content.startswith("你好")
    assert proc.returncode == 0, err
    log = Path(ready["log"]).read_text(encoding="utf-8")
    assert f"{reply.id}: stop" in log and "server stopped" in log
    everything = out + err + log + "".join(p.read_text(encoding="utf-8", errors="replace")
                                           for p in project.parent.rglob("*.log"))
    assert KEY not in everything
    assert "Traceback" not in err
