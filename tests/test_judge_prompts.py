"""Judge prompts, answer parsing, request keys, items, costs and batch files: pure functions, no server."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import JudgeConfig, Price
from pipeline.data import DPOPair, Message
from pipeline.errors import ConfigError
from pipeline.judges.anthropic_provider import AnthropicBatchAPI, completion_from_message
from pipeline.judges.base import Completion, OutputSpec, Request, Usage
from pipeline.judges.batch_runner import chunk_calls
from pipeline.judges.costs import cost_row, estimate_input_tokens, find_price, resolve_price
from pipeline.judges.items import build_items
from pipeline.judges.openai_provider import OpenAIBatchAPI, completion_from_chat
from pipeline.judges.prompts import RATING_OUTPUT, parse_pairwise, parse_rating
from pipeline.rubric import Rubric, load_rubric
from tests.fakeapi.answers import estimate_tokens
from tests.test_judge_support import RUBRIC, STUDY_MULTIPLIERS

JUDGE = JudgeConfig(judge="openai:gpt-4o-mini")


@pytest.fixture
def rubric(tmp_path: Path) -> Rubric:
    path = tmp_path / "demo.toml"
    path.write_text(RUBRIC)
    return load_rubric(path)


def prompts(n: int) -> dict[int, DPOPair]:
    return {
        pid: DPOPair(
            pid, (Message("user", f"hello {pid}"), Message("assistant", "hi"), Message("user", "and?")), "c", "r"
        )
        for pid in range(n)
    }


def generations(n_prompts: int, multipliers: tuple[float, ...] = STUDY_MULTIPLIERS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for pid in range(n_prompts):
        for m in multipliers:
            rows.append(
                {
                    "generation_id": len(rows),
                    "test_prompt_id": pid,
                    "multiplier": float(m),
                    "response_str": f"response {len(rows)}",
                }
            )
    return rows


def completion(data: Any, text: str | None = None) -> Completion:
    return Completion(text=json.dumps(data) if text is None else text, data=data)


# ------------------------------------------------------------------------------------------------ prompts


def test_rating_prompt_has_every_part_with_correct_tags(rubric: Rubric) -> None:
    (item,) = build_items(
        "demo", rubric=rubric, generations=generations(1, (2.0,)), prompts=prompts(1), judge=JUDGE, cell="c"
    )
    text = item.call.request.messages[0].content
    order = [
        "<context>",
        rubric.rating_rubric,
        "<examples>",
        "<example 1>",
        "<example 2>",
        "<instruction>",
        "Evaluate the following response and assign a score between 1 and 10.",
        "</instruction>",
        "<conversation history>\nuser: hello 0\nassistant: hi\nuser: and?\n</conversation history>",
        "<final assistant response>\nresponse 0\n</final assistant response>",
    ]
    positions = [text.find(part) for part in order]
    assert -1 not in positions and positions == sorted(positions)
    assert text.count("<score 1 final assistant response>") == 2 == text.count("</score 1 final assistant response>")
    assert text.count("<score 10 final assistant response>") == 2
    assert "<example 3>" not in text
    assert item.call.request.output == RATING_OUTPUT
    assert item.call.request.temperature == 0 and item.call.request.max_tokens == JUDGE.max_tokens


def test_coherence_uses_its_own_rubric_and_examples(rubric: Rubric) -> None:
    (item,) = build_items(
        "coherence", rubric=rubric, generations=generations(1, (0.0,)), prompts=prompts(1), judge=JUDGE, cell="c"
    )
    text = item.call.request.messages[0].content
    assert rubric.coherence_rubric in text and rubric.rating_rubric not in text
    assert "hi hi hi hi" in text or "banana four" in text or "colour colour" in text


def test_few_shot_choice_is_seeded_per_item(rubric: Rubric) -> None:
    gens = generations(8)
    first = build_items("coherence", rubric=rubric, generations=gens, prompts=prompts(8), judge=JUDGE, cell="c")
    again = build_items("coherence", rubric=rubric, generations=gens, prompts=prompts(8), judge=JUDGE, cell="c")
    assert [i.call.key for i in first] == [i.call.key for i in again]
    shots = Counter(i.call.request.messages[0].content.split("<instruction>")[0] for i in first)
    assert len(shots) > 1  # different items draw different examples
    reseeded = JudgeConfig(judge="openai:gpt-4o-mini", seed=1)
    other = build_items("coherence", rubric=rubric, generations=gens, prompts=prompts(8), judge=reseeded, cell="c")
    assert [i.call.key for i in other] != [i.call.key for i in first]


def test_pairwise_prompt_includes_conversation_and_all_examples(rubric: Rubric) -> None:
    items = build_items(
        "pairwise", rubric=rubric, generations=generations(1, (-1.0, 1.0)), prompts=prompts(1), judge=JUDGE, cell="c"
    )
    (item,) = items
    text = item.call.request.messages[0].content
    order = [
        "<context>",
        rubric.pairwise_definition,
        "<example 1>",
        "<answer>B</answer>",
        "<example 2>",
        "<answer>A</answer>",
        rubric.pairwise_question,
        "user: and?",
        "<response A>",
        "<response B>",
    ]
    positions = [text.rfind(part) if part.startswith("<response") else text.find(part) for part in order]
    assert -1 not in positions and positions == sorted(positions)
    a, b = item.fields["generation_id_a"], item.fields["generation_id_b"]
    assert f"<response A>\nresponse {a}\n</response A>" in text and f"<response B>\nresponse {b}\n</response B>" in text
    assert item.fields["pair_id"] == "0-1"


def test_pairs_are_the_15_multipliers_in_range_seeded_ab(rubric: Rubric) -> None:
    items = build_items(
        "pairwise", rubric=rubric, generations=generations(3), prompts=prompts(3), judge=JUDGE, cell="c"
    )
    assert len(items) == 3 * 105
    mults = {m for i in items for m in (i.fields["multiplier_a"], i.fields["multiplier_b"])}
    assert mults == {m for m in map(float, STUDY_MULTIPLIERS) if -4 <= m <= 4} and len(mults) == 15
    assert len({i.fields["pair_id"] for i in items}) == len(items)
    swapped = sum(i.fields["multiplier_a"] > i.fields["multiplier_b"] for i in items)
    assert 0.35 < swapped / len(items) < 0.65
    again = build_items(
        "pairwise", rubric=rubric, generations=generations(3), prompts=prompts(3), judge=JUDGE, cell="c"
    )
    assert [i.fields["generation_id_a"] for i in again] == [i.fields["generation_id_a"] for i in items]


def test_position_debias_both_judges_each_pair_in_both_orders(rubric: Rubric) -> None:
    both = JudgeConfig(judge="openai:gpt-4o-mini", position_debias="both")
    items = build_items("pairwise", rubric=rubric, generations=generations(1), prompts=prompts(1), judge=both, cell="c")
    assert len(items) == 210
    by_pair = Counter(i.fields["pair_id"] for i in items)
    assert set(by_pair.values()) == {2}
    assert len({i.call.key for i in items}) == 210


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("value", [1, 7, 7.5, 10])
def test_rating_accepts_numbers_in_range(value: float) -> None:
    verdict = parse_rating(completion({"score": value}))
    assert verdict.valid and verdict.value == value


@pytest.mark.parametrize(
    ("data", "text", "reason"),
    [
        ({"score": 0}, None, "out of range"),
        ({"score": 11}, None, "out of range"),
        ({"score": "7"}, None, "not a number"),
        ({"score": True}, None, "not a number"),
        ({"score": math.nan}, "{}", "not a number"),
        ({"mark": 5}, None, "no 'score' field"),
        (None, "I think 7ish", "unparseable"),
    ],
)
def test_rating_never_coerces(data: Any, text: str | None, reason: str) -> None:
    verdict = parse_rating(completion(data, text))
    assert not verdict.valid and verdict.value is None and reason in (verdict.reason or "")


def test_refusal_is_invalid() -> None:
    verdict = parse_rating(Completion(text="", data=None, refusal="I can't help with that"))
    assert not verdict.valid and "refusal" in (verdict.reason or "")


@pytest.mark.parametrize(
    ("answer", "ok"),
    [("A", True), ("B", True), (" A", False), ("a", False), ("C", False), ("Neither", False), (1, False)],
)
def test_pairwise_answer_must_be_exactly_a_or_b(answer: Any, ok: bool) -> None:
    verdict = parse_pairwise(completion({"answer": answer}))
    assert verdict.valid is ok and (verdict.value == answer if ok else verdict.reason)


def test_completions_normalise_both_providers() -> None:
    chat = {
        "choices": [{"message": {"content": '{"score": 4}'}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
    }
    assert completion_from_chat(chat) == Completion('{"score": 4}', {"score": 4}, Usage(10, 3), "stop")
    msg = {
        "content": [{"type": "tool_use", "name": "score", "input": {"score": 4}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    assert completion_from_message(msg).data == {"score": 4} and completion_from_message(msg).usage == Usage(10, 3)
    text = {"content": [{"type": "text", "text": "hello"}], "usage": {}}
    assert completion_from_message(text).text == "hello" and completion_from_message(text).data is None


# ------------------------------------------------------------------------------------------------ keys


def test_request_key_is_deterministic_and_covers_every_field() -> None:
    base = Request(
        "openai",
        "m",
        (Message("user", "hi"),),
        system="s",
        output=OutputSpec("score", {"type": "object"}),
        temperature=0.0,
        max_tokens=20,
    )
    assert (
        base.key
        == Request(
            "openai",
            "m",
            (Message("user", "hi"),),
            system="s",
            output=OutputSpec("score", {"type": "object"}),
            temperature=0.0,
            max_tokens=20,
        ).key
    )
    variants = [
        Request("anthropic", "m", base.messages, base.system, base.output, 0.0, 20),
        Request("openai", "m2", base.messages, base.system, base.output, 0.0, 20),
        Request("openai", "m", (Message("user", "hi!"),), base.system, base.output, 0.0, 20),
        Request("openai", "m", (Message("system", "hi"),), base.system, base.output, 0.0, 20),
        Request("openai", "m", base.messages, "", base.output, 0.0, 20),
        Request("openai", "m", base.messages, base.system, OutputSpec("answer", {"type": "object"}), 0.0, 20),
        Request("openai", "m", base.messages, base.system, base.output, 1.0, 20),
        Request("openai", "m", base.messages, base.system, base.output, 0.0, 21),
    ]
    keys = {v.key for v in variants}
    assert len(keys) == len(variants) and base.key not in keys
    assert len(base.key) == 64 and all(c in "0123456789abcdef" for c in base.key)


# ------------------------------------------------------------------------------------------------ costs


def test_prices_and_conservative_estimates(rubric: Rubric) -> None:
    prices = {"gpt-4o": Price(2.5, 10.0), "gpt-4o-mini": Price(0.15, 0.6)}
    assert find_price("gpt-4o-mini-2024-07-18", prices) == prices["gpt-4o-mini"]
    assert find_price("gpt-4o-2024-08-06", prices) == prices["gpt-4o"]
    assert find_price("llama", prices) is None
    assert resolve_price("llama", prices, math.inf).input_per_m == 0
    with pytest.raises(ConfigError, match=r"prices.*llama"):
        resolve_price("llama", prices, 5.0)
    items = build_items(
        "pairwise", rubric=rubric, generations=generations(1), prompts=prompts(1), judge=JUDGE, cell="c"
    )
    for item in items[:20]:
        request = item.call.request
        assert estimate_input_tokens(request) >= estimate_tokens(request.messages[0].content)
        assert estimate_input_tokens(request) >= len(request.messages[0].content) / 4  # ~tokens of English text
    assert cost_row(1000, 10, 0.5 * (1000 * 2.5 + 10 * 10) / 1e6, Price(2.5, 10.0)) == {
        "prompt_cost": 0.00125,
        "completion_cost": 0.00005,
        "total_cost": 0.0013,
    }


# ------------------------------------------------------------------------------------------------ batch files


def test_full_pairwise_batch_file_for_245_prompts(rubric: Rubric) -> None:
    """The study's 25,725 comparisons per vector-epoch: one file per provider, well-formed lines.
    (How fast this is built is measured by benchmarks/bench_judge.py.)"""
    items = build_items(
        "pairwise", rubric=rubric, generations=generations(245), prompts=prompts(245), judge=JUDGE, cell="c"
    )
    calls = [i.call for i in items]
    assert len(calls) == 25_725 == len({c.key for c in calls})
    for api in (OpenAIBatchAPI(None), AnthropicBatchAPI(None)):
        chunks = chunk_calls(
            calls, lambda c, api=api: api.encode_line(c.key, c.request), api.limits.max_requests, api.limits.max_bytes
        )
        assert [len(c) for c in chunks] == [25_725]
        first = json.loads(chunks[0][0][1])
        assert first["custom_id"] == calls[0].key
        if isinstance(api, OpenAIBatchAPI):
            assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
            body = first["body"]
            assert body["response_format"]["json_schema"]["strict"] is True
            assert body["response_format"]["json_schema"]["schema"]["properties"]["answer"]["enum"] == ["A", "B"]
        else:
            body = first["params"]
            assert body["tool_choice"] == {"type": "tool", "name": "answer"}
        assert body["temperature"] == 0 and body["messages"][0]["role"] == "user"


def test_chunks_respect_count_and_byte_limits(rubric: Rubric) -> None:
    items = build_items(
        "coherence", rubric=rubric, generations=generations(5), prompts=prompts(5), judge=JUDGE, cell="c"
    )
    api = OpenAIBatchAPI(None)
    encode = lambda c: api.encode_line(c.key, c.request)  # noqa: E731
    by_count = chunk_calls([i.call for i in items], encode, 40, 10**9)
    assert [len(c) for c in by_count] == [40, 40, 25]
    size = len(encode(items[0].call))
    by_bytes = chunk_calls([i.call for i in items], encode, 10**6, 3 * size + size // 2)
    assert all(sum(len(line) for _, line in c) <= 3 * size + size // 2 for c in by_bytes)
    assert sum(len(c) for c in by_bytes) == 105
