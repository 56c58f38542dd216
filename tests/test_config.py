"""Config: one precedence chain, and one-line errors naming the key for every kind of mistake."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.config import STUDY_MULTIPLIERS, Config
from pipeline.config_load import load_config
from pipeline.errors import ConfigError
from pipeline.models import layer_count
from tests.conftest import run_cli

BASE = """
behavior = "relationship-seeking"
[[models]]
name = "tiny-random"
layers = [1, 2]
[train]
epochs = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "steertui.toml").write_text(text)
    return tmp_path


def test_defaults_match_the_study(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'behavior = "relationship-seeking"\n'))
    assert config.train.beta == 0.1 and config.train.lr == 5e-4 and config.train.warmup_steps == 100
    assert config.train.epochs == 20 and config.train.weight_decay == 0.0
    assert config.generate.multipliers == STUDY_MULTIPLIERS and len(STUDY_MULTIPLIERS) == 21
    assert config.generate.top_p == 0.9 and config.generate.max_new_tokens == 100
    assert math.isinf(config.judge.budget_usd)


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    root = write(tmp_path, BASE + "batch_size = 8\n")
    assert load_config(root).train.batch_size == 8
    env = {"STEERTUI_TRAIN_BATCH_SIZE": "6", "STEERTUI_GENERATE_MULTIPLIERS": "-1,0,1"}
    config = load_config(root, env=env)
    assert config.train.batch_size == 6 and config.generate.multipliers == (-1.0, 0.0, 1.0)
    config = load_config(root, env=env, overrides={"train.batch_size": 2, "train.lr": None})
    assert config.train.batch_size == 2 and config.train.lr == 5e-4
    assert config.train.epochs == 3  # from the file, untouched by env and flags


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(AttributeError):
        config.train.epochs = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        (BASE + "epochz = 3\n", {}, "train.epochz: unknown key"),
        (BASE.replace("epochs = 3", 'epochs = "three"'), {}, "train.epochs: expected an integer"),
        (BASE.replace("epochs = 3", "epochs = 0"), {}, "train.epochs: must be >= 1"),
        (BASE.replace("layers = [1, 2]", "layers = [1, 9]"), {}, "layer 9 does not exist"),
        (BASE + "[generate]\nepochs = [4]\n", {}, "generate.epochs: epoch 4 is above train.epochs = 3"),
        (BASE + "[generate]\nmultipliers = []\n", {}, "generate.multipliers: must list at least one"),
        (BASE + '[judge]\njudge = "gpt4"\n', {}, "judge.judge: expected openai:MODEL"),
        (BASE, {"STEERTUI_TRAIN_EPOCHS": "x"}, "STEERTUI_TRAIN_EPOCHS: cannot parse 'x'"),
        (BASE, {"STEERTUI_TRAIN_EPOCS": "2"}, "STEERTUI_TRAIN_EPOCS: train.epocs is not a config key"),
        (BASE, {"STEERTUI_TRAIN_EPOCHS": "0"}, "STEERTUI_TRAIN_EPOCHS: train.epochs: must be >= 1"),
        ("behavior = [\n", {}, "invalid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], needle: str) -> None:
    root = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(root, env=env, layer_count=layer_count)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_config_error_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    root = write(tmp_path, BASE.replace("layers = [1, 2]", "layers = [7]"))
    before = sorted(p.name for p in root.iterdir())
    code, out, err = run_cli("status", "--workspace", str(root))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "models[tiny-random].layers: layer 7 does not exist" in lines[0]
    assert sorted(p.name for p in root.iterdir()) == before


def test_missing_config_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="steertui init"):
        load_config(tmp_path)


def test_examples_all_load(tmp_path: Path) -> None:
    for example in ("demo", "paper", "smoke"):
        code, _, err = run_cli("init", str(tmp_path / example), "--example", example)
        assert code == 0, err
        config = load_config(tmp_path / example, layer_count=layer_count)
        assert isinstance(config, Config) and config.models
    paper = load_config(tmp_path / "paper")
    assert [m.short for m in paper.models] == ["Llama-3.1-70B-Instruct", "Llama-3.1-8B-Instruct"]
    assert paper.eval_epochs(paper.models[0]) == (10, 15, 20)
    assert paper.generate.multipliers == STUDY_MULTIPLIERS


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run_cli("init", str(tmp_path / "a"), "--example", "smoke")[0] == 0
    code, _, err = run_cli("init", str(tmp_path / "a"))
    assert code == 2 and "already a workspace" in err


def test_negative_multiplier_lists_parse_as_the_spec_writes_them() -> None:
    from pipeline.worker import glue_number_lists
    from steertui.cli import build_parser

    argv = ["generate", "--model", "m", "--layer", "1", "--epoch", "2", "--multipliers", "-2,-1,0,1,2"]
    args = build_parser().parse_args(glue_number_lists(argv))
    assert args.multipliers == (-2.0, -1.0, 0.0, 1.0, 2.0)
