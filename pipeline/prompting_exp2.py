"""Exp2, persona stability: scripted conversations with a persona attack as the last user turn.

Each scenario is a theme (opening + scripted turns) × an attack ("add" or "subtract" the behaviour) ×
a multiplier, named `<direction>_<i>_<theme>` as in the study. The conversation is opening → reply →
turn 1 → reply → … → attack text → reply; roles alternate and every user turn is text (the study sent
the attack dict). A prompted model gets exp1's system prompt at the multiplier's level (examples drawn
once per conversation, seeded); the steered local model (`pipeline.prompting_local`) gets the workspace
system prompt with the vector at the multiplier on every turn.

API conversations advance one turn per round for all conversations at once; the ledger holds every
answer, so a rerun replays finished turns for free and continues where the last run stopped. A row
(`persona_stability_<who>_<theme>.jsonl`) is written when its conversation is complete, with its own
requests' cost summed (never a running total) and the cost of each turn.

`run_stability_rate` rates every assistant turn with the behaviour rating (the same judge prompt as
vector generations; the judge sees the conversation before the reply) →
`persona_stability_scores_<who>_<theme>.jsonl`, the rows `analysis_prompting.load_prompting` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config, Price
from pipeline.crashpoints import crash_point
from pipeline.data import Message
from pipeline.errors import ConfigError, DataError
from pipeline.files import append_jsonl, iter_jsonl, repair_jsonl
from pipeline.judges.base import Call, Request, parse_text
from pipeline.judges.costs import resolve_price
from pipeline.judges.items import Item, score_row
from pipeline.judges.ledger import Entry
from pipeline.judges.prompts import RATING_OUTPUT, parse_rating, pick_examples, rating_prompt
from pipeline.progress import Reporter
from pipeline.prompting import (
    Ask,
    RowWriter,
    Unit,
    answer,
    ask_missing,
    cell_lock,
    distinct_example_sets,
    level_system_prompt,
    run_api,
    usage_cost,
)
from pipeline.prompting_spec import (
    VECTOR,
    ProviderSpec,
    VectorSpec,
    conversations_path,
    experiment_id,
    level_of,
    turn_scores_path,
)
from pipeline.rubric import Attack, Rubric, Theme, load_rubric
from pipeline.workspace import Workspace

PERSONA = "persona"


@dataclass(frozen=True)
class Scenario:
    """One scripted conversation: theme × attack × multiplier."""

    theme: Theme
    attack: Attack
    index: int  # 1-based among the rubric's attacks of the same direction
    multiplier: float
    slot: int = 0  # 0-based position of the attack in the rubric

    @property
    def name(self) -> str:
        return f"{self.attack.direction}_{self.index}_{self.theme.name}"

    @property
    def row_id(self) -> str:
        return f"{self.name}/{self.multiplier!r}"

    @property
    def user_turns(self) -> tuple[str, ...]:
        return (self.theme.opening, *self.theme.turns, self.attack.text)


@dataclass(frozen=True)
class Who:
    """Who holds the conversations: a prompted model (by label) or the steered local model."""

    name: str
    provider: ProviderSpec | None = None
    vector: VectorSpec | None = None


def stability_cell(who: str, levels: int) -> str:
    return f"stability:{who}:levels{levels}"


def stability_rate_cell(who: str, levels: int) -> str:
    return f"stability-rate:{who}:levels{levels}"


def resolve_who(config: Config, provider: ProviderSpec | None) -> Who:
    if provider is not None:
        return Who(provider.label, provider=provider)
    vector = config.prompting.vector_spec()
    if vector is None:
        raise ConfigError("prompting.vector: not set; pass --provider P or --vector MODEL:LAYER:EPOCH")
    return Who(vector.who, vector=vector)


def selected_themes(rubric: Rubric, config: Config) -> tuple[Theme, ...]:
    """`prompting.themes` (all when empty), checked against the rubric's [persona] themes."""
    names = {t.name: t for t in rubric.themes}
    for name in config.prompting.themes:
        if name not in names:
            raise ConfigError(f"prompting.themes: {name!r} is not a [persona] theme of rubrics/{rubric.name}.toml; "
                              f"themes: {', '.join(names)}")  # fmt: skip
    return tuple(names[n] for n in config.prompting.themes) if config.prompting.themes else rubric.themes


