"""`build_report` and `steertui report` end to end on small synthetic corpora with the study's defects."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from pipeline import analysis as A
from pipeline.analysis_synth import SynthSpec, write_corpus
from pipeline.report import ReportOptions, SourceSpec, build_report
from tests.conftest import SHARED, run_cli

SMALL = SynthSpec(models=(("Big", (3, 7)), ("Small", (2,))), epochs=(5, 10), prompts=6, train_epochs=4)
FIGURES = ["training_curves", "behaviour_study_Big", "behaviour_study_Small", "generation_metrics_study_Big",
           "steerability_by_layer", "pareto_frontier", "weight_sensitivity"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_corpus(root, SMALL)
    return root


@pytest.fixture(scope="module")
def report(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report([SourceSpec("study", corpus)], out, ReportOptions(workers=1))
    return out


def _table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv")


def test_every_table_has_a_parquet_twin(report: Path) -> None:
    for name in ("ratings_by_multiplier", "candidates", "training", "warnings", "win_rates", "weight_sensitivity"):
        csv, parquet = _table(report, name), pd.read_parquet(report / "tables" / f"{name}.parquet")
        assert list(csv.columns) == list(parquet.columns) and len(csv) == len(parquet)


def test_ratings_table_matches_a_direct_computation_excluding_malformed_scores(report: Path, corpus: Path) -> None:
    table = _table(report, "ratings_by_multiplier")
    assert list(table.columns) == ["source", "model", "layer", "epoch", "task", "multiplier", "mean", "sd", "n"]
    assert set(table["task"]) == {"coherence", "relationship", "propensity", "perplexity", "winrate"}
    path = corpus / "vector_evals" / "Big" / "layer7" / "relationship_scores_ep10.jsonl"
    groups: dict[float, list[float]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["score"] is not None and 1 <= row["score"] <= 10:
            groups[row["multiplier"]].append(row["score"])
    part = table.query("model == 'Big' and layer == 7 and epoch == 10 and task == 'relationship'")
    got = part.set_index("multiplier")
    for mult, values in groups.items():
        assert got.loc[mult, "n"] == len(values)
        assert got.loc[mult, "mean"] == pytest.approx(sum(values) / len(values))


def test_malformed_rows_and_files_are_counted_warnings(report: Path) -> None:
    totals = _table(report, "warnings").groupby("code")["count"].sum()
    cells, rating_files = 3 * 2, 3 * 2 * 2
    assert totals["score_out_of_range"] == rating_files  # one 0 per file
    assert totals["score_missing"] == rating_files  # one null per file
    assert totals["pairwise_malformed"] == cells  # one "Neither A nor B" per pairwise file
    assert totals["pairwise_whitespace"] >= 1  # " B"
    assert totals["torn_line"] == 2  # the deepest layer's pairwise files end mid-line
    assert totals["timestamp_coarse"] > 0
    text = (report / "report.md").read_text()
    assert "## Warnings" in text and "score_out_of_range" in text and "strip()" in text


def test_strict_win_rates_exclude_the_malformed_answer(report: Path, corpus: Path) -> None:
    rates = _table(report, "win_rates").query("model == 'Small' and epoch == 5")
    wins: dict[float, int] = defaultdict(int)
    seen: dict[float, int] = defaultdict(int)
    for line in (corpus / "vector_evals/Small/layer2/pairwise_relationship_scores_ep5.jsonl").read_text().splitlines():
        row = json.loads(line)
        a, b, answer = row["multiplier_a"], row["multiplier_b"], row["model_response"].strip()
        if answer in ("A", "B") and -2 <= a <= 2 and -2 <= b <= 2:
            wins[a if answer == "A" else b] += 1
            seen[a] += 1
            seen[b] += 1
    assert dict(zip(rates["multiplier"], rates["win_rate"], strict=True)) == pytest.approx(
        {m: wins[m] / seen[m] for m in seen}
    )


def test_candidates_select_with_pairwise_steerability(report: Path) -> None:
    cands = _table(report, "candidates")
    assert len(cands) == 6 and (cands["steer_metric"] == "winrate").all()
    assert cands[["auc", "winrate_slope", "elo_slope", "rating_slope", "propensity_slope"]].notna().all().all()
    assert cands["pareto"].any() and sorted(cands["rank"]) == list(range(1, 7))
    assert (cands["winrate_slope"] > 0).all() and (cands["elo_slope"] > 0).all()
    best = cands.sort_values("rank").iloc[0]
    text = (report / "report.md").read_text()
    assert f"**Best: {best['model']} L{best['layer']} ep{best['epoch']}**" in text


def test_training_table_covers_every_vector_and_epoch(report: Path) -> None:
    training = _table(report, "training")
    assert len(training) == 3 * 4 * 2
    assert set(training["timestamp_precision"]) == {"exact", "1000s"}


def test_figures_exist_as_png_and_svg_and_are_linked(report: Path) -> None:
    text = (report / "report.md").read_text()
    for stem in FIGURES:
        for ext in ("png", "svg"):
            assert (report / "figures" / f"{stem}.{ext}").stat().st_size > 1000, stem
        assert f"figures/{stem}.png" in text


def test_missing_pairwise_and_generations_fall_back_with_named_warnings(tmp_path: Path) -> None:
    write_corpus(tmp_path / "c", SynthSpec(models=(("M", (1, 2, 3)),), epochs=(4,), prompts=4, train_epochs=2,
                                           pairwise=False, generations=False, defects=False))  # fmt: skip
    result = build_report([SourceSpec("study", tmp_path / "c")], tmp_path / "r", ReportOptions(figures=False))
    codes = result.analysis.warnings.frame().set_index("code")["count"]
    assert codes["missing_pairwise"] == 3 and codes["missing_generations"] == 3
    assert codes["steerability_fallback"] == 1
    cands = result.analysis.tables["candidates"]
    assert (cands["steer_metric"] == "rating").all() and cands["steer_slope"].notna().all()
    assert "rating slope" in result.report_path.read_text()


def test_an_empty_directory_gives_a_report_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = build_report([SourceSpec("study", tmp_path / "empty")], tmp_path / "r", ReportOptions(workers=1))
    assert result.analysis.warnings.frame()["code"].tolist() == ["source_empty"]
    text = result.report_path.read_text()
    assert "source_empty" in text and "No candidates" in text
    assert list(_table(tmp_path / "r", "ratings_by_multiplier").columns)[:6] == [*A.CELL_KEYS, "task", "multiplier"]


def test_cli_study_outside_a_workspace(tmp_path: Path, corpus: Path) -> None:
    code, out, err = run_cli("report", "--study", str(corpus), "--out", str(tmp_path / "r"), "--no-figures",
                             "--json", cwd=tmp_path)  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["judge_rows"] > 0 and summary["best"]["study"]["steer_metric"] == "winrate"
    assert summary["warnings"]["score_out_of_range"] == 12
    assert (tmp_path / "r" / "tables" / "candidates.parquet").exists()


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    assert run_cli("report", "--study", str(tmp_path / "nope"), cwd=tmp_path)[0] == 2
    assert run_cli("report", cwd=tmp_path)[0] == 2  # no workspace and no --study
    assert run_cli("report", "--study", str(tmp_path), "--weights", "0,0", cwd=tmp_path)[0] == 2


def test_cli_workspace_beside_the_study_uses_the_rubric_task(tmp_path: Path, workspace: Path) -> None:
    rubric = workspace / "rubrics" / "relationship-seeking.toml"
    rubric.write_text(rubric.read_text().replace('task = "relationship"', 'task = "warmth"', 1))
    write_corpus(workspace, SynthSpec(models=(("tiny-random", (1, 2)),), epochs=(2,), prompts=4, train_epochs=2,
                                      task="warmth", defects=False))  # fmt: skip
    study = tmp_path / "study"
    write_corpus(study, SynthSpec(models=(("Other", (4, 5)),), epochs=(3,), prompts=4, train_epochs=2, defects=False))
    code, out, err = run_cli("report", "--workspace", str(workspace), "--study", str(study), "--no-figures",
                             "--json")  # fmt: skip
    assert code == 0, err
    assert set(json.loads(out)["best"]) == {"workspace", "study"}
    table = _table(workspace / "reports", "ratings_by_multiplier")
    assert set(table.loc[table["source"] == "workspace", "task"]) >= {"coherence", "warmth", "winrate"}
    assert "relationship" not in set(table.loc[table["source"] == "workspace", "task"])
    training = _table(workspace / "reports", "training")
    assert set(training["source"]) == {"workspace", "study"}


@pytest.mark.skipif(not (SHARED / "seed-outputs").is_dir(), reason="../shared/seed-outputs is not present")
def test_cli_on_the_released_files(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    shutil.copytree(SHARED / "seed-outputs", seed, ignore=shutil.ignore_patterns("*.pt"))
    code, out, err = run_cli("report", "--study", str(seed), "--out", str(tmp_path / "r"), "--no-figures", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["warnings"]["missing_pairwise"] == 7 and summary["warnings"]["vector_ratings_missing"] == 1
    cands = _table(tmp_path / "r", "candidates")
    assert len(cands) == 7 and cands["auc"].notna().all() and cands["rating_slope"].notna().all()
    corrected = _table(tmp_path / "r", "corrected_success").query("rule == 'recorded'").set_index("baseline")
    assert corrected["corrected_pct"].round(1).to_dict() == {"claude": 59.7, "gpt": 82.7}
