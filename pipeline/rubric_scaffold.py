"""The rubric file a new behaviour starts from (`steertui behavior new NAME`, `steertui init --behavior NAME`).

Every behaviour-specific field holds the `TODO` placeholder, which `pipeline.rubric.validate_rubric` reports
as "not filled in", so a half-written rubric can never reach a judge. The coherence rubric and its examples
do not depend on the behaviour and come pre-filled (edit them if you like).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from pipeline.errors import InputError
from pipeline.files import atomic_write_text
from pipeline.workspace import Workspace

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED_TASKS = ("coherence", "pairwise")
TEMPLATE = "rubric_scaffold.toml"


def check_name(name: str, flag: str = "--behavior") -> str:
    """`name` if it is a plain behaviour or task name (it becomes part of paths and file names)."""
    if not NAME_RE.match(name):
        raise InputError(f"{flag} {name!r}: use letters, digits, - or _ (starting with a letter or digit)")
    return name


def check_task(task: str) -> str:
    check_name(task, "--task")
    if task in RESERVED_TASKS:
        raise InputError(f"--task {task!r}: reserved for the judge's own tasks; name the behaviour's rating task")
    return task


def write_scaffold(root: Path, name: str, task: str = "", *, force: bool = False) -> Path:
    """Write `rubrics/<name>.toml` (refusing to replace one unless `force`) and create `data/<name>/`."""
    ws = Workspace(root)
    task = check_task(task or check_name(name))
    path = ws.rubric_path(check_name(name))
    if path.exists() and not force:
        raise InputError(f"{path}: already exists; edit it, or pass --force to start it again from the template")
    atomic_write_text(path, render_scaffold(name, task))
    ws.data_dir(name).mkdir(parents=True, exist_ok=True)
    return path


def render_scaffold(name: str, task: str) -> str:
    """The template (`pipeline/templates/rubric_scaffold.toml`) with the behaviour's name and task filled in
    (both already checked plain names)."""
    template = resources.files("pipeline").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    return template.replace("@NAME@", name).replace("@TASK@", task)
