"""One-way imports and a fast start: the CLI and TUI never pull torch in at start-up; pipeline never textual."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    ["pipeline", "pipeline.config_load", "pipeline.data", "pipeline.rubric", "pipeline.store", "pipeline.models",
     "pipeline.files", "pipeline.progress", "pipeline.workspace"],
)  # fmt: skip
def test_light_pipeline_modules_import_no_torch_or_textual(module: str) -> None:
    mods = _modules_after(f"import {module}")
    assert "torch" not in mods
    assert "textual" not in mods
    assert "steertui" not in mods


def test_pipeline_never_imports_steertui_or_textual() -> None:
    for path in (REPO / "pipeline").rglob("*.py"):
        text = path.read_text()
        for banned in ("import textual", "from textual", "import steertui", "from steertui"):
            assert banned not in text, f"{path.relative_to(REPO)} has {banned!r}"


def test_cli_help_is_fast_and_imports_no_torch() -> None:
    mods = _modules_after("from steertui.cli import build_parser; build_parser()")
    assert "torch" not in mods and "transformers" not in mods and "textual" not in mods
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "steertui", "--help"], capture_output=True, text=True, cwd=REPO)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0 and "usage: steertui" in proc.stdout
    assert elapsed < 1.0, f"steertui --help took {elapsed:.2f}s"
