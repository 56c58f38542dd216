"""The Plots screen: training curves by layer, mean ± SD by multiplier for one layer/epoch, and win rate."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.widgets import Static, TabbedContent, TabPane

from pipeline.workspace import short_model_name
from steertui.messages import PanelData
from steertui.screens.base import BaseScreen
from steertui.screens.context import TuiContext
from steertui.screens.plot_data import PlotTables, read_plot_tables
from steertui.widgets.line_plot import LinePlot, Series

VIEWS = ("training", "scores", "winrate")


class PlotsScreen(BaseScreen):
    TITLE = "Plots"
    BINDINGS = [
        Binding("l", "step('layer', 1)", "Layer+"),
        Binding("L", "step('layer', -1)", "Layer-", show=False),
        Binding("e", "step('epoch', 1)", "Epoch+"),
        Binding("E", "step('epoch', -1)", "Epoch-", show=False),
        Binding("m", "step('model', 1)", "Model", show=False),
        Binding("v", "next_view", "View"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, ctx: TuiContext) -> None:
        super().__init__(ctx)
        self.tables = PlotTables()
        self.pick: dict[str, str | int] = {"model": "", "layer": 0, "epoch": 0}  # the vector-epoch shown
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield from self.header()
        yield Static("loading the analysis tables…", id="plot-title")
        with TabbedContent(id="plot-tabs", initial="training"):
            with TabPane("Training", id="training"), Horizontal():
                yield LinePlot(id="plot-loss")
                yield LinePlot(id="plot-accuracy")
            with TabPane("Scores", id="scores"), Grid(id="score-grid"):
                for name in ("coherence", "behaviour", "propensity", "perplexity"):
                    yield LinePlot(id=f"plot-{name}")
            with TabPane("Win rate", id="winrate"):
                yield LinePlot(id="plot-winrate")
        yield from self.footer()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if not self.loaded:
            self.action_reload()

    def action_reload(self) -> None:
        self.loaded = True
        self.load()

    @work(thread=True, exclusive=True, group="plots", exit_on_error=False)
    def load(self) -> None:
        try:
            self.post_message(PanelData("plots", read_plot_tables(self.ctx.ws, self.ctx.config)))
        except Exception as exc:  # unreadable files must not take the app down; say which and why
            self.post_message(PanelData("plots", PlotTables(), f"{type(exc).__name__}: {exc}"))

    def select(self, model: str, layer: int, epoch: int) -> None:
        """Show one vector-epoch (from the matrix's `p`)."""
        self.pick = {"model": short_model_name(model), "layer": layer, "epoch": epoch}
        if self.loaded:
            self.draw()

    @on(PanelData)
    def _data(self, event: PanelData) -> None:
        if event.kind != "plots":
            return
        self.tables = event.data
        if event.error:
            self.notify(event.error, title="cannot read the analysis tables", severity="error")
        self._fix_selection()
        self.draw()

    def _fix_selection(self) -> None:
        t, pick = self.tables, self.pick
        models = t.models()
        if models and pick["model"] not in models:
            pick["model"] = models[0]
        layers = t.layers(str(pick["model"]))
        if layers and pick["layer"] not in layers:
            pick["layer"] = layers[0]
        epochs = t.epochs(str(pick["model"]), int(pick["layer"]))
        if epochs and pick["epoch"] not in epochs:
            pick["epoch"] = epochs[-1]

    def _options(self, what: str) -> list[object]:
        t, model, layer = self.tables, str(self.pick["model"]), int(self.pick["layer"])
        if what == "model":
            return list(t.models())
        return list(t.layers(model)) if what == "layer" else list(t.epochs(model, layer))

    def action_step(self, what: str, delta: int) -> None:
        options = self._options(what)
        if not options:
            return
        current = self.pick[what]
        i = options.index(current) if current in options else 0
        self.pick[what] = options[(i + delta) % len(options)]  # type: ignore[assignment]
        self._fix_selection()
        self.draw()

    def action_next_view(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = VIEWS[(VIEWS.index(tabs.active) + 1) % len(VIEWS)] if tabs.active in VIEWS else VIEWS[0]

    def draw(self) -> None:
        t, m, layer, epoch = self.tables, str(self.pick["model"]), int(self.pick["layer"]), int(self.pick["epoch"])
        title = f"{m or '(no data)'} · layer {layer} · epoch {epoch}" if m else "no results in this workspace yet"
        self.query_one("#plot-title", Static).update(title + "   l/L layer · e/E epoch · m model · v view")
        layers = t.layers(m)
        self._plot("loss", "eval loss (add) by epoch",
                   [Series(f"L{x}", *t.curve(m, x, "loss")) for x in layers], "epoch")  # fmt: skip
        self._plot("accuracy", "reward accuracy (add) by epoch",
                   [Series(f"L{x}", *t.curve(m, x, "reward_accuracy")) for x in layers], "epoch")  # fmt: skip
        tasks = {"coherence": "coherence", "behaviour": t.behaviour_task, "propensity": "propensity",
                 "perplexity": "perplexity", "winrate": "winrate"}  # fmt: skip
        for name, task in tasks.items():
            x, y, sd = t.series(m, layer, epoch, task)
            label = f"{task} (mean ± SD) by multiplier" if name != "winrate" else "pairwise win rate by multiplier"
            self._plot(name, label, [Series(task, x, y, sd)], "multiplier")

    def _plot(self, name: str, title: str, series: list[Series], xlabel: str) -> None:
        self.query_one(f"#plot-{name}", LinePlot).draw(title, series, xlabel=xlabel)
