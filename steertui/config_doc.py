"""The config reference, generated from the dataclasses in `pipeline/config.py` (field comments are the
documentation), so the README cannot drift from the code (a test compares them)."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import math
import tokenize
from typing import Any

from pipeline import config as cfg


def sections() -> list[tuple[str, Any, str]]:
    """(title, dataclass, env prefix) for the top level, [[models]], [prices] and every [section]."""
    import typing

    hints = typing.get_type_hints(cfg.Config)
    out: list[tuple[str, Any, str]] = [("", cfg.Config, ""), ("[[models]]", cfg.ModelSpec, "")]
    for field in dataclasses.fields(cfg.Config):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            out.append((f"[{field.name}]", hint, field.name.upper()))
    out.append(('[prices."MODEL"]', cfg.Price, ""))
    return out


def field_comments(cls: Any) -> dict[str, str]:
    """`name: type = default  # comment` -> {name: comment}, read from the class source."""
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    last_name = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and last_name is None:
            last_name = tok.string
        elif tok.type == tokenize.COMMENT and last_name:
            comments.setdefault(last_name, tok.string.lstrip("# ").strip())
        elif tok.type == tokenize.NEWLINE:
            last_name = None
    return comments


def _is_section(field: dataclasses.Field[Any]) -> bool:
    return field.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(field.default_factory())


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value) or isinstance(value, dict):
        return "(table)"
    if isinstance(value, float) and math.isinf(value):
        return "inf (no cap)"
    if isinstance(value, tuple):
        return (
            "[" + ", ".join(json.dumps(v) if isinstance(v, str) else f"{v:g}" for v in value) + "]" if value else "[]"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value).replace("'", '"') if isinstance(value, str) else str(value)


def reference() -> str:
    """Markdown tables, one per section; env var names follow the precedence chain's rule."""
    out = []
    for title, cls, env in sections():
        comments = field_comments(cls)
        out.append(f"**{title or 'top level'}**\n")
        out.append("| key | default | meaning |")
        out.append("|---|---|---|")
        for field in dataclasses.fields(cls):
            if cls is cfg.Config and (field.name in ("models", "prices") or _is_section(field)):
                continue
            default = _default(field).replace("|", "\\|")
            out.append(f"| `{field.name}` | `{default}` | {comments.get(field.name, '')} |")
        if env:
            example = f"STEERTUI_{env}_{dataclasses.fields(cls)[0].name.upper()}"
            out.append(f"\nEnvironment: `STEERTUI_{env}_<KEY>`, e.g. `{example}`.")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_readme(text: str) -> str:
    """README text with the block between the markers replaced by the current reference."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference()}{END}{tail}"
