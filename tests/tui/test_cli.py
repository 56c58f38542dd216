"""`steertui` (no command) and `steertui run` need a terminal; the matrix layout in plan order."""

from __future__ import annotations

from pathlib import Path

import pytest

from steertui.screens.snapshot import Column, JobView, build_layout, in_config


def _job(jid: int, kind: str, layer: int, epoch: int = 0, task: str = "", model: str = "org/M") -> JobView:
    key = ":".join(x for x in (kind, model, f"L{layer}", f"E{epoch}" if epoch else "", task) if x)
    return JobView(jid, key, kind, model, layer, epoch, task, "pending", 0, "", None, None, None, None, "", None, None,
                   None, None, None, None, None)  # fmt: skip


def test_without_a_terminal_the_tui_says_what_to_use(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steertui.cli import main

    assert main(["-w", str(workspace)]) == 2
    assert "needs a terminal" in capsys.readouterr().err


def test_layout_rows_and_columns_follow_the_plan_order() -> None:
    jobs = [_job(1, "train", 5), _job(2, "generate", 5, 2), _job(3, "score", 5, 2, "coherence"),
            _job(4, "score", 5, 2, "pairwise"), _job(5, "generate", 5, 1), _job(6, "train", 3),
            _job(7, "score", 3, 1, "coherence")]  # fmt: skip
    layout = build_layout(jobs)
    assert layout.rows == [("org/M", 5), ("org/M", 3)] and layout.row_labels == ["M L5", "M L3"]
    assert layout.columns == [Column(0, "train", ""), Column(1, "generate", ""), Column(1, "score", "coherence"),
                              Column(1, "score", "pairwise"), Column(2, "generate", ""),
                              Column(2, "score", "coherence"), Column(2, "score", "pairwise")]  # fmt: skip
    assert layout.grid[0] == [1, 5, None, None, 2, 3, 4] and layout.grid[1] == [6, None, 7, None, None, None, None]
    assert [c.label for c in layout.columns[:4]] == ["train", "gen", "coh", "pair"]
    assert layout.position(7) == (1, 2)


def test_cells_of_an_older_config_stay_out_of_the_matrix(workspace: Path) -> None:
    from pipeline.config_load import load_config

    config = load_config(workspace)  # tiny-random, layers 1 and 2, epoch 2
    jobs = [_job(1, "train", 1, model="tiny-random"), _job(2, "train", 7, model="tiny-random"),
            _job(3, "generate", 1, 1, model="tiny-random"), _job(4, "generate", 1, 2, model="tiny-random"),
            _job(5, "train", 1, model="other")]  # fmt: skip
    assert [j.id for j in in_config(jobs, config)] == [1, 4]
