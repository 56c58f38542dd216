"""The Costs screen: judge spending by model/layer/epoch/task, budget left, and an estimate of queued work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from pipeline.config import Config
from pipeline.workspace import Workspace
from steertui.messages import PanelData
from steertui.screens.base import PolledScreen, table_with_columns

COLUMNS = ("model", "layer", "epoch", "task", "judge", "requests", "done", "invalid", "failed", "cost")
WAITING = ("pending", "queued", "running", "cancelling")


@dataclass
class Costs:
    entries: list[dict[str, Any]] = field(default_factory=list)
    spent_usd: float = 0.0  # settled
    held_usd: float = 0.0  # reserved for requests in flight
    budget_usd: float | None = None
    queued_cells: int = 0
    queued_requests: int = 0
    queued_usd: float = 0.0
    unpriced_tasks: list[str] = field(default_factory=list)


def read_costs(ws: Workspace, config: Config | None) -> Costs:
    """Spending from the ledger; queued work priced at the observed cost per request of each task."""
    from pipeline.judges.costs import spend_summary
    from pipeline.store import Store, connect

    costs = Costs()
    if config is not None and config.judge.budget_usd != float("inf"):
        costs.budget_usd = config.judge.budget_usd
    if not ws.db_path.exists():
        return costs
    conn = connect(ws.db_path, readonly=True)
    try:
        costs.entries = spend_summary(Store(ws.db_path, conn))
        costs.spent_usd = sum(e["cost_usd"] for e in costs.entries)
        costs.held_usd = sum(e["reserved_usd"] for e in costs.entries)
        if config is not None:
            _estimate(ws, config, conn, costs)
    finally:
        conn.close()
    return costs


def _estimate(ws: Workspace, config: Config, conn: Any, costs: Costs) -> None:
    per_request = {
        r[0]: float(r[1])
        for r in conn.execute("SELECT task, AVG(cost_usd) FROM ledger WHERE state = 'done' GROUP BY task")
    }
    marks = ",".join("?" * len(WAITING))
    query = f"SELECT cell, task, progress_total FROM jobs WHERE kind = 'score' AND state IN ({marks})"
    waiting = conn.execute(query, WAITING).fetchall()
    if not waiting:
        return
    from pipeline.artifacts import expected_score_items, test_prompt_ids  # deferred: artifact checks import torch

    prompts = len(test_prompt_ids(ws, config))
    answered = dict(conn.execute("SELECT cell, SUM(state IN ('done', 'invalid')) FROM ledger GROUP BY cell"))
    unpriced = set()
    for cell, task, total in waiting:
        items = int(total or expected_score_items(config, task, prompts))
        left = max(0, items - int(answered.get(cell) or 0))
        costs.queued_cells += 1
        costs.queued_requests += left
        if task in per_request:
            costs.queued_usd += left * per_request[task]
        elif left:
            unpriced.add(task)
    costs.unpriced_tasks = sorted(unpriced)


def summary(c: Costs) -> Text:
    text = Text()
    text.append(f"spent ${c.spent_usd:.4f}", style="bold")
    if c.held_usd:
        text.append(f" · ${c.held_usd:.4f} in flight")
    if c.budget_usd is not None:
        left = c.budget_usd - c.spent_usd - c.held_usd
        text.append(f" · budget ${c.budget_usd:.2f} · ")
        text.append(f"${left:.4f} left", style="green" if left > 0 else "bold red")
    else:
        text.append(" · no budget cap")
    text.append("\n")
    if c.queued_cells:
        text.append(f"queued work: {c.queued_cells} score cells, {c.queued_requests:,} requests")
        text.append(f" ≈ ${c.queued_usd:.4f} at the observed cost per request")
        if c.unpriced_tasks:
            text.append(f" (no history yet for {', '.join(c.unpriced_tasks)})", style="yellow")
    else:
        text.append("no score cells waiting", style="bright_black")
    return text


class CostsScreen(PolledScreen):
    TITLE = "Costs"
    REFRESH_S = 5.0

    def compose(self) -> ComposeResult:
        yield from self.header()
        yield Static("reading the ledger…", id="cost-summary")
        yield table_with_columns(DataTable(id="costs", cursor_type="row", zebra_stripes=True), COLUMNS)
        yield from self.footer()

    @work(thread=True, exclusive=True, group="costs", exit_on_error=False)
    def load(self) -> None:
        try:
            self.post_message(PanelData("costs", read_costs(self.ctx.ws, self.ctx.config)))
        except Exception as exc:  # a locked or half-migrated store: say so, keep the screen
            self.post_message(PanelData("costs", Costs(), f"{type(exc).__name__}: {exc}"))

    @on(PanelData)
    def _data(self, event: PanelData) -> None:
        if event.kind != "costs":
            return
        costs: Costs = event.data
        note = summary(costs)
        if event.error:
            note = Text(f"cannot read costs: {event.error}", style="red")
        self.query_one("#cost-summary", Static).update(note)
        table = self.query_one(DataTable)
        table.clear()
        for e in costs.entries:
            table.add_row(
                str(e["model"] or e["cell"]), str(e["layer"] if e["layer"] is not None else ""),
                str(e["epoch"] if e["epoch"] is not None else ""), e["task"], e["judge"], f"{e['requests']:,}",
                f"{e['done']:,}", f"{e['invalid']:,}", f"{e['failed']:,}", f"${e['cost_usd']:.4f}",
            )  # fmt: skip
