"""The batch script and the parsing of Slurm's answers (no cluster needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import SlurmConfig
from pipeline.errors import ConfigError
from steertui.executor_slurm import job_from_fields, parse_exit, parse_fields, parse_squeue, state_message
from steertui.slurm_script import directives, gres_for, render


def _directives(tmp_path: Path, gpus: int = 0, **slurm: object) -> list[str]:
    cfg = SlurmConfig(**slurm)  # type: ignore[arg-type]
    return directives(cell="train:tiny-random:L1", log=tmp_path / "logs" / "x.log", cwd=tmp_path, gpus=gpus, slurm=cfg)


def test_directives_follow_the_config(tmp_path: Path) -> None:
    lines = _directives(tmp_path, 2, partition="gpu", account="lab", time_limit="2:00:00", cpus_per_task=8,
                        mem="64G", extra=("--qos=high", "#SBATCH --constraint=a100"))  # fmt: skip
    assert lines[0] == "#SBATCH --job-name=steertui:train:tiny-random:L1"
    assert f"#SBATCH --output={tmp_path / 'logs' / 'x.log'}" in lines
    for expected in ("--partition=gpu", "--account=lab", "--time=2:00:00", "--cpus-per-task=8", "--mem=64G",
                     "--gres=gpu:2", "--open-mode=append", "--no-requeue", "--nodes=1"):  # fmt: skip
        assert f"#SBATCH {expected}" in lines
    assert lines[-2:] == ["#SBATCH --qos=high", "#SBATCH --constraint=a100"]  # extra last: a site may override ours


def test_no_gres_without_gpus_or_template(tmp_path: Path) -> None:
    assert not any("--gres" in line for line in _directives(tmp_path, 0))
    assert not any("--gres" in line for line in _directives(tmp_path, 4, gres=""))
    assert not any(line.startswith(("#SBATCH --partition", "#SBATCH --account", "#SBATCH --mem"))
                   for line in _directives(tmp_path))  # fmt: skip
    assert gres_for("gpu:a100:{n}", 8) == "gpu:a100:8"


def test_values_cannot_break_out_of_their_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one line"):
        _directives(tmp_path, extra=("--qos=high\nrm -rf /",))
    with pytest.raises(ConfigError, match="not an sbatch option"):
        _directives(tmp_path, extra=("qos=high",))
    odd = directives(cell="c", log=tmp_path / "a b%j" / "x.log", cwd=tmp_path, gpus=0, slurm=SlurmConfig())
    assert f'#SBATCH --output="{tmp_path}/a b%%j/x.log"' in odd  # quoted (blank) and %% (no pattern expansion)


def test_worker_argv_survives_the_script(tmp_path: Path) -> None:
    """Each argument reaches the worker as one word, whatever it holds."""
    args = ["a b", "it's", "$HOME", "`id`", '"q"', "*", ""]
    argv = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *args]
    script = tmp_path / "job.sh"
    script.write_text(render(argv, job_id=1, cell="c", log=tmp_path / "x.log", cwd=tmp_path, gpus=0,
                             slurm=SlurmConfig()))  # fmt: skip
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert json.loads(out.stdout.splitlines()[-1]) == args
    assert "OPENAI_API_KEY" not in script.read_text()


def test_parsing_slurm_answers() -> None:
    assert parse_exit("3:0") == 3 and parse_exit("0:15") == 143 and parse_exit("x") is None
    line = (
        "JobId=7 JobName=steertui:train:m:L1 UserId=root(0) JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15 "
        "TimeLimit=00:01:00 NodeList=n1 BatchHost=n1 Command=/w s/.steertui/slurm/job3-1.sh"
    )
    job = job_from_fields(parse_fields(line))
    assert (job.id, job.name, job.state, job.exit_code, job.node) == ("7", "steertui:train:m:L1", "TIMEOUT", 143, "n1")
    assert job.command == "/w s/.steertui/slurm/job3-1.sh"
    assert state_message(job) == "slurm TIMEOUT on n1 (time limit 00:01:00)"
    queued = parse_squeue("8|steertui:c|PENDING|Resources||1:00|/w/a|b.sh\n")["8"]
    assert queued.live and queued.command == "/w/a|b.sh" and state_message(queued) == "slurm PENDING (Resources)"


def test_config_picks_the_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from pipeline.config import Config, SchedulerConfig
    from pipeline.workspace import Workspace
    from steertui.executor import LocalExecutor
    from steertui.executor_slurm import SlurmExecutor
    from steertui.executors import executor_for_row, make_executor

    ws = Workspace(tmp_path)
    slurm = replace(Config(), scheduler=SchedulerConfig(executor="slurm"))
    assert isinstance(make_executor(Config(), ws), LocalExecutor)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("sbatch", "squeue", "scontrol", "scancel"):
        (fake_bin / name).write_text("#!/bin/sh\nexit 1\n")
        (fake_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    executor = make_executor(slurm, ws)
    assert isinstance(executor, SlurmExecutor) and executor.allocates_gpus and executor.gpu_cluster
    assert not SlurmExecutor(ws, replace(slurm, slurm=SlurmConfig(gres=""))).gpu_cluster
    (fake_bin / "scancel").unlink()
    with pytest.raises(ConfigError, match="scancel"):
        make_executor(slurm, ws)
    row = {"executor": "slurm", "external_id": "12"}
    assert isinstance(executor_for_row(row, slurm, ws), SlurmExecutor)
    assert isinstance(executor_for_row({"executor": "local", "external_id": ""}, slurm, ws), LocalExecutor)
