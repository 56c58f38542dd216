"""A behaviour's rubric (`rubrics/<behavior>.toml`): definitions, judge rubrics, few-shot examples,
level-prompt text and persona attacks. Everything behaviour-specific lives here, so a new behaviour
needs no code change.

`validate_rubric` lists every missing, empty or unfilled (`TODO`) field; `load_rubric` raises
`RubricError` naming the first.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data import Message
from pipeline.errors import RubricError

PLACEHOLDER = "TODO"
LEVEL_FIELDS = ("level", "num_levels", "midpoint")


@dataclass(frozen=True)
class RatedExample:
    conversation: tuple[Message, ...]
    low: str  # a score-1 final response
    high: str  # a score-10 final response


@dataclass(frozen=True)
class PairExample:
    response_a: str
    response_b: str
    answer: str


@dataclass(frozen=True)
class LevelExample:
    user: str
    target: str
    anti_target: str


@dataclass(frozen=True)
class Theme:
    name: str
    opening: str
    turns: tuple[str, ...]


@dataclass(frozen=True)
class Attack:
    direction: str  # "add" or "subtract"
    text: str


@dataclass(frozen=True)
class Rubric:
    name: str
    task: str
    definition: str
    target: str
    anti_target: str
    coherence_rubric: str
    coherence_examples: tuple[RatedExample, ...]
    rating_rubric: str
    rating_examples: tuple[RatedExample, ...]
    pairwise_definition: str
    pairwise_question: str
    pairwise_examples: tuple[PairExample, ...]
    level_instruction: str
    level_examples: tuple[LevelExample, ...]
    themes: tuple[Theme, ...]
    attacks: tuple[Attack, ...]
    digest: str  # sha256 of the file, recorded with judge requests

    def level_text(self, level: int, num_levels: int) -> str:
        return self.level_instruction.format(level=level, num_levels=num_levels, midpoint=num_levels // 2 + 1)


def default_task(behavior: str) -> str:
    """The rating task's name when a rubric does not give one: the study's for its behaviour, else the
    behaviour's own name (file names then say what was measured)."""
    return "relationship" if behavior == "relationship-seeking" else behavior


def read_task_name(path: Path) -> str | None:
    """The rubric's task name without full validation (config checks use it)."""
    try:
        with path.open("rb") as fh:
            task = tomllib.load(fh).get("task")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return task if isinstance(task, str) and task.strip() else None


def validate_rubric(path: Path) -> list[str]:
    """Every problem as `file: field: what is wrong`; empty means valid."""
    try:
        _parse(path)
    except RubricError as exc:
        return list(exc.args[1]) if len(exc.args) > 1 else [exc.message]
    return []


def load_rubric(path: Path) -> Rubric:
    return _parse(path)


def _parse(path: Path) -> Rubric:
    if not path.is_file():
        raise RubricError(f"{path}: rubric not found; create it with `steertui behavior new NAME`")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RubricError(f"{path}: invalid TOML: {exc}") from None
    reader = _Reader(path, data)
    rubric = reader.rubric(hashlib.sha256(raw).hexdigest())
    if reader.problems:
        first = reader.problems[0]
        more = (
            f" (and {len(reader.problems) - 1} more; run `steertui rubric validate`)"
            if len(reader.problems) > 1
            else ""
        )
        err = RubricError(first + more)
        err.args = (first + more, reader.problems)
        raise err
    return rubric


