"""Reading the study's layout: file discovery, the pyarrow fast path and its line-by-line fallback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.analysis_io import SCORE_SCHEMA, Warnings, eval_files, load_corpus, read_jsonl_frame


def test_eval_files_classifies_and_skips_batch_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "vector_evals" / "M" / "layer3"
    folder.mkdir(parents=True)
    for name in ("generations_ep2.jsonl", "coherence_scores_ep2.jsonl", "warmth_scores_ep2.jsonl",
                 "pairwise_warmth_scores_ep2.jsonl", "raw_coherence_scores_ep2.jsonl",
                 "json_batch_coherence_ep2.jsonl", "generations_ep2_rank1.jsonl", "notes.txt"):  # fmt: skip
        (folder / name).write_text("")
    got = {(f.kind, f.task, f.layer, f.epoch) for f in eval_files(tmp_path)}
    assert got == {("generations", "", 3, 2), ("rating", "coherence", 3, 2), ("rating", "warmth", 3, 2),
                   ("pairwise", "warmth", 3, 2)}  # fmt: skip


def test_fast_path_casts_int_and_float_scores_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"generation_id":0,"score":7}\n\n{"generation_id":1,"score":8.5,"extra":{"a":1}}\n{"generation_id":2,'
    )
    warnings = Warnings()
    frame = read_jsonl_frame(path, SCORE_SCHEMA, warnings, "s", "s.jsonl")
    assert frame["score"].tolist() == [7.0, 8.5] and frame["score"].dtype == "float64"
    assert list(frame.columns) == list(SCORE_SCHEMA)
    assert [(r["code"], r["where"]) for r in warnings.rows] == [("torn_line", "s.jsonl")]


def test_fallback_parses_line_by_line_and_counts_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"generation_id":0,"score":"7"}\n{"generation_id":1,"score":5}\nnot json\n[1,2]\n'
                    '{"generation_id":3,"score":"n/a"}\n')  # fmt: skip
    warnings = Warnings()
    frame = read_jsonl_frame(path, SCORE_SCHEMA, warnings)
    assert frame["generation_id"].tolist() == [0, 1, 3]
    assert frame["score"].tolist()[:2] == [7.0, 5.0] and pd.isna(frame["score"].iloc[2])
    assert warnings.total("unparseable_line") == 2


def test_load_corpus_names_the_file_of_each_dropped_rating(tmp_path: Path) -> None:
    folder = tmp_path / "vector_evals" / "M" / "layer1"
    folder.mkdir(parents=True)
    rows = [f'{{"generation_id":{i},"test_prompt_id":1,"multiplier":0,"score":{s}}}'
            for i, s in enumerate(["0", "null", "4", "11", "5"])]  # fmt: skip
    (folder / "coherence_scores_ep3.jsonl").write_text("\n".join(rows) + "\n")
    corpus = load_corpus(tmp_path, source="x")
    assert corpus.scores["score"].tolist() == [4.0, 5.0]
    found = {(r["code"], r["where"], r["count"]) for r in corpus.warnings.rows}
    where = "vector_evals/M/layer1/coherence_scores_ep3.jsonl"
    assert ("score_out_of_range", where, 2) in found and ("score_missing", where, 1) in found
    assert {r["code"] for r in corpus.warnings.rows} >= {"missing_generations", "missing_pairwise", "missing_rating"}
