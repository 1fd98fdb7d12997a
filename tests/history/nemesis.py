"""The nemesis: faults injected while the clients run, each recorded in the history.

kill -9 of CLI clients, node agents (a dropped connection) and job supervisors; SIGSTOP/SIGCONT of
supervisors beyond the job lease; the node's state lock held from here; ENOSPC at each step of the
commit path (the agent's test-only fault file); a node's SSH server stopped and restarted on its
port; the whole demo stopped and started again on the same directory.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from tests.history.clients import Running
from tests.history.history import OK, Recorder
from tests.history.procscan import NodeProc, scan

FAULTS = ("kill_client", "kill_agent", "kill_supervisor", "stop_supervisor", "hold_lock", "enospc",
          "restart_node", "restart_demo")
ENOSPC_STEPS = ("tmp", "prev", "rename", "mirror", "dirsync")
T = TypeVar("T")


class Cluster(Protocol):
    """What the nemesis needs from the runner's demo."""

    root: str
    node_names: list[str]

    def state_dir(self, name: str) -> Path: ...
    def sim_keys(self) -> set[str]: ...
    def stop_node(self, name: str) -> None: ...
    def start_node(self, name: str) -> None: ...
    def restart(self) -> None: ...


@dataclass
class NemesisSpec:
    kinds: tuple[str, ...] = FAULTS
    every_s: tuple[float, float] = (0.3, 1.5)
    stop_s: tuple[float, float] = (5.0, 8.0)  # SIGSTOP of a supervisor: beyond a short job lease
    lock_s: tuple[float, float] = (2.0, 7.0)  # the state lock held (the node waits up to 10 s)
    enospc_s: tuple[float, float] = (2.0, 4.0)
    enospc_p: float = 0.6
    down_s: tuple[float, float] = (0.3, 1.5)
    first_s: float = 1.0


class Nemesis(threading.Thread):
    """Faults in shuffled rounds (every kind once per round), one at a time."""

    def __init__(self, spec: NemesisSpec, recorder: Recorder, cluster: Cluster, running: Running,
                 faults_file: Path, stop: threading.Event, seed: int) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.spec = spec
        self.recorder = recorder
        self.cluster = cluster
        self.running = running
        self.faults_file = faults_file
        self.stop = stop
        self.rng = random.Random(seed)
        self.steps = list(ENOSPC_STEPS)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.stop.wait(self.spec.first_s):
                return
            while not self.stop.is_set():
                # Every step of the commit path once per round.
                kinds = [k for kind in self.spec.kinds for k in [kind] * (len(ENOSPC_STEPS) if kind == "enospc" else 1)]
                self.rng.shuffle(kinds)
                for kind in kinds:
                    if self.stop.is_set():
                        return
                    getattr(self, kind)()
                    if self.stop.wait(self.rng.uniform(*self.spec.every_s)):
                        return
        except BaseException as exc:  # surfaced by the runner
            self.error = exc

    # -- helpers ------------------------------------------------------------------------------

    def _procs(self, role: str) -> list[NodeProc]:
        return [p for p in scan(self.cluster.root, self.cluster.sim_keys()) if p.role == role]

    def _await(self, find: Callable[[], list[T]], timeout_s: float = 5.0) -> list[T]:
        """Targets, waiting a little for one to exist (a supervisor, a running CLI client)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = find()
            if found or time.monotonic() > deadline or self.stop.wait(0.1):
                return found

    def _node_of(self, proc: NodeProc) -> str | None:
        return proc.sim_key.split(".")[0] if proc.sim_key else None

    def _instant(self, kind: str, pid: int, sig: int, node: str | None = None) -> None:
        op = self.recorder.fault(kind, {"pid": pid}, node=node)
        try:
            os.kill(pid, sig)
        except OSError:
            pass
        self.recorder.complete(op, OK)

    # -- faults -------------------------------------------------------------------------------

    def kill_client(self) -> None:
        pids = self._await(self.running.pids)
        if pids:
            pid = self.rng.choice(pids)
            op = self.recorder.fault("kill_client", {"pid": pid})
            self.running.kill(pid)
            self.recorder.complete(op, OK)

    def kill_agent(self) -> None:
        agents = self._await(lambda: self._procs("agent"))
        if agents:
            proc = self.rng.choice(agents)
            self._instant("kill_agent", proc.pid, signal.SIGKILL, self._node_of(proc))

    def kill_supervisor(self) -> None:
        supervisors = self._await(lambda: self._procs("supervisor"))
        if supervisors:
            proc = self.rng.choice(supervisors)
            self._instant("kill_supervisor", proc.pid, signal.SIGKILL, self._node_of(proc))

    def stop_supervisor(self) -> None:
        """SIGSTOP a supervisor whose job runs (any, if none runs yet) past the job lease."""
        busy_now = self._await(lambda: self._procs("job"))
        supervisors = self._procs("supervisor")
        busy = {p.ppid for p in busy_now}
        chosen = [p for p in supervisors if p.pid in busy] or supervisors
        if not chosen:
            return
        proc = self.rng.choice(chosen)
        op = self.recorder.fault("stop_supervisor", {"pid": proc.pid, "job_running": proc.pid in busy},
                                 node=self._node_of(proc))
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            self.stop.wait(self.rng.uniform(*self.spec.stop_s))
        finally:
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except OSError:
                pass
            self.recorder.complete(op, OK)

    def hold_lock(self) -> None:
        node = self.rng.choice(self.cluster.node_names)
        path = self.cluster.state_dir(node) / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
        try:
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline or self.stop.wait(0.01):
                        return
            held_s = self.rng.uniform(*self.spec.lock_s)
            op = self.recorder.fault("hold_lock", {"seconds": round(held_s, 2)}, node=node)
            self.stop.wait(held_s)
            fcntl.flock(fd, fcntl.LOCK_UN)
            self.recorder.complete(op, OK)
        finally:
            os.close(fd)

    def enospc(self) -> None:
        """ENOSPC at the next step of the commit path, with some probability per commit, a while."""
        step = self.steps.pop(0)
        self.steps.append(step)
        text = f"enospc:{step}@{self.spec.enospc_p}"
        op = self.recorder.fault(f"enospc:{step}", {"spec": text})
        try:
            self._write_faults(text)
            self.stop.wait(self.rng.uniform(*self.spec.enospc_s))
        finally:
            self._write_faults("")
            self.recorder.complete(op, OK)

    def _write_faults(self, text: str) -> None:
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.faults_file)

    def restart_node(self) -> None:
        node = self.rng.choice(self.cluster.node_names)
        op = self.recorder.fault("restart_node", {}, node=node)
        try:
            self.cluster.stop_node(node)
            self.stop.wait(self.rng.uniform(*self.spec.down_s))
        finally:
            self.cluster.start_node(node)
            self.recorder.complete(op, OK)

    def restart_demo(self) -> None:
        op = self.recorder.fault("restart_demo", {})
        try:
            self.cluster.restart()
        finally:
            self.recorder.complete(op, OK)
