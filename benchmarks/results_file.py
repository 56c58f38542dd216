"""What every CPU benchmark records about its machine, and how it writes its JSON result."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """CPU count, Python version and the load average before the run (a busy box slows every figure)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_before": [round(x, 2) for x in load_before]}  # fmt: skip


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the result file and echo it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
