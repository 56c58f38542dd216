"""Progress reporting through an explicit object, never a global.

Stages call `reporter.progress(...)` between steps and check `reporter.should_stop()`;
the CLI prints, the manager's workers write to SQLite, tests collect.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO


class Reporter(Protocol):
    def progress(self, done: int, total: int, **metrics: Any) -> None: ...

    def message(self, text: str) -> None: ...

    def artifact(self, path: str) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class NullReporter:
    """Discards everything; the default for library calls and tests."""

    def progress(self, done: int, total: int, **metrics: Any) -> None:
        return None

    def message(self, text: str) -> None:
        return None

    def artifact(self, path: str) -> None:
        return None

    def should_stop(self) -> bool:
        return False


@dataclass
class CollectingReporter:
    """Records every call; used by tests and by callers that summarise afterwards."""

    steps: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    stop_after: int | None = None

    def progress(self, done: int, total: int, **metrics: Any) -> None:
        self.steps.append((done, total, metrics))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def artifact(self, path: str) -> None:
        self.artifacts.append(path)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


@dataclass
class PrintReporter:
    """Line output for terminals, tmux and CI logs; progress at most every `interval` seconds."""

    stream: TextIO = sys.stderr
    interval: float = 2.0
    _last: float = 0.0
    _start: float = field(default_factory=time.monotonic)

    def progress(self, done: int, total: int, **metrics: Any) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        self.stream.write(format_progress(done, total, now - self._start, metrics) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def artifact(self, path: str) -> None:
        self.message(f"wrote {path}")

    def should_stop(self) -> bool:
        return False


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the average rate so far, or None before the first step."""
    if done <= 0 or total <= 0 or done > total:
        return None
    return elapsed / done * (total - done)


def format_progress(done: int, total: int, elapsed: float, metrics: dict[str, Any]) -> str:
    """`[ 40/100]  40%  eta 1m12s  loss=0.6931` style line."""
    pct = 100.0 * done / total if total else 0.0
    eta = eta_seconds(done, total, elapsed)
    parts = [f"[{done:>{len(str(total))}}/{total}] {pct:5.1f}%"]
    if eta is not None and done < total:
        parts.append(f"eta {format_duration(eta)}")
    for key, value in metrics.items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return "  ".join(parts)


def format_duration(seconds: float) -> str:
    """Compact human duration: 45s, 3m05s, 2h10m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
