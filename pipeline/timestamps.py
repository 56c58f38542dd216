"""Normalise the study's mixed timestamp encodings to ISO-8601.

Seen in its released files: ISO strings (naive local time), epoch milliseconds (ints > 1e11), epoch
seconds, and epoch milliseconds truncated to 7 digits (units of 1,000 s). The last is kept but marked
coarse, since it cannot give sub-kilosecond times.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def normalise_timestamp(value: Any) -> tuple[str | None, str]:
    """(ISO string or None, precision): precision is "exact", "1000s" or "unknown"."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat(), "exact"
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None, "unknown"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, "unknown"
    number = float(value)
    if number > 1e11:
        return _iso(number / 1000.0), "exact"
    if number > 1e8:
        return _iso(number), "exact"
    if number > 1e5:
        return _iso(number * 1000.0), "1000s"
    return None, "unknown"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")
