"""The app starts light: importing and mounting it (as a viewer) pulls in no torch, transformers or pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCRIPT = """
import asyncio, sys
from steertui.app import AppOptions, make_app

async def main():
    app = make_app(sys.argv[1], options=AppOptions(poll_s=0.05))
    async with app.run_test(size=(100, 30)) as pilot:
        while app.polls < 3 or not all(w.is_finished for w in app.workers if w.group != "engine"):
            await pilot.pause(0.05)
        assert app.snapshot.layout.rows, "the matrix is empty"
    heavy = [m for m in ("torch", "transformers", "pandas", "sqlite_utils") if m in sys.modules]
    print("HEAVY", ",".join(heavy))

asyncio.run(main())
"""


def test_mounting_the_app_imports_no_torch_transformers_or_pandas(tui_ws: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tui_ws)], capture_output=True, text=True, cwd=REPO,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY \n" in out.stdout or out.stdout.strip().endswith("HEAVY"), out.stdout
