"""Find a demo's node-side processes through /proc: agents, supervisors and job processes.

The demo starts every agent with its node's GPUCONSOLE_SIM_NODE; supervisors add
GPUCONSOLE_ROLE=supervisor and their state dir; job processes carry GPUCONSOLE_JOB_ID and a
preempt-file path inside the demo's state dirs (a job hidden from the simulated NVML has no
GPUCONSOLE_SIM_NODE). Only our own processes' environments are readable, which is all we need.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeProc:
    pid: int
    role: str  # agent | supervisor | job
    sim_key: str | None
    ppid: int


def _environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _ppid_and_state(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return 0, "X"
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[1]), fields[0].decode()


def scan(root: str, sim_keys: set[str]) -> list[NodeProc]:
    """Live (not zombie) processes of the demo rooted at `root` with these node markers."""
    found: list[NodeProc] = []
    me = os.getpid()
    prefix = root.rstrip(os.sep) + os.sep
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        env = _environ(pid)
        if not env:
            continue
        sim = env.get("GPUCONSOLE_SIM_NODE")
        ours = sim in sim_keys or any(env.get(k, "").startswith(prefix) for k in
                                      ("GPUCONSOLE_STATE_DIR", "GPUCONSOLE_PREEMPT_FILE", "GPUCONSOLE_JOB_DIR"))
        if not ours:
            continue
        ppid, state = _ppid_and_state(pid)
        if state in ("Z", "X"):
            continue
        if "GPUCONSOLE_JOB_ID" in env and env.get("GPUCONSOLE_ROLE") != "supervisor":
            role = "job"
        elif env.get("GPUCONSOLE_ROLE") == "supervisor":
            role = "supervisor"
        else:
            role = "agent"
        found.append(NodeProc(pid, role, sim, ppid))
    return found


def signal_procs(procs: list[NodeProc], sig: int) -> None:
    for proc in procs:
        try:
            os.kill(proc.pid, sig)
        except OSError:
            pass


def kill_all(root: str, sim_keys: set[str], timeout_s: float = 10.0) -> list[NodeProc]:
    """SIGCONT then SIGKILL every process of the demo until none is left; returns the stragglers."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = scan(root, sim_keys)
        if not left or time.monotonic() > deadline:
            return left
        signal_procs(left, signal.SIGCONT)
        signal_procs(left, signal.SIGKILL)
        time.sleep(0.05)


def settle(root: str, sim_keys: set[str], timeout_s: float = 3.0) -> list[NodeProc]:
    """The demo's processes still alive after `timeout_s` (killed ones take a moment to go)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = scan(root, sim_keys)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
