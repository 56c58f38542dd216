"""Is a prompting cell's artifact complete? Counted from its JSONL files (cached on size and mtime), like
`pipeline.artifacts` does for the vector stages; no torch, no provider SDK.

A reply or turn recorded invalid counts as done (it has a row); the ratings and rankings of an invalid
reply, and the turns a conversation stopped before, count as done too: there is nothing to judge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.artifacts import Progress
from pipeline.config import Config
from pipeline.files import iter_jsonl
from pipeline.prompting_spec import (
    VectorSpec,
    conversations_path,
    generations_path,
    level_multipliers,
    ranking_path,
    ratings_path,
    turn_scores_path,
)
from pipeline.workspace import Workspace

T = TypeVar("T")
_cache: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}


def _cached(path: Path, kind: str, compute: Callable[[], T], missing: T) -> T:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return missing
    stamp = (stat.st_size, stat.st_mtime_ns)
    hit = _cache.get((str(path), kind))
    if hit is not None and hit[0] == stamp:
        return hit[1]  # type: ignore[no-any-return]
    value = compute()
    _cache[(str(path), kind)] = (stamp, value)
    return value


def exp1_prompt_ids(ws: Workspace, config: Config) -> list[int]:
    """Exp1's prompt ids: the first `prompting.max_prompts` (else `generate.max_prompts`, else all)."""
    ids = _all_prompt_ids(ws, config)
    n = config.prompting.max_prompts or config.generate.max_prompts
    return ids[:n] if n > 0 else ids


def _generations(ws: Workspace, label: str, levels: int) -> dict[tuple[int, int], bool]:
    """(test_prompt_id, level) -> valid, of the prompted replies written so far."""
    path = generations_path(ws, label, levels)
    return _cached(path, "prompted", lambda: {(int(r["test_prompt_id"]), int(r["level"])): r.get("valid") is not False
                                              for r in iter_jsonl(path)}, {})  # fmt: skip


def generate_progress(ws: Workspace, config: Config, label: str) -> Progress:
    levels = config.prompting.levels
    expected = {(pid, k) for pid in exp1_prompt_ids(ws, config) for k in range(1, levels + 1)}
    return Progress(len(expected & set(_generations(ws, label, levels))), len(expected))


def _ids(path: Path, kind: str, key: Callable[[dict[str, Any]], str]) -> set[str]:
    return _cached(path, f"ids:{kind}", lambda: {key(r) for r in iter_jsonl(path)}, set())


def rate_progress(ws: Workspace, config: Config, label: str, task: str) -> Progress:
    """Ratings by generation_id; ids follow `prompting_exp1` (prompt index × N + level − 1)."""
    levels = config.prompting.levels
    gens = _generations(ws, label, levels)
    rated = _ids(ratings_path(ws, label, levels, task), "generation_id", lambda r: str(r.get("generation_id")))
    index = {pid: k for k, pid in enumerate(_all_prompt_ids(ws, config))}
    expected = [(pid, lv) for pid in exp1_prompt_ids(ws, config) for lv in range(1, levels + 1)]
    done = sum(gens.get(key) is False or str(index[key[0]] * levels + key[1] - 1) in rated for key in expected)
    return Progress(done, len(expected))


def _all_prompt_ids(ws: Workspace, config: Config) -> list[int]:
    path = ws.test_path(config.behavior)
    none: list[int] = []
    return _cached(path, "prompt_ids", lambda: [int(r["prompt_id"]) for r in iter_jsonl(path) if "prompt_id" in r],
                   none)  # fmt: skip


def rank_progress(ws: Workspace, config: Config, label: str, vector: VectorSpec) -> Progress:
    levels = config.prompting.levels
    gens = _generations(ws, label, levels)
    ranked = _ids(ranking_path(ws, label, levels, vector), "pair_id", lambda r: str(r.get("pair_id")))
    mults = level_multipliers(levels)
    expected = [(pid, lv) for pid in exp1_prompt_ids(ws, config) for lv in range(1, levels + 1)]
    done = sum(gens.get(key) is False or f"{label}_{key[0]}_{key[1]}-steering_{key[0]}_{mults[key[1] - 1]!r}"
               in ranked for key in expected)  # fmt: skip
    return Progress(done, len(expected))


def vector_replies_ready(ws: Workspace, vector: VectorSpec, pids: list[int], levels: int) -> bool:
    """The vector's generation file holds a reply for every prompt at every level's multiplier."""
    path = ws.generations_path(vector.model, vector.layer, vector.epoch)
    none: set[tuple[int, float]] = set()
    keys = _cached(path, "gen_keys", lambda: {(int(r["test_prompt_id"]), float(r["multiplier"]))
                                              for r in iter_jsonl(path)}, none)  # fmt: skip
    return bool(pids) and all((pid, m) in keys for pid in pids for m in level_multipliers(levels))


def persona_plan(ws: Workspace, config: Config) -> tuple[dict[str, int], int]:
    """(assistant turns per conversation by selected theme, conversations per theme); empty without a rubric."""
    from pipeline.errors import RubricError
    from pipeline.rubric import Rubric, load_rubric

    def read() -> Rubric | None:
        try:
            return load_rubric(path)
        except RubricError:
            return None

    path = ws.rubric_path(config.behavior)
    rubric = _cached(path, "rubric", read, None)
    if rubric is None:
        return {}, 0
    turns = {t.name: len(t.turns) + 2 for t in rubric.themes}
    names = config.prompting.themes or tuple(turns)
    return {n: turns.get(n, 0) for n in names}, len(rubric.attacks) * len(config.prompting.stability_multipliers)


def _conversations(path: Path) -> dict[str, tuple[int, bool]]:
    """Scenario row id -> (assistant turns, complete) per conversation row."""

    def read() -> dict[str, tuple[int, bool]]:
        out = {}
        for r in iter_jsonl(path):
            turns = sum(1 for m in r.get("conversation_history", []) if m.get("role") == "assistant")
            out[f"{r.get('scenario_name')}/{r.get('multiplier')}"] = (turns, r.get("valid") is not False)
        return out

    return _cached(path, "conversations", read, {})


def stability_progress(ws: Workspace, config: Config, who: str) -> Progress:
    themes, per_theme = persona_plan(ws, config)
    levels = config.prompting.levels
    done = sum(min(len(_conversations(conversations_path(ws, levels, who, n))), per_theme) for n in themes)
    return Progress(done, per_theme * len(themes))


def stability_rate_progress(ws: Workspace, config: Config, who: str) -> Progress:
    """Every turn of every planned conversation; the turns a stopped conversation never reached count done."""
    themes, per_theme = persona_plan(ws, config)
    levels, done = config.prompting.levels, 0
    for name, turns in themes.items():
        convs = _conversations(conversations_path(ws, levels, who, name)).values()
        path = turn_scores_path(ws, levels, who, name)
        rated = _ids(path, "turns", lambda r: f"{r.get('experiment_id')}/{r.get('turn_index')}")
        done += min(len(rated), sum(n for n, _ in convs)) + sum(turns - n for n, ok in convs if not ok)
    expected = per_theme * sum(themes.values())
    return Progress(min(done, expected), expected)
