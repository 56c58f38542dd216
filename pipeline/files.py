"""Crash-safe file writes: atomic replace for whole files, append-only JSONL with torn-line recovery.

A JSONL file is only ever appended whole lines (one `write` + flush + fsync per batch of rows).
If a crash leaves a partial last line, `repair_jsonl` truncates it away before the next append,
so a torn line is never parsed as data.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def dumps_row(row: dict[str, Any]) -> str:
    """One JSONL line (no newline); NaN/inf are refused so every line is valid JSON."""
    return json.dumps(row, ensure_ascii=False, allow_nan=False)


def repair_jsonl(path: Path) -> int:
    """Truncate a torn (unterminated or unparseable) last line; returns bytes dropped."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        keep = _last_good_offset(fh, size)
        if keep < size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return size - keep


def _last_good_offset(fh: Any, size: int) -> int:
    """Offset just after the last complete, parseable line."""
    fh.seek(max(0, size - 1))
    if fh.read(1) == b"\n":
        start = _line_start(fh, size - 1)
        fh.seek(start)
        try:
            json.loads(fh.read(size - start))
            return size
        except ValueError:
            return start
    return _line_start(fh, size)


def _line_start(fh: Any, end: int) -> int:
    """Offset of the first byte of the line that ends at `end` (exclusive)."""
    pos, chunk = end, 4096
    while pos > 0:
        lo = max(0, pos - chunk)
        fh.seek(lo)
        buf = fh.read(pos - lo)
        idx = buf.rfind(b"\n")
        if idx >= 0:
            return int(lo + idx + 1)
        pos = lo
    return 0


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]], *, fsync: bool = True) -> int:
    """Append whole rows in one write; returns the number of rows written."""
    lines = [dumps_row(r) + "\n" for r in rows]
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write("".join(lines).encode("utf-8"))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return len(lines)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file, skipping blank lines and an unterminated last line."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # torn tail: not data
            text = raw.strip()
            if not text:
                continue
            try:
                yield json.loads(text)
            except ValueError:
                continue


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def count_lines(path: Path) -> int:
    """Number of complete lines, without parsing (fast for progress and row counts)."""
    if not path.exists():
        return 0
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n
