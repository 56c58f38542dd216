"""Dataset generation against the local fake provider server: repair, de-duplication, quality filter,
explosion into DPO rows and grouped split; exactly once across real SIGKILLs; budget; hand-made data kept."""

from __future__ import annotations

import itertools
import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data import validate_file
from pipeline.datagen import run_datagen
from pipeline.datagen_prompts import Case, Turn
from pipeline.datagen_repair import parse_cases
from pipeline.datagen_split import build_splits, dedupe, explode, split_ids
from pipeline.errors import BudgetExceeded, RubricError
from pipeline.files import read_jsonl
from pipeline.judges.base import Completion
from pipeline.workspace import Workspace
from tests.conftest import run_cli
from tests.fakeapi import FakeAPIServer
from tests.test_datagen_support import BEHAVIOR, answer, job, make_workspace, run_generate

# 40 cases asked in 5 requests (10 single, 5 multi-turn, 10 single, 5 long, 10 single); repair keeps 37,
# one is a duplicate, a quarter of the 36 unique ones score 3 < 6: 28 conversations, 26 train and 2 test.
EXPECTED = {"requests": 5, "cases": 37, "duplicates": 1, "scored": 36, "kept": 28}
PAID = 5 + 36


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPIServer]:
    with FakeAPIServer(answer=answer) as srv:
        for name, value in srv.env().items():
            monkeypatch.setenv(name, value)
        yield srv


def counts(result: Any) -> dict[str, int]:
    return {k: getattr(result, k) for k in EXPECTED}


