"""The steering primitive: per-row multipliers, exact no-ops at zero, correct under KV cache + padding."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipeline.chat import encode_prompt, render_prompt
from pipeline.errors import VectorError
from pipeline.steering import Steering, steer


def _batch(lm: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    lm.tokenizer.padding_side = "left"
    prompts = [render_prompt(lm.tokenizer, [{"role": "user", "content": t}], system_prompt="Be brief.") for t in texts]
    return dict(lm.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt"))


def _rows_changed(lm: Any, multipliers: list[float]) -> list[bool]:
    batch = _batch(lm, ["How do I boil an egg?"] * len(multipliers))
    vec = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0)) * 4
    with torch.no_grad():
        base = lm.model(**batch).logits
        with steer(lm.model, lm.num_layers // 2, vec, multipliers):
            steered = lm.model(**batch).logits
    return [not torch.equal(base[i], steered[i]) for i in range(len(multipliers))]


def test_per_row_multipliers_change_exactly_the_nonzero_rows_tiny(tiny: Any) -> None:
    assert _rows_changed(tiny, [0.0, 1.0, 0.0, -2.0]) == [False, True, False, True]


def test_per_row_multipliers_change_exactly_the_nonzero_rows_smollm2(smollm2: Any) -> None:
    assert _rows_changed(smollm2, [1.5, 0.0, -1.0, 0.0]) == [True, False, True, False]


def test_hook_is_removed_after_the_block(tiny: Any) -> None:
    batch = _batch(tiny, ["hi"])
    vec = torch.ones(tiny.hidden_size)
    with torch.no_grad():
        before = tiny.model(**batch).logits
        with steer(tiny.model, 1, vec, 3.0):
            pass
        after = tiny.model(**batch).logits
    assert torch.equal(before, after)


def test_batched_generation_with_left_padding_equals_each_row_alone(tiny: Any) -> None:
    """Greedy, fp32: rows of different lengths and multipliers in one KV-cached batch match solo runs."""
    texts = ["Tell me about the sea.", "Hi", "What should I cook tonight for two?"]
    mults = [2.0, -1.0, 0.0]
    vec = torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(1)) * 3
    gen = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tiny.tokenizer.pad_token_id}
    batch = _batch(tiny, texts)
    with torch.no_grad(), steer(tiny.model, 2, vec, mults):
        together = tiny.model.generate(**batch, **gen)[:, batch["input_ids"].shape[1] :]
    for i, (text, mult) in enumerate(zip(texts, mults, strict=True)):
        solo = _batch(tiny, [text])
        with torch.no_grad(), steer(tiny.model, 2, vec, [mult]):
            alone = tiny.model.generate(**solo, **gen)[0, solo["input_ids"].shape[1] :]
        assert together[i].tolist() == alone.tolist()


def test_vector_size_and_layer_checked(tiny: Any) -> None:
    with pytest.raises(VectorError, match="hidden size is 64"):
        Steering(tiny.model, 1, torch.zeros(10))
    with pytest.raises(VectorError, match="layer 9 does not exist"):
        Steering(tiny.model, 9, torch.zeros(64))


def test_gradient_reaches_the_vector(tiny: Any) -> None:
    batch = _batch(tiny, ["Hello there"])
    vec = torch.zeros(tiny.hidden_size, requires_grad=True)
    with steer(tiny.model, 1, vec, [1.0]):
        tiny.model(**batch).logits.float().logsumexp(-1).mean().backward()
    assert vec.grad is not None and vec.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())


def test_chat_rendering_formats(tiny: Any) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    chat = render_prompt(tiny.tokenizer, msgs, system_prompt="S", prompt_format="chat")
    seed = render_prompt(tiny.tokenizer, msgs, system_prompt="S", prompt_format="seed")
    assert chat.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n") and chat.startswith(seed)
    assert encode_prompt(tiny.tokenizer, chat)[0] == tiny.tokenizer.bos_token_id
