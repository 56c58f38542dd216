"""A real single-node Slurm for the Slurm executor's tests (session-scoped; see
`../shared/notes/slurm-single-node.md`): munge, then slurmctld and slurmd on 127.0.0.1 with a slurm.conf
generated in a temp dir (`SLURM_CONF`), non-default ports, one CPU-only partition "cpu", no accounting
database (finished jobs go to a jobcomp/filetxt file). One departure from the notes: munged is private to the
cluster (own key and socket in the temp dir, `AuthInfo=socket=`), so concurrent test sessions on one machine
never share, or stop, each other's munged. All daemons run in the foreground as children of pytest and are
stopped (SIGTERM, then SIGKILL) at the end.

Every test that uses the cluster is skipped, with the reason, where Slurm cannot be started: not Linux,
not root, packages not installed (`apt-get install slurmctld slurmd slurm-client munge`), or a daemon fails.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import REPO

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "munged", "munge", "unmunge")
PARTITION = "cpu"
T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, interval: float = 0.2) -> T | None:
    """Poll `check` until it returns something truthy (returned) or `timeout` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """`poll`, failing the test (naming `what`) on timeout."""
    value = poll(check, timeout, interval)
    if value is None:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
    return value


@dataclass
class SlurmCluster:
    """The running test cluster: its config file, node, partition and jobcomp file."""

    root: Path
    conf: Path
    jobcomp: Path
    node: str
    cpus: int
    partition: str = PARTITION
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60, check=check
        )

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job this cluster knows, by id: the controller's records over the jobcomp file's."""
        from steertui.executor_slurm import parse_fields

        out: dict[str, dict[str, str]] = {}
        if self.jobcomp.exists():
            for line in self.jobcomp.read_text().splitlines():
                fields = parse_fields(line)
                if "JobId" in fields:
                    out[fields["JobId"]] = fields
        proc = self.run("scontrol", "show", "job", "-o")
        for line in proc.stdout.splitlines():
            fields = parse_fields(line)
            if "JobId" in fields:
                out[fields["JobId"]] = fields
        return out

    def live_jobs(self) -> list[str]:
        proc = self.run("squeue", "-h", "-o", "%i")
        return proc.stdout.split()


def _munge_works(socket_path: Path) -> bool:
    try:
        cred = subprocess.run(["munge", "-n", f"--socket={socket_path}"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        decode = subprocess.run(["unmunge", f"--socket={socket_path}"], input=cred.stdout, capture_output=True,
                                timeout=10)  # fmt: skip
        return decode.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munge() -> tuple[subprocess.Popen[bytes], Path]:
    """A private munged for this cluster (its own key and socket, `AuthInfo=socket=` in slurm.conf): the
    machine's munged, which other sessions may share, is neither needed nor touched. munged wants every
    directory above its socket searchable by all, so it lives in its own 0711 directory under the temp dir."""
    root = Path(tempfile.mkdtemp(prefix="steertui-munge-"))
    root.chmod(0o711)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    argv = [shutil.which("munged") or "/usr/sbin/munged", "--foreground", f"--socket={root / 'munge.sock'}",
            f"--key-file={key}", f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}"]  # fmt: skip
    with (root / "munged.out").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    poll(lambda: proc.poll() is not None or _munge_works(root / "munge.sock"), 15)
    if proc.poll() is not None or not _munge_works(root / "munge.sock"):
        _stop(proc)
        reason = _tail(root / "munged.out")
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"munged did not start: {reason}")
    return proc, root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def write_conf(root: Path, node: str, cpus: int, munge_socket: Path) -> Path:
    """slurm.conf as the notes give it: everything under `root`, non-default ports, no accounting database,
    and the private munged's socket."""
    for d in ("state", "spool", "log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ctld_port, slurmd_port = _free_port(), _free_port()
    while slurmd_port == ctld_port:
        slurmd_port = _free_port()
    lines = [
        "ClusterName=steertuitest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "SlurmUser=root",
        "SlurmdUser=root",
        "MpiDefault=none",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'jobcomp.txt'}",
        "KillWait=5",  # seconds between SIGTERM and SIGKILL at a time limit or a plain scancel
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _tail(path: Path, n: int = 6) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    return " | ".join(path.read_text(errors="replace").splitlines()[-n:])


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _node_state(cluster: SlurmCluster) -> str:
    proc = cluster.run("sinfo", "-h", "-N", "-o", "%T")
    return proc.stdout.strip() if proc.returncode == 0 else ""


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("Slurm tests need Linux")
    if os.geteuid() != 0:
        pytest.skip("Slurm tests start slurmctld/slurmd/munged and need root")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm not installed (missing {', '.join(missing)}): apt-get install slurmctld slurmd "
                    "slurm-client munge")  # fmt: skip
    root = tmp_path_factory.mktemp("slurm")
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    munged, munge_dir = start_munge()
    conf = write_conf(root, node, cpus, munge_dir / "munge.sock")
    cluster = SlurmCluster(root, conf, root / "jobcomp.txt", node, cpus)
    env = {**os.environ, **cluster.env}
    try:
        for daemon in ("slurmctld", "slurmd"):
            with (root / "log" / f"{daemon}.out").open("wb") as out:
                argv = [shutil.which(daemon) or daemon, "-D", "-f", str(conf)]  # -D: foreground, our child
                proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                cluster.procs.append(proc)
            if daemon == "slurmctld":  # answering (node state known) before slurmd registers with it
                poll(lambda: cluster.procs[0].poll() is not None or _node_state(cluster), 30)
        poll(lambda: any(p.poll() is not None for p in cluster.procs) or _node_state(cluster) == "idle", 45)
        if _node_state(cluster) != "idle":
            logs = "; ".join(f"{d}: {_tail(root / 'log' / f'{d}.log')}" for d in ("slurmctld", "slurmd"))
            pytest.skip(f"Slurm daemons did not start (node {_node_state(cluster) or 'unknown'}): {logs}")
        yield cluster
    finally:
        if cluster.procs and cluster.procs[0].poll() is None:
            cluster.run("scancel", f"--user={os.getuid()}")
            poll(lambda: not cluster.live_jobs(), 30)
        for proc in reversed(cluster.procs):
            _stop(proc)
        _stop(munged)
        shutil.rmtree(munge_dir, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, with `SLURM_CONF` set for this test (Slurm commands here and in children use it)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


def slurm_workspace(root: Path, *, layers: tuple[int, ...] = (1,), **slurm: Any) -> Path:
    """A smoke workspace (tiny-random) whose scheduler submits to the test cluster; `slurm` overrides [slurm] keys."""
    from steertui.cli import main

    assert main(["init", str(root), "--example", "smoke"]) == 0
    settings = {"partition": PARTITION, "cpus_per_task": 1, "gres": "", "time_limit": "0:10:00", "poll_s": 1.0,
                **slurm}  # fmt: skip
    config = root / "steertui.toml"
    text = config.read_text().replace("layers = [1, 2]", f"layers = [{', '.join(map(str, layers))}]")
    text += '\n[scheduler]\nexecutor = "slurm"\npoll_s = 0.5\nretry_backoff_s = 0\n\n[slurm]\n'
    text += "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())  # JSON scalars are TOML
    config.write_text(text)
    return root


@dataclass
class FakeAPI:
    """`python -m tests.fakeapi --port 0` in its own process: a judge the Slurm jobs reach over HTTP."""

    proc: subprocess.Popen[str]
    info: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.info["openai_base_url"], "OPENAI_API_KEY": self.info["api_key"]}


@pytest.fixture
def fakeapi() -> Iterator[FakeAPI]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, text=True,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("FAKEAPI_READY "), f"fake API did not start: {line!r}"
        yield FakeAPI(proc, json.loads(line.split(" ", 1)[1]))
    finally:
        proc.terminate()
        proc.wait(20)
