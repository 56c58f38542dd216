"""Pick where jobs run from `[scheduler] executor`: "local" (subprocesses on this machine) or "slurm"
(`sbatch` on a cluster). The scheduler's logic is the same for both; only the executor changes.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.store import Store
from pipeline.workspace import Workspace
from steertui.executor import Executor, LocalExecutor

SLURM_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")


def make_executor(config: Config, ws: Workspace, store: Store | None = None) -> Executor:
    """The executor `config.scheduler.executor` names; refuses "slurm" where the Slurm commands are missing."""
    if config.scheduler.executor == "slurm":
        from steertui.executor_slurm import SlurmExecutor

        missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
        if missing:
            raise ConfigError(
                f'scheduler.executor: "slurm" needs {", ".join(missing)} on PATH; run steertui on a Slurm '
                'login node, or set executor = "local"'
            )
        return SlurmExecutor(ws, config, store)
    return LocalExecutor()


def executor_for_row(row: Mapping[str, Any], config: Config, ws: Workspace) -> Executor:
    """The executor that started a job row (for a cancel with no scheduler running, whatever the config says)."""
    if row["executor"] == "slurm" and row["external_id"]:
        from steertui.executor_slurm import SlurmExecutor

        return SlurmExecutor(ws, config)
    return LocalExecutor()