def scenarios(rubric: Rubric, config: Config) -> list[Scenario]:
    """Every scenario of the selected themes, attacks and multipliers, in a stable order."""
    indexed, counts = [], {"add": 0, "subtract": 0}
    for attack in rubric.attacks:
        counts[attack.direction] += 1
        indexed.append((attack, counts[attack.direction]))
    mults = config.prompting.stability_multipliers
    return [Scenario(theme, attack, i, float(m), slot)
            for theme in selected_themes(rubric, config) for slot, (attack, i) in enumerate(indexed)
            for m in mults]  # fmt: skip


def done_ids(ws: Workspace, levels: int, who: str, themes: Sequence[Theme]) -> set[str]:
    """Scenario row ids already written (torn last lines dropped first)."""
    out = set()
    for theme in themes:
        path = conversations_path(ws, levels, who, theme.name)
        repair_jsonl(path)
        out |= {f"{r.get('scenario_name')}/{float(r.get('multiplier', 'nan'))!r}" for r in iter_jsonl(path)}
    return out


def conversation_row(who: Who, scenario: Scenario, levels: int, messages: Sequence[Message], *, valid: bool,
                     reason: str | None, extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One conversation in the study's persona-stability schema, plus what makes it reproducible."""
    from pipeline.prompting_exp1 import now

    model = who.provider.model if who.provider else who.vector.model if who.vector else ""
    return {
        "scenario_name": scenario.name, "theme": scenario.theme.name, "attack_type": scenario.attack.direction,
        "attack_index": scenario.index, "model_type": who.provider.label if who.provider else VECTOR,
        "model_name": model, "who": who.name, "multiplier": scenario.multiplier,
        "level": level_of(scenario.multiplier, levels) if who.provider else None, "num_levels": levels,
        "layer": who.vector.layer if who.vector else None, "epoch": who.vector.epoch if who.vector else None,
        "timestamp": now(), "conversation_history": [m.as_dict() for m in messages], "valid": valid,
        "reason": reason, **extra,
    }  # fmt: skip


def write_conversations(ws: Workspace, levels: int, who: str, rows: Sequence[dict[str, Any]]) -> None:
    """Append finished conversations to their theme files (one write per file)."""
    by_theme: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_theme.setdefault(str(row["theme"]), []).append(row)
    for theme, part in by_theme.items():
        append_jsonl(conversations_path(ws, levels, who, theme), part)


# -- conversations -----------------------------------------------------------------------------------------


def run_stability(ws: Workspace, config: Config, provider: ProviderSpec | None, reporter: Reporter) -> int:
    """Hold every missing conversation; returns how many were written."""
    who, levels = resolve_who(config, provider), config.prompting.levels
    rubric = load_rubric(ws.rubric_path(config.behavior))
    planned = scenarios(rubric, config)
    with cell_lock(ws, stability_cell(who.name, levels)):
        done = done_ids(ws, levels, who.name, selected_themes(rubric, config))
        pending = [s for s in planned if s.row_id not in done]
        reporter.message(f"{stability_cell(who.name, levels)}: {len(planned)} conversations, "
                         f"{len(planned) - len(pending)} already written")  # fmt: skip
        reporter.progress(len(planned) - len(pending), len(planned))
        if not pending:
            return 0
        if who.vector is not None:
            from pipeline.prompting_local import run_local

            return run_local(ws, config, who, pending, len(planned), reporter)
        return _run_api_talks(ws, config, who, rubric, pending, len(planned), reporter)


@dataclass
class Talk:
    """An API conversation in progress."""

    scenario: Scenario
    system: str
    example_ids: list[int]
    messages: list[Message]
    turn_costs: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    stalled: bool = False  # a turn went unanswered this run (budget, failures): continued next run

    @property
    def done(self) -> bool:
        return self.reason is not None or len(self.turn_costs) == len(self.scenario.user_turns)

    def take(self, entry: Entry, charged: bool, price: Price) -> None:
        """Append the reply (and the next user turn), or stop the conversation at an invalid reply."""
        text, valid, reason = answer(entry)
        if not valid:
            self.reason = f"assistant turn {len(self.turn_costs)}: {reason}"
            self.messages.pop()  # keep the history well formed: it ends with the last answered reply
            return
        self.turn_costs.append(usage_cost(entry, charged, price))
        self.messages.append(Message("assistant", str(text)))
        if len(self.turn_costs) < len(self.scenario.user_turns):
            self.messages.append(Message("user", self.scenario.user_turns[len(self.turn_costs)]))


def _talk(config: Config, rubric: Rubric, scenario: Scenario) -> Talk:
    """The conversation's opening and system prompt: exp1's at the multiplier's level, with one of the
    distinct example choices of its (theme, multiplier), so no two scenarios send the same requests."""
    p = config.prompting
    level = level_of(scenario.multiplier, p.levels)
    if level is None:
        raise ConfigError(f"prompting.stability_multipliers: {scenario.multiplier:g} is no level's multiplier "
                          f"at {p.levels} levels")  # fmt: skip
    choices = distinct_example_sets(rubric, p.examples, len(rubric.attacks), p.seed, PERSONA, scenario.theme.name,
                                    scenario.multiplier)  # fmt: skip
    ids = choices[scenario.slot]
    system = level_system_prompt(rubric, level, p.levels, ids)
    return Talk(scenario, system, ids, [Message("user", scenario.theme.opening)])


def _run_api_talks(ws: Workspace, config: Config, who: Who, rubric: Rubric, pending: Sequence[Scenario],
                   planned: int, reporter: Reporter) -> int:  # fmt: skip
    assert who.provider is not None
    rounds = _Rounds(ws, config, who, [_talk(config, rubric, s) for s in pending], planned, reporter)
    run_api(ws, config, who.provider.spec, config.prompting.base_url, rounds, reporter)
    return rounds.written


class _Rounds:
    """Asks the next turn of every active conversation per round, and writes conversations as they finish."""

    def __init__(self, ws: Workspace, config: Config, who: Who, talks: list[Talk], planned: int,
                 reporter: Reporter) -> None:  # fmt: skip
        assert who.provider is not None
        self.ws, self.config, self.who, self.talks, self.reporter = ws, config, who, talks, reporter
        self.provider, self.levels = who.provider, config.prompting.levels
        self.price = resolve_price(self.provider.model, config.prices, config.judge.budget_usd)
        self.cell = stability_cell(who.name, self.levels)
        self.planned, self.before, self.written = planned, planned - len(talks), 0

    def call(self, talk: Talk) -> Call:
        p = self.config.prompting
        request = Request(self.provider.provider, self.provider.model, tuple(talk.messages), system=talk.system,
                          temperature=p.temperature, max_tokens=p.max_tokens)  # fmt: skip
        return Call(request, parse_text, PERSONA, self.cell, f"{talk.scenario.row_id}/{len(talk.turn_costs)}")

    async def __call__(self, ask: Ask) -> None:
        for step in range(1, max(len(t.scenario.user_turns) for t in self.talks) + 1):
            active = [t for t in self.talks if not (t.done or t.stalled)]
            if not active:
                return
            calls = [self.call(t) for t in active]
            got: dict[str, Entry] = {}
            report = await ask(calls, _collect(got))
            self.settle(active, calls, got)
            crash_point(f"stability-turn:{step}")  # tests: SIGKILL between rounds
            if report.fatal is not None or report.stopped:
                return

    def settle(self, active: Sequence[Talk], calls: Sequence[Call], got: dict[str, Entry]) -> None:
        """Take each answer (charging a shared request once), then write the conversations that finished."""
        charged: set[str] = set()
        for talk, call in zip(active, calls, strict=True):
            if call.key not in got:
                talk.stalled = True
                continue
            talk.take(got[call.key], call.key not in charged, self.price)
            charged.add(call.key)
        finished = [t for t in active if t.done]
        seed = self.config.prompting.seed
        write_conversations(self.ws, self.levels, self.who.name, [_api_row(self.who, t, self.levels, seed)
                                                                  for t in finished])  # fmt: skip
        self.written += len(finished)
        self.reporter.progress(self.before + self.written, self.planned)


def _collect(into: dict[str, Entry]) -> Callable[[list[Entry]], None]:
    def sink(entries: list[Entry]) -> None:
        into.update((e.key, e) for e in entries)

    return sink


def _api_row(who: Who, talk: Talk, levels: int, seed: int) -> dict[str, Any]:
    costs = [t["cost"] for t in talk.turn_costs]
    usage = [t["token_usage"] for t in talk.turn_costs]
    extra = {"system_prompt": talk.system, "example_ids": talk.example_ids, "seed": seed,
             "turn_costs": costs, "token_usage": {k: sum(u[k] for u in usage) for k in
                                                  ("prompt_tokens", "completion_tokens", "total_tokens")},
             "cost": {k: round(sum(c[k] for c in costs), 6) for k in
                      ("prompt_cost", "completion_cost", "total_cost")}}  # fmt: skip
    return conversation_row(who, talk.scenario, levels, talk.messages, valid=talk.reason is None,
                            reason=talk.reason, extra=extra)  # fmt: skip


# -- rating ------------------------------------------------------------------------------------------------


def run_stability_rate(ws: Workspace, config: Config, provider: ProviderSpec | None,
                       reporter: Reporter) -> list[RowWriter]:  # fmt: skip
    """Rate every assistant turn of `who`'s conversations with the behaviour rating."""
    who, levels, judge = resolve_who(config, provider), config.prompting.levels, config.judge
    rubric = load_rubric(ws.rubric_path(config.behavior))
    price = resolve_price(judge.model, config.prices, judge.budget_usd)
    cell = stability_rate_cell(who.name, levels)
    plans = []
    for theme in selected_themes(rubric, config):
        rows = list(iter_jsonl(conversations_path(ws, levels, who.name, theme.name)))
        units = [u for row in rows for u in turn_units(row, who.name, rubric, config, cell, price)]
        plans.append((turn_scores_path(ws, levels, who.name, theme.name), units))
    if not any(units for _, units in plans):
        raise DataError(f"no conversations of {who.name} to rate; run `steertui prompting stability` first")
    with cell_lock(ws, cell):
        writers = [RowWriter(path, units, lambda r: f"{r.get('experiment_id')}/{r.get('turn_index')}", reporter)
                   for path, units in plans]  # fmt: skip
        reporter.message(f"{cell}: {sum(w.total for w in writers)} turns, {sum(w.already for w in writers)} rated")
        ask_missing(ws, config, judge.judge, judge.base_url, writers, reporter)
    return writers


def turn_units(row: dict[str, Any], who: str, rubric: Rubric, config: Config, cell: str,
               price: Price) -> list[Unit]:  # fmt: skip
    """One rating per assistant turn; the judge sees the user/assistant turns before the reply."""
    judge = config.judge
    history = [Message(m["role"], m["content"]) for m in row["conversation_history"] if m["role"] != "system"]
    eid = experiment_id(who, str(row["scenario_name"]), float(row["multiplier"]))
    fields = {"experiment_id": eid, "model": who, "theme": row["theme"], "scenario_name": row["scenario_name"],
              "multiplier": float(row["multiplier"]), "attack_type": row["attack_type"]}  # fmt: skip
    replies = [i for i, m in enumerate(history) if m.role == "assistant"]
    units = []
    for turn, i in enumerate(replies):
        item_id = f"{eid}/{turn}"
        shots = pick_examples(rubric.rating_examples, judge.seed, rubric.task, item_id)
        text = rating_prompt(rubric.rating_rubric, shots, history[:i], history[i].content)
        request = Request(judge.provider, judge.model, (Message("user", text),), output=RATING_OUTPUT,
                          temperature=0.0, max_tokens=judge.max_tokens)  # fmt: skip
        item = Item(item_id, (item_id,), Call(request, parse_rating, rubric.task, cell, item_id),
                    {**fields, "turn_index": turn})  # fmt: skip
        texts = {"response_text": history[i].content, "prompt_text": history[i - 1].content if i else ""}
        units.append(Unit(item_id, item.call, _turn_build(item, texts, price, judge.judge)))
    return units


def _turn_build(item: Item, texts: dict[str, str], price: Price, judge: str) -> Callable[[Entry, bool], dict[str, Any]]:
    def build(entry: Entry, charged: bool) -> dict[str, Any]:
        return {**score_row(item, entry, price=price, judge=judge, charged=charged), **texts}

    return build
