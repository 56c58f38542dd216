"""Readers for the analysis: one directory in the study's layout (ours or the study's release) → tidy tables.

The layout is `vector/<behavior>_<model>/layer<L>/evaluation_metrics.jsonl` and
`vector_evals/<model>/layer<L>/{generations,<task>_scores,pairwise_<task>_scores}_ep<E>.jsonl`.
JSONL is parsed with pyarrow against an explicit schema (scores cast to float64, so the study's int and
float scores mix); a file pyarrow refuses (a string score, a broken line) is re-read line by line.
Every dropped row or missing file becomes a counted, named warning, never a silent gap.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

CELL_KEYS = ["source", "model", "layer", "epoch"]

SCORE_SCHEMA = {"generation_id": "int64", "test_prompt_id": "int64", "multiplier": "float64", "score": "float64",
                "valid": "bool"}  # fmt: skip
PAIRWISE_SCHEMA = {"test_prompt_id": "int64", "generation_id_a": "int64", "multiplier_a": "float64",
                   "generation_id_b": "int64", "multiplier_b": "float64", "model_response": "string"}  # fmt: skip
GENERATION_SCHEMA = {"test_prompt_id": "int64", "multiplier": "float64", "generation_id": "int64",
                     "avg_log_prob": "float64", "perplexity": "float64", "chosen_logprob": "float64",
                     "rejected_logprob": "float64", "propensity": "float64", "perplexity_cond": "float64",
                     "propensity_cond": "float64"}  # fmt: skip

# What each warning code means; report.md prints these beside the counts.
WARNING_TEXT = {
    "source_empty": "the directory holds no files in the study's layout",
    "torn_line": "an unterminated last line (a write cut short) was skipped",
    "unparseable_line": "a line that is not a JSON object was skipped",
    "score_missing": "a rating with a null or non-numeric score was excluded",
    "score_invalid": "a rating marked valid=false by the judge stage was excluded",
    "score_out_of_range": "a rating outside 1-10 (e.g. the study's 0s) was excluded",
    "duplicate_rating": "a generation rated twice in one file; the last rating was kept",
    "pairwise_malformed": "a pairwise answer that is not A or B after strip() was excluded",
    "pairwise_whitespace": "a pairwise answer with surrounding whitespace (' B') was stripped and kept",
    "pairwise_missing_multiplier": "a pairwise row without both multipliers was excluded",
    "metric_nonfinite": "a generation metric (perplexity, propensity) that is NaN or infinite was excluded",
    "missing_generations": "cells without generations_ep<E>.jsonl: no perplexity or propensity",
    "missing_pairwise": "cells without pairwise_<task>_scores_ep<E>.jsonl: no win rate or Elo",
    "missing_coherence": "cells without coherence_scores_ep<E>.jsonl: no coherence AUC",
    "missing_rating": "cells without the behaviour's <task>_scores_ep<E>.jsonl: no rating slope",
    "uneven_counts": "a cell whose files hold different numbers of rows",
    "missing_metrics": "a vector directory without evaluation_metrics.jsonl: no training curve",
    "timestamp_coarse": "a training timestamp truncated to 7 digits (1,000 s units); kept, not timed",
    "timestamp_unparseable": "a training timestamp that cannot be read (e.g. 0 or 1); the row is kept, untimed",
    "steerability_fallback": "no pairwise data for every candidate: steerability is the rating slope",
    "vector_ratings_missing": "prompting exp1: the vector's ratings are not in this directory",
    "mixedlm_fallback": "the mixed-effects fit failed; OLS without the random intercept was used",
    "turn_index_remapped": "persona turn_index 2/4/6/8 (message indices) remapped to 0-3",
    "persona_incomplete": "a persona conversation without exactly four rated turns",
}


@dataclass
class Warnings:
    """Counted, named warnings; one row per (code, source, where)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, code: str, message: str = "", *, count: int = 1, source: str = "", where: str = "") -> None:
        if count <= 0:
            return
        self.rows.append({"code": code, "source": source, "where": where, "count": int(count),
                          "message": message or WARNING_TEXT.get(code, "")})  # fmt: skip

    def extend(self, other: Warnings) -> None:
        self.rows.extend(other.rows)

    def total(self, code: str | None = None) -> int:
        return sum(r["count"] for r in self.rows if code is None or r["code"] == code)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["code", "source", "where", "count", "message"])


@dataclass
class Corpus:
    """Everything one directory holds, as tidy frames keyed by (source, model, layer, epoch)."""

    source: str
    root: Path
    behavior_task: str
    scores: pd.DataFrame
    pairwise: pd.DataFrame
    generations: pd.DataFrame
    metrics: pd.DataFrame
    warnings: Warnings

    @property
    def judge_rows(self) -> int:
        return len(self.scores) + len(self.pairwise)


