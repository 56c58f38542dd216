"""Offset index of a growing text file (toolong's approach): line starts are found by scanning new bytes only,
and a line is read by seeking to its offset, so a multi-GB log is never loaded whole.

`update` runs in a worker thread; `line` and `find` are cheap enough for the UI thread (one seek and read).
"""

from __future__ import annotations

import os
import re
import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path

from steertui.widgets.glyphs import printable

CHUNK = 1 << 20
MAX_LINE = 4096  # characters kept per line (the rest of a huge line is cut)
CACHE_LINES = 2000


class LineIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.starts = array("q", [0])  # start offset of every line (the last may be an unterminated tail)
        self.scanned = 0  # bytes indexed so far
        self.size = 0
        self._cache: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Lines, counting an unterminated last line."""
        return len(self.starts) - (1 if self.starts[-1] >= self.size else 0)

    def update(self) -> bool:
        """Index bytes appended since the last call (a truncated file starts over); True when it changed."""
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return False
        with self._lock:
            if size < self.scanned:
                self.starts, self.scanned, self.size = array("q", [0]), 0, 0
                self._cache.clear()
            if size == self.size:
                return False
            tail = len(self.starts) - 1  # the old last line may have grown
            found = array("q")
            with open(self.path, "rb") as fh:
                fh.seek(self.scanned)
                pos = self.scanned
                while pos < size:
                    chunk = fh.read(min(CHUNK, size - pos))
                    if not chunk:
                        break
                    found.extend(pos + m.end() for m in re.finditer(b"\n", chunk))
                    pos += len(chunk)
            self.starts.extend(found)  # one C call: readers never see half an update
            self.scanned = self.size = pos
            for index in (tail - 1, tail):
                self._cache.pop(index, None)
            return True

    def line(self, index: int) -> str:
        """Line `index` without its newline ("" past the end)."""
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        if not 0 <= index < len(self):
            return ""
        start = self.starts[index]
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.size
        with open(self.path, "rb") as fh:
            fh.seek(start)
            data = fh.read(min(end - start, MAX_LINE * 4))
        text = printable(data.decode("utf-8", "replace").rstrip("\r\n")).expandtabs(4)[:MAX_LINE]
        self._cache[index] = text
        if len(self._cache) > CACHE_LINES:
            self._cache.popitem(last=False)
        return text

    def line_at(self, offset: int) -> int:
        return max(0, bisect_right(self.starts, offset) - 1)

    def find(self, pattern: re.Pattern[bytes], start_line: int, *, backwards: bool = False) -> int | None:
        """The next (or previous) line after `start_line` matching `pattern`, scanning the file in chunks."""
        if backwards:
            return self._find_back(pattern, start_line)
        offset = self.starts[start_line + 1] if start_line + 1 < len(self.starts) else self.size
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while offset < self.size:
                chunk = fh.read(min(CHUNK, self.size - offset))
                cut = chunk.rfind(b"\n") + 1 if offset + len(chunk) < self.size else len(chunk)
                cut = cut or len(chunk)
                match = pattern.search(chunk, 0, cut)
                if match:
                    return self.line_at(offset + match.start())
                offset += cut
                fh.seek(offset)
        return None

    def _find_back(self, pattern: re.Pattern[bytes], start_line: int) -> int | None:
        end = self.starts[start_line] if start_line < len(self.starts) else self.size
        with open(self.path, "rb") as fh:
            while end > 0:
                lo = max(0, end - CHUNK)
                fh.seek(lo)
                chunk = fh.read(end - lo)
                cut = chunk.find(b"\n") + 1 if lo > 0 else 0
                found = [m.start() for m in pattern.finditer(chunk, cut)]
                if found:
                    return self.line_at(lo + found[-1])
                end = lo + cut if lo > 0 else 0
        return None
