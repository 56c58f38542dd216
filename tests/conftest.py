"""Test tiers and isolation.

Tiers: default (fast, CPU, no network); `slow` (SmolLM2 end to end: --runslow); `gpu` (CUDA:
--rungpu); `api` (real provider keys: --runapi). Every test runs with a clean STEERTUI_* / provider-key
environment, so a developer's shell cannot change results.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# No test reaches the Hugging Face Hub: set before huggingface_hub is imported, and inherited by workers.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Environment for plan runs in tests: a small smoke plan that finishes in seconds on a busy 2-core box.
FAST_PLAN_ENV = {
    "STEERTUI_TRAIN_EPOCHS": "2",
    "STEERTUI_TRAIN_MAX_PAIRS": "8",
    "STEERTUI_TRAIN_EVAL_PAIRS": "4",
    "STEERTUI_TRAIN_MAX_LENGTH": "256",
    "STEERTUI_GENERATE_MAX_PROMPTS": "2",
    "STEERTUI_SCHEDULER_RETRY_BACKOFF_S": "0",
    "STEERTUI_SCHEDULER_POLL_S": "0.2",
    "OMP_NUM_THREADS": "1",
}
CLEARED_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "HF_TOKEN")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run slow tests (SmolLM2 end to end)")
    parser.addoption("--rungpu", action="store_true", help="run tests that need CUDA")
    parser.addoption("--runapi", action="store_true", help="run tests that call real provider APIs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gates = {"slow": "--runslow", "gpu": "--rungpu", "api": "--runapi"}
    for item in items:
        for marker, flag in gates.items():
            if marker in item.keywords and not config.getoption(flag):
                item.add_marker(pytest.mark.skip(reason=f"{marker} test: pass {flag} to run it"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STEERTUI_") and name != "STEERTUI_CACHE":
            monkeypatch.delenv(name, raising=False)
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for tiny-model tests: their batches are launch-bound, and on a busy 2-core
    machine extra OpenMP threads only contend (the smollm2 equivalence test: 20 s this way, 150 s with 2)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def shared() -> Path:
    """The read-only study material beside the checkout; tests using it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the checkout")
    return SHARED


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A fresh smoke workspace (tiny-random, bundled dataset and rubric)."""
    from steertui.cli import main

    root = tmp_path / "ws"
    assert main(["init", str(root), "--example", "smoke"]) == 0
    yield root


@pytest.fixture(scope="session")
def tiny() -> object:
    """The tiny-random model, loaded once per session (fp32, CPU)."""
    from pipeline.models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def smollm2() -> object:
    from pipeline.models import load_model

    return load_model("smollm2-135m", device="cpu")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run `steertui` in a real subprocess; returns (exit code, stdout, stderr)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "steertui", *args], capture_output=True, text=True, env=full_env, cwd=cwd,
        timeout=600,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
