"""DPO datasets (SPEC §5.1): schema, validation with file:line:field messages, and loading.

A row: `prompt_id` int, `prompt_arr` [{role, content}] ending with a user turn, `chosen_arr` and
`rejected_arr` each [{role: "assistant", content}]; optional `entry_id`, `metaprompt_id`,
`assistant_turn_idx` (ints) and `history_type` (str).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import DataError

ROLES = ("system", "user", "assistant")
OPTIONAL_INTS = ("entry_id", "metaprompt_id", "assistant_turn_idx")


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class DPOPair:
    prompt_id: int
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    def messages(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.prompt]

    @property
    def multi_turn(self) -> bool:
        return sum(m.role == "user" for m in self.prompt) > 1

    def to_row(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "prompt_arr": self.messages(),
            "chosen_arr": [{"role": "assistant", "content": self.chosen}],
            "rejected_arr": [{"role": "assistant", "content": self.rejected}],
            **self.extras,
        }


def validate_file(path: Path) -> list[Problem]:
    """Every problem in a DPO JSONL file; empty means valid."""
    problems, _ = _scan(path)
    return problems


def load_pairs(path: Path, *, limit: int = 0) -> list[DPOPair]:
    """Load a valid DPO file, or raise `DataError` naming the first problem."""
    problems, pairs = _scan(path)
    if problems:
        more = f" (and {len(problems) - 1} more; run `steertui data validate {path}`)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}")
    if not pairs:
        raise DataError(f"{path}: no rows; add DPO pairs (see `steertui data validate --help`)")
    return pairs[:limit] if limit > 0 else pairs


def _scan(path: Path) -> tuple[list[Problem], list[DPOPair]]:
    if not path.exists():
        return [Problem(path, 0, "", "file not found")], []
    problems: list[Problem] = []
    pairs: list[DPOPair] = []
    seen: dict[int, int] = {}
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append(Problem(path, lineno, "", f"invalid JSON ({exc.msg} at column {exc.colno})"))
                continue
            row_problems = check_row(row)
            problems.extend(Problem(path, lineno, f, m) for f, m in row_problems)
            if row_problems:
                continue
            pid = row["prompt_id"]
            if pid in seen:
                problems.append(Problem(path, lineno, "prompt_id", f"duplicate of line {seen[pid]} ({pid})"))
                continue
            seen[pid] = lineno
            pairs.append(_to_pair(row))
    return problems, pairs


def check_row(row: Any) -> list[tuple[str, str]]:
    """(field, problem) pairs for one parsed row."""
    if not isinstance(row, dict):
        return [("", "a row must be a JSON object")]
    out: list[tuple[str, str]] = []
    pid = row.get("prompt_id")
    if "prompt_id" not in row:
        out.append(("prompt_id", "missing"))
    elif isinstance(pid, bool) or not isinstance(pid, int):
        out.append(("prompt_id", f"must be an integer, got {pid!r}"))
    out.extend(_check_prompt(row.get("prompt_arr"), "prompt_arr" in row))
    for key in ("chosen_arr", "rejected_arr"):
        out.extend(_check_answer(row.get(key), key, key in row))
    for key in OPTIONAL_INTS:
        val = row.get(key)
        if key in row and val is not None and (isinstance(val, bool) or not isinstance(val, int)):
            out.append((key, f"must be an integer, got {val!r}"))
    if "history_type" in row and not isinstance(row["history_type"], str | type(None)):
        out.append(("history_type", "must be a string"))
    return out


def _check_messages(value: Any, key: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        return [(key, "must be a non-empty list of {role, content} messages")]
    out: list[tuple[str, str]] = []
    for i, msg in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(msg, dict):
            out.append((where, "must be an object with role and content"))
            continue
        if msg.get("role") not in ROLES:
            out.append((f"{where}.role", f"must be one of {', '.join(ROLES)}, got {msg.get('role')!r}"))
        content = msg.get("content")
        if not isinstance(content, str) or not content.strip():
            out.append((f"{where}.content", "missing or empty"))
    return out


def _check_prompt(value: Any, present: bool) -> list[tuple[str, str]]:
    if not present:
        return [("prompt_arr", "missing")]
    out = _check_messages(value, "prompt_arr")
    if out:
        return out
    roles = [m["role"] for m in value]
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        return [("prompt_arr", "a system message may only come first")]
    for i, role in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            idx = i + (len(roles) - len(body))
            return [(f"prompt_arr[{idx}].role", f"expected {expected} (turns alternate user/assistant), got {role}")]
    if not body or body[-1] != "user":
        return [("prompt_arr", f"must end with a user turn, ends with {roles[-1]}")]
    return []


def _check_answer(value: Any, key: str, present: bool) -> list[tuple[str, str]]:
    if not present:
        return [(key, "missing")]
    out = _check_messages(value, key)
    if out:
        return out
    if len(value) != 1:
        return [(key, f"must hold exactly one assistant message, got {len(value)}")]
    if value[0]["role"] != "assistant":
        return [(f"{key}[0].role", f"must be assistant, got {value[0]['role']}")]
    return []


def _to_pair(row: dict[str, Any]) -> DPOPair:
    known = {"prompt_id", "prompt_arr", "chosen_arr", "rejected_arr"}
    return DPOPair(
        prompt_id=row["prompt_id"],
        prompt=tuple(Message(m["role"], m["content"]) for m in row["prompt_arr"]),
        chosen=row["chosen_arr"][0]["content"],
        rejected=row["rejected_arr"][0]["content"],
        extras={k: v for k, v in row.items() if k not in known},
    )


def dataset_stats(pairs: list[DPOPair]) -> dict[str, Any]:
    """Counts a researcher checks before training: rows, multi-turn share, mean lengths."""
    n = len(pairs)
    multi = sum(p.multi_turn for p in pairs)
    return {
        "rows": n,
        "multi_turn": multi,
        "multi_turn_share": multi / n if n else 0.0,
        "mean_chosen_chars": sum(len(p.chosen) for p in pairs) / n if n else 0.0,
        "mean_rejected_chars": sum(len(p.rejected) for p in pairs) / n if n else 0.0,
    }
