"""Exp1, steerability: a prompted model at every "Level k of N", rated and ranked against the vector.

- `run_generate`: one reply per (test prompt, level) → `<label>_levels_<N>/generations.jsonl`. The
  system prompt draws `prompting.examples` level examples by a seed of (prompting.seed, prompt, level),
  so a rerun sends the same requests; `generation_id` = prompt index × N + level − 1 (stable).
- `run_rate`: the judge's coherence and behaviour ratings of the valid replies, with exactly the prompts
  used for vector generations (`pipeline.judges.items`) → `coherence_scores.jsonl`, `<task>_scores.jsonl`.
- `run_rank`: per reply, the judge picks which of it and the vector's reply to the same prompt at the
  level's multiplier shows more of the behaviour; the A/B position is a seeded coin per pair →
  `ranking_<label>_vs_steering_<short>_layer<L>_ep<E>.jsonl` (the study's row schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from pipeline.config import Config, Price
from pipeline.data import DPOPair, Message, load_pairs
from pipeline.errors import DataError
from pipeline.files import iter_jsonl
from pipeline.judges.base import Call, Request, parse_text
from pipeline.judges.costs import resolve_price
from pipeline.judges.items import COHERENCE, Item, build_items, score_row
from pipeline.judges.ledger import Entry
from pipeline.judges.prompts import PAIRWISE_OUTPUT, pairwise_prompt, parse_pairwise, seeded
from pipeline.progress import Reporter
from pipeline.prompting import (
    RowWriter,
    Unit,
    answer,
    ask_missing,
    cell_lock,
    exp1_prompts,
    level_system_prompt,
    pick_level_examples,
    split_system,
    usage_cost,
)
from pipeline.prompting_spec import (
    ProviderSpec,
    VectorSpec,
    generations_path,
    level_multipliers,
    multiplier_of,
    ranking_path,
    ratings_path,
)
from pipeline.rubric import Rubric, load_rubric
from pipeline.workspace import Workspace

LEVELS_TASK = "levels"
RANKING = "ranking"


def generate_cell(label: str, levels: int) -> str:
    return f"prompting-generate:{label}:levels{levels}"


def rate_cell(label: str, levels: int, task: str) -> str:
    return f"prompting-rate:{label}:levels{levels}:{task}"


def rank_cell(label: str, levels: int, vector: VectorSpec) -> str:
    return f"prompting-rank:{label}:levels{levels}:{vector.short}:L{vector.layer}:E{vector.epoch}"


def now() -> str:
    """UTC ISO timestamp for rows."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- generate ----------------------------------------------------------------------------------------------


def run_generate(ws: Workspace, config: Config, provider: ProviderSpec, reporter: Reporter) -> RowWriter:
    """Ask for every missing (prompt, level) reply; returns the writer (counts of what it did)."""
    levels = config.prompting.levels
    rubric = load_rubric(ws.rubric_path(config.behavior))
    prompts = exp1_prompts(ws, config)
    price = resolve_price(provider.model, config.prices, config.judge.budget_usd)
    cell = generate_cell(provider.label, levels)
    units = [generation_unit(config, provider, rubric, k, pair, level, cell, price)
             for k, pair in prompts for level in range(1, levels + 1)]  # fmt: skip
    path = generations_path(ws, provider.label, levels)
    with cell_lock(ws, cell):
        writer = RowWriter(path, units, lambda r: f"{r.get('test_prompt_id')}/{r.get('level')}", reporter)
        reporter.message(f"{cell}: {writer.total} replies, {writer.already} already in {path.name}")
        ask_missing(ws, config, provider.spec, config.prompting.base_url, [writer], reporter)
    reporter.artifact(str(path))
    return writer