class _Reader:
    """Collects every problem while reading, so validation reports them all at once."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.problems: list[str] = []

    def fail(self, key: str, what: str) -> None:
        self.problems.append(f"{self.path}: {key}: {what}")

    def text(self, node: Any, key: str, where: str) -> str:
        value = node.get(key) if isinstance(node, dict) else None
        full = f"{where}.{key}" if where else key
        if value is None:
            self.fail(full, "missing")
        elif not isinstance(value, str) or not value.strip():
            self.fail(full, "must be a non-empty string")
        elif PLACEHOLDER in value:
            self.fail(full, f"still contains the {PLACEHOLDER} placeholder; fill it in")
        else:
            return value.strip()
        return ""

    def table(self, key: str) -> dict[str, Any]:
        node = self.data.get(key)
        if not isinstance(node, dict):
            self.fail(key, "missing section")
            return {}
        return node

    def items(self, node: dict[str, Any], key: str, where: str, minimum: int) -> list[dict[str, Any]]:
        items = node.get(key)
        full = f"{where}.{key}" if where else key
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            self.fail(full, f"missing; add at least {minimum} [[{full}]] entries")
            return []
        if len(items) < minimum:
            self.fail(full, f"needs at least {minimum} entries, has {len(items)}")
        return items

    def rated(self, section: str) -> tuple[str, tuple[RatedExample, ...]]:
        node = self.table(section)
        rubric = self.text(node, "rubric", section)
        out = []
        for i, ex in enumerate(self.items(node, "examples", section, 2)):
            where = f"{section}.examples[{i}]"
            convo = ex.get("conversation")
            msgs: list[Message] = []
            if not isinstance(convo, list) or not convo:
                self.fail(f"{where}.conversation", "must be a non-empty list of {role, content}")
            else:
                for j, msg in enumerate(convo):
                    role = self.text(msg, "role", f"{where}.conversation[{j}]")
                    msgs.append(Message(role, self.text(msg, "content", f"{where}.conversation[{j}]")))
            out.append(RatedExample(tuple(msgs), self.text(ex, "low", where), self.text(ex, "high", where)))
        return rubric, tuple(out)

    def rubric(self, digest: str) -> Rubric:
        d = self.data
        coherence, coherence_ex = self.rated("coherence")
        rating, rating_ex = self.rated("rating")
        pairwise = self.table("pairwise")
        levels = self.table("levels")
        persona = self.table("persona")
        return Rubric(
            name=self.text(d, "name", ""),
            task=self._task(),
            definition=self.text(d, "definition", ""),
            target=self.text(d, "target", ""),
            anti_target=self.text(d, "anti_target", ""),
            coherence_rubric=coherence,
            coherence_examples=coherence_ex,
            rating_rubric=rating,
            rating_examples=rating_ex,
            pairwise_definition=self.text(pairwise, "definition", "pairwise"),
            pairwise_question=self.text(pairwise, "question", "pairwise"),
            pairwise_examples=self._pairs(pairwise),
            level_instruction=self._level_instruction(levels),
            level_examples=tuple(
                LevelExample(*(self.text(ex, k, f"levels.examples[{i}]") for k in ("user", "target", "anti_target")))
                for i, ex in enumerate(self.items(levels, "examples", "levels", 2))
            ),
            themes=self._themes(persona),
            attacks=self._attacks(persona),
            digest=digest,
        )

    def _task(self) -> str:
        task = self.text(self.data, "task", "")
        if task and not task.replace("_", "").replace("-", "").isalnum():
            self.fail("task", "use letters, digits, - or _ only (it becomes part of file names)")
        if task in ("coherence", "pairwise"):
            self.fail("task", f"{task!r} is reserved; name the behaviour's rating task")
        return task

    def _pairs(self, node: dict[str, Any]) -> tuple[PairExample, ...]:
        out = []
        for i, ex in enumerate(self.items(node, "examples", "pairwise", 2)):
            where = f"pairwise.examples[{i}]"
            answer = ex.get("answer")
            if answer not in ("A", "B"):
                self.fail(f"{where}.answer", f'must be "A" or "B", got {answer!r}')
            out.append(PairExample(self.text(ex, "response_a", where), self.text(ex, "response_b", where), str(answer)))
        return tuple(out)

    def _level_instruction(self, node: dict[str, Any]) -> str:
        text = self.text(node, "instruction", "levels")
        if text:
            try:
                text.format(level=1, num_levels=7, midpoint=4)
            except (KeyError, IndexError, ValueError) as exc:
                self.fail(
                    "levels.instruction", f"bad placeholder ({exc}); use only {{level}}, {{num_levels}}, {{midpoint}}"
                )
            missing = [f for f in LEVEL_FIELDS if "{" + f + "}" not in text]
            if missing:
                self.fail("levels.instruction", f"missing placeholder {{{missing[0]}}}")
        return text

    def _themes(self, node: dict[str, Any]) -> tuple[Theme, ...]:
        out = []
        for i, th in enumerate(self.items(node, "themes", "persona", 1)):
            where = f"persona.themes[{i}]"
            turns = th.get("turns")
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
                self.fail(f"{where}.turns", "must be a non-empty list of user messages")
                turns = []
            elif any(PLACEHOLDER in t for t in turns):
                self.fail(f"{where}.turns", f"still contains the {PLACEHOLDER} placeholder; fill it in")
            out.append(Theme(self.text(th, "name", where), self.text(th, "opening", where), tuple(turns)))
        return tuple(out)

    def _attacks(self, node: dict[str, Any]) -> tuple[Attack, ...]:
        out = []
        for i, at in enumerate(self.items(node, "attacks", "persona", 2)):
            where = f"persona.attacks[{i}]"
            direction = at.get("direction")
            if direction not in ("add", "subtract"):
                self.fail(f"{where}.direction", f'must be "add" or "subtract", got {direction!r}')
            out.append(Attack(str(direction), self.text(at, "text", where)))
        if out and {a.direction for a in out} != {"add", "subtract"}:
            self.fail("persona.attacks", "needs at least one add and one subtract attack")
        return tuple(out)
