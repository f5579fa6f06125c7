"""``llama-bootstrap serve`` vs a direct ``generate``: time to first token and tokens/s (issue 15).

Both sides run the tiny model (fp32, CPU) from the same pulled folder, greedy, on the same
chat-formatted prompt, for exactly ``N`` new tokens (a copy of the model that never writes ``</s>``,
so every run generates all of them). Each side is one long-lived process, warmed up first:

- direct: a plain transformers script (AutoTokenizer + AutoModelForCausalLM, ``generate`` with a
  ``TextIteratorStreamer`` in a thread, as a streaming app would); on each line of stdin it generates
  once and reports the time from the call to the first streamed text and to the end.
- server: ``llama-bootstrap serve --port 0``; this process sends ``POST /v1/chat/completions`` with
  ``stream: true`` over ``http.client`` and measures from sending the request to the first chunk
  with content (time to first token) and to ``data: [DONE]``; tokens/s = the ``usage`` count ÷ that.

Runs alternate A B B A ...; medians of at least 5 runs. Both processes use one torch thread
(``OMP_NUM_THREADS=1``): the tiny model's matrices gain nothing from more, and two spinning OpenMP
threads on 2 shared cores made the speed depend on whatever else ran. Targets: the server keeps >= 90 % of the
direct tokens/s and adds <= 50 ms to the time to first token.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    abba,
    bench_cache_dir,
    bench_env,
    cli_path,
    load_average,
    main_for,
    median,
    model_dir,
    pulled_project,
    say,
    spread,
    tiny_model,
    workspace,
)

TPS_TARGET = 0.90  # server tokens/s >= 90 % of direct
TTFT_TARGET_S = 0.050
NEW_TOKENS = 200
DIRECT = """\
import json, sys, threading, time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

folder, text, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
model.eval()
inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def once():
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = {}

    def work():
        with torch.inference_mode():
            out["ids"] = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, pad_token_id=pad,
                                        streamer=streamer)

    t0 = time.perf_counter()
    thread = threading.Thread(target=work)
    thread.start()
    first = None
    for piece in streamer:
        if piece and first is None:
            first = time.perf_counter() - t0
    thread.join()
    total = time.perf_counter() - t0
    return {"ttft_s": first, "total_s": total, "tokens": int(out["ids"].shape[1] - inputs["input_ids"].shape[1])}


print(json.dumps({"ready": True}), flush=True)
for _ in sys.stdin:
    print(json.dumps(once()), flush=True)
"""


def never_ending(source: Path, dest: Path) -> Path:
    """The tiny model without </s> and with a long context: it always generates max_new_tokens."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    for name in ("config.json", "generation_config.json"):
        doc = json.loads((dest / name).read_text(encoding="utf-8"))
        doc["eos_token_id"] = None
        if name == "config.json":
            doc["max_position_embeddings"] = 4096
        (dest / name).write_text(json.dumps(doc), encoding="utf-8")
    return dest


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ask_server(port: int, prompt: str) -> Dict[str, float]:
    body = json.dumps({"model": "llama2-chinese-tiny-demo", "messages": [{"role": "user", "content": prompt}],
                       "temperature": 0, "max_tokens": NEW_TOKENS, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    first, tokens = None, 0
    for raw in resp:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            break
        doc = json.loads(line[6:])
        if doc.get("usage"):
            tokens = doc["usage"]["completion_tokens"]
        elif first is None and doc["choices"] and doc["choices"][0]["delta"].get("content"):
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    conn.close()
    return {"ttft_s": first, "total_s": total, "tokens": tokens}


def run(quick: bool = False) -> List[Row]:
    from bootstrap.manifest import CHAT_TEMPLATE, DEFAULT_PROMPT
    from bootstrap.smoke import chat_prompt

    reps = 5 if quick else 9
    say("serve: building/reusing the tiny model")
    model = tiny_model(bench_cache_dir())
    with workspace("serve") as ws:
        # One torch thread on both sides: on 2 shared cores two spinning OpenMP threads per process make
        # every run's speed depend on the neighbours; the tiny model's matrices gain nothing from two.
        env = bench_env(ws / "hf-home", OMP_NUM_THREADS="1")
        manifest = pulled_project(ws, never_ending(model, ws / "never-ending"), env, size_gb=0.001)
        folder = model_dir(manifest.parent)
        script = ws / "direct.py"
        script.write_text(DIRECT, encoding="utf-8")
        direct = subprocess.Popen([sys.executable, str(script), str(folder), chat_prompt(CHAT_TEMPLATE, DEFAULT_PROMPT),
                                   str(NEW_TOKENS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        server = subprocess.Popen([cli_path(), "serve", "--manifest", str(manifest), "--port", "0", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert json.loads(direct.stdout.readline())["ready"]
            port = int(json.loads(server.stdout.readline())["base_url"].rsplit(":", 1)[1].split("/")[0])

            def side(name: str) -> Dict[str, float]:
                pid = direct.pid if name == "A" else server.pid
                cpu0 = cpu_s(pid)
                if name == "A":
                    direct.stdin.write("go\n")
                    direct.stdin.flush()
                    sample = json.loads(direct.stdout.readline())
                else:
                    sample = ask_server(port, DEFAULT_PROMPT)
                sample["cpu_s"] = cpu_s(pid) - cpu0
                return sample

            say(f"serve: warm-up, then {reps} x (direct generate, through the server), {NEW_TOKENS} tokens each, "
                f"A B B A order; load {load_average()}")
            side("A")
            side("B")
            samples: Dict[str, List[Dict[str, float]]] = {"A": [], "B": []}
            for _, name in abba(reps):
                samples[name].append(side(name))
        finally:
            direct.kill()
            server.terminate()
            server.wait(30)
            direct.wait(30)
    return rows(samples)


def rows(samples: Dict[str, List[Dict[str, float]]]) -> List[Row]:
    def series(name: str) -> Tuple[List[float], List[float]]:
        ttft = [s["ttft_s"] for s in samples[name]]
        tps = [s["tokens"] / s["total_s"] for s in samples[name]]
        return ttft, tps

    assert all(s["tokens"] == NEW_TOKENS for side in samples.values() for s in side), samples
    d_ttft, d_tps = series("A")
    s_ttft, s_tps = series("B")
    ratio = median(s_tps) / median(d_tps)
    extra = median(s_ttft) - median(d_ttft)
    cpu = {name: median([s["cpu_s"] / s["tokens"] * 1000 for s in samples[name]]) for name in samples}
    return [
        Row("serve tokens/s vs direct generate", f"{ratio:.3f}x", f">= {TPS_TARGET:.2f}x", ratio >= TPS_TARGET, [
            f"direct {median(d_tps):.1f} tok/s ({spread(d_tps)}), through the server {median(s_tps):.1f} tok/s "
            f"({spread(s_tps)}); {NEW_TOKENS} tokens, {len(d_tps)} + {len(s_tps)} runs",
            f"CPU per token (the generating process, all threads): direct {cpu['A']:.2f} ms, server "
            f"{cpu['B']:.2f} ms ({cpu['B'] / cpu['A']:.2f}x)"]),
        Row("serve time to first token, added", f"{extra * 1000:.1f} ms", f"<= {TTFT_TARGET_S * 1000:.0f} ms",
            extra <= TTFT_TARGET_S, [
                f"direct {median(d_ttft) * 1000:.1f} ms ({spread(d_ttft)} s), through the server "
                f"{median(s_ttft) * 1000:.1f} ms ({spread(s_ttft)} s), request sent to first content chunk"]),
    ]


if __name__ == "__main__":
    sys.exit(main_for(run))
