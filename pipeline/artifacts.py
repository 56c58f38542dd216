"""Is a cell's artifact complete and valid? Artifacts, not job rows, are the truth for results (SPEC §3).

- train(model, layer) is done when every epoch's vector and sidecar are present and agree;
- generate(model, layer, epoch) when the file holds exactly one row per expected (prompt, multiplier);
- score(task) when every expected item has a row (valid or recorded invalid).

Counting reads files; results are cached on (size, mtime), so a scheduler tick over thousands of cells
only re-reads files that changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.files import iter_jsonl
from pipeline.workspace import Workspace, short_model_name


@dataclass(frozen=True)
class Progress:
    done: int
    expected: int

    @property
    def complete(self) -> bool:
        return self.expected > 0 and self.done >= self.expected


_cache: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}


def _cached(path: Path, kind: str, compute: Any) -> Any:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    stamp = (stat.st_size, stat.st_mtime_ns)
    key = (str(path), kind)
    hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = compute()
    _cache[key] = (stamp, value)
    return value


def test_prompt_ids(ws: Workspace, config: Config) -> list[int]:
    """prompt_ids of the test set, in file order, limited by generate.max_prompts."""
    path = ws.test_path(config.behavior)
    ids = _cached(path, "prompt_ids", lambda: [int(r["prompt_id"]) for r in iter_jsonl(path) if "prompt_id" in r])
    ids = ids or []
    n = config.generate.max_prompts
    return ids[:n] if n > 0 else ids


def vector_done(ws: Workspace, config: Config, model: str, layer: int, epoch: int) -> bool:
    """Tensor and sidecar complete; cached on both files' stats (the sidecar is written second)."""
    path = ws.vector_path(config.behavior, model, layer, epoch)
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return False
    from pipeline.vectors import is_complete  # torch: only when a vector is actually checked

    return bool(_cached(path, f"vector:{sidecar.stat().st_mtime_ns}", lambda: is_complete(path)))


def train_progress(ws: Workspace, config: Config, model: str, layer: int) -> Progress:
    epochs = config.train.epochs
    done = sum(vector_done(ws, config, model, layer, e) for e in range(1, epochs + 1))
    return Progress(done, epochs)


def generation_progress(ws: Workspace, config: Config, model: str, layer: int, epoch: int) -> Progress:
    expected = {(pid, float(m)) for pid in test_prompt_ids(ws, config) for m in config.generate.multipliers}
    path = ws.generations_path(model, layer, epoch)
    keys = _cached(
        path, "gen_keys", lambda: {(int(r["test_prompt_id"]), float(r["multiplier"])) for r in iter_jsonl(path)}
    )
    return Progress(len(expected & (keys or set())), len(expected))


def expected_score_items(config: Config, task: str, n_prompts: int) -> int:
    """Items of a score task for `n_prompts` prompts with every configured multiplier generated."""
    mults = config.generate.multipliers
    if task != "pairwise":
        return n_prompts * len(mults)
    k = sum(config.judge.pairwise_min <= m <= config.judge.pairwise_max for m in mults)
    orders = 2 if config.judge.position_debias == "both" else 1
    return n_prompts * math.comb(k, 2) * orders


def score_progress(ws: Workspace, config: Config, model: str, layer: int, epoch: int, task: str) -> Progress:
    pairwise = task == "pairwise"
    name = behaviour_task(ws, config) if pairwise else task
    path = ws.scores_path(model, layer, epoch, name, pairwise=pairwise)
    expected = expected_score_items(config, task, len(test_prompt_ids(ws, config)))
    done = _cached(path, "score_rows", lambda: len({_row_id(r, pairwise) for r in iter_jsonl(path)})) or 0
    return Progress(min(done, expected), expected)


def _row_id(row: dict[str, Any], pairwise: bool) -> str:
    if pairwise:
        return f"{row.get('pair_id')}/{row.get('generation_id_a')}"
    return str(row.get("generation_id"))


def behaviour_task(ws: Workspace, config: Config) -> str:
    """The behaviour's rating task name from its rubric (see `pipeline.rubric.default_task`)."""
    from pipeline.rubric import default_task, read_task_name

    return read_task_name(ws.rubric_path(config.behavior)) or default_task(config.behavior)


def score_tasks(ws: Workspace, config: Config) -> tuple[str, ...]:
    """Configured judge tasks, with the behaviour task resolved (default: all three)."""
    task = behaviour_task(ws, config)
    return config.judge.tasks or ("coherence", task, "pairwise")


def model_short(name: str) -> str:
    return short_model_name(name)
