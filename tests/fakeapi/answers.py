"""Request introspection shared by both providers.

Everything here is pure (no I/O, no locks): turning a request body into its billing key, its prompt
text and the kind of answer it wants, and turning an answer value into the structured object or text
the fake model "says".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Provider = Literal["openai", "anthropic"]
Kind = Literal["rating", "pairwise", "text"]
ContentFault = Literal["malformed", "out_of_range"]
AnswerValue = str | int | float

#: Raw (non-JSON / wrong-typed) answers used by the ``malformed`` fault.
MALFORMED_TEXT: dict[Kind, str] = {
    "rating": "I think 7ish",
    "pairwise": "I think A, but B is also fine",
    "text": "",
}


@dataclass(frozen=True)
class OutputSpec:
    """What shape of answer a request asks for.

    ``name`` is the structured-output schema name that goes into :func:`request_key`: the OpenAI
    ``json_schema.name`` (or ``"json_object"``), the forced Anthropic tool name, or
    ``"output_config.format"`` for Anthropic JSON outputs; ``None`` for plain text.
    """

    kind: Kind
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    tool_name: str | None = None  # Anthropic only: answer with a ``tool_use`` block for this tool
    json_object: bool = False  # OpenAI ``{"type": "json_object"}``: free text, but wrapped in JSON


@dataclass(frozen=True)
class AnswerRequest:
    """What an answer function gets to look at."""

    provider: Provider
    model: str
    prompt: str  # all system/message text contents joined with blank lines
    kind: Kind
    schema_name: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the raw request body / batch params
    custom_id: str | None = None  # set when the request is a batch line


AnswerFn = Callable[[AnswerRequest], AnswerValue]


@dataclass(frozen=True)
class Reply:
    """What the fake model says: a structured object, or free (possibly malformed) text."""

    obj: dict[str, Any] | None = None
    text: str | None = None

    def as_text(self) -> str:
        return json.dumps(self.obj) if self.obj is not None else (self.text or "")


# --------------------------------------------------------------------------------------------- parsing


def content_text(content: object) -> str:
    """Flatten a message ``content`` (a string or a list of blocks) to its text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "\n".join(parts)
    return ""


def _normalised_content(content: object) -> object:
    """Text-only content in canonical form (a string); anything else (images, tool results) verbatim."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in content
    ):
        return content_text(content)
    return content


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = body.get("messages")
    return [m for m in raw if isinstance(m, Mapping)] if isinstance(raw, list) else []


def prompt_text(provider: str, body: Mapping[str, Any]) -> str:
    """All prompt text of a request (Anthropic ``system`` first), joined with blank lines."""
    parts: list[str] = []
    if provider == "anthropic" and body.get("system") is not None:
        parts.append(content_text(body.get("system")))
    parts.extend(content_text(m.get("content")) for m in _messages(body))
    return "\n\n".join(p for p in parts if p)


def kind_of_schema(schema: Mapping[str, Any] | None) -> Kind:
    """``rating`` if the schema has a ``score`` property, ``pairwise`` for ``answer``, else ``text``."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if isinstance(props, Mapping):
        if "score" in props:
            return "rating"
        if "answer" in props:
            return "pairwise"
    return "text"


def _openai_spec(body: Mapping[str, Any]) -> OutputSpec:
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        js = fmt.get("json_schema")
        js = js if isinstance(js, Mapping) else {}
        schema = js.get("schema") if isinstance(js.get("schema"), Mapping) else {}
        name = js.get("name") if isinstance(js.get("name"), str) else None
        return OutputSpec(kind=kind_of_schema(schema), name=name, schema=schema)
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return OutputSpec(kind="text", name="json_object", json_object=True)
    return OutputSpec(kind="text")


def _anthropic_spec(body: Mapping[str, Any]) -> OutputSpec:
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    choice = body.get("tool_choice")
    forced: Mapping[str, Any] | None = None
    if isinstance(choice, Mapping) and choice.get("type") == "tool":
        forced = next((t for t in tools if t.get("name") == choice.get("name")), None)
    elif isinstance(choice, Mapping) and choice.get("type") == "any" and tools:
        forced = tools[0]
    if forced is not None:
        schema = forced.get("input_schema") if isinstance(forced.get("input_schema"), Mapping) else {}
        return OutputSpec(
            kind=kind_of_schema(schema),
            name=str(forced.get("name")),
            schema=schema,
            tool_name=str(forced.get("name")),
        )
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema") if isinstance(fmt.get("schema"), Mapping) else {}
        return OutputSpec(kind=kind_of_schema(schema), name="output_config.format", schema=schema)
    return OutputSpec(kind="text")


