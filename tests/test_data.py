"""DPO datasets: the schema, file:line:field problems, and our bundled data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data import dataset_stats, load_pairs, validate_file
from pipeline.errors import DataError
from tests.conftest import REPO, run_cli

GOOD = {
    "prompt_id": 1,
    "prompt_arr": [{"role": "user", "content": "Hi"}],
    "chosen_arr": [{"role": "assistant", "content": "Hello, friend!"}],
    "rejected_arr": [{"role": "assistant", "content": "Greeting acknowledged."}],
}


def write_rows(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_broken_file_reports_each_problem_with_its_line(tmp_path: Path) -> None:
    no_chosen = {k: v for k, v in GOOD.items() if k != "chosen_arr"} | {"prompt_id": 2}
    ends_assistant = GOOD | {
        "prompt_id": 3,
        "prompt_arr": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
    }
    path = write_rows(
        tmp_path / "bad.jsonl",
        [json.dumps(GOOD), '{"prompt_id": 9, "prompt_arr": [', json.dumps(no_chosen), json.dumps(ends_assistant)],
    )
    code, out, err = run_cli("data", "validate", str(path))
    assert code == 2
    lines = err.strip().splitlines()
    assert f"{path}:2: invalid JSON" in lines[0]
    assert f"{path}:3: chosen_arr: missing" in lines[1]
    assert f"{path}:4: prompt_arr: must end with a user turn" in lines[2]
    assert lines[3] == "3 problem(s) found"


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (GOOD | {"prompt_id": "1"}, "prompt_id: must be an integer"),
        (GOOD | {"prompt_arr": []}, "prompt_arr: must be a non-empty list"),
        (GOOD | {"prompt_arr": [{"role": "bot", "content": "x"}]}, "prompt_arr[0].role: must be one of"),
        (GOOD | {"prompt_arr": [{"role": "user", "content": " "}]}, "prompt_arr[0].content: missing or empty"),
        (GOOD | {"prompt_arr": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
         "prompt_arr[0].role: expected user"),
        (GOOD | {"rejected_arr": [{"role": "user", "content": "x"}]}, "rejected_arr[0].role: must be assistant"),
        (GOOD | {"entry_id": 1.5}, "entry_id: must be an integer"),
    ],
)  # fmt: skip
def test_row_problems(tmp_path: Path, row: dict[str, object], needle: str) -> None:
    problems = validate_file(write_rows(tmp_path / "x.jsonl", [json.dumps(row)]))
    assert len(problems) == 1 and needle in str(problems[0]) and ":1:" in str(problems[0])


def test_duplicate_prompt_id(tmp_path: Path) -> None:
    problems = validate_file(write_rows(tmp_path / "x.jsonl", [json.dumps(GOOD), json.dumps(GOOD)]))
    assert [str(p).split(": ", 1)[1] for p in problems] == ["prompt_id: duplicate of line 1 (1)"]


def test_system_message_first_is_allowed(tmp_path: Path) -> None:
    row = GOOD | {"prompt_arr": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]}
    assert validate_file(write_rows(tmp_path / "x.jsonl", [json.dumps(row)])) == []


def test_empty_file_refused_by_loader(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        load_pairs(write_rows(tmp_path / "x.jsonl", [""]))


def test_bundled_dataset_is_valid_and_shaped_as_promised() -> None:
    train = load_pairs(REPO / "data/relationship-seeking/train.jsonl")
    test = load_pairs(REPO / "data/relationship-seeking/test.jsonl")
    assert len(train) >= 400 and len(test) >= 60
    for pairs in (train, test):
        assert dataset_stats(pairs)["multi_turn_share"] >= 0.25
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in test}
    groups = {p.extras.get("metaprompt_id") for p in train}
    assert not groups & {p.extras.get("metaprompt_id") for p in test}
    code, out, _ = run_cli("data", "validate", str(REPO / "data/relationship-seeking"))
    assert code == 0 and out.count(": ok,") == 2


def test_study_test_set_validates(shared: Path) -> None:
    path = shared / "data/relationship-seeking/test.jsonl"
    assert validate_file(path) == []
    pairs = load_pairs(path)
    assert len(pairs) == 245 and sum(p.multi_turn for p in pairs) == 79
