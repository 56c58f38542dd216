"""The batched generation engine: batch == alone, == the obvious HF computation, and seeded sampling."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipeline.chat import stop_token_ids
from pipeline.data import DPOPair, Message
from pipeline.errors import ModelLoadError, VectorError
from pipeline.generate import tokenize_pair
from pipeline.generate_engine import GenerationEngine, PromptInput, RowInput, RowOutput
from pipeline.generate_model import Stack, check_stack
from pipeline.generate_sampling import Sampling, choose_tokens, row_seed, row_uniforms
from tests.generate_support import CONVERSATIONS, reference_row

pytestmark = pytest.mark.usefixtures("one_torch_thread")


METRICS = ("logprob", "logprob_cond", "chosen", "rejected", "chosen_cond", "rejected_cond")


def _prompts(lm: Any, n: int) -> list[PromptInput]:
    pairs = [
        DPOPair(i, (Message("user", q),), c, r) for i, (q, c, r) in enumerate(CONVERSATIONS[:n])
    ]  # fmt: skip
    return [tokenize_pair(p, lm.tokenizer, "You are a conversational assistant.") for p in pairs]


def _vector(lm: Any, norm: float = 4.0, seed: int = 0) -> torch.Tensor:
    vec = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(seed))
    out: torch.Tensor = vec / vec.norm() * norm
    return out


def _assert_same(a: RowOutput, b: RowOutput, tol: float = 1e-4) -> None:
    assert a.tokens == b.tokens
    for name in METRICS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert abs(x - y) < tol, (name, x, y)


def _batch_vs_alone(lm: Any, layer: int, n_prompts: int, mults: list[float], sampling: Sampling) -> list[RowOutput]:
    prompts = _prompts(lm, n_prompts)
    engine = GenerationEngine(lm.model, layer, _vector(lm), pad_id=lm.tokenizer.pad_token_id)
    # rows interleave prompts and multipliers, so the batch really is mixed
    rows = [RowInput(p, m, row_seed(0, p, m)) for m in mults for p in range(n_prompts)]
    together = engine.generate(prompts, rows, sampling)
    for row, out in zip(rows, together, strict=True):
        _assert_same(engine.generate(prompts, [row], sampling)[0], out)
    return together


def test_mixed_batch_rows_equal_rows_alone_tiny(tiny: Any) -> None:
    sampling = Sampling(max_new_tokens=10, greedy=True, stop_ids=tuple(stop_token_ids(tiny.tokenizer)))
    outs = _batch_vs_alone(tiny, 2, 4, [-2.0, 0.0, 1.5], sampling)
    assert len({tuple(o.tokens) for o in outs}) > 1


def test_mixed_batch_rows_equal_rows_alone_smollm2(smollm2: Any) -> None:
    sampling = Sampling(max_new_tokens=8, greedy=True, stop_ids=tuple(stop_token_ids(smollm2.tokenizer)))
    outs = _batch_vs_alone(smollm2, 12, 2, [-6.0, 0.0, 6.0], sampling)
    assert any(o.tokens != outs[0].tokens for o in outs[1:])


def test_decode_attention_reads_each_rows_own_slots() -> None:
    """Row i attends to slots [start_i, end) exactly as full attention over those slots alone would."""
    from pipeline.generate_kernels import decode_attention

    gen = torch.Generator().manual_seed(3)
    rows, heads, kv_heads, slots, dim = 3, 6, 2, 9, 8
    q = torch.randn(rows, heads, 1, dim, generator=gen)
    k = torch.randn(rows, kv_heads, slots, dim, generator=gen)
    v = torch.randn(rows, kv_heads, slots, dim, generator=gen)
    start, end = torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor(7, dtype=torch.int32)
    out = decode_attention(q, k, v, start, end, dim**-0.5)
    for i in range(rows):
        keys = k[i, :, int(start[i]) : 7].repeat_interleave(heads // kv_heads, 0)
        values = v[i, :, int(start[i]) : 7].repeat_interleave(heads // kv_heads, 0)
        ref = torch.nn.functional.scaled_dot_product_attention(q[i], keys, values)  # (heads, 1, dim)
        assert torch.allclose(out[i, 0], ref[:, 0], atol=1e-5)


def test_sampled_rows_do_not_depend_on_their_batch(tiny: Any) -> None:
    sampling = Sampling(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50)
    outs = _batch_vs_alone(tiny, 1, 3, [-1.0, 0.0, 1.0], sampling)
    assert len({tuple(o.tokens) for o in outs}) == len(outs)  # different seeds, different samples


def test_engine_matches_hf_generate_and_forwards_under_the_hook(tiny: Any) -> None:
    """The engine's tokens and every metric equal the obvious batch-of-one HF computation."""
    prompts, vec, layer = _prompts(tiny, 3), _vector(tiny), 1
    sampling = Sampling(max_new_tokens=9, greedy=True, stop_ids=tuple(stop_token_ids(tiny.tokenizer)))
    engine = GenerationEngine(tiny.model, layer, vec, pad_id=tiny.tokenizer.pad_token_id)
    rows = [RowInput(p, m, 0) for p in range(3) for m in (-3.0, 0.0, 2.0)]
    for row, out in zip(rows, engine.generate(prompts, rows, sampling), strict=True):
        ref = reference_row(tiny, layer, vec, prompts[row.prompt], row.multiplier, sampling.max_new_tokens)
        assert out.tokens == ref["tokens"]
        for name in METRICS:
            assert out.__dict__[name] == pytest.approx(ref[name], abs=1e-4), name


