"""The batched generation engine: batch == alone, == the obvious HF computation, and seeded sampling."""

from __future__ import annotations

from collections.abc import Iterator
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
from tests.generate_support import CONVERSATIONS, one_thread, reference_row


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


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


def test_decode_attention_in_row_groups_equals_rows_alone(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large batches split decode attention by prompt length; force that on a small batch."""
    import pipeline.generate_engine as engine_module

    grouped = engine_module._decode_groups
    seen: list[list[tuple[int, int, int]]] = []

    def many_groups(lengths: list[int], pm: int) -> list[tuple[int, int, int]]:
        seen.append(grouped(lengths, pm, parts=3, min_rows=1))
        return seen[-1]

    monkeypatch.setattr(engine_module, "_decode_groups", many_groups)
    sampling = Sampling(max_new_tokens=8, greedy=True, stop_ids=tuple(stop_token_ids(tiny.tokenizer)))
    _batch_vs_alone(tiny, 2, 4, [-2.0, 1.0], sampling)
    assert len(seen[0]) == 3 and any(first > 0 for _, _, first in seen[0])


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
        tok = choose_tokens(raw.float(), torch.rand(3, device="meta"), Sampling(), keys=raw)
        valid = torch.zeros(3, 9, device="meta")
        step = engine._step(tok, torch.tensor([4, 4, 2], device="meta"), 4, valid, delta, cache, [(0, 2, 0), (2, 3, 2)])
        assert step.device.type == "meta"
        for chunk in _chunks([[1, 2, 3], [4, 5]], [0, 1, 1], 4096, lambda g: _doc_layout(g, 0)):
            assert engine._forward(chunk, delta, None).device.type == "meta"
