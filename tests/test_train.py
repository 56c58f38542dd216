"""BiPO training: equivalence with the study's recipe, resume after SIGKILL, bad input."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.bipo import bipo_loss
from pipeline.bipo_reference import StudyRecipe
from pipeline.data import load_pairs
from pipeline.train_data import collate, tokenize_pairs
from pipeline.train_forward import HookedForward, SplitForward
from pipeline.vectors import VectorMeta, load_vector, save_vector
from tests.conftest import REPO, run_cli


def _examples(lm: Any, n: int = 4, fmt: str = "chat") -> list[Any]:
    pairs = load_pairs(REPO / "data/relationship-seeking/train.jsonl")[:n]
    examples, _ = tokenize_pairs(lm.tokenizer, pairs, system_prompt="You are a conversational assistant.",
                                 prompt_format=fmt, max_length=4096, truncation="warn")  # fmt: skip
    return examples


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("fmt", ["chat", "seed"])
def test_loss_and_gradient_equal_the_study_recipe(tiny: Any, sign: float, fmt: str) -> None:
    """fp32 tiny model: packed, split-at-L, cached reference == second model copy + full forwards."""
    examples = _examples(tiny, fmt=fmt)
    layer = 2
    v_study = (torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(3)) * 0.5).requires_grad_()
    recipe = StudyRecipe(tiny.model, copy.deepcopy(tiny.model), layer, v_study, beta=0.1)
    study = recipe.loss(examples, sign, tiny.tokenizer.pad_token_id)
    study.loss.backward()
    recipe.steering.remove()

    v_ours = v_study.detach().clone().requires_grad_()
    batch = collate(examples, list(range(len(examples))), tiny.tokenizer.pad_token_id)
    forward = SplitForward(tiny.model, layer)
    h, (ref_c, ref_r, _, _) = forward.reference(batch)
    signs = torch.full((len(examples),), sign)
    pc, pr, _, _ = forward.upper(h, batch, signs[:, None, None] * v_ours[None, None, :])
    ours = bipo_loss(pc, pr, ref_c, ref_r, signs, beta=0.1)
    ours.loss.backward()

    assert abs(ours.loss.item() - study.loss.item()) < 1e-5
    assert torch.allclose(v_ours.grad, v_study.grad, atol=1e-5, rtol=0)
    assert torch.allclose(ours.chosen_rewards, study.chosen_rewards, atol=5e-4)  # sums over ~700 fp32 tokens


def test_hooked_path_matches_split_path(tiny: Any) -> None:
    examples = _examples(tiny, n=4)
    batch = collate(examples, list(range(4)), tiny.tokenizer.pad_token_id)
    vec = torch.randn(tiny.hidden_size)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0])
    forward = SplitForward(tiny.model, 1)
    h = forward.prefix(batch)
    split = forward.upper(h, batch, signs[:, None, None] * vec[None, None, :])
    hooked = HookedForward(tiny.model, 1, vec).logps(batch, signs)
    for a, b in zip(split[:2], hooked[:2], strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def _train_args(ws: Path, *extra: str) -> list[str]:
    return ["train", "--workspace", str(ws), "--model", "tiny-random", "--layer", "1", *extra]


def test_training_writes_vectors_metrics_and_moves_the_vector(workspace: Path) -> None:
    test_file = workspace / "data/relationship-seeking/test.jsonl"
    test_file.write_text("".join(test_file.read_text().splitlines(keepends=True)[:5]))
    env = {"STEERTUI_TRAIN_EVAL_PAIRS": "0"}  # the whole test set, not the smoke example's subset
    code, out, err = run_cli(*_train_args(workspace, "--epochs", "2", "--max-pairs", "8"), env=env)
    assert code == 0, err
    vdir = workspace / "vector/relationship-seeking_tiny-random/layer1"
    rows = [json.loads(x) for x in (vdir / "evaluation_metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["eval_multiplier"]) for r in rows] == [(1, 1.0), (1, -1.0), (2, 1.0), (2, -1.0)]
    test_rows = len(load_pairs(workspace / "data/relationship-seeking/test.jsonl"))
    assert all(r["eval_rows"] == test_rows for r in rows)  # the whole test set, not a shard
    assert rows[0]["eval_test_dataset_sub_loss"] is None and rows[1]["eval_test_dataset_add_loss"] is None
    vec1, vec2 = load_vector(vdir / "vec_ep1_layer1.pt"), load_vector(vdir / "vec_ep2_layer1.pt")
    assert vec2.numel() == 64 and vec2.norm() > 0 and not torch.equal(vec1, vec2)
    side = json.loads((vdir / "vec_ep2_layer1.json").read_text())
    assert side["epoch"] == 2 and side["layer"] == 1 and side["model"] == "tiny-random"


def _run_killed_at(args: list[str], point: str) -> None:
    """Run training and SIGKILL it at a named step (a real signal at a precise moment)."""
    env = {**os.environ, "STEERTUI_TEST_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-m", "steertui", *args], env=env, capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_resume_after_sigkill_equals_uninterrupted(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run_cli("init", str(other), "--example", "smoke")[0] == 0
    common = ["--epochs", "3", "--max-pairs", "12", "--batch-size", "2"]
    assert run_cli(*_train_args(other, *common))[0] == 0

    vdir = workspace / "vector/relationship-seeking_tiny-random/layer1"
    _run_killed_at(_train_args(workspace, *common), "train_step:8")  # 6 steps per epoch: mid epoch 2
    assert (vdir / "vec_ep1_layer1.pt").exists() and not (vdir / "vec_ep2_layer1.pt").exists()
    code, out, err = run_cli(*_train_args(workspace, *common))
    assert code == 0, err
    assert "resuming after epoch 1" in out + err
    odir = other / "vector/relationship-seeking_tiny-random/layer1"
    for epoch in (1, 2, 3):
        a = load_vector(vdir / f"vec_ep{epoch}_layer1.pt")
        b = load_vector(odir / f"vec_ep{epoch}_layer1.pt")
        assert torch.allclose(a, b, atol=1e-6), epoch
    rows = [json.loads(x) for x in (vdir / "evaluation_metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["eval_multiplier"]) for r in rows] == [(e, s) for e in (1, 2, 3) for s in (1.0, -1.0)]


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in this process (torch is already imported here): exit code and stderr."""
    from steertui.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_layer_is_exit_2_and_writes_nothing(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _main(capsys, "train", "--workspace", str(workspace), "--model", "tiny-random", "--layer", "9")
    assert code == 2 and "layer 9 does not exist" in err
    assert not (workspace / "vector/relationship-seeking_tiny-random").exists()


def test_empty_dataset_is_exit_2(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / "data/relationship-seeking/train.jsonl").write_text("")
    code, err = _main(capsys, *_train_args(workspace, "--epochs", "1"))
    assert code == 2 and "train.jsonl: no rows" in err
    assert not (workspace / "vector/relationship-seeking_tiny-random").exists()


def test_too_long_pair_rejected_when_configured(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEERTUI_TRAIN_TRUNCATION", "reject")
    monkeypatch.setenv("STEERTUI_TRAIN_MAX_LENGTH", "64")
    code, err = _main(capsys, *_train_args(workspace, "--epochs", "1"))
    assert code == 2 and "is over train.max_length = 64" in err
    assert not (workspace / "vector/relationship-seeking_tiny-random").exists()


def test_wrong_size_vector_refused(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "vec_ep1_layer1.pt"
    save_vector(bad, torch.ones(10), VectorMeta("x", 1, 1, 10, float(torch.ones(10).norm())))
    code, err = _main(capsys, *_train_args(workspace, "--epochs", "1", "--init-vector", str(bad)))
    assert code == 2 and "does not match the model's hidden size 64" in err
    vdir = workspace / "vector/relationship-seeking_tiny-random/layer1"
    vdir.mkdir(parents=True)
    torch.save({"vector": torch.ones(10), "epoch": 1}, vdir / "checkpoint.pt")
    code, err = _main(capsys, *_train_args(workspace, "--epochs", "2"))
    assert code == 2 and "checkpoint vector has shape (10,)" in err
    assert not list(vdir.glob("vec_*"))


def test_two_process_fsdp_on_cpu_saves_the_whole_vector(workspace: Path) -> None:
    """The multi-GPU path (FSDP2 shards per layer, all-reduced vector) run on CPU with gloo."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEERTUI_TRAIN_WARMUP_STEPS": "0"}
    args = ["--workspace", str(workspace), "--model", "tiny-random", "--layer", "1", "--epochs", "1",
            "--max-pairs", "8", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "pipeline.train", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    vdir = workspace / "vector/relationship-seeking_tiny-random/layer1"
    vec = load_vector(vdir / "vec_ep1_layer1.pt", hidden_size=64)
    assert vec.norm() > 0
    rows = [json.loads(x) for x in (vdir / "evaluation_metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["eval_rows"] == 8  # both ranks' shards of the eval set, counted once
