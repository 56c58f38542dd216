"""Kernel-level breakdown for the GPU benchmarks: run a callable under torch.profiler, write a table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def profile_to(path: Path, label: str, fn: Callable[[], object]) -> None:
    """Append `label`'s top operators by device time (and by CPU time) to `path`."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    avg = prof.key_averages()
    key = "device_time_total" if torch.cuda.is_available() else "cpu_time_total"
    with path.open("a") as fh:
        fh.write(f"\n===== {label} (by {key}) =====\n")
        fh.write(avg.table(sort_by=key, row_limit=25, max_name_column_width=60))
        fh.write(f"\n===== {label} (by cpu_time_total) =====\n")
        fh.write(avg.table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))
