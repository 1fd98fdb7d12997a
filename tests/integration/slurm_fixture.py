"""A real single-host Slurm for the tests (Debian slurmctld, slurmd, munge): slurmctld and slurmd on
127.0.0.1 with their own munged, `GresTypes=gpu` with four GPU device nodes made with mknod (never
opened), `select/cons_tres`, every file under one temporary directory; the system's /etc/slurm and
munged are left alone. Not a test module."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port, stop

BINARIES = ("slurmctld", "slurmd", "munged", "sinfo", "squeue", "salloc", "sbatch", "scancel")
NODE = "gcslurm1"  # Slurm's NodeName of the one compute node
GPUS = 4


def missing_slurm() -> str | None:
    """Why a real Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their users; mknod for the GPU device nodes)"
    for name in BINARIES:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            return f"needs {name} (apt-get install slurmctld slurmd slurm-client munge)"
    return None


@dataclass(frozen=True)
class SlurmSite:
    """The running cluster: its config (what SLURM_CONF names) and how to run its commands as root."""

    root: Path
    conf: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, env=self.env())


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _wait(check: object, what: str, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what} within {timeout_s:g} s; log:\n{tail}")


def _config(root: Path, sock: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    devices = root / "dev"
    devices.mkdir()
    for index in range(GPUS):  # character devices with NVIDIA's major number: slurmd insists on devices
        os.mknod(devices / f"nvidia{index}", 0o600 | 0o020000, os.makedev(195, index))
    for name in ("state", "spool", "log"):
        (root / name).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=gctest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
MinJobAge=600
NodeName={NODE} NodeAddr=127.0.0.1 CPUs=8 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={devices}/nvidia[0-{GPUS - 1}]\n")
    return conf


@contextlib.contextmanager
def running_slurm() -> Iterator[SlurmSite]:
    """munged, slurmctld and slurmd for one test module; at the end every job is cancelled and every
    daemon and job step it started is gone."""
    root = Path(tempfile.mkdtemp(prefix="gcu-slurm-", dir="/tmp"))
    os.chmod(root, 0o755)  # the test users' Slurm commands read the config and reach the munge socket
    procs: list[subprocess.Popen[bytes]] = []
    site: SlurmSite | None = None
    try:
        munge_dir = root / "munge"
        munge_dir.mkdir(mode=0o755)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = munge_dir / "munge.sock"
        procs.append(subprocess.Popen(
            [_binary("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(sock.exists, "munged did not start", 10, munge_dir / "munged.log")
        conf = _config(root, sock)
        site = SlurmSite(root, conf)
        env = site.env()
        procs.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([_binary("slurmd"), "-D", "-N", NODE], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle() -> bool:
            state = site.run("sinfo", "-h", "-N", "-o", "%T") if site else None
            return state is not None and state.returncode == 0 and state.stdout.strip() == "idle"

        _wait(idle, "the Slurm node did not come up idle", 60, root / "log" / "slurmctld.log")
        yield site
    finally:
        if site is not None:
            site.run("scancel", "--partition=debug")  # every user's jobs: root may
            with contextlib.suppress(AssertionError):
                _wait(lambda: not site.run("squeue", "-h", "-t", "pending,running,completing,configuring,suspended"
                                           ).stdout.strip(), "jobs did not end", 20)
        for proc in reversed(procs):
            stop(proc, 15)
        _kill_steps(root)
        shutil.rmtree(root, ignore_errors=True)


def _kill_steps(root: Path) -> None:
    """Job steps (slurmstepd and what it ran) outlive slurmd by design: end those of this cluster."""
    mark = f"SLURM_CONF={root / 'slurm.conf'}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