def output_spec(provider: str, body: Mapping[str, Any]) -> OutputSpec:
    """Infer the answer kind and structured-output schema of a request body."""
    return _anthropic_spec(body) if provider == "anthropic" else _openai_spec(body)


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_key(provider: str, body: Mapping[str, Any]) -> str:
    """Billing identity of a completion request: sha256 of canonical JSON of the provider, model,
    system prompt and messages (role + content, text-only content flattened to a string) and the
    structured-output schema name. Sampling parameters (max_tokens, temperature, ...) are ignored,
    and a sync call and a batch line with the same body share a key."""
    payload = {
        "provider": provider,
        "model": body.get("model"),
        "system": _normalised_content(body.get("system")) if provider == "anthropic" else None,
        "messages": [
            {"role": m.get("role"), "content": _normalised_content(m.get("content"))} for m in _messages(body)
        ],
        "schema": output_spec(provider, body).name,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def answer_request(provider: Provider, body: Mapping[str, Any], custom_id: str | None = None) -> AnswerRequest:
    spec = output_spec(provider, body)
    return AnswerRequest(
        provider=provider,
        model=str(body.get("model", "")),
        prompt=prompt_text(provider, body),
        kind=spec.kind,
        schema_name=spec.name,
        body=body,
        custom_id=custom_id,
    )


# --------------------------------------------------------------------------------------------- answers


def _prompt_hash(prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")


def default_answer(request: AnswerRequest) -> AnswerValue:
    """Deterministic in the prompt text: a 1-10 score, ``"A"``/``"B"``, or a short sentence."""
    h = _prompt_hash(request.prompt)
    if request.kind == "rating":
        return h % 10 + 1
    if request.kind == "pairwise":
        return "AB"[h % 2]
    words = " ".join(request.prompt.split()[:6]).rstrip(".!?,;:")
    return f"Here is a reply about {words}." if words else "Here is a reply."


def _placeholder(prop: object) -> object:
    kind = prop.get("type") if isinstance(prop, Mapping) else None
    if isinstance(prop, Mapping) and isinstance(prop.get("enum"), list) and prop["enum"]:
        return prop["enum"][0]
    return {
        "string": "Fake reasoning.",
        "integer": 0,
        "number": 0.0,
        "boolean": False,
        "array": [],
        "object": {},
    }.get(kind if isinstance(kind, str) else "string")


def structured_payload(spec: OutputSpec, value: object) -> dict[str, Any]:
    """``{"score": value}`` / ``{"answer": value}``, plus placeholders for other *required* schema fields
    (e.g. a ``reasoning`` string) so strict client-side validation of richer schemas passes."""
    target = "score" if spec.kind == "rating" else "answer"
    payload: dict[str, Any] = {}
    props = spec.schema.get("properties") if spec.schema else None
    required = spec.schema.get("required") if spec.schema else None
    if isinstance(props, Mapping) and isinstance(required, list):
        for name in required:
            if name != target and name in props:
                payload[str(name)] = _placeholder(props[name])
    payload[target] = value
    return payload


def out_of_range_value(kind: Kind, prompt: str) -> AnswerValue:
    even = _prompt_hash(prompt) % 2 == 0
    if kind == "rating":
        return 0 if even else 11
    return "C" if even else "Neither"


def make_reply(spec: OutputSpec, request: AnswerRequest, answer: AnswerFn, fault: ContentFault | None) -> Reply:
    """The fake model's reply. Content faults only apply to rating/pairwise requests."""
    if spec.kind == "text":
        text = str(answer(request))
        return Reply(obj={"text": text}) if spec.json_object else Reply(text=text)
    if fault == "malformed":
        return Reply(text=MALFORMED_TEXT[spec.kind])
    if fault == "out_of_range":
        return Reply(obj=structured_payload(spec, out_of_range_value(spec.kind, request.prompt)))
    return Reply(obj=structured_payload(spec, answer(request)))


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters per token, at least 1)."""
    return max(1, len(text) // 4)
