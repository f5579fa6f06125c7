"""``llama-bootstrap smoke`` on the tiny model against a plain transformers script (target <= 1.15x).

Both load the same pulled folder and generate greedily from the same chat-formatted prompt
(``add_special_tokens=False``) with the same ``max_new_tokens``, in fp32 on the CPU; both are
fresh processes, in A B B A order after a warm-up each. The answers must be equal. Ours also
reports load_s, ttft_s and tokens_per_s, shown in the notes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    abba,
    bench_cache_dir,
    bench_env,
    cli_path,
    fmt_ratio,
    fmt_s,
    load_average,
    main_for,
    median,
    model_dir,
    pulled_project,
    run_child,
    say,
    spread,
    tiny_model,
    workspace,
)

RATIO_TARGET = 1.15
BASELINE = """\
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, text, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
model.eval()
inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
with torch.inference_mode():
    out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, pad_token_id=pad)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
"""


def run(quick: bool = False) -> List[Row]:
    from bootstrap.manifest import CHAT_TEMPLATE, DEFAULT_PROMPT
    from bootstrap.smoke import chat_prompt

    reps = 3 if quick else 4
    max_new = 24
    cli = cli_path()
    say("smoke: building/reusing the tiny model")
    model = tiny_model(bench_cache_dir())
    with workspace("smoke") as ws:
        env = bench_env(ws / "hf-home")
        manifest = pulled_project(ws, model, env, size_gb=0.001, max_new_tokens=max_new)
        root = manifest.parent
        baseline = ws / "baseline.py"
        baseline.write_text(BASELINE, encoding="utf-8")
        text = chat_prompt(CHAT_TEMPLATE, DEFAULT_PROMPT)
        folder = model_dir(root)

        def side(name: str):
            if name == "A":
                return run_child([sys.executable, baseline, folder, text, str(max_new)], env=env).check()
            return run_child([cli, "smoke", "--manifest", manifest, "--json"], env=env).check()

        say(f"smoke: warm-up, then {reps} x (plain script, ours) in A B B A order; load {load_average()}")
        side("A")
        side("B")
        times: Dict[str, List[float]] = {"A": [], "B": []}
        answers: Dict[str, str] = {}
        result: Dict = {}
        for _, name in abba(reps):
            child = side(name)
            times[name].append(child.wall_s)
            if name == "A":
                answers["A"] = child.stdout.strip()
            else:
                result = child.json()["steps"][0]["result"]
                answers["B"] = result["answer"].strip()
    a, b = median(times["A"]), median(times["B"])
    same = answers["A"] == answers["B"]
    return [Row("smoke vs plain transformers script", fmt_ratio(b / a), f"<= {RATIO_TARGET}x",
                b / a <= RATIO_TARGET and same, [
                    f"plain {fmt_s(a)} ({spread(times['A'])}), ours {fmt_s(b)} ({spread(times['B'])}); "
                    f"same answer: {same} ({answers['B']!r})",
                    f"ours reports load_s {result['load_s']}, ttft_s {result['ttft_s']}, tokens_per_s "
                    f"{result['tokens_per_s']} ({result['new_tokens']} tokens, {result['precision']} on "
                    f"{result['device']}, peak RSS {result['peak_memory_bytes'] / 1e6:.0f} MB)",
                ])]


if __name__ == "__main__":
    sys.exit(main_for(run))
