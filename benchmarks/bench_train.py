"""BiPO training speed and memory: the study's recipe vs steertui's trainer, in the same run.

Llama-3.1-8B shape with random bf16 weights on one GPU, batch 4 pairs, sequences of 256 tokens
(prompt 128 + answer 128, as chosen and as rejected). The study's recipe (second model copy as the
reference, recomputed every step; two full sequences per pair; logits at every position) against
`pipeline.train_engine.Engine` (reference cached once; the layers below L cached; packed pairs; logits
only at answer positions). Both start from the same zero vector and take the same batches and signs, so
their first losses must agree.

    python benchmarks/bench_train.py                 # one GPU -> benchmarks/results/train.json
    python benchmarks/bench_train.py --tiny          # CPU check of the script (seconds)
    torchrun --nproc_per_node 2 benchmarks/bench_train.py --fsdp   # FSDP2 on 2 GPUs -> train_fsdp.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from pipeline.bipo_reference import StudyRecipe
from pipeline.config import TrainConfig
from pipeline.models import LoadedModel
from pipeline.progress import NullReporter
from pipeline.train import TrainJob
from pipeline.train_data import Example
from pipeline.train_dist import init_dist, shard_model
from pipeline.train_engine import Engine

LLAMA_8B: dict[str, Any] = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 8192,
}  # fmt: skip
TINY: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 1024,
}  # fmt: skip


def log(msg: str) -> None:
    print(f"[bench_train] {msg}", flush=True)


def build_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    import transformers

    config = transformers.LlamaConfig(**shape, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(dtype)
    model.eval().requires_grad_(False)
    return model


def synthetic(n: int, prompt: int, answer: int, vocab: int, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> tuple[int, ...]:
        return tuple(torch.randint(3, vocab, (k,), generator=g).tolist())

    return [Example(i, ids(prompt), ids(answer), ids(answer)) for i in range(n)]


def make_engine(lm: LoadedModel, layer: int, batch: int, root: Path, d: Any, *, compile: bool = False) -> Engine:
    cfg = TrainConfig(epochs=2, batch_size=batch, warmup_steps=0, lr=5e-4, compile=compile)
    job = TrainJob(root=root, behavior="bench", model="bench", layer=layer, system_prompt="", train=cfg)
    return Engine(lm, job, d, NullReporter())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def loss_agreement(engine: Engine, recipe: StudyRecipe, examples: list[Example], steps: int, pad: int) -> list[float]:
    """Same zero start, batches, signs and AdamW steps through both recipes; per-step |Δloss|."""
    dev = engine.lm.device
    v_ours = torch.nn.Parameter(torch.zeros(engine.lm.hidden_size, device=dev))
    v_study = recipe.steering.vector
    opt_o = torch.optim.AdamW([v_ours], lr=5e-3, weight_decay=0.0)
    opt_s = torch.optim.AdamW([v_study], lr=5e-3, weight_decay=0.0)
    diffs = []
    for step in range(steps):
        idx = list(range(step * 4, step * 4 + 4))
        sign = 1.0 if step % 2 == 0 else -1.0
        ours = engine._loss(engine.train, idx, v_ours, torch.full((4,), sign))
        ours.loss.backward()
        study = recipe.loss([examples[i] for i in idx], sign, pad)
        study.loss.backward()
        diffs.append(abs(ours.loss.item() - study.loss.item()))
        for opt in (opt_o, opt_s):
            opt.step()
            opt.zero_grad(set_to_none=True)
    return diffs


def time_ours(engine: Engine, examples: list[Example], device: str) -> tuple[float, float, int, torch.Tensor]:
    """(one-time reference/prefix pass s, s per step over a steady-state epoch, steps, trained vector)."""
    sync(device)
    t0 = time.perf_counter()
    engine.prepare_examples(examples, examples[:8])
    sync(device)
    prep = time.perf_counter() - t0
    vector = torch.nn.Parameter(torch.zeros(engine.lm.hidden_size, device=device))
    opt, sched = engine.optimizer(vector)
    engine.train_epoch(1, vector, opt, sched)  # warm-up epoch
    sync(device)
    t0 = time.perf_counter()
    before = engine.global_step
    engine.train_epoch(2, vector, opt, sched)
    sync(device)
    steps = engine.global_step - before
    return prep, (time.perf_counter() - t0) / steps, steps, vector.detach()


def time_study(recipe: StudyRecipe, examples: list[Example], steps: int, pad: int, device: str) -> float:
    opt = torch.optim.AdamW([recipe.steering.vector], lr=5e-4, weight_decay=0.0)
    for k in range(steps + 2):
        if k == 2:
            sync(device)
            t0 = time.perf_counter()
        batch = examples[(k * 4) % len(examples) :][:4]
        recipe.loss(batch, 1.0 if k % 2 == 0 else -1.0, pad).loss.backward()
        torch.nn.utils.clip_grad_norm_([recipe.steering.vector], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return (time.perf_counter() - t0) / steps


def profile_steps(path: Path, engine: Engine, recipe: StudyRecipe, examples: list[Example]) -> None:
    from benchmarks.profiling import profile_to

    dev = engine.lm.device
    vec = torch.nn.Parameter(torch.zeros(engine.lm.hidden_size, device=dev))

    def ours() -> None:
        for step in range(4):
            idx = list(range(step * 4, step * 4 + 4))
            engine._loss(engine.train, idx, vec, torch.full((4,), 1.0)).loss.backward()

    def study() -> None:
        for step in range(4):
            recipe.loss(examples[step * 4 : step * 4 + 4], 1.0, 0).loss.backward()

    profile_to(path, "ours: 4 micro-batches fwd+bwd", ours)
    profile_to(path, "study: 4 micro-batches fwd+bwd", study)


def single(args: argparse.Namespace) -> dict[str, Any]:
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    shape = TINY if args.tiny else LLAMA_8B
    layer = 1 if args.tiny else 15
    plen, alen = (32, 32) if args.tiny else (128, 128)
    examples = synthetic(args.pairs, plen, alen, shape["vocab_size"], seed=1)
    model = build_model(shape, device, dtype)
    lm = LoadedModel("bench", model, SimpleNamespace(pad_token_id=0), device, dtype)
    d = init_dist(device)
    with tempfile.TemporaryDirectory() as tmp:
        reset_peak(device)
        engine = make_engine(lm, layer, 4, Path(tmp), d)
        prep, ours_s, steps, _ = time_ours(engine, examples, device)
        ours_peak = peak_gib(device)
        log(f"ours: {ours_s * 1000:.1f} ms/step over {steps} steps, prep {prep:.2f}s, peak {ours_peak:.2f} GiB")
        compiled_s = compiled_peak = None
        if device == "cuda" and not args.no_compile:
            try:
                reset_peak(device)
                compiled = make_engine(lm, layer, 4, Path(tmp), d, compile=True)
                compiled_s = time_ours(compiled, examples, device)[1]
                compiled_peak = peak_gib(device)
                log(f"ours with train.compile: {compiled_s * 1000:.1f} ms/step, peak {compiled_peak:.2f} GiB")
            except Exception as exc:  # report, do not lose the rest of the run
                log(f"train.compile failed: {type(exc).__name__}: {exc}")
            finally:
                compiled = None
                torch.cuda.empty_cache()
        reference = copy.deepcopy(model)
        vector = torch.nn.Parameter(torch.zeros(shape["hidden_size"], device=device))
        recipe = StudyRecipe(model, reference, layer, vector, beta=0.1)
        reset_peak(device)
        study_s = time_study(recipe, examples, steps, 0, device)
        study_peak = peak_gib(device)
        log(f"study: {study_s * 1000:.1f} ms/step, peak {study_peak:.2f} GiB")
        recipe.steering.vector.data.zero_()
        diffs = loss_agreement(engine, recipe, examples, 5, 0)
        if args.profile is not None:
            profile_steps(args.profile, engine, recipe, examples)
    return {
        "card": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "shape": "tiny" if args.tiny else "Llama-3.1-8B (random bf16 weights)",
        "layer": layer, "batch_pairs": 4, "seq_len": plen + alen, "train_pairs": len(examples),
        # ours = the default path: train.compile is on by default on CUDA, so the compiled step when it ran
        "study_s_per_step": study_s, "ours_s_per_step": compiled_s or ours_s,
        "speedup": study_s / (compiled_s or ours_s),
        "study_peak_gib": study_peak, "ours_peak_gib": ours_peak, "ours_compiled_peak_gib": compiled_peak,
        "memory_ratio": ours_peak / study_peak if study_peak else None,
        "ours_one_time_prep_s": prep,
        "ours_eager_s_per_step": ours_s, "speedup_eager": study_s / ours_s,
        "loss_diffs_first_steps": diffs, "max_abs_loss_diff": max(diffs),
        "torch": torch.__version__,
    }  # fmt: skip


def fsdp(args: argparse.Namespace) -> dict[str, Any] | None:
    """FSDP2 across the launched ranks: steps/s, and the saved vector is whole."""
    import transformers

    from pipeline.vectors import VectorMeta, load_vector, save_vector

    device = "cuda"
    d = init_dist(device)
    dev = d.device(device)
    torch.cuda.set_device(dev)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_8B)).to(torch.bfloat16)
    shard_model(model, model.model.layers, dev)
    model.to_empty(device=dev)
    torch.manual_seed(d.rank)
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            local.fill_(1.0) if name.endswith("norm.weight") else local.normal_(0.0, 0.02)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config).to(dev)
    model.eval().requires_grad_(False)
    model.unshard()
    lm = LoadedModel("bench", model, SimpleNamespace(pad_token_id=0), dev, torch.bfloat16)
    examples = synthetic(args.pairs, 128, 128, LLAMA_8B["vocab_size"], seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(lm, 15, 4, Path(tmp), d)
        reset_peak(dev)
        prep, s_step, steps, trained = time_ours(engine, examples, dev)
        vec_path = Path(tmp) / "vec_ep2_layer15.pt"
        if d.main:
            v = trained.float().cpu()
            save_vector(vec_path, v, VectorMeta("bench", 15, 2, 4096, float(v.norm())))
            saved = load_vector(vec_path, hidden_size=4096)
            whole = {"numel": saved.numel(), "norm": float(saved.norm()), "nonzero": int((saved != 0).sum())}
    if not d.main:
        return None
    return {
        "card": torch.cuda.get_device_name(), "world_size": d.world, "shape": "Llama-3.1-8B (random bf16)",
        "layer": 15, "batch_pairs_per_rank": 4, "seq_len": 256, "s_per_step": s_step, "steps_per_s": 1 / s_step,
        "steps_timed": steps, "one_time_prep_s": prep, "peak_gib_rank0": peak_gib(dev), "saved_vector": whole,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (checks the script)")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 run under torchrun/accelerate")
    parser.add_argument("--pairs", type=int, default=64, help="synthetic training pairs (an epoch = pairs/4 steps)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="also write kernel breakdowns of both recipes here")
    parser.add_argument("--no-compile", action="store_true", help="skip the train.compile variant")
    args = parser.parse_args()
    result = fsdp(args) if args.fsdp else single(args)
    if result is None:
        return
    name = "train_fsdp.json" if args.fsdp else ("train_tiny.json" if args.tiny else "train.json")
    out = args.out or Path(__file__).parent / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(json.dumps(result))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
