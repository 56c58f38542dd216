"""The SQLite store: numbered migrations applied once, WAL, concurrent openers."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.errors import StoreError
from pipeline.store import open_store
from pipeline.store.migrations import MIGRATIONS


def test_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with open_store(path) as store:
        names = [r["name"] for r in store.query("SELECT name FROM _migrations ORDER BY id")]
        assert names == [name for name, _ in MIGRATIONS]
        assert store.one("PRAGMA journal_mode")[0] == "wal"
        cols = {r[1]: r[2] for r in store.conn.execute("PRAGMA table_info(jobs)")}
        assert cols["cell"] == "TEXT" and cols["layer"] == "INTEGER" and cols["pid_start"] == "REAL"
    with open_store(path) as store:
        assert store.one("SELECT count(*) FROM _migrations")[0] == len(MIGRATIONS)


def test_numbering_is_dense_and_append_only() -> None:
    numbers = [int(name[1:4]) for name, _ in MIGRATIONS]
    assert numbers == list(range(1, len(MIGRATIONS) + 1))


def test_concurrent_openers_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(path), range(4)))
    assert stores[0].one("SELECT count(*) FROM _migrations")[0] == len(MIGRATIONS)
    for store in stores:
        store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations (id, name, applied_at) VALUES (999, 'm999_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer steertui"):
        open_store(path)


def test_settings_roundtrip(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.set_setting("k", "v1")
        store.set_setting("k", "v2")
        assert store.get_setting("k") == "v2" and store.get_setting("missing") is None
