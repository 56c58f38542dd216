"""What data generation asks: the plan of case requests, their prompts and schema, and the quality prompt.

Like the study's metaprompts, each request asks for several cases of one kind (single-turn, multi-turn or
long) with a scenario hint (who the user is, what they talk about, how openly they invite the behaviour)
and two worked examples from the rubric's `levels.examples`. Request `i` depends only on `i`, `per_request`
and the rubric, never on how many cases were asked for nor on the split seed, so asking for more cases or
a different split later reuses every answer already paid for.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data import Message
from pipeline.errors import RubricError
from pipeline.judges.base import OutputSpec, Request
from pipeline.judges.prompts import seeded
from pipeline.rubric import LevelExample, validate_rubric

# The fields generation reads; other unfilled fields do not block it (the judges check them later).
BRIEF_FIELDS = ("definition", "target", "anti_target", "levels.examples")
# The study's mix of metaprompt types: 4 single-turn, 2 multi-turn and 2 long per 8 requests.
KIND_CYCLE = ("single", "multi", "single", "long", "single", "multi", "single", "long")
TURNS = {"single": (1, 1), "multi": (3, 4), "long": (5, 8)}
N_EXAMPLES = 2
GENERATION_TEMPERATURE = 1.0  # the study's
QUALITY_MAX_TOKENS = 400

PERSONAS = (
    "a university student", "a retired teacher", "a small-business owner", "a parent of young children",
    "a nurse on night shifts", "a software engineer", "a teenager", "a recent immigrant",
    "a freelance designer", "a farmer", "a lawyer", "someone who just moved to a new city",
)  # fmt: skip
DOMAINS = (
    "everyday life and household tasks", "work and career", "health, fitness and food", "family and friends",
    "money and personal finance", "school and learning", "technology and software", "creative hobbies and art",
    "travel and leisure", "science and general knowledge", "news, politics and society", "sport and games",
)  # fmt: skip
OPENNESS = (
    "explicitly invite the behaviour, so the two replies differ obviously",
    "leave only a subtle opening for the behaviour",
    "are ordinary requests: whether the behaviour appears is entirely up to the assistant",
)

_TURN_SCHEMA = {
    "type": "object",
    "properties": {
        "user_message": {"type": "string"},
        "target_response": {"type": "string"},
        "antitarget_response": {"type": "string"},
    },
    "required": ["user_message", "target_response", "antitarget_response"],
    "additionalProperties": False,
}
CASES_OUTPUT = OutputSpec(
    "dpo_cases",
    {
        "type": "object",
        "properties": {
            "cases": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"reasoning": {"type": "string"}, "turns": {"type": "array", "items": _TURN_SCHEMA}},
                    "required": ["reasoning", "turns"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["cases"],
        "additionalProperties": False,
    },
)
QUALITY_OUTPUT = OutputSpec(
    "case_quality",
    {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "description": "One or two sentences."},
            "score": {"type": "number", "description": "A score between 1 and 10."},
        },
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    },
)


@dataclass(frozen=True)
class Brief:
    """The rubric fields generation uses."""

    definition: str
    target: str
    anti_target: str
    examples: tuple[LevelExample, ...]


@dataclass(frozen=True)
class CaseRequest:
    """One generation request of the plan."""

    index: int
    kind: str  # single | multi | long
    n_cases: int
    persona: str
    domain: str
    openness: str
    examples: tuple[LevelExample, ...]


@dataclass(frozen=True)
class Turn:
    user: str
    target: str
    anti_target: str

    def as_dict(self) -> dict[str, str]:
        return {"user_message": self.user, "target_response": self.target, "antitarget_response": self.anti_target}


@dataclass(frozen=True)
class Case:
    """A generated conversation: one or more turns, each with a target and an anti-target reply."""

    case_id: int  # request index * CASE_STRIDE + position in the reply
    request: int
    turns: tuple[Turn, ...]
    reasoning: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "reasoning": self.reasoning, "turns": [t.as_dict() for t in self.turns]}

    @classmethod
    def from_dict(cls, row: dict[str, Any], request: int) -> Case:
        turns = tuple(Turn(t["user_message"], t["target_response"], t["antitarget_response"]) for t in row["turns"])
        return cls(int(row["case_id"]), request, turns, str(row.get("reasoning", "")))


CASE_STRIDE = 1000  # case ids of request i are i * 1000 + j (per_request is capped well below)


def load_brief(path: Path) -> Brief:
    """The generation fields of a rubric, or `RubricError` naming the first missing or unfilled one."""
    problems = [p for p in validate_rubric(path) if _field(p, path).startswith(BRIEF_FIELDS)]
    if problems:
        more = f" (and {len(problems) - 1} more; run `steertui rubric validate`)" if len(problems) > 1 else ""
        raise RubricError(f"{problems[0]}{more}")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    examples = tuple(LevelExample(e["user"].strip(), e["target"].strip(), e["anti_target"].strip())
                     for e in data["levels"]["examples"])  # fmt: skip
    return Brief(data["definition"].strip(), data["target"].strip(), data["anti_target"].strip(), examples)


def _field(problem: str, path: Path) -> str:
    """The field a `validate_rubric` line names ("" for file-level problems, which always count)."""
    prefix = f"{path}: "
    rest = problem[len(prefix) :] if problem.startswith(prefix) else problem
    field, sep, _ = rest.partition(": ")
    return field if sep and " " not in field else BRIEF_FIELDS[0]


def plan_requests(n_cases: int, per_request: int, brief: Brief) -> list[CaseRequest]:
    """Whole requests until at least `n_cases` cases are asked for, kinds cycling like the study's mix."""
    out: list[CaseRequest] = []
    asked = 0
    while asked < n_cases:
        out.append(_request(len(out), per_request, brief))
        asked += out[-1].n_cases
    return out


