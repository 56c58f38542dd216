"""New behaviours end to end: scaffolding, rubric validation, the bundled second behaviour, and the smoke plan
run for sycophancy (task names in every file, the report and the jobs table)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.config_load import load_config
from pipeline.data import validate_file
from pipeline.rubric import load_rubric, validate_rubric
from steertui.cli import main
from tests.conftest import FAST_PLAN_ENV, REPO, run_cli
from tests.fakeapi import FakeAPIServer

FAST = FAST_PLAN_ENV
UNFILLED = (
    "definition", "target", "anti_target", "rating.rubric", "rating.examples[0].low", "pairwise.definition",
    "pairwise.question", "pairwise.examples[1].response_b", "levels.instruction", "levels.examples[0].user",
    "persona.themes[0].name", "persona.themes[0].turns", "persona.attacks[1].text",
)  # fmt: skip


def init(root: Path, behavior: str, *extra: str) -> Path:
    assert main(["init", str(root), "--example", "smoke", "--behavior", behavior, *extra]) == 0
    return root


def test_a_new_behaviour_is_scaffolded_and_every_unfilled_field_reported(tmp_path: Path) -> None:
    ws = init(tmp_path / "ws", "power-seeking", "--task", "power")
    rubric = ws / "rubrics/power-seeking.toml"
    assert (ws / "data/power-seeking").is_dir() and not list((ws / "data/power-seeking").iterdir())
    assert load_config(ws, env={}).behavior == "power-seeking"
    code, out, err = run_cli("rubric", "validate", "--workspace", str(ws))
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s) found"
    fields = {line.split(": ")[1] for line in lines[:-1]}
    assert all(line.startswith(f"{rubric}: ") for line in lines[:-1])
    assert set(UNFILLED) <= fields and not any(f.startswith(("coherence", "name", "task")) for f in fields)
    assert "persona.themes[0].turns: must be a non-empty list of user messages" in err
    assert "definition: still contains the TODO placeholder; fill it in" in err
    text = rubric.read_text()
    assert 'name = "power-seeking"' in text and 'task = "power"' in text


def test_bundled_sycophancy_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("sycophancy", "relationship-seeking"):
        assert validate_rubric(REPO / "rubrics" / f"{name}.toml") == []
    assert load_rubric(REPO / "rubrics/sycophancy.toml").task == "sycophancy"
    ws = init(tmp_path / "ws", "sycophancy")
    for split, n in (("train", 179), ("test", 38)):
        path = ws / f"data/sycophancy/{split}.jsonl"
        assert validate_file(path) == [] and len(path.read_text().splitlines()) == n
    assert main(["rubric", "validate", "--workspace", str(ws)]) == 0
    assert "sycophancy.toml: ok (behaviour sycophancy, task sycophancy)" in capsys.readouterr().out


def test_behavior_new_use_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = init(tmp_path / "ws", "sycophancy")
    assert main(["behavior", "new", "flattery", "--use", "--workspace", str(ws)]) == 0
    config = (ws / "steertui.toml").read_text()
    assert config.count("behavior = ") == 1 and 'behavior = "flattery"' in config
    assert load_config(ws, env={}).behavior == "flattery"
    capsys.readouterr()
    assert main(["behavior", "list", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "* flattery" in out and "28 problem(s)" in out and "no train/test yet" in out
    assert "  sycophancy" in out and "ok" in out and "train 179, test 38" in out
    assert main(["behavior", "new", "flattery", "--workspace", str(ws)]) == 2
    assert main(["behavior", "new", "x", "--task", "pairwise", "--workspace", str(ws)]) == 2
    assert main(["behavior", "new", "../evil", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert "flattery.toml: already exists" in err and "reserved" in err and "use letters, digits" in err
    assert main(["behavior", "new", "x", "--workspace", str(tmp_path / "nowhere")]) == 2


def test_init_again_keeps_a_filled_in_rubric(tmp_path: Path) -> None:
    ws = init(tmp_path / "ws", "flattery")
    rubric = ws / "rubrics/flattery.toml"
    rubric.write_text(rubric.read_text().replace("TODO: define the behaviour.", "Praise beyond merit."))
    init(ws, "flattery", "--force")
    assert "Praise beyond merit." in rubric.read_text()


def test_a_missing_rubric_section_fails_validation_and_the_plan_refuses_to_start(tmp_path: Path) -> None:
    ws = init(tmp_path / "ws", "sycophancy")
    rubric = ws / "rubrics/sycophancy.toml"
    text = rubric.read_text()
    rubric.write_text(text[: text.index("[pairwise]")] + text[text.index("[levels]") :])
    code, _, err = run_cli("rubric", "validate", "sycophancy", "--workspace", str(ws))
    assert code == 2 and f"{rubric}: pairwise: missing section" in err
    code, _, err = run_cli("run", "--headless", "--workspace", str(ws))
    assert code == 2 and f"{rubric}: pairwise: missing section" in err
    assert not (ws / ".steertui/state.db").exists() or not _jobs(ws)


def _jobs(ws: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(ws / ".steertui/state.db")
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM jobs"))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_the_smoke_plan_runs_for_sycophancy_and_everything_carries_its_task_name(tmp_path: Path) -> None:
    ws = init(tmp_path / "ws", "sycophancy")
    toml = ws / "steertui.toml"
    toml.write_text(toml.read_text().replace("layers = [1, 2]", "layers = [1]"))  # one cell is enough here
    assert "layers = [1]" in toml.read_text()
    with FakeAPIServer() as server:
        code, out, err = run_cli("run", "--headless", "--workspace", str(ws), env={**FAST, **server.env()})
        assert code == 0, out[-3000:] + err[-3000:]
        assert server.stats.paid_total > 0 and not server.stats.duplicates()
    evals = ws / "vector_evals/tiny-random"
    names = {p.name for p in (evals / "layer1").iterdir()}
    assert {"sycophancy_scores_ep2.jsonl", "pairwise_sycophancy_scores_ep2.jsonl",
            "coherence_scores_ep2.jsonl"} <= names  # fmt: skip
    assert sorted(p.name for p in (ws / "vector").iterdir()) == ["sycophancy_tiny-random"]
    assert not [p for p in ws.rglob("*") if "relationship" in p.name]
    tasks = {r["cell"].split(":")[-1] for r in _jobs(ws) if r["cell"].startswith("score:")}
    assert tasks == {"coherence", "sycophancy", "pairwise"}
    code, out, err = run_cli("report", "--no-figures", "--json", "--workspace", str(ws))
    assert code == 0, err
    report = Path(json.loads(out)["report"]).read_text()
    assert "sycophancy" in report and "relationship" not in report
