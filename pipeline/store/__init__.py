"""The workspace's SQLite store (`.steertui/state.db`): jobs, leases, judge ledger, batches, costs.

WAL mode, a busy timeout and short transactions, so workers, the scheduler and any number of viewers
share it. Schema changes are numbered, append-only migrations (`pipeline.store.migrations`).
"""

from pipeline.store.db import Store, connect, open_store

__all__ = ["Store", "connect", "open_store"]
