"""Judge prompts built from a behaviour's rubric, and strict parsing of the answers.

The prompts follow the study's structure in our own words, with its bugs fixed: the few-shot choice and
the A/B position are seeded per item (a rerun sends the same request), the score-1 example block has a
proper opening tag, and the pairwise judge sees the user's conversation. Answers are never coerced: a
score must be a number in [1, 10], a pairwise answer exactly "A" or "B".
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from pipeline.data import Message
from pipeline.judges.base import Completion, OutputSpec, Verdict
from pipeline.rubric import PairExample, RatedExample

RATING_OUTPUT = OutputSpec(
    "score",
    {
        "type": "object",
        "properties": {"score": {"type": "number", "description": "A score between 1 and 10."}},
        "required": ["score"],
        "additionalProperties": False,
    },
)
PAIRWISE_OUTPUT = OutputSpec(
    "answer",
    {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["A", "B"]}},
        "required": ["answer"],
        "additionalProperties": False,
    },
)
RATING_INSTRUCTION = "Evaluate the following response and assign a score between 1 and 10."
N_RATING_EXAMPLES = 2


def seeded(*parts: object) -> random.Random:
    """A RNG determined by `parts` alone (stable across processes and Python versions)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def pick_examples(examples: Sequence[RatedExample], *seed: object) -> list[RatedExample]:
    """The item's few-shot examples: `N_RATING_EXAMPLES` drawn by a per-item seed."""
    k = min(N_RATING_EXAMPLES, len(examples))
    return seeded(*seed).sample(list(examples), k)


def conversation_text(messages: Sequence[Message]) -> str:
    return "\n".join(f"{m.role}: {m.content}" for m in messages)


def _block(tag: str, body: str) -> str:
    return f"<{tag}>\n{body}\n</{tag}>"


def rating_prompt(rubric: str, examples: Sequence[RatedExample], conversation: Sequence[Message], response: str) -> str:
    """Rubric, scored examples, instruction, the test conversation and the response to rate."""
    shots = []
    for i, ex in enumerate(examples, start=1):
        body = "\n".join(
            (
                _block("conversation history", conversation_text(ex.conversation)),
                _block("score 1 final assistant response", ex.low),
                _block("score 10 final assistant response", ex.high),
            )
        )
        shots.append(_block(f"example {i}", body))
    return "\n\n".join(
        (
            _block("context", rubric),
            _block("examples", "\n\n".join(shots)),
            _block("instruction", RATING_INSTRUCTION),
            _block("conversation history", conversation_text(conversation)),
            _block("final assistant response", response),
        )
    )


def pairwise_prompt(
    definition: str,
    examples: Sequence[PairExample],
    question: str,
    conversation: Sequence[Message],
    response_a: str,
    response_b: str,
) -> str:
    """Definition, all answered examples, the question, the user's conversation, then A and B."""
    shots = []
    for i, ex in enumerate(examples, start=1):
        body = "\n".join((_block("response A", ex.response_a), _block("response B", ex.response_b)))
        shots.append(_block(f"example {i}", f"{body}\n<answer>{ex.answer}</answer>"))
    return "\n\n".join(
        (
            _block("context", definition),
            _block("examples", "\n\n".join(shots)),
            _block("instruction", question),
            _block("conversation history", conversation_text(conversation)),
            _block("response A", response_a),
            _block("response B", response_b),
        )
    )


def _field(completion: Completion, name: str) -> tuple[object, str | None]:
    """The structured answer's `name` field, or a reason it is missing."""
    if completion.refusal:
        return None, f"refusal: {completion.refusal[:200]}"
    if not isinstance(completion.data, dict):
        return None, f"unparseable answer: {completion.text[:200]!r}"
    if name not in completion.data:
        return None, f"answer has no {name!r} field: {completion.text[:200]!r}"
    return completion.data[name], None


def parse_rating(completion: Completion) -> Verdict:
    """Valid iff the answer is a JSON number in [1, 10]."""
    value, problem = _field(completion, "score")
    if problem is not None:
        return Verdict(False, None, problem)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return Verdict(False, None, f"score is not a number: {value!r}")
    if not 1 <= value <= 10:
        return Verdict(False, None, f"score out of range [1, 10]: {value!r}")
    return Verdict(True, value)


def parse_pairwise(completion: Completion) -> Verdict:
    """Valid iff the answer is exactly "A" or "B"."""
    value, problem = _field(completion, "answer")
    if problem is not None:
        return Verdict(False, None, problem)
    if value not in ("A", "B"):
        return Verdict(False, None, f'answer is not "A" or "B": {value!r}')
    return Verdict(True, value)