def test_stop_token_ends_a_row_and_is_kept(tiny: Any) -> None:
    prompts = _prompts(tiny, 2)
    engine = GenerationEngine(tiny.model, 1, _vector(tiny), pad_id=tiny.tokenizer.pad_token_id)
    free = engine.generate(prompts, [RowInput(0, 0.0, 1)], Sampling(max_new_tokens=6, greedy=True))[0]
    stop = free.tokens[2]
    cut = engine.generate(prompts, [RowInput(0, 0.0, 1)], Sampling(max_new_tokens=6, greedy=True, stop_ids=(stop,)))
    assert cut[0].tokens == free.tokens[: free.tokens.index(stop) + 1]


def test_greedy_top_k_and_top_p_limits() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 4.9]])
    u = torch.tensor([0.99, 0.99])
    assert choose_tokens(logits, u, Sampling(greedy=True)).tolist() == [1, 0]
    assert choose_tokens(logits, u, Sampling(top_k=1)).tolist() == [1, 0]
    assert choose_tokens(logits, u, Sampling(top_p=1e-6)).tolist() == [1, 0]


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (5, 0.9), (3, 1.0), (0, 1.0), (50, 0.5)])
def test_sampling_equals_sampling_from_the_masked_renormalised_distribution(top_k: int, top_p: float) -> None:
    """Inverse-CDF over the kept prefix = the textbook recipe: sort, zero the tail, cumsum again, search."""
    gen = torch.Generator().manual_seed(top_k)
    logits = torch.randn(400, 64, generator=gen) * 2
    u = torch.rand(400, generator=gen)
    _, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    sorted_p = logits.softmax(-1).gather(-1, order)
    if top_k:
        sorted_p[:, top_k:] = 0.0
    sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p, 0.0)
    cdf = sorted_p.cumsum(-1)
    ref = order.gather(-1, torch.searchsorted(cdf, u[:, None] * cdf[:, -1:]).clamp_(max=63))[:, 0]
    assert torch.equal(choose_tokens(logits, u, Sampling(top_k=top_k, top_p=top_p)), ref)


def test_sampling_follows_the_top_p_distribution() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 40_000
    logits = probs.log()[None].expand(n, 4).contiguous()
    u = row_uniforms([7], n, torch.device("cpu"))[0]
    counts = torch.bincount(choose_tokens(logits, u, Sampling(top_p=0.9)), minlength=4).float() / n
    expected = torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95  # the 0.05 token is outside the 0.9 nucleus
    assert torch.allclose(counts, expected, atol=0.01)


def test_row_seeds_are_stable_and_distinct() -> None:
    assert row_seed(0, 5, 1.0) == row_seed(0, 5, 1.0)
    assert len({row_seed(0, 5, 1.0), row_seed(0, 5, -1.0), row_seed(0, 6, 1.0), row_seed(1, 5, 1.0)}) == 4
    a = row_uniforms([3, 4], 5, torch.device("cpu"))
    b = row_uniforms([4], 8, torch.device("cpu"))
    assert torch.equal(a[1], b[0, :5])


def test_vector_of_the_wrong_size_is_refused(tiny: Any) -> None:
    with pytest.raises(VectorError, match="hidden size is 64"):
        GenerationEngine(tiny.model, 1, torch.zeros(10), pad_id=0)


def test_a_model_the_layer_loop_cannot_reproduce_is_refused(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack(tiny.model)
    monkeypatch.setattr(stack, "embed_ids", lambda ids: tiny.model.model.embed_tokens(ids) * 8.0)
    with pytest.raises(ModelLoadError, match="does not reproduce"):
        check_stack(stack, tiny.tokenizer.pad_token_id)


def test_engine_keeps_every_tensor_on_the_model_device(tiny: Any) -> None:
    """On the meta device any CPU tensor that reaches an op raises, standing in for a GPU run."""
    import copy

    from pipeline.generate_decode import DecodeBuffers, step
    from pipeline.generate_engine import _chunks, _doc_layout, _prompt_layout
    from pipeline.generate_model import SlotCache, engine_attention

    model = copy.deepcopy(tiny.model).to("meta")
    engine = GenerationEngine(model, 1, torch.randn(64, device="meta"), pad_id=0, check=False)
    prompts = [
        PromptInput((1, 2, 3, 4), (5, 6, 7), (8, 9), (1, 5, 6), (1, 8)),
        PromptInput((1, 2), (5,), (8,), (1,), (1, 8)),
    ]
    delta = engine._delta(torch.tensor([1.0, -1.0, 0.0]))
    cache = SlotCache(3, 4 + 5)
    with torch.inference_mode(), engine_attention(model):
        for chunk in _chunks(prompts, [0, 0, 1], 4096, lambda g: _prompt_layout(g, 0)):
            cache.prefill(chunk.rows, 4 - chunk.pm, chunk.pm, chunk.expand)
            hidden = engine._forward(chunk, delta[chunk.rows], cache)
            raw = engine.stack.raw_logits(hidden[:, chunk.pm - 1])
            engine.stack.token_logprobs(hidden[:, 0], torch.tensor([1, 2, 3]))
        sampling = Sampling(max_new_tokens=5, stop_ids=(3,))
        buf = DecodeBuffers.create(raw, [4, 4, 2], torch.rand(3, 5, device="meta"), delta, sampling)
        step(engine.stack, engine.layer, cache, buf, sampling)
        assert buf.raw.device.type == "meta" and buf.tokens.device.type == "meta"
        for chunk in _chunks([[1, 2, 3], [4, 5]], [0, 1, 1], 4096, lambda g: _doc_layout(g, 0)):
            assert engine._forward(chunk, delta, None).device.type == "meta"
