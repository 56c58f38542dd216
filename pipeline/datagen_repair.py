"""Turn a generation reply into cases, repairing what can be repaired and dropping the rest (the study's
`parse_cases.py` step, in code only).

Repairs: a JSON payload wrapped in another field or in a Markdown code fence, trailing commas, a reply cut
off mid-way (the complete cases before the cut are kept), a bare list of cases or a single case, stringified
arrays, and common key variants (`anti_target_response`, `user`, `chosen`, ...). A case whose first turn
lacks a field is dropped; one that breaks later keeps its complete turns. Every repair and drop is noted.
A reply is valid when at least one case survives; otherwise the runner asks again (up to `max_reasks`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pipeline.judges.base import Completion, Verdict

FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
TRAILING_COMMA = re.compile(r",(\s*[}\]])")
ALIASES = {
    "user_message": ("user_message", "user", "user_msg", "prompt", "question", "message"),
    "target_response": ("target_response", "target", "target_reply", "chosen", "chosen_response"),
    "antitarget_response": ("antitarget_response", "anti_target_response", "antitarget", "anti_target",
                            "antitarget_reply", "anti_target_reply", "rejected", "rejected_response"),
}  # fmt: skip
MAX_TEXT = 8000  # characters per message; longer ones are degenerate


def case_parser(expected: int) -> Callable[[Completion], Verdict]:
    """A `Call` parser for a request that asked for `expected` cases."""

    def parse(completion: Completion) -> Verdict:
        return parse_cases(completion, expected)

    return parse


def parse_cases(completion: Completion, expected: int) -> Verdict:
    """Valid with `{"cases": [{"reasoning", "turns": [...]}], "notes": [...]}` when any case survives."""
    if completion.refusal:
        return Verdict(False, None, f"refusal: {completion.refusal[:200]}")
    notes: list[str] = []
    raw = _payload(completion, notes)
    items = _case_list(raw, notes)
    if items is None:
        return Verdict(False, None, f"no cases array in the reply: {completion.text[:200]!r}")
    cases = [c for j, item in enumerate(items) if (c := _case(item, j, notes)) is not None]
    if len(cases) > expected:
        notes.append(f"ignored {len(cases) - expected} case(s) beyond the {expected} asked for")
        cases = cases[:expected]
    if not cases:
        return Verdict(False, None, "no usable case: " + "; ".join(notes)[:300])
    return Verdict(True, {"cases": cases, "notes": notes})


def _payload(completion: Completion, notes: list[str]) -> Any:
    """The reply's JSON value, from the structured answer or repaired text."""
    data = completion.data
    if isinstance(data, dict) and "cases" not in data and "turns" not in data and len(data) == 1:
        (inner,) = data.values()
        if isinstance(inner, str):
            notes.append("unwrapped a JSON payload held in a text field")
            return _from_text(inner, notes)
    if isinstance(data, dict | list):
        return data
    return _from_text(completion.text, notes)


def _from_text(text: str, notes: list[str]) -> Any:
    body = _json_part(text)
    value = _loads(body)
    fenced = FENCE.search(text) if value is None else None
    if fenced:
        notes.append("removed a Markdown code fence")
        body = _json_part(fenced.group(1))
        value = _loads(body)
    if value is not None or not body:
        return value
    body = TRAILING_COMMA.sub(r"\1", body)
    value = _loads(body)
    if value is not None:
        notes.append("removed trailing commas")
        return value
    return _salvage(body, notes)


def _json_part(text: str) -> str:
    """`text` from its first `{` or `[` on ("" when it has neither)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    return text[min(starts) :].strip() if starts else ""


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _salvage(text: str, notes: list[str]) -> Any:
    """The complete case objects at the start of a cut-off reply (their array decoded one item at a time)."""
    key = text.find('"cases"')
    start = text.find("[", key) if key >= 0 else (0 if text.startswith("[") else -1)
    if start < 0:
        return None
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos = start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            item, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        items.append(item)
    notes.append(f"kept {len(items)} complete case(s) of a cut-off reply")
    return {"cases": items}


def _case_list(raw: Any, notes: list[str]) -> list[Any] | None:
    if isinstance(raw, dict) and isinstance(raw.get("cases"), str):
        notes.append("decoded a stringified cases array")
        raw = {"cases": _from_text(raw["cases"], notes)}
    if isinstance(raw, dict) and isinstance(raw.get("cases"), list):
        return list(raw["cases"])
    if isinstance(raw, dict) and isinstance(raw.get("cases"), dict):
        return [raw["cases"]]
    if isinstance(raw, list):
        notes.append("read a bare list of cases")
        return raw
    if isinstance(raw, dict) and ("turns" in raw or _pick(raw, "user_message") is not None):
        notes.append("read a single case")
        return [raw]
    return None


def _case(item: Any, j: int, notes: list[str]) -> dict[str, Any] | None:
    """One normalised case, or None (noted) when not even its first turn is usable."""
    reasoning = str(item.get("reasoning") or "").strip() if isinstance(item, dict) else ""
    turns_raw = _turns_of(item)
    turns: list[dict[str, str]] = []
    for k, raw in enumerate(turns_raw):
        turn, problem = _turn(raw)
        if problem:
            notes.append(f"case {j + 1}: turn {k + 1} {problem}; " + ("dropped the case" if k == 0 else
                         f"kept its first {k} turn(s)"))  # fmt: skip
            break
        turns.append(turn)
    if not turns_raw:
        notes.append(f"case {j + 1}: no turns; dropped")
    return {"reasoning": reasoning, "turns": turns} if turns else None


def _turns_of(item: Any) -> list[Any]:
    if isinstance(item, list):
        return item
    if not isinstance(item, dict):
        return []
    turns = item.get("turns")
    if isinstance(turns, str):
        try:
            turns = json.loads(TRAILING_COMMA.sub(r"\1", turns))
        except ValueError:
            return []
    if isinstance(turns, list):
        return turns
    return [item] if _pick(item, "user_message") is not None else []


def _turn(raw: Any) -> tuple[dict[str, str], str]:
    """A normalised turn, or the reason it is unusable."""
    if not isinstance(raw, dict):
        return {}, "is not an object"
    turn: dict[str, str] = {}
    for name in ALIASES:
        value = _pick(raw, name)
        if not isinstance(value, str) or not value.strip():
            return {}, f"has no {name}"
        if len(value) > MAX_TEXT:
            return {}, f"has a {name} over {MAX_TEXT} characters"
        turn[name] = value.strip()
    if _norm(turn["target_response"]) == _norm(turn["antitarget_response"]):
        return {}, "has identical target and anti-target replies"
    return turn, ""


def _pick(raw: dict[str, Any], name: str) -> Any:
    keys = {str(k).lower().replace("-", "_").replace(" ", "_"): v for k, v in raw.items()}
    return next((keys[a] for a in ALIASES[name] if a in keys), None)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())
