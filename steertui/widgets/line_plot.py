"""A terminal line plot (plotext) of one or more series, with optional ± SD error bars."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual_plotext import PlotextPlot


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    sd: Sequence[float] | None = None


class LinePlot(PlotextPlot):
    """Call `draw` with new series; the plot re-renders at its current size."""

    def draw(self, title: str, series: Sequence[Series], *, xlabel: str = "", ylabel: str = "") -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        plt.xlabel(xlabel)
        plt.ylabel(ylabel)
        drawn = [s for s in series if len(s.x)]
        for s in drawn:
            plt.plot(list(s.x), list(s.y), label=s.label if len(drawn) > 1 else None, marker="braille")
            if s.sd is not None:
                plt.error(list(s.x), list(s.y), yerr=list(s.sd))
        if not drawn:
            plt.title(f"{title}: no data yet")
        self.refresh()
