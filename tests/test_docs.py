"""The README's config reference is the one generated from the code."""

from __future__ import annotations

from steertui.config_doc import END, START, reference, update_readme
from tests.conftest import REPO


def test_readme_config_reference_is_current() -> None:
    text = (REPO / "README.md").read_text()
    assert update_readme(text) == text, "README config reference is stale: run `make docs`"
    block = text.split(START, 1)[1].split(END, 1)[0]
    for key in ("`epochs`", "`multipliers`", "`budget_usd`", "`executor`", "`compile`"):
        assert key in block


def test_every_field_is_documented() -> None:
    missing = [line for line in reference().splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert not missing, f"config fields without a comment in pipeline/config.py: {missing}"
