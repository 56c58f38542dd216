"""From kept cases to DPO rows (the study's `create_splits.py`): de-duplicate, explode, split by conversation.

- De-duplication keys a case by its normalised first user message (lower case, punctuation and spacing
  removed); the earliest case wins. Every DPO prompt starts with that message, so no prompt can appear in
  two conversations, and so none can straddle the split.
- Explosion: a case's first assistant turn gives one row (`history_type` "NA"); each later turn gives two,
  one with the target replies as history ("chosen") and one with the anti-target replies ("rejected").
  `chosen` is always the turn's target reply and `rejected` its anti-target reply.
- Split: a seeded shuffle of conversations, grouped so a conversation lies wholly in one split (the
  study's GroupShuffleSplit, train 95 %, seed 42). The test set keeps one row per conversation: the
  single-turn row, or for a multi-turn conversation a seeded later turn, alternating chosen/rejected history.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.datagen_prompts import Case

PUNCT = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Row:
    """One DPO row before ids are assigned."""

    case_id: int
    request: int
    turn_idx: int  # 1-based assistant turn
    history_type: str  # NA | chosen | rejected
    prompt: tuple[tuple[str, str], ...]  # (role, content), ending with the user turn
    chosen: str
    rejected: str


def normalise(text: str) -> str:
    return " ".join(PUNCT.sub(" ", text.lower()).split())


def dedupe(cases: Sequence[Case]) -> tuple[list[Case], list[Case]]:
    """(unique cases, duplicates), by normalised first user message; the first occurrence is kept."""
    seen: set[str] = set()
    unique: list[Case] = []
    dupes: list[Case] = []
    for case in cases:
        key = normalise(case.turns[0].user)
        (dupes if key in seen else unique).append(case)
        seen.add(key)
    return unique, dupes


def explode(case: Case) -> list[Row]:
    """All DPO rows of one conversation (1 + 2 x (turns - 1))."""
    rows = []
    for i, turn in enumerate(case.turns):
        sides = ("NA",) if i == 0 else ("chosen", "rejected")
        for side in sides:
            history: list[tuple[str, str]] = []
            for past in case.turns[:i]:
                reply = past.target if side == "chosen" else past.anti_target
                history += [("user", past.user), ("assistant", reply)]
            prompt = (*history, ("user", turn.user))
            rows.append(Row(case.case_id, case.request, i + 1, side, prompt, turn.target, turn.anti_target))
    return rows


def split_ids(ids: Sequence[int], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) conversation ids: a seeded shuffle, floor(n x (1 - f)) to train, at least one each."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_train = math.floor(len(order) * (1.0 - test_fraction) + 1e-9)
    n_train = min(max(n_train, 1), len(order) - 1)
    return sorted(order[:n_train]), sorted(order[n_train:])


def pick_test_rows(cases: Sequence[Case], seed: int) -> list[Row]:
    """One row per test conversation; multi-turn ones a seeded later turn, alternating history sides."""
    rng = random.Random(seed)
    out = []
    multi = 0
    for case in sorted(cases, key=lambda c: c.case_id):
        rows = explode(case)
        if len(case.turns) == 1:
            out.append(rows[0])
            continue
        turn = rng.randint(2, len(case.turns))
        side = ("chosen", "rejected")[multi % 2]
        multi += 1
        out.append(next(r for r in rows if r.turn_idx == turn and r.history_type == side))
    return out


def build_splits(cases: Sequence[Case], test_fraction: float, seed: int) -> tuple[list[dict[str, Any]],
                                                                                  list[dict[str, Any]]]:  # fmt: skip
    """(train rows, test rows) as DPO dicts; prompt ids run on from train into test, entry ids per file."""
    by_id = {c.case_id: c for c in cases}
    train_ids, test_ids = split_ids(list(by_id), test_fraction, seed)
    train = [r for cid in train_ids for r in explode(by_id[cid])]
    test = pick_test_rows([by_id[cid] for cid in test_ids], seed)
    return [_dpo(r, i, i) for i, r in enumerate(train)], [_dpo(r, i, len(train) + i) for i, r in enumerate(test)]


def _dpo(row: Row, entry_id: int, prompt_id: int) -> dict[str, Any]:
    return {
        "entry_id": entry_id,
        "prompt_id": prompt_id,
        "metaprompt_id": row.request,
        "conversation_id": row.case_id,
        "assistant_turn_idx": 2 * row.turn_idx - 1,
        "history_type": row.history_type,
        "prompt_arr": [{"role": role, "content": content} for role, content in row.prompt],
        "chosen_arr": [{"role": "assistant", "content": row.chosen}],
        "rejected_arr": [{"role": "assistant", "content": row.rejected}],
    }