def generation_unit(config: Config, provider: ProviderSpec, rubric: Rubric, index: int, pair: DPOPair, level: int,
                    cell: str, price: Price) -> Unit:  # fmt: skip
    """One (prompt, level) reply: the test conversation under the level's system prompt (examples seeded)."""
    p, levels = config.prompting, config.prompting.levels
    extra, messages = split_system(pair.prompt)
    example_ids = pick_level_examples(rubric, p.examples, p.seed, LEVELS_TASK, pair.prompt_id, level)
    system = level_system_prompt(rubric, level, levels, example_ids) + (f"\n\n{extra}" if extra else "")
    request = Request(provider.provider, provider.model, messages, system=system, temperature=p.temperature,
                      max_tokens=p.max_tokens)  # fmt: skip
    fields = {"test_prompt_id": pair.prompt_id, "model_name": provider.label, "provider": provider.provider,
              "model": provider.model, "multiplier": multiplier_of(level, levels), "level": level,
              "num_levels": levels, "generation_id": index * levels + level - 1}  # fmt: skip
    settings = {"example_ids": example_ids, "rubric_sha256": rubric.digest, "temperature": p.temperature,
                "max_tokens": p.max_tokens, "seed": p.seed}  # fmt: skip

    def build(entry: Entry, charged: bool) -> dict[str, Any]:
        text, valid, reason = answer(entry)
        return {"timestamp": now(), **fields, "response_str": text, "valid": valid, "reason": reason, **settings,
                **usage_cost(entry, charged, price)}  # fmt: skip

    item = f"{pair.prompt_id}/{level}"
    return Unit(item, Call(request, parse_text, LEVELS_TASK, cell, item), build)


# -- rate --------------------------------------------------------------------------------------------------


def prompted_rows(ws: Workspace, label: str, levels: int) -> list[dict[str, Any]]:
    """The valid prompted replies, or DataError when there are none yet."""
    path = generations_path(ws, label, levels)
    rows = [r for r in iter_jsonl(path) if r.get("valid") is not False and isinstance(r.get("response_str"), str)]
    if not rows:
        raise DataError(f"{path}: no prompted replies; run `steertui prompting generate --provider {label}` first")
    return rows


def run_rate(ws: Workspace, config: Config, provider: ProviderSpec, task: str | None,
             reporter: Reporter) -> list[RowWriter]:  # fmt: skip
    """Rate every valid prompted reply with `task` (default: coherence and the behaviour's task)."""
    levels, judge = config.prompting.levels, config.judge
    rubric = load_rubric(ws.rubric_path(config.behavior))
    tasks = [task] if task else [COHERENCE, rubric.task]
    rows = prompted_rows(ws, provider.label, levels)
    prompts = {p.prompt_id: p for p in load_pairs(ws.test_path(config.behavior))}
    price = resolve_price(judge.model, config.prices, judge.budget_usd)
    level = {int(r["generation_id"]): int(r["level"]) for r in rows}
    plans = []
    for name in tasks:
        items = build_items(name, rubric=rubric, generations=rows, prompts=prompts, judge=judge,
                            cell=rate_cell(provider.label, levels, name))  # fmt: skip
        units = [_rating_unit(item, level, levels, price, judge.judge) for item in items]
        plans.append((ratings_path(ws, provider.label, levels, name), units))
    with ExitStack() as locks:
        for name in tasks:
            locks.enter_context(cell_lock(ws, rate_cell(provider.label, levels, name)))
        writers = [RowWriter(path, units, lambda r: str(r.get("generation_id")), reporter) for path, units in plans]
        for w in writers:
            reporter.message(f"{w.path.name}: {w.total} ratings, {w.already} already there")
        ask_missing(ws, config, judge.judge, judge.base_url, writers, reporter)
    for w in writers:
        reporter.artifact(str(w.path))
    return writers


def _rating_unit(item: Item, level: dict[int, int], levels: int, price: Price, judge: str) -> Unit:
    def build(entry: Entry, charged: bool) -> dict[str, Any]:
        row = score_row(item, entry, price=price, judge=judge, charged=charged)
        return {**row, "level": level[int(item.fields["generation_id"])], "num_levels": levels}

    return Unit(item.item_id, item.call, build)


# -- rank --------------------------------------------------------------------------------------------------


def run_rank(ws: Workspace, config: Config, provider: ProviderSpec, reporter: Reporter) -> RowWriter:
    """Judge each prompted reply against the vector's reply at the level's multiplier."""
    vector = config.prompting.vector_spec()
    if vector is None:
        raise DataError("prompting.vector: not set; pass --vector MODEL:LAYER:EPOCH")
    levels, judge = config.prompting.levels, config.judge
    rubric = load_rubric(ws.rubric_path(config.behavior))
    rows = prompted_rows(ws, provider.label, levels)
    steering = vector_replies(ws, vector, levels, sorted({int(r["test_prompt_id"]) for r in rows}))
    prompts = {p.prompt_id: p for p in load_pairs(ws.test_path(config.behavior))}
    price = resolve_price(judge.model, config.prices, judge.budget_usd)
    cell = rank_cell(provider.label, levels, vector)
    units = [rank_unit(config, rubric, provider, vector, row, steering, prompts, cell, price) for row in rows]
    path = ranking_path(ws, provider.label, levels, vector)
    with cell_lock(ws, cell):
        writer = RowWriter(path, units, lambda r: str(r.get("pair_id")), reporter)
        reporter.message(f"{cell}: {writer.total} pairs, {writer.already} already in {path.name}")
        ask_missing(ws, config, judge.judge, judge.base_url, [writer], reporter)
    reporter.artifact(str(path))
    return writer