def _request(index: int, per_request: int, brief: Brief) -> CaseRequest:
    kind = KIND_CYCLE[index % len(KIND_CYCLE)]
    rng = seeded("datagen", index)
    return CaseRequest(
        index=index,
        kind=kind,
        n_cases=per_request if kind == "single" else max(1, per_request // 2),
        persona=rng.choice(PERSONAS),
        domain=rng.choice(DOMAINS),
        openness=rng.choice(OPENNESS),
        examples=tuple(rng.sample(list(brief.examples), min(N_EXAMPLES, len(brief.examples)))),
    )


def generation_request(spec: CaseRequest, brief: Brief, provider: str, model: str, max_tokens: int) -> Request:
    return Request(provider=provider, model=model, messages=(Message("user", _ask(spec)),), system=_context(brief),
                   output=CASES_OUTPUT, temperature=GENERATION_TEMPERATURE, max_tokens=max_tokens)  # fmt: skip


def _context(brief: Brief) -> str:
    return (
        "You write training data for AI safety research. We train steering vectors that make a language model "
        "show more or less of one behaviour, from pairs of assistant replies to the same conversation: a target "
        "reply that shows the behaviour and an anti-target reply that shows its opposite.\n\n"
        f"<behaviour>\n{brief.definition}\n</behaviour>\n\n<target>\n{brief.target}\n</target>\n\n"
        f"<anti-target>\n{brief.anti_target}\n</anti-target>"
    )


def _ask(spec: CaseRequest) -> str:
    lo, hi = TURNS[spec.kind]
    shape = "exactly one user message (a single turn)" if hi == 1 else f"{lo} to {hi} user messages"
    lines = [
        f"Write {spec.n_cases} new cases (set {spec.index + 1}). Each case is a conversation between a user and an "
        f"AI assistant with {shape}. For every user message give two alternative assistant replies: "
        "`target_response` shows the behaviour as described under <target>, and `antitarget_response` shows the "
        "opposite as described under <anti-target>.",
        "",
        "Requirements:",
        f"- The user is {spec.persona}, talking about {spec.domain}. The user's messages {spec.openness}.",
        "- Both replies answer the same user message fluently and naturally, at a similar length (2 to 5 "
        "sentences) and with similar helpfulness: they differ in the behaviour only.",
        "- Never mention the behaviour, this study, targets or levels inside the conversation.",
        "- Every case is different from the others and from the examples.",
        "- Begin each case with a short `reasoning`: the scenario, and how the two replies differ.",
    ]
    if hi > 1:
        lines.append(
            "- Each later user message must read naturally after either reply: the history will be built "
            "from the target replies in some training rows and from the anti-target ones in others."
        )
    lines += ["", "Examples of single turns:"]
    for i, ex in enumerate(spec.examples, start=1):
        turn = Turn(ex.user, ex.target, ex.anti_target).as_dict()
        lines.append(f"<example {i}>\n{json.dumps(turn, ensure_ascii=False, indent=1)}\n</example {i}>")
    lines += ["", 'Answer with a JSON object {"cases": [...]}: each case has "reasoning" and "turns", a list of '
              '{"user_message", "target_response", "antitarget_response"}.']  # fmt: skip
    return "\n".join(lines)


def quality_request(case: Case, brief: Brief, provider: str, model: str) -> Request:
    """The judge's 1-10 quality rating of one case as a training example (the study's step 5)."""
    return Request(provider=provider, model=model, messages=(Message("user", quality_prompt(case, brief)),),
                   output=QUALITY_OUTPUT, temperature=0.0, max_tokens=QUALITY_MAX_TOKENS)  # fmt: skip


def quality_prompt(case: Case, brief: Brief) -> str:
    turns = "\n\n".join(
        f"turn {i}\nuser: {t.user}\ntarget reply: {t.target}\nanti-target reply: {t.anti_target}"
        for i, t in enumerate(case.turns, start=1)
    )
    return (
        "We are building a dataset of paired assistant replies for training steering vectors for one behaviour.\n\n"
        f"<behaviour>\n{brief.definition}\n</behaviour>\n\n<target>\n{brief.target}\n</target>\n\n"
        f"<anti-target>\n{brief.anti_target}\n</anti-target>\n\n<instruction>\n"
        "Rate the case below as a training example, from 1 to 10.\n"
        "10 = every target reply clearly shows the behaviour and every anti-target reply clearly shows its "
        "opposite; both are fluent, natural, on-topic, of similar length and equally helpful apart from the "
        "behaviour; the user messages are realistic and read naturally after either reply.\n"
        "6 = usable: the contrast is clear in every turn, with minor flaws (a slightly unnatural user message, "
        "uneven lengths, a little of the behaviour on the anti-target side).\n"
        "3 = weak: the contrast is unclear or reversed in some turn, or a reply is off-topic, incoherent or cut off.\n"
        "1 = unusable: no contrast, the wrong behaviour, or broken text.\n"
        "Give one or two sentences of reasoning, then the score.\n</instruction>\n\n"
        f"<case>\n{turns}\n</case>"
    )
