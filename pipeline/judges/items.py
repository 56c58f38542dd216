"""Score items of one (model, layer, epoch, task): the judge call for each, and its output row.

Ratings (coherence, the behaviour task) have one item per generation; pairwise has one per unordered
pair of a prompt's generations with multipliers in [pairwise_min, pairwise_max] (C(15, 2) = 105 for the
study's multipliers), shown in a seeded A/B order, or in both orders with `position_debias = "both"`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import JudgeConfig, Price
from pipeline.data import DPOPair, Message
from pipeline.errors import DataError
from pipeline.judges.base import Call, Request
from pipeline.judges.costs import cost_row
from pipeline.judges.ledger import Entry
from pipeline.judges.prompts import (
    PAIRWISE_OUTPUT,
    RATING_OUTPUT,
    pairwise_prompt,
    parse_pairwise,
    parse_rating,
    pick_examples,
    rating_prompt,
    seeded,
)
from pipeline.rubric import Rubric

PAIRWISE = "pairwise"
COHERENCE = "coherence"


@dataclass(frozen=True)
class Item:
    """One thing to score: its identity in the output file, the judge call, and the row's fixed fields."""

    item_id: str
    done_ids: tuple[str, ...]  # ids under which an existing output row counts as this item done
    call: Call
    fields: Mapping[str, Any]


def score_cell(model_short: str, layer: int, epoch: int, task: str) -> str:
    return f"score:{model_short}:L{layer}:E{epoch}:{task}"


def build_items(
    task: str,
    *,
    rubric: Rubric,
    generations: Sequence[Mapping[str, Any]],
    prompts: Mapping[int, DPOPair],
    judge: JudgeConfig,
    cell: str,
) -> list[Item]:
    """All items of `task` ("coherence", the rubric's task, or "pairwise")."""
    if task == PAIRWISE:
        return _pairwise_items(rubric, generations, prompts, judge, cell)
    if task == COHERENCE:
        return _rating_items(task, rubric.coherence_rubric, rubric, generations, prompts, judge, cell)
    if task == rubric.task:
        return _rating_items(task, rubric.rating_rubric, rubric, generations, prompts, judge, cell)
    raise DataError(f"--task: unknown task {task!r}; use coherence, {rubric.task} or pairwise")


def _request(judge: JudgeConfig, text: str, pairwise: bool) -> Request:
    return Request(
        provider=judge.provider,
        model=judge.model,
        messages=(Message("user", text),),
        output=PAIRWISE_OUTPUT if pairwise else RATING_OUTPUT,
        temperature=0.0,
        max_tokens=judge.max_tokens,
    )


def _conversation(row: Mapping[str, Any], prompts: Mapping[int, DPOPair]) -> tuple[Message, ...]:
    pid = row.get("test_prompt_id")
    pair = prompts.get(pid) if isinstance(pid, int) else None
    if pair is None:
        raise DataError(f"generation {row.get('generation_id')}: test_prompt_id {pid!r} is not in the test set")
    return pair.prompt


def _rating_items(
    task: str,
    rubric_text: str,
    rubric: Rubric,
    generations: Sequence[Mapping[str, Any]],
    prompts: Mapping[int, DPOPair],
    judge: JudgeConfig,
    cell: str,
) -> list[Item]:
    examples = rubric.coherence_examples if task == COHERENCE else rubric.rating_examples
    items = []
    for row in generations:
        gid = int(row["generation_id"])
        shots = pick_examples(examples, judge.seed, task, gid)
        text = rating_prompt(rubric_text, shots, _conversation(row, prompts), str(row["response_str"]))
        call = Call(_request(judge, text, False), parse_rating, task, cell, str(gid))
        fields = {"generation_id": gid, "test_prompt_id": row["test_prompt_id"], "multiplier": row["multiplier"]}
        items.append(Item(str(gid), (str(gid),), call, fields))
    return items


def _pairwise_items(
    rubric: Rubric,
    generations: Sequence[Mapping[str, Any]],
    prompts: Mapping[int, DPOPair],
    judge: JudgeConfig,
    cell: str,
) -> list[Item]:
    by_prompt: dict[int, list[Mapping[str, Any]]] = {}
    for row in generations:
        if judge.pairwise_min <= float(row["multiplier"]) <= judge.pairwise_max:
            by_prompt.setdefault(int(row["test_prompt_id"]), []).append(row)
    items = []
    for pid in sorted(by_prompt):
        rows = sorted(by_prompt[pid], key=lambda r: (float(r["multiplier"]), int(r["generation_id"])))
        conversation = _conversation(rows[0], prompts)
        for lo, hi in itertools.combinations(rows, 2):
            for a, b in _orders(lo, hi, judge):
                items.append(_pair_item(rubric, conversation, a, b, judge, cell))
    return items


def pair_id(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    ids = sorted((int(a["generation_id"]), int(b["generation_id"])))
    return f"{ids[0]}-{ids[1]}"


def _orders(
    lo: Mapping[str, Any], hi: Mapping[str, Any], judge: JudgeConfig
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Both orders for position debiasing, else one order chosen by a per-pair seeded coin."""
    if judge.position_debias == "both":
        return [(lo, hi), (hi, lo)]
    swap = seeded(judge.seed, PAIRWISE, pair_id(lo, hi)).random() < 0.5
    return [(hi, lo)] if swap else [(lo, hi)]


def _pair_item(
    rubric: Rubric,
    conversation: tuple[Message, ...],
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    judge: JudgeConfig,
    cell: str,
) -> Item:
    pid = pair_id(a, b)
    item_id = f"{pid}/{a['generation_id']}"
    text = pairwise_prompt(rubric.pairwise_definition, rubric.pairwise_examples, rubric.pairwise_question,
                           conversation, str(a["response_str"]), str(b["response_str"]))  # fmt: skip
    fields = {
        "test_prompt_id": a["test_prompt_id"],
        "generation_id_a": int(a["generation_id"]),
        "multiplier_a": float(a["multiplier"]),
        "generation_id_b": int(b["generation_id"]),
        "multiplier_b": float(b["multiplier"]),
        "pair_id": pid,
    }
    done_ids = (item_id,) if judge.position_debias == "both" else (item_id, pid)
    return Item(item_id, done_ids, Call(_request(judge, text, True), parse_pairwise, PAIRWISE, cell, item_id), fields)


def row_ids(row: Mapping[str, Any]) -> Iterable[str]:
    """Ids under which an existing output row marks items done (see `Item.done_ids`)."""
    if "pair_id" in row:
        yield str(row["pair_id"])
        if "generation_id_a" in row:
            yield f"{row['pair_id']}/{row['generation_id_a']}"
    elif "generation_id" in row:
        yield str(row["generation_id"])


def score_row(item: Item, entry: Entry, *, price: Price, judge: str, charged: bool) -> dict[str, Any]:
    """The output row for `item` from its final ledger entry; `charged` False for a duplicate request
    whose cost is already on another item's row."""
    result = entry.result
    valid = bool(result.get("valid"))
    answer_key = "model_response" if item.call.task == PAIRWISE else "score"
    usage = entry.usage.as_row() if charged else {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    cost = (
        cost_row(entry.input_tokens, entry.output_tokens, entry.cost_usd, price)
        if charged
        else cost_row(0, 0, 0, price)
    )
    return {
        **item.fields,
        answer_key: result.get("value") if valid else None,
        "valid": valid,
        "reason": None if valid else result.get("reason"),
        "token_usage": usage,
        "cost": cost,
        "judge": judge,
    }
