"""Generation benchmark (SPEC §8): the study's one-row loop vs steertui's batched engine, in one run.

    python benchmarks/bench_generate.py            # one GPU: Llama-3.1-8B shape, random bf16 weights
    python benchmarks/bench_generate.py --tiny     # CPU smoke check of the script (< 1 minute)

No downloads: the model is a `LlamaForCausalLM` built from a Llama-3.1-8B-shaped config with random
weights created directly on the device; prompts are synthetic token ids with the study test set's
shape (rendered with a chat template, 2/3 of its rows are single-turn, 35-100 tokens, the rest
multi-turn, 90-450; replies 20-120 tokens). Both paths make exactly `--max-new-tokens` new tokens
(no early EOS) and compute the study's metrics:
- study: per item, HF `generate` (sampling, T=1, top_p=0.9, and the top_k=50 the study got implicitly)
  for one prompt at one multiplier under a steering hook, then its 3 extra forward passes (reply alone,
  BOS+chosen, BOS+rejected), then `torch.cuda.empty_cache()`; `--base-items` items after a warm-up one.
  (The study hooked every layer and stored activations; one hook here, so the baseline is if anything
  faster than the study's.)
- ours: `pipeline.generate_engine.run_batches` (the stage's own code) over `--prompts` prompts × the
  study's 21 multipliers, all metrics including the prompt-conditioned ones, top_k off (full-vocabulary
  nucleus), after a small warm-up batch.
Writes JSON to `--out` (default benchmarks/results/generate.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS_PER_REPLY = 15.0
BOS, EOT, PAD = 128000, 128009, 128004
LLAMA_8B: dict[str, Any] = {
    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 8192,
}  # fmt: skip
TINY: dict[str, Any] = {
    "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 1024, "rope_theta": 500000.0, "max_position_embeddings": 2048,
}  # fmt: skip


def log(text: str) -> None:
    print(f"[bench_generate {time.strftime('%H:%M:%S')}] {text}", flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, not the speed")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "generate.json")
    p.add_argument("--prompts", type=int, default=None, help="prompts for our path (default 24; tiny 3)")
    p.add_argument("--base-items", type=int, default=None, help="items for the study loop (default 20; tiny 2)")
    p.add_argument("--base-budget-s", type=float, default=100.0, help="stop the study loop after this long")
    p.add_argument("--layer", type=int, default=None, help="steering layer (default 15; tiny 2)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 100; tiny 8")
    p.add_argument("--batch-size", type=int, default=0, help="rows per batch for our path (0 = fit to memory)")
    p.add_argument("--profile", type=Path, default=None, help="also write a kernel breakdown of our path here")
    p.add_argument("--skip-study", action="store_true", help="skip the study loop (profiling runs)")
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also time our path without its CUDA fast path (fused kernels, graph-replayed decode)",
    )
    return p.parse_args()


def build_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    """A random-weight Llama created directly on `device` in `dtype` (no CPU round trip)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.models import quiet_transformers

    quiet_transformers()
    config = LlamaConfig(**shape, bos_token_id=BOS % shape["vocab_size"], eos_token_id=EOT % shape["vocab_size"],
                         pad_token_id=PAD % shape["vocab_size"], tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.requires_grad_(False)
    return model


def synthetic_prompts(n: int, vocab: int, tiny: bool, seed: int = 0) -> list[Any]:
    """Prompts of study-like token lengths, with chosen/rejected replies for the metrics."""
    from pipeline.generate_engine import PromptInput

    rng = np.random.default_rng(seed)
    lo = 3 if tiny else 1000
    bos, eot = BOS % vocab, EOT % vocab

    def ids(k: int) -> tuple[int, ...]:
        return tuple(int(x) for x in rng.integers(lo, vocab - lo, size=k))

    out = []
    for i in range(n):
        multi = i % 3 == 2
        length = int(rng.integers(90, 451) if multi else rng.integers(35, 101))
        reply_len = (int(rng.integers(20, 121)), int(rng.integers(20, 121)))
        if tiny:
            length, reply_len = max(length // 10, 2), (max(reply_len[0] // 10, 1), max(reply_len[1] // 10, 1))
        chosen, rejected = ids(reply_len[0]), ids(reply_len[1])
        out.append(PromptInput((bos, *ids(length - 1)), (*chosen, eot), (*rejected, eot), (bos, *chosen),
                               (bos, *rejected)))  # fmt: skip
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def study_item(model: Any, layer: int, vec: torch.Tensor, prompt: Any, mult: float, new: int, device: str) -> None:
    """One reply the study's way: generate at batch size 1, then 3 more forwards, then empty the cache."""
    from pipeline.steering import steer

    vocab = model.config.vocab_size
    ids = torch.tensor([prompt.prompt], device=device)
    with torch.no_grad(), steer(model, layer, vec, mult):
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=0.9, top_k=50,
            max_new_tokens=new, min_new_tokens=new, pad_token_id=PAD % vocab, eos_token_id=EOT % vocab,
        )  # fmt: skip
        reply = out[:, ids.shape[1] :]
        assert reply.shape[1] == new
        for seq in (reply, torch.tensor([prompt.chosen_alone], device=device),
                    torch.tensor([prompt.rejected_alone], device=device)):  # fmt: skip
            logp = model(seq).logits.float().log_softmax(-1)
            float(logp[0, :-1].gather(-1, seq[0, 1:, None]).mean())
    if device == "cuda":
        torch.cuda.empty_cache()


def run_study(model: Any, layer: int, vec: torch.Tensor, prompts: list[Any], mults: tuple[float, ...],
              args: argparse.Namespace, items: int, new: int, device: str) -> dict[str, Any]:  # fmt: skip
    log(f"study loop: warm-up, then {items} items (budget {args.base_budget_s:.0f}s)")
    study_item(model, layer, vec, prompts[0], mults[0], new, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    start = time.perf_counter()
    for i in range(items):
        t = time.perf_counter()
        study_item(model, layer, vec, prompts[i % len(prompts)], mults[(i * 5) % len(mults)], new, device)
        sync(device)
        times.append(time.perf_counter() - t)
        log(f"  study item {i + 1}/{items}: {times[-1] * 1000:.0f} ms")
        if time.perf_counter() - start > args.base_budget_s:
            log("  study loop budget reached")
            break
    return {
        "study_items": len(times),
        "study_ms_per_reply": 1000 * sum(times) / len(times),
        "study_peak_gib": _peak(device),
    }


def run_ours(engine: Any, prompts: list[Any], mults: tuple[float, ...], args: argparse.Namespace, new: int,
             device: str) -> dict[str, Any]:  # fmt: skip
    from pipeline.generate_engine import PhaseTimes, RowInput, run_batches
    from pipeline.generate_sampling import Sampling, row_seed

    sampling = Sampling(max_new_tokens=new, temperature=1.0, top_p=0.9, top_k=0, stop_ids=())
    log("ours: warm-up batch")
    warm = [RowInput(p, m, row_seed(0, p, m)) for p in range(2) for m in mults[:3]]
    warm_start = time.perf_counter()
    list(run_batches(engine, prompts, warm, Sampling(max_new_tokens=4), batch_size=len(warm)))
    sync(device)
    warm_s = time.perf_counter() - warm_start
    engine.times = PhaseTimes()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rows = [RowInput(p, m, row_seed(0, p, m)) for p in range(len(prompts)) for m in mults]
    log(f"ours: {len(prompts)} prompts x {len(mults)} multipliers = {len(rows)} replies")
    sync(device)
    start = time.perf_counter()
    sizes, outs = [], []
    for batch, batch_outs in run_batches(engine, prompts, rows, sampling, batch_size=args.batch_size):
        sizes.append(len(batch))
        outs += batch_outs
        log(f"  batch of {len(batch)} rows done at {time.perf_counter() - start:.2f}s")
    sync(device)
    seconds = time.perf_counter() - start
    finite = all(
        math.isfinite(v)
        for o in outs
        for v in (o.logprob, o.logprob_cond, o.chosen, o.rejected, o.chosen_cond, o.rejected_cond)
        if v is not None
    )
    times = engine.times
    return {
        "replies": len(rows),
        "warmup_s": warm_s,
        "ours_seconds": seconds,
        "ours_ms_per_reply": 1000 * seconds / len(rows),
        "rows_per_batch": sizes,
        "peak_gib": _peak(device),
        "phases_s": {"prefill": times.prefill, "decode": times.decode, "score": times.score},
        "decode_ms_per_step": 1000 * times.decode / max(times.steps, 1),
        "check": {"all_rows_have_max_new_tokens": all(len(o.tokens) == new for o in outs), "finite_metrics": finite},
    }


def sampling_ms(rows: int, vocab: int, dtype: torch.dtype, device: str) -> float:
    """Per-step cost of choosing the next token for `rows` rows (sort-based top-p over the full vocabulary)."""
    from pipeline.generate_sampling import Sampling, choose_tokens

    raw = (torch.randn(rows, vocab, device=device) * 1.3).to(dtype)
    u = torch.rand(rows, device=device)
    choose_tokens(raw.float(), u, Sampling(), keys=raw)
    sync(device)
    start = time.perf_counter()
    for _ in range(5):
        choose_tokens(raw.float(), u, Sampling(), keys=raw)
    sync(device)
    return 1000 * (time.perf_counter() - start) / 5


def _peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def main() -> int:
    args = parse_args()
    import transformers

    from pipeline.config import STUDY_MULTIPLIERS
    from pipeline.generate_engine import GenerationEngine

    tiny = args.tiny
    device = "cpu" if tiny else "cuda"
    if tiny:
        torch.set_num_threads(1)  # tiny ops are overhead-bound; more threads only add contention
    if device == "cuda" and not torch.cuda.is_available():
        log("CUDA is not available; run with --tiny for a CPU check")
        return 2
    shape = TINY if tiny else LLAMA_8B
    layer = args.layer if args.layer is not None else (2 if tiny else 15)
    new = args.max_new_tokens or (8 if tiny else 100)
    n_prompts = args.prompts or (3 if tiny else 24)
    items = args.base_items or (2 if tiny else 20)
    dtype = torch.bfloat16
    started = time.perf_counter()
    log(f"building a random {'tiny' if tiny else 'Llama-3.1-8B-shaped'} model on {device} ({dtype})")
    model = build_model(shape, device, dtype)
    prompts = synthetic_prompts(n_prompts, shape["vocab_size"], tiny)
    vec = torch.randn(shape["hidden_size"], generator=torch.Generator().manual_seed(1))
    vec = (vec / vec.norm() * 4.0).to(device)
    engine = GenerationEngine(model, layer, vec, pad_id=PAD % shape["vocab_size"])
    lengths = [len(p.prompt) for p in prompts]
    result: dict[str, Any] = {
        "card": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tiny": tiny,
        "model_shape": shape,
        "dtype": str(dtype).removeprefix("torch."),
        "layer": layer,
        "max_new_tokens": new,
        "prompts": n_prompts,
        "multipliers": len(STUDY_MULTIPLIERS),
        "prompt_tokens": {"min": min(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)},
        "reply_tokens_mean": sum(len(p.chosen) + len(p.rejected) for p in prompts) / (2 * len(prompts)),
        "sampling": {"temperature": 1.0, "top_p": 0.9, "top_k_ours": 0, "top_k_study": 50},
        "notes": [
            "ms_per_reply includes every metric: study = generate + 3 forwards; ours = generate + reply-alone, "
            "chosen/rejected-alone and prompt-conditioned chosen/rejected passes",
            "both paths forced to max_new_tokens new tokens; random weights make the top-p nucleus about half the "
            "vocabulary, so sampling cost is a worst case",
            "study loop: one steering hook (the study hooked every layer), so it is if anything faster than the study",
        ],
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not args.skip_study:
        result |= run_study(model, layer, vec, prompts, STUDY_MULTIPLIERS, args, items, new, device)
        log(f"study: {result['study_ms_per_reply']:.0f} ms/reply over {result['study_items']} items")
    result |= run_ours(engine, prompts, STUDY_MULTIPLIERS, args, new, device)
    if args.ablate:
        engine.fast = False
        plain = run_ours(engine, prompts, STUDY_MULTIPLIERS, args, new, device)
        engine.fast = True
        result["ablation_no_fast_path"] = {k: plain[k] for k in ("ours_ms_per_reply", "phases_s", "decode_ms_per_step")}
        log(f"without the fast path: {plain['ours_ms_per_reply']:.2f} ms/reply")
    if args.profile is not None:
        from benchmarks.profiling import profile_to

        few = argparse.Namespace(**{**vars(args), "batch_size": 0})
        profile_to(args.profile, "ours: 8 prompts x 21 multipliers",
                   lambda: run_ours(engine, prompts[:8], STUDY_MULTIPLIERS, few, new, device))  # fmt: skip
    if args.skip_study:
        result["study_ms_per_reply"] = float("nan")
    result["sampling_ms_per_step"] = sampling_ms(max(result["rows_per_batch"]), shape["vocab_size"], dtype, device)
    result["speedup"] = result["study_ms_per_reply"] / result["ours_ms_per_reply"]
    result["target_ms_per_reply"] = TARGET_MS_PER_REPLY
    result["meets_target"] = (not tiny) and result["ours_ms_per_reply"] <= TARGET_MS_PER_REPLY
    result["wall_s"] = time.perf_counter() - started
    log(f"ours: {result['ours_ms_per_reply']:.2f} ms/reply, speedup {result['speedup']:.1f}x, phases "
        f"{ {k: round(v, 2) for k, v in result['phases_s'].items()} }, peak {result['peak_gib']} GiB")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
