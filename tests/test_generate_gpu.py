"""The engine's CUDA fast path (Triton decode attention, fused kernels, CUDA-graph decode) on a GPU.

Run with `pytest --rungpu tests/test_generate_gpu.py` on a machine with CUDA and Triton.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipeline.generate_engine import GenerationEngine, PromptInput, RowInput, RowOutput
from pipeline.generate_sampling import Sampling, row_seed

pytestmark = pytest.mark.gpu

METRICS = ("logprob", "logprob_cond", "chosen", "rejected", "chosen_cond", "rejected_cond")


def _model(dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=512, vocab_size=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval().requires_grad_(False)


def _prompts(n: int) -> list[PromptInput]:
    gen = torch.Generator().manual_seed(5)

    def ids(k: int) -> tuple[int, ...]:
        return tuple(int(x) for x in torch.randint(3, 1000, (k,), generator=gen))

    out = []
    for i in range(n):
        c, r = ids(4 + i % 5), ids(7 - i % 3)
        out.append(PromptInput((1, *ids(5 + 7 * i)), (*c, 2), (*r, 2), (1, *c), (1, *r)))
    return out


def _run(model: Any, fast: bool, sampling: Sampling) -> list[RowOutput]:
    vec = torch.randn(256, generator=torch.Generator().manual_seed(1)).cuda()
    engine = GenerationEngine(model, 1, vec / vec.norm() * 4, pad_id=0, fast=fast)
    rows = [RowInput(p, m, row_seed(0, p, m)) for p in range(5) for m in (-2.0, 0.0, 1.5)]
    return engine.generate(_prompts(5), rows, sampling)


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def test_triton_decode_attention_matches_the_reference() -> None:
    from pipeline.generate_kernels import _kernel_applies, decode_attention, decode_attention_reference

    gen = torch.Generator(device="cuda").manual_seed(0)
    rows, heads, kv_heads, slots, dim = 37, 32, 8, 300, 128
    q = torch.randn(rows, heads, 1, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(rows, kv_heads, slots, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
    v = torch.randn(rows, kv_heads, slots, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
    start = torch.randint(0, 200, (rows,), device="cuda", generator=gen, dtype=torch.int32)
    end = torch.tensor(263, device="cuda", dtype=torch.int32)
    assert _kernel_applies(q)
    out = decode_attention(q, k, v, start, end, dim**-0.5).float()
    ref = decode_attention_reference(q.float(), k.float(), v.float(), start, end, dim**-0.5)
    assert torch.isfinite(out).all()
    assert float((out - ref).norm() / ref.norm()) < 1e-2


@pytest.mark.parametrize("greedy", [True, False])
def test_fast_path_equals_the_plain_path_in_fp32(greedy: bool) -> None:
    """Fused kernels and graph replay change nothing (fp32: the Triton kernel is not used there)."""
    model = _model(torch.float32)
    sampling = Sampling(max_new_tokens=12, greedy=greedy, stop_ids=(2, 7))
    fast, plain = _run(model, True, sampling), _run(model, False, sampling)
    for a, b in zip(fast, plain, strict=True):
        assert a.tokens == b.tokens
        for name in METRICS:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None) and (x is None or abs(x - y) < 1e-4), name


def test_fast_path_in_bf16_stays_close_to_the_plain_path() -> None:
    """bf16 with the Triton kernel: prompt metrics agree to bf16 rounding, most greedy replies match."""
    model = _model(torch.bfloat16)
    sampling = Sampling(max_new_tokens=12, greedy=True)
    fast, plain = _run(model, True, sampling), _run(model, False, sampling)
    for a, b in zip(fast, plain, strict=True):
        assert abs(a.chosen_cond - b.chosen_cond) < 0.05 and abs(a.rejected_cond - b.rejected_cond) < 0.05
    same = sum(a.tokens == b.tokens for a, b in zip(fast, plain, strict=True))
    assert same >= 0.8 * len(fast)