def vector_replies(ws: Workspace, vector: VectorSpec, levels: int,
                   pids: Sequence[int]) -> dict[tuple[int, float], Any]:  # fmt: skip
    """The vector's replies by (test_prompt_id, multiplier); DataError naming missing multipliers/prompts."""
    path = ws.generations_path(vector.model, vector.layer, vector.epoch)
    wanted = level_multipliers(levels)
    hint = (f"steertui generate --model {vector.model} --layer {vector.layer} --epoch {vector.epoch} "
            f"--multipliers={','.join(f'{m:g}' for m in wanted)}")  # fmt: skip
    rows = {(int(r["test_prompt_id"]), float(r["multiplier"])): r for r in iter_jsonl(path)}
    have = {m for _, m in rows}
    missing = [m for m in wanted if m not in have]
    if missing:
        listed = ", ".join(f"{m:g}" for m in missing)
        raise DataError(f"{path}: the vector has no replies at multipliers {listed} (needed for {levels} levels); "
                        f"generate them: {hint}")  # fmt: skip
    gaps = sorted({pid for pid in pids for m in wanted if (pid, m) not in rows})
    if gaps:
        raise DataError(f"{path}: the vector has no replies for {len(gaps)} of the prompts (e.g. test_prompt_id "
                        f"{gaps[0]}) at some of the multipliers {', '.join(f'{m:g}' for m in wanted)}; "
                        f"generate them: {hint}")  # fmt: skip
    return rows


def rank_unit(config: Config, rubric: Rubric, provider: ProviderSpec, vector: VectorSpec, row: dict[str, Any],
              steering: dict[tuple[int, float], Any], prompts: dict[int, DPOPair], cell: str,
              price: Price) -> Unit:  # fmt: skip
    """One head-to-head: the judge's pairwise prompt with the prompted and the vector reply, A/B by a seeded coin."""
    judge, label = config.judge, provider.label
    pid, level, mult = int(row["test_prompt_id"]), int(row["level"]), float(row["multiplier"])
    other = steering.get((pid, mult))
    if other is None or pid not in prompts:
        raise DataError(f"prompt {pid}: no vector reply at multiplier {mult:g} or no test row; regenerate")
    pair_id = f"{label}_{pid}_{level}-steering_{pid}_{mult!r}"
    baseline_a = seeded(judge.seed, RANKING, pair_id).random() < 0.5
    texts = (str(row["response_str"]), str(other["response_str"]))
    a, b = texts if baseline_a else texts[::-1]
    _, conversation = split_system(prompts[pid].prompt)
    text = pairwise_prompt(rubric.pairwise_definition, rubric.pairwise_examples, rubric.pairwise_question,
                           conversation, a, b)  # fmt: skip
    request = Request(judge.provider, judge.model, (Message("user", text),), output=PAIRWISE_OUTPUT,
                      temperature=0.0, max_tokens=judge.max_tokens)  # fmt: skip
    fields = {"test_prompt_id": pid, "baseline_model": label, "baseline_level": level, "steering_multiplier": mult,
              "is_baseline_A": baseline_a}  # fmt: skip
    ids = {"pair_id": pair_id, "baseline_generation_id": row["generation_id"],
           "steering_generation_id": other.get("generation_id"), "vector": vector.text}  # fmt: skip

    def build(entry: Entry, charged: bool) -> dict[str, Any]:
        choice, valid, reason = answer(entry)
        winner = None if not valid else (label if (choice == "A") == baseline_a else "steering_vector")
        return {**fields, "model_response": choice, "winner": winner, **ids, "valid": valid, "reason": reason,
                **usage_cost(entry, charged, price), "judge": judge.judge}  # fmt: skip

    return Unit(pair_id, Call(request, parse_pairwise, RANKING, cell, pair_id), build)
