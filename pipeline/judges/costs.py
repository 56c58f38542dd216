"""Prices, conservative cost estimates, per-row costs, and the workspace's spending summary.

An estimate reserves budget before a request is sent, so it must not undershoot: input tokens are taken
as UTF-8 bytes / 3 (English runs ~4 characters per token; CJK ~1 token per 3 bytes) plus per-message and
structured-output overheads, and output tokens as `max_tokens`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pipeline.config import Price
from pipeline.errors import ConfigError
from pipeline.judges.base import Request, Usage
from pipeline.store import Store

FREE = Price(0.0, 0.0, 1.0)
TOKENS_PER_MESSAGE = 8
ANTHROPIC_TOOL_OVERHEAD = 500  # the system prompt Anthropic adds for tool use, plus the tool definition


def find_price(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`: an exact entry, else the longest entry that prefixes it (dated snapshots)."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


def resolve_price(model: str, prices: Mapping[str, Price], budget_usd: float) -> Price:
    """The price to book; an unknown model is an error under a finite budget, else free (with no cap to keep)."""
    price = find_price(model, prices)
    if price is not None:
        return price
    if math.isfinite(budget_usd):
        raise ConfigError(
            f"prices: no price for judge model {model!r}; add [prices.{json.dumps(model)}] with input_per_m "
            "and output_per_m to steertui.toml (needed to keep judge.budget_usd)"
        )
    return FREE


def estimate_input_tokens(request: Request) -> int:
    tokens = -(-request.prompt_bytes // 3) + TOKENS_PER_MESSAGE * (len(request.messages) + 1)
    if request.output.schema is not None:
        tokens += len(json.dumps(request.output.schema)) // 3 + 16
        if request.provider == "anthropic":
            tokens += ANTHROPIC_TOOL_OVERHEAD
    return tokens


def estimate_usd(request: Request, price: Price, *, batch: bool) -> float:
    """A conservative upper estimate of one attempt's cost (output = max_tokens)."""
    return usd(Usage(estimate_input_tokens(request), request.max_tokens), price, batch=batch)


def usd(usage: Usage, price: Price, *, batch: bool) -> float:
    scale = price.batch_discount if batch else 1.0
    return (usage.input_tokens * price.input_per_m + usage.output_tokens * price.output_per_m) * scale / 1e6


def cost_row(input_tokens: int, output_tokens: int, total_usd: float, price: Price) -> dict[str, float]:
    """The study's `cost` shape; the split follows list prices scaled to the booked total (batch discounts
    and mixed sync/batch attempts included)."""
    list_in = input_tokens * price.input_per_m / 1e6
    list_out = output_tokens * price.output_per_m / 1e6
    scale = total_usd / (list_in + list_out) if list_in + list_out > 0 else 0.0
    return {
        "prompt_cost": round(list_in * scale, 6),
        "completion_cost": round(list_out * scale, 6),
        "total_cost": round(total_usd, 6),
    }


def spend_summary(store: Store) -> list[dict[str, Any]]:
    """Judge spending and request states per (cell, judge), for `steertui status` and the TUI.

    Score cells (`score:<model>:L<layer>:E<epoch>:<task>`) are split into model/layer/epoch/task; other
    stages' cells keep `cell` and their task, with model/layer/epoch None.
    """
    rows = store.query(
        "SELECT cell, task, provider, model, state, COUNT(*) AS n, SUM(cost_usd) AS cost, "
        "SUM(reserved_usd) AS reserved, SUM(COALESCE(input_tokens, 0)) AS tin, "
        "SUM(COALESCE(output_tokens, 0)) AS tout FROM ledger GROUP BY cell, task, provider, model, state"
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        judge = f"{r['provider']}:{r['model']}"
        entry = out.setdefault((r["cell"], judge), _summary_entry(r["cell"], r["task"], judge))
        state = r["state"] if r["state"] in ("done", "invalid", "failed") else "in_progress"
        entry[state] += r["n"]
        entry["requests"] += r["n"]
        entry["cost_usd"] += r["cost"] or 0.0
        entry["reserved_usd"] += r["reserved"] or 0.0
        entry["input_tokens"] += r["tin"] or 0
        entry["output_tokens"] += r["tout"] or 0
    return sorted(out.values(), key=lambda e: (str(e["model"]), e["layer"] or 0, e["epoch"] or 0, e["task"]))


def _summary_entry(cell: str, task: str, judge: str) -> dict[str, Any]:
    parts = cell.split(":")
    model: str | None = None
    layer: int | None = None
    epoch: int | None = None
    if parts[0] == "score" and len(parts) >= 5 and parts[-3][1:].isdigit() and parts[-2][1:].isdigit():
        model, layer, epoch, task = ":".join(parts[1:-3]), int(parts[-3][1:]), int(parts[-2][1:]), parts[-1]
    return {
        "cell": cell,
        "model": model,
        "layer": layer,
        "epoch": epoch,
        "task": task,
        "judge": judge,
        "requests": 0,
        "done": 0,
        "invalid": 0,
        "failed": 0,
        "in_progress": 0,
        "cost_usd": 0.0,
        "reserved_usd": 0.0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
