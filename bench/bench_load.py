"""``smoke``'s load time as a multiple of the time it takes just to read the weights from disk.

On a GPU box, loading the 7B chat model is bounded by the disk: 13.5 GB of fp16 safetensors. This
benchmark measures the multiple ``load_s / read_s`` on a 7B-*shaped* model that fits here: the tiny
model's tokenizer with Llama layers of width 2048 (8 layers, ~0.4 B parameters, ~0.8 GB of fp16
safetensors, random weights; built once into the bench cache).

- ``read_s``: a child process reads every ``*.safetensors`` file once, sequentially, in 8 MiB
  blocks: the disk-read limit.
- ``load_s``: what ``llama-bootstrap smoke --json`` reports (``smoke.precision: fp16``,
  ``max_new_tokens: 1``): tokenizer + ``from_pretrained`` until the model is ready.

Cold: the page cache is dropped (``/proc/sys/vm/drop_caches``, root only) before each read and
each load; warm: the files are in the page cache. Without permission to drop caches only the warm
pair is measured (and said so).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    bench_cache_dir,
    bench_env,
    cli_path,
    median,
    model_dir,
    pulled_project,
    run_child,
    say,
    spread,
    tiny_model,
    workspace,
)

SHAPE = {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 8, "num_attention_heads": 16,
         "num_key_value_heads": 16}
READER = """\
import sys, time
from pathlib import Path
buf = bytearray(8 << 20)
t0 = time.perf_counter()
n = 0
for path in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with open(path, "rb", buffering=0) as fh:
        while True:
            got = fh.readinto(buf)
            if not got:
                break
            n += got
print(time.perf_counter() - t0, n)
"""


def shaped_model(cache: Path) -> Path:
    """The 7B-shaped model (random fp16 weights, the tiny model's tokenizer), built once."""
    dest = cache / "shaped-2048x8"
    if (dest / "model.safetensors").is_file():
        return dest
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = tiny_model(cache)
    say(f"load: building the 7B-shaped model into {dest} (once)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = json.loads((tiny / "config.json").read_text(encoding="utf-8"))
    config.update(SHAPE, torch_dtype="float16")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config)).to(torch.float16)
    model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="4GB")
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        shutil.copyfile(tiny / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)  # an incomplete earlier build
    os.replace(tmp, dest)
    return dest


def drop_caches() -> bool:
    """Empty the page cache (root only). False where that is not permitted."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1\n")
        return True
    except OSError:
        return False


def run(quick: bool = False) -> List[Row]:
    reps = 2 if quick else 3
    model = shaped_model(bench_cache_dir())
    size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    cli = cli_path()
    with workspace("load") as ws:
        env = bench_env(ws / "hf-home")
        manifest = pulled_project(ws, model, env, size_gb=size / 1e9, max_new_tokens=1, precision="fp16")
        reader = ws / "read.py"
        reader.write_text(READER, encoding="utf-8")
        folder = model_dir(manifest.parent)

        def read_s() -> float:
            child = run_child([sys.executable, reader, folder], env=env).check()
            seconds, n = child.stdout.split()
            assert int(n) == size, (n, size)
            return float(seconds)

        def load() -> Dict:
            child = run_child([cli, "smoke", "--manifest", manifest, "--json"], env=env).check()
            return child.json()["steps"][0]["result"]

        cold = drop_caches()
        say(f"load: {size / 1e9:.2f} GB of fp16 safetensors; {reps} x (read, load) "
            f"{'cold and warm' if cold else 'warm only (cannot drop the page cache here)'}")
        samples: Dict[str, List[float]] = {"read_cold": [], "load_cold": [], "read_warm": [], "load_warm": []}
        last: Optional[Dict] = None
        load()  # warm-up: bytecode, the tokenizer
        for _ in range(reps):
            if cold:
                drop_caches()
                samples["read_cold"].append(read_s())
                drop_caches()
                last = load()
                samples["load_cold"].append(last["load_s"])
            read_s()  # into the page cache
            samples["read_warm"].append(read_s())
            last = load()
            samples["load_warm"].append(last["load_s"])
        if cold:
            drop_caches()  # leave no 1 GB of our files behind in the cache

    rows: List[Row] = []
    for kind in (("cold", "warm") if cold else ("warm",)):
        r, lo = median(samples[f"read_{kind}"]), median(samples[f"load_{kind}"])
        rows.append(Row(f"smoke load_s / disk read ({kind} cache, {size / 1e9:.2f} GB fp16, 7B-shaped layers)",
                        f"{lo / r:.2f}x", "info (README: what to expect)", None, [
                            f"read {r:.3f} s ({spread(samples[f'read_{kind}'])}, {size / r / 1e9:.2f} GB/s), "
                            f"load_s {lo:.3f} s ({spread(samples[f'load_{kind}'])})",
                        ]))
    if last is not None:
        rows[-1].notes.append(f"smoke reports: load_s {last['load_s']}, ttft_s {last['ttft_s']}, precision "
                              f"{last['precision']} on {last['device']}, peak RSS "
                              f"{last['peak_memory_bytes'] / 1e6:.0f} MB")
    return rows


if __name__ == "__main__":
    from bench.common import main_for

    sys.exit(main_for(run))
