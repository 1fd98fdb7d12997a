"""Run one history on a fresh demo cluster: clients, observer and nemesis for N seconds, then
stop everything, leave no process behind, read the job markers and check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from gpuconsole.demo.cluster import DemoThread
from tests.history.checker import Report, check
from tests.history.clients import ApiClient, CliClient, Client, Observer, Running
from tests.history.history import JobRun, Op, Recorder, read_markers
from tests.history.nemesis import Nemesis, NemesisSpec
from tests.history.procscan import NodeProc, kill_all, settle
from tests.history.workload import Knowledge, Planner, Workload

JOIN_S = 60.0


@dataclass
class RunSpec:
    """One history's shape. `agent_faults` is GPUCONSOLE_FAULTS for the node agents (controls)."""

    seconds: float = 60.0
    nodes: int = 2
    gpus: int = 4
    cli_clients: int = 4
    api_clients: int = 2
    workload: Workload = field(default_factory=Workload)
    nemesis: NemesisSpec | None = field(default_factory=NemesisSpec)
    agent_faults: str = ""
    job_ttl_s: float | None = 4.0
    observe_every_s: float = 0.25
    seed: int = 0


@dataclass
class Outcome:
    report: Report
    ops: list[Op]
    runs: list[JobRun]
    history_path: Path
    leftovers: list[NodeProc]  # what the demo's own stop left running (we then kill it)


class DemoHandle:
    """The demo the nemesis works on; `restart` replaces it with a new one on the same directory."""

    def __init__(self, root: Path, nodes: int, gpus: int, agent_env: dict[str, str]) -> None:
        self.root = str(root)
        self._args = (root, nodes, gpus)
        self.agent_env = agent_env
        self.demo = self._start()
        self.node_names = list(self.demo.cluster.nodes)
        self.config_path = self.demo.config_path
        self._keys = {n.sim_key for n in self.demo.cluster.nodes.values()}

    def _start(self) -> DemoThread:
        root, nodes, gpus = self._args
        demo = DemoThread(root, nodes, gpus, agent_env=dict(self.agent_env))
        demo.__enter__()
        return demo

    def state_dir(self, name: str) -> Path:
        return self.demo.cluster.nodes[name].state_dir

    def sim_keys(self) -> set[str]:
        return set(self._keys)

    def stop_node(self, name: str) -> None:
        self.demo.stop_node(name)

    def start_node(self, name: str) -> None:
        self.demo.start_node(name)

    def restart(self) -> None:
        self.demo.close()
        self.demo = self._start()

    def close(self) -> None:
        self.demo.close()


def run_history(root: Path, spec: RunSpec) -> Outcome:
    """Run, tear down, check. Raises if a harness thread crashed (its bug must not pass silently)."""
    root.mkdir(parents=True, exist_ok=True)
    marker_dir = root / "markers"
    marker_dir.mkdir(exist_ok=True)
    faults_file = root / "faults"
    faults_file.write_text("")
    agent_env = {"GPUCONSOLE_FAULTS_FILE": str(faults_file)}
    if spec.agent_faults:
        agent_env["GPUCONSOLE_FAULTS"] = spec.agent_faults
    if spec.job_ttl_s is not None:
        agent_env["GPUCONSOLE_JOB_TTL_S"] = str(spec.job_ttl_s)
    history_path = root / "history.jsonl"
    recorder = Recorder(history_path)
    threads: list[threading.Thread] = []
    demo: DemoHandle | None = None
    stop = threading.Event()
    running = Running()
    leftovers: list[NodeProc] = []
    try:
        demo = DemoHandle(root / "demo", spec.nodes, spec.gpus, agent_env)
        knowledge = Knowledge()
        threads.append(Observer(recorder, knowledge, demo.config_path, stop, spec.observe_every_s))
        for i in range(spec.cli_clients + spec.api_clients):
            name = f"cli-{i}" if i < spec.cli_clients else f"api-{i - spec.cli_clients}"
            planner = Planner(spec.workload, knowledge, marker_dir, name, spec.seed * 1000 + i)
            client: Client
            if i < spec.cli_clients:
                client = CliClient(name, recorder, planner, knowledge, stop, config_path=demo.config_path,
                                   running=running)
            else:
                client = ApiClient(name, recorder, planner, knowledge, stop, config_path=demo.config_path)
            threads.append(client)
        if spec.nemesis is not None:
            threads.append(Nemesis(spec.nemesis, recorder, demo, running, faults_file, stop, spec.seed))
        for thread in threads:
            thread.start()
        stop.wait(spec.seconds)
    finally:
        stop.set()
        running.kill_all()
        for thread in threads:
            thread.join(JOIN_S)
        running.kill_all()
        if demo is not None:
            demo.close()
            leftovers = settle(demo.root, demo.sim_keys())
            kill_all(demo.root, demo.sim_keys())
        recorder.close()
    errors = [error for t in threads if (error := getattr(t, "error", None)) is not None]
    if errors:
        raise RuntimeError(f"a harness thread crashed: {errors[0]!r}") from errors[0]
    assert demo is not None
    node_of = {str(demo.state_dir(name)): name for name in demo.node_names}
    runs = read_markers(marker_dir, node_of)
    ops = recorder.snapshot()
    return Outcome(check(ops, runs, demo.node_names), ops, runs, history_path, leftovers)
