"""Atomic writes and append-only JSONL: a torn last line is dropped, never parsed as data."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.files import append_jsonl, atomic_write_json, count_lines, iter_jsonl, read_jsonl, repair_jsonl


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_torn_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_jsonl(path, [{"i": 0}, {"i": 1}])
    with path.open("ab") as fh:
        fh.write(b'{"i": 2, "text": "half wri')
    assert [r["i"] for r in iter_jsonl(path)] == [0, 1]
    dropped = repair_jsonl(path)
    assert dropped > 0 and path.read_bytes().endswith(b'{"i": 1}\n')
    append_jsonl(path, [{"i": 2}])
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2]
    assert count_lines(path) == 3


def test_terminated_but_corrupt_last_line_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_jsonl(path, [{"i": 0}])
    with path.open("ab") as fh:
        fh.write(b'{"i": \n')
    repair_jsonl(path)
    assert read_jsonl(path) == [{"i": 0}]


def test_repair_is_a_no_op_on_clean_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    assert repair_jsonl(path) == 0
    append_jsonl(path, [{"i": 0}])
    before = path.read_bytes()
    assert repair_jsonl(path) == 0 and path.read_bytes() == before