def empty_frame(schema: dict[str, str], extra: Iterable[str] = ()) -> pd.DataFrame:
    cols = {c: pd.Series(dtype="object") for c in extra}
    cols.update({c: pd.Series(dtype=t if t != "string" else "object") for c, t in schema.items()})
    return pd.DataFrame(cols)


def read_jsonl_frame(path: Path, schema: dict[str, str], warnings: Warnings, source: str = "",
                     where: str = "") -> pd.DataFrame:  # fmt: skip
    """Rows of one JSONL file as a frame with exactly `schema`'s columns; problems become warnings at `where`."""
    data = path.read_bytes()
    where = where or str(path)
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        warnings.add("torn_line", source=source, where=where)
        data = data[:cut]
    if not data.strip():
        return empty_frame(schema)
    try:
        frame = _arrow_frame(data, schema)
    except (ValueError, TypeError):  # ArrowInvalid / ArrowTypeError: mixed types or a broken line
        frame = _python_frame(data, schema, warnings, source, where)
    return frame


def _arrow_frame(data: bytes, schema: dict[str, str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.json as pj

    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
    arrow_schema = pa.schema([(name, types[t]) for name, t in schema.items()])
    options = pj.ParseOptions(explicit_schema=arrow_schema, unexpected_field_behavior="ignore")
    table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=1 << 20), parse_options=options)
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _python_frame(data: bytes, schema: dict[str, str], warnings: Warnings, source: str, where: str) -> pd.DataFrame:
    rows, bad = [], 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append({k: row.get(k) for k in schema})
        else:
            bad += 1
    warnings.add("unparseable_line", count=bad, source=source, where=where)
    frame = pd.DataFrame(rows, columns=list(schema))
    for col, kind in schema.items():
        if kind in ("int64", "float64"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        elif kind == "string":
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
    return frame


_EVAL_DIR = re.compile(r"^layer(\d+)$")
_EPOCH_FILE = re.compile(r"^(?P<stem>.+)_ep(?P<epoch>\d+)\.jsonl$")


@dataclass(frozen=True)
class EvalFile:
    """One file under `vector_evals/<model>/layer<L>/`."""

    path: Path
    model: str
    layer: int
    epoch: int
    kind: str  # "generations", "rating" or "pairwise"
    task: str  # rating/pairwise task ("" for generations)


def eval_files(root: Path) -> list[EvalFile]:
    """Every generations/score file of the layout, sorted; batch leftovers (`raw_*`, `*_rank<r>`) are skipped."""
    found = []
    for path in sorted((root / "vector_evals").glob("*/layer*/*_ep*.jsonl")):
        layer_match = _EVAL_DIR.match(path.parent.name)
        name_match = _EPOCH_FILE.match(path.name)
        if layer_match is None or name_match is None:
            continue
        stem, epoch = name_match["stem"], int(name_match["epoch"])
        kind, task = _classify(stem)
        if kind:
            found.append(EvalFile(path, path.parent.parent.name, int(layer_match[1]), epoch, kind, task))
    return found


def _classify(stem: str) -> tuple[str, str]:
    if stem == "generations":
        return "generations", ""
    if stem.startswith(("raw_", "json_batch_", "batch_")) or not stem.endswith("_scores"):
        return "", ""
    task = stem[: -len("_scores")]
    if task.startswith("pairwise_"):
        return "pairwise", task[len("pairwise_") :]
    return "rating", task


def load_corpus(root: Path, *, source: str = "study", behavior_task: str = "relationship",
                behavior: str | None = None) -> Corpus:  # fmt: skip
    """Read one directory in the study's layout; `behavior` limits `vector/` to `<behavior>_<model>` dirs."""
    from pipeline.analysis import clean_pairwise, clean_scores, pairwise_problems, score_problems

    warnings = Warnings()
    files = eval_files(root)
    scores = _read_kind(files, "rating", SCORE_SCHEMA, source, warnings, root)
    _row_warnings(scores, score_problems(scores), "", source, warnings)
    scores, counts = clean_scores(scores)
    warnings.add("duplicate_rating", count=counts.get("duplicate_rating", 0), source=source)
    pairwise = _read_kind(files, "pairwise", PAIRWISE_SCHEMA, source, warnings, root)
    _row_warnings(pairwise, pairwise_problems(pairwise), "pairwise_", source, warnings)
    pairwise, _ = clean_pairwise(pairwise)
    generations = _read_kind(files, "generations", GENERATION_SCHEMA, source, warnings, root)
    metrics = read_metrics(root, source, behavior, warnings)
    _cell_warnings(files, behavior_task, source, warnings)
    if not files and metrics.empty and not _has_prompting(root):
        warnings.add("source_empty", source=source, where=str(root))
    return Corpus(source, root, behavior_task, scores, pairwise, generations, metrics, warnings)


def _has_prompting(root: Path) -> bool:
    return any((root / "prompting_experiments").rglob("*.jsonl"))


def _row_warnings(frame: pd.DataFrame, problems: pd.Series, prefix: str, source: str, warnings: Warnings) -> None:
    """One warning per (problem, file) with its row count."""
    bad = frame.loc[problems.notna(), ["model", "layer", "epoch", "task"]].assign(code=problems.dropna())
    for (model, layer, epoch, task, code), n in bad.value_counts(sort=False).sort_index().items():
        where = f"vector_evals/{model}/layer{layer}/{prefix}{task}_scores_ep{epoch}.jsonl"
        warnings.add(str(code), count=int(n), source=source, where=where)


def _read_kind(files: list[EvalFile], kind: str, schema: dict[str, str], source: str, warnings: Warnings,
               root: Path) -> pd.DataFrame:  # fmt: skip
    frames = []
    for f in files:
        if f.kind != kind:
            continue
        frame = read_jsonl_frame(f.path, schema, warnings, source, relative(f.path, root))
        frame.insert(0, "source", source)
        frame.insert(1, "model", f.model)
        frame.insert(2, "layer", f.layer)
        frame.insert(3, "epoch", f.epoch)
        if kind != "generations":
            frame.insert(4, "task", f.task)
        frames.append(frame)
    if not frames:
        extra = [*CELL_KEYS, "task"] if kind != "generations" else CELL_KEYS
        return empty_frame(schema, extra)
    out = pd.concat(frames, ignore_index=True)
    out["layer"] = out["layer"].astype("int64")
    out["epoch"] = out["epoch"].astype("int64")
    return out


def _cell_warnings(files: list[EvalFile], behavior_task: str, source: str, warnings: Warnings) -> None:
    """Name the cells (model, layer, epoch) that lack a file kind, and cells whose files disagree in size."""
    cells: dict[tuple[str, int, int], dict[str, EvalFile]] = {}
    for f in files:
        label = {"generations": "generations", "pairwise": "pairwise"}.get(f.kind, f.task)
        if f.kind == "pairwise" and f.task != behavior_task:
            continue
        cells.setdefault((f.model, f.layer, f.epoch), {})[label] = f
    needs = {"generations": "missing_generations", "pairwise": "missing_pairwise", "coherence": "missing_coherence",
             behavior_task: "missing_rating"}  # fmt: skip
    for label, code in needs.items():
        lacking = sorted(cell for cell, have in cells.items() if label not in have)
        if lacking:
            warnings.add(code, count=len(lacking), source=source, where=describe_cells(lacking))
    for cell, have in sorted(cells.items()):
        _uneven(cell, have, behavior_task, source, warnings)


def _uneven(cell: tuple[str, int, int], have: dict[str, EvalFile], task: str, source: str, warnings: Warnings) -> None:
    from pipeline.files import count_lines

    sizes = {label: count_lines(have[label].path) for label in ("generations", "coherence", task) if label in have}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k} {v}" for k, v in sizes.items())
        warnings.add("uneven_counts", f"rows per file differ: {detail}", source=source, where=describe_cells([cell]))


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (warning locations stay short and portable)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def describe_cells(cells: list[tuple[str, int, int]]) -> str:
    """ "model ep<E>: L5, L11, ..." grouped by (model, epoch)."""
    groups: dict[tuple[str, int], list[int]] = {}
    for model, layer, epoch in cells:
        groups.setdefault((model, epoch), []).append(layer)
    return "; ".join(f"{m} ep{e}: " + ", ".join(f"L{x}" for x in sorted(ls)) for (m, e), ls in sorted(groups.items()))


def read_metrics(root: Path, source: str, behavior: str | None, warnings: Warnings) -> pd.DataFrame:
    """Raw `evaluation_metrics.jsonl` rows with source, behavior, model and layer columns added."""
    from pipeline.files import iter_jsonl

    frames = []
    for layer_dir in sorted((root / "vector").glob("*/layer*")):
        match = _EVAL_DIR.match(layer_dir.name)
        owner = layer_dir.parent.name
        if match is None or not layer_dir.is_dir():
            continue
        if behavior is not None and not owner.startswith(f"{behavior}_"):
            continue
        beh, _, model = owner.partition("_") if behavior is None else (behavior, "", owner[len(behavior) + 1 :])
        path = layer_dir / "evaluation_metrics.jsonl"
        if not path.exists():
            warnings.add("missing_metrics", source=source, where=relative(layer_dir, root))
            continue
        rows = list(iter_jsonl(path))
        if rows:
            frame = pd.DataFrame(rows)
            frame.insert(0, "source", source)
            frame.insert(1, "behavior", beh)
            frame.insert(2, "model", model)
            frame.insert(3, "layer", int(match[1]))
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["source", "behavior", "model",
                                                                                     "layer"])  # fmt: skip