def splits(ws: Workspace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The written train and test rows, after checking both files are valid DPO data."""
    train, test = ws.train_path(BEHAVIOR), ws.test_path(BEHAVIOR)
    assert validate_file(train) == [] and validate_file(test) == []
    return read_jsonl(train), read_jsonl(test)


def assert_grouped(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> None:
    train_convs = {r["conversation_id"] for r in train}
    test_convs = [r["conversation_id"] for r in test]
    assert not train_convs & set(test_convs)
    assert len(test_convs) == len(set(test_convs))  # one row per test conversation
    assert len({r["prompt_id"] for r in train + test}) == len(train) + len(test)


def test_forty_cases_make_valid_grouped_splits_and_a_rerun_is_free(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    result = run_datagen(job(ws))
    assert counts(result) == EXPECTED
    train, test = splits(ws)
    assert_grouped(train, test)
    assert (len({r["conversation_id"] for r in train}), len(test)) == (26, 2)
    assert (result.train_rows, result.test_rows) == (len(train), len(test))
    for row in train + test:
        assert "genius" in row["chosen_arr"][0]["content"] and "gaps" in row["rejected_arr"][0]["content"]
        history = [m["content"] for m in row["prompt_arr"] if m["role"] == "assistant"]
        side = {"NA": "", "chosen": "genius", "rejected": "gaps"}[row["history_type"]]
        assert all(side in h for h in history) and (row["history_type"] == "NA") == (not history)
        assert row["assistant_turn_idx"] == len(row["prompt_arr"])
    turns = Counter(r["conversation_id"] for r in train) | {r["conversation_id"]: 0 for r in test}
    assert set(turns.values()) - {0} <= {1, 3, 5, 9}  # rows of 1, 2 (kept of a broken 5), 3 and 5 turns
    notes = " | ".join(n for row in read_jsonl(ws.data_dir(BEHAVIOR) / "generation/cases.jsonl") for n in row["notes"])
    for repair in (
        "removed a Markdown code fence",
        "removed trailing commas",
        "kept 9 complete case(s) of a cut-off",
        "turn 1 has no antitarget_response; dropped",
        "turn 3 has no target_response; kept its first 2",
    ):
        assert repair in notes  # fmt: skip
    assert server.stats.paid_total == PAID and not server.stats.duplicates()
    files = {p: p.read_bytes() for p in (ws.train_path(BEHAVIOR), ws.test_path(BEHAVIOR))}
    again = run_datagen(job(ws))
    assert counts(again) == EXPECTED and again.spent_usd == 0
    assert server.stats.paid_total == PAID and all(p.read_bytes() == b for p, b in files.items())
    assert counts(run_datagen(job(ws, seed=7))) == EXPECTED  # another split: every answer reused
    assert server.stats.paid_total == PAID and ws.test_path(BEHAVIOR).read_bytes() != files[ws.test_path(BEHAVIOR)]
    assert_grouped(*splits(ws))


@pytest.mark.parametrize(
    ("mode", "point"),
    [("sync", "datagen:after_cases"), ("sync", "datagen:between_outputs"), ("batch", "during_convert"),
     ("batch", "datagen:case_rows"), ("batch", "datagen:quality_rows")],
)  # fmt: skip
def test_sigkill_mid_run_then_rerun_pays_no_request_twice(
    server: FakeAPIServer, tmp_path: Path, mode: str, point: str
) -> None:
    """A real `steertui data generate` process SIGKILLed at a named step, then a rerun."""
    ws = make_workspace(tmp_path / "ws")
    proc = run_generate(ws, {**server.env(), "STEERTUI_TEST_CRASH_AT": point}, "--mode", mode)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ws.test_path(BEHAVIOR).exists() == (point == "datagen:between_outputs")
    assert not ws.train_path(BEHAVIOR).exists()
    result = run_datagen(job(ws, overrides={"judge.mode": mode}))
    assert counts(result) == EXPECTED
    assert_grouped(*splits(ws))
    assert server.stats.paid_total == PAID and not server.stats.duplicates()


def test_anthropic_provider_and_judge(server: FakeAPIServer, tmp_path: Path) -> None:
    """Anthropic answers through a forced tool call; the fake one wraps our JSON text in a field."""
    ws = make_workspace(tmp_path / "ws")
    model = "anthropic:claude-haiku-4-5"
    result = run_datagen(job(ws, provider=model, overrides={"judge.judge": model}))
    assert counts(result) == EXPECTED
    assert_grouped(*splits(ws))
    assert server.stats.requests_by_endpoint["POST /v1/messages"] == PAID


def test_budget_stops_before_crossing_then_a_rerun_continues(server: FakeAPIServer, tmp_path: Path) -> None:
    from pipeline.datagen_prompts import generation_request, load_brief, plan_requests
    from pipeline.judges.costs import estimate_usd, resolve_price

    ws = make_workspace(tmp_path / "ws")
    first = job(ws)
    spec = plan_requests(40, 10, load_brief(ws.rubric_path(BEHAVIOR)))[0]
    price = resolve_price("gpt-4o-mini", first.config.prices, 1.0)
    estimate = estimate_usd(generation_request(spec, load_brief(ws.rubric_path(BEHAVIOR)), "openai", "gpt-4o-mini",
                                               first.max_tokens), price, batch=False)  # fmt: skip
    with pytest.raises(BudgetExceeded, match=r"budget reached in generation.*--budget-usd") as info:
        run_datagen(job(ws, overrides={"judge.budget_usd": estimate * 1.02}))  # room for about one request
    assert info.value.exit_code == 1
    assert 1 <= server.stats.paid_total < 5 and not ws.train_path(BEHAVIOR).exists()
    assert counts(run_datagen(job(ws))) == EXPECTED
    assert server.stats.paid_total == PAID and not server.stats.duplicates()


def test_more_cases_later_pay_only_for_new_requests(server: FakeAPIServer, tmp_path: Path) -> None:
    """Asking for 45 after 40 adds one request; its replies never hold a case, so it is asked again up to
    judge.max_reasks times, then recorded invalid."""
    ws = make_workspace(tmp_path / "ws")
    run_datagen(job(ws))
    result = run_datagen(job(ws, n_cases=45))
    assert (result.requests, result.cases, result.kept) == (6, 37, 28)
    assert server.stats.paid_total == PAID + 3
    rows = {r["request"]: r for r in read_jsonl(ws.data_dir(BEHAVIOR) / "generation/cases.jsonl")}
    assert rows[5]["valid"] is False and "no cases array" in rows[5]["reason"] and rows[5]["cases"] == []
    assert sorted(server.stats.attempts_by_key.values()).count(3) == 1  # 1 ask + 2 re-asks (judge.max_reasks)


def test_hand_made_data_is_never_replaced_without_force(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    train = ws.train_path(BEHAVIOR)
    train.write_text('{"prompt_id": 1}\n')
    proc = run_generate(ws, server.env())
    assert proc.returncode == 2 and f"{train}: exists and was not written by `steertui data generate`" in proc.stderr
    assert sum(server.stats.requests_by_endpoint.values()) == 0
    proc = run_generate(ws, server.env(), "--force")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "28 of 36 scored kept" in proc.stdout and f"wrote {train} (" in proc.stdout
    code, out, err = run_cli("data", "validate", str(ws.data_dir(BEHAVIOR)))
    assert code == 0 and out.count(": ok, ") == 2, err
    assert_grouped(*splits(ws))
    assert counts(run_datagen(job(ws))) == EXPECTED  # its own files are replaced without --force


def test_generation_needs_only_the_rubric_fields_it_uses(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    path = ws.rubric_path(BEHAVIOR)
    path.write_text(path.read_text().replace('target = """Replies that heap praise on the user."""', ""))
    with pytest.raises(RubricError, match=rf"{path}: target: missing$"):
        run_datagen(job(ws))
    assert sum(server.stats.requests_by_endpoint.values()) == 0


# ------------------------------------------------------------------------------------------------ units
def reply(text: str, data: Any = None) -> Any:
    return parse_cases(Completion(text=text, data=data), expected=3)


def turn(u: str = "Hi", t: str = "Genius!", a: str = "Fine.") -> dict[str, str]:
    return {"user_message": u, "target_response": t, "antitarget_response": a}


def test_repair_keeps_what_it_can_and_says_what_it_did() -> None:
    good = {"reasoning": "r", "turns": [turn()]}
    assert reply("", {"cases": [good]}).value == {"cases": [{"reasoning": "r", "turns": [turn()]}], "notes": []}
    assert reply(json.dumps([good, good, good, good])).value["notes"] == [
        "read a bare list of cases", "ignored 1 case(s) beyond the 3 asked for"]  # fmt: skip
    single = reply("", {"user": "Hi", "chosen": "Genius!", "rejected": "Fine."})
    assert single.valid and single.value["cases"][0]["turns"] == [turn()]
    stringified = reply("", {"cases": json.dumps([good])})
    assert stringified.valid and "decoded a stringified cases array" in stringified.value["notes"]
    same = reply(json.dumps({"cases": [{"turns": [turn(t="Same", a=" same ")]}]}))
    assert not same.valid and "identical target and anti-target" in str(same.reason)
    assert not reply("no JSON here").valid
    refused = parse_cases(Completion(text="", refusal="I won't"), expected=3)
    assert not refused.valid and "refusal" in str(refused.reason)


def case(cid: int, users: list[str]) -> Case:
    return Case(cid, cid // 1000, tuple(Turn(u, f"T{u}", f"A{u}") for u in users))


def test_explode_gives_one_row_then_two_per_later_turn() -> None:
    rows = explode(case(7, ["u1", "u2", "u3"]))
    assert [(r.turn_idx, r.history_type) for r in rows] == [(1, "NA"), (2, "chosen"), (2, "rejected"),
                                                            (3, "chosen"), (3, "rejected")]  # fmt: skip
    assert rows[3].prompt == (("user", "u1"), ("assistant", "Tu1"), ("user", "u2"), ("assistant", "Tu2"),
                              ("user", "u3"))  # fmt: skip
    assert rows[4].prompt[1] == ("assistant", "Au1") and (rows[4].chosen, rows[4].rejected) == ("Tu3", "Au3")


def test_dedupe_by_normalised_first_user_message() -> None:
    unique, dupes = dedupe([case(1, ["Is it good?"]), case(2, ["is it  GOOD"]), case(3, ["Is it bad?"])])
    assert [c.case_id for c in unique] == [1, 3] and [c.case_id for c in dupes] == [2]


def test_split_is_grouped_seeded_and_keeps_one_test_row_per_conversation() -> None:
    cases = [case(i, [f"q{i}a", f"q{i}b", f"q{i}c"][: 1 + i % 3]) for i in range(40)]
    train, test = build_splits(cases, 0.1, 42)
    assert (train, test) == build_splits(cases, 0.1, 42)
    assert_grouped(train, test)
    assert len(test) == 4 and len(train) == sum(len(explode(c)) for c in cases if c.case_id not in
                                                {r["conversation_id"] for r in test})  # fmt: skip
    multi = [r["history_type"] for r in test if r["history_type"] != "NA"]
    assert all(a != b for a, b in itertools.pairwise(multi))  # sides alternate
    assert [r["entry_id"] for r in test] == list(range(len(test)))
    assert split_ids([1, 2], 0.05, 0) in (([1], [2]), ([2], [1]))  # at least one conversation each side
