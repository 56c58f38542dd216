"""The batch script steertui hands to `sbatch`: `#SBATCH` lines from `[slurm]`, then the worker command.

The script is the only shell involved: steertui's own calls to Slurm are argument lists. The worker's
argv is quoted word by word, directive values are checked for line breaks (a value must not end its
`#SBATCH` line and start a command), and nothing from the environment is written into the file: keys
reach the job through `sbatch --export=ALL`, never through files.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import SlurmConfig
from pipeline.errors import ConfigError

JOB_PREFIX = "steertui:"  # job names are "steertui:<cell>", e.g. "steertui:train:tiny-random:L1"


def job_name(cell: str) -> str:
    return JOB_PREFIX + cell


def gres_for(template: str, gpus: int) -> str:
    """`--gres` for a job wanting `gpus` GPUs ("" when it wants none or the cluster has no GPU gres)."""
    if not template or gpus <= 0:
        return ""
    return template.replace("{n}", str(gpus))


def _pattern(path: Path) -> str:
    """A literal path for `--output` (Slurm expands `%j`, `%x`, ... in it; `%%` is a literal `%`)."""
    return str(path).replace("%", "%%")


def _directive(option: str) -> str:
    option = option.strip()
    if option.startswith("#SBATCH"):
        option = option[len("#SBATCH") :].strip()
    if any(c in option for c in "\r\n\0"):
        raise ConfigError(f"slurm: {option!r}: an #SBATCH value must be one line")
    if not option.startswith("-"):
        raise ConfigError(f'slurm.extra: {option!r} is not an sbatch option (expected e.g. "--qos=high")')
    name, sep, value = option.partition("=")
    if sep and any(c.isspace() for c in value) and not value.startswith(('"', "'")):
        value = '"' + value.replace('"', '\\"') + '"'  # sbatch splits #SBATCH lines on blanks outside quotes
    return f"#SBATCH {name}{sep}{value}"


def directives(*, cell: str, log: Path, cwd: Path, gpus: int, slurm: SlurmConfig) -> list[str]:
    """The `#SBATCH` options, in order; `slurm.extra` comes last so a site can override any of ours."""
    options = [
        f"--job-name={job_name(cell)}",
        f"--output={_pattern(log)}",  # the cell's log in the workspace's logs/, appended per attempt
        "--open-mode=append",
        f"--chdir={cwd}",
        "--nodes=1",  # single node: accelerate spreads FSDP over the node's GPUs
        "--ntasks=1",
        "--no-requeue",  # steertui retries (new job id, new attempt row); resumption comes from checkpoints
    ]
    if slurm.cpus_per_task > 0:
        options.append(f"--cpus-per-task={slurm.cpus_per_task}")
    if slurm.time_limit:
        options.append(f"--time={slurm.time_limit}")
    if slurm.partition:
        options.append(f"--partition={slurm.partition}")
    if slurm.account:
        options.append(f"--account={slurm.account}")
    if slurm.mem:
        options.append(f"--mem={slurm.mem}")
    gres = gres_for(slurm.gres, gpus)
    if gres:
        options.append(f"--gres={gres}")
    options.extend(slurm.extra)
    return [_directive(o) for o in options]


def render(argv: Sequence[str], *, job_id: int, cell: str, log: Path, cwd: Path, gpus: int, slurm: SlurmConfig) -> str:
    """The whole batch script: directives, a start line in the log, then `exec` of the worker."""
    lines = [
        "#!/bin/bash",
        *directives(cell=cell, log=log, cwd=cwd, gpus=gpus, slurm=slurm),
        f"# steertui job {job_id} ({cell}); written by steertui, submitted with sbatch --parsable --export=ALL",
        "echo \"=== slurm job ${SLURM_JOB_ID} on $(hostname), $(date '+%Y-%m-%d %H:%M:%S') ===\"",
        "export CUDA_DEVICE_ORDER=PCI_BUS_ID",
        # exec: the worker is the batch step's process, so scancel --signal and time-limit SIGTERMs reach it
        "exec " + shlex.join(list(argv)),
        "",
    ]
    return "\n".join(lines)
