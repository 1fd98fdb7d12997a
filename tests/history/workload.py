"""What the clients do: random operations over ids they and the observers know, and how an exit
becomes an outcome.

Every reserve gets its own duration (`--for 5.137`), so the checker can tell which operation a
reservation nobody acknowledged came from; every submit gets a unique name, and its job writes
marker files (history.JOB_CODE) so the checker knows when job processes really ran, and where.
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.history.history import FAIL, INFO, JOB_CODE, OK

# Exit 5 is "unreachable": usually indeterminate (the connection may have dropped after the node
# committed), but these messages say the node refused before changing anything.
DEFINITE_REFUSALS = ("not changed", "state lock held", "no space left", "refusing changes", "unreadable", "read-only")


def classify(exit_code: int, message: str) -> tuple[str, str | None]:
    """(outcome, info) of a finished operation under the CLI contract's exit codes."""
    if exit_code == 0:
        return OK, None
    if exit_code < 0:
        return INFO, "signal"
    if exit_code == 5:
        if any(text in message.lower() for text in DEFINITE_REFUSALS):
            return FAIL, None
        return INFO, "unreachable"
    return FAIL, None


@dataclass
class Workload:
    """The mix of operations and their sizes."""

    max_gpus: int = 2
    ttl_s: tuple[float, float] = (3.0, 10.0)
    wait_timeout_s: tuple[float, float] = (0.5, 3.0)
    job_s: tuple[float, float] = (0.3, 3.0)
    invisible_jobs: float = 0.7  # share of jobs hidden from the simulated NVML (no occupancy safety net)
    stubborn_jobs: float = 0.2  # share of jobs that ignore SIGTERM
    node: str | None = None  # pin every request to one node
    max_jobs: int | None = None  # per client; then its submits turn into reserves
    think_s: tuple[float, float] = (0.05, 0.3)  # API clients pause this long between operations
    weights: dict[str, float] = field(default_factory=lambda: {
        "reserve": 4.0, "reserve_wait": 2.0, "release": 3.0, "renew": 1.5, "submit": 2.0,
        "cancel": 1.0, "preempt": 1.0, "reservations": 0.4, "jobs": 0.4})


class Knowledge:
    """Ids the clients learned (acknowledgements) or saw (observations); shared by all clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reservations: dict[str, int | None] = {}  # acknowledged id -> token
        self.jobs: set[str] = set()
        self.seen_leases: list[str] = []
        self.seen_running: list[str] = []

    def learn(self, f: str, outcome: str, args: dict[str, Any], result: Any) -> None:
        result = result if isinstance(result, dict) else {}
        with self._lock:
            if f == "reserve" and outcome == OK and result.get("id"):
                self.reservations[result["id"]] = result.get("token")
            elif f in ("release", "preempt") and outcome in (OK, FAIL):
                self.reservations.pop(str(args.get("id")), None)
            elif f == "submit" and outcome == OK and result.get("id"):
                self.jobs.add(result["id"])

    def saw(self, leases: list[str], running: list[str] | None = None) -> None:
        with self._lock:
            self.seen_leases = leases[-50:]
            if running is not None:
                self.seen_running = running[-50:]

    def pick(self, rng: random.Random, what: str) -> str | None:
        with self._lock:
            if what == "mine":
                pool = list(self.reservations)
            elif what == "job":
                pool = list(self.seen_running) or sorted(self.jobs)[-20:]
            else:
                pool = list(self.seen_leases)
            return rng.choice(pool) if pool else None

    def token(self, lease_id: str) -> int | None:
        with self._lock:
            return self.reservations.get(lease_id)


class Planner:
    """Draws the next operation (f, args) of one client."""

    def __init__(self, workload: Workload, knowledge: Knowledge, marker_dir: Path, client: str, seed: int) -> None:
        self.workload = workload
        self.knowledge = knowledge
        self.marker_dir = marker_dir
        self.client = client
        self.rng = random.Random(seed)
        self.count = 0
        self.jobs = 0
        self.env = shutil.which("env") or "/usr/bin/env"

    def job_argv(self, name: str) -> list[str]:
        rng, w = self.rng, self.workload
        argv = [sys.executable, "-S", "-c", JOB_CODE, str(self.marker_dir), name,
                f"{rng.uniform(*w.job_s):.2f}", "1" if rng.random() < w.stubborn_jobs else "0"]
        if rng.random() < w.invisible_jobs:
            argv = [self.env, "-u", "GPUCONSOLE_SIM_NODE", *argv]
        return argv

    def next(self) -> tuple[str, dict[str, Any]]:
        rng, w = self.rng, self.workload
        self.count += 1
        kinds = list(w.weights)
        kind = rng.choices(kinds, weights=[w.weights[k] for k in kinds])[0]
        if kind == "submit" and w.max_jobs is not None and self.jobs >= w.max_jobs:
            kind = "reserve"
        gpus = rng.randint(1, w.max_gpus)
        # A distinct duration per operation (a millisecond signature within the range).
        ttl_s = round(rng.uniform(*w.ttl_s), 3)
        base: dict[str, Any] = {"node": w.node} if w.node else {}
        if kind in ("reserve", "reserve_wait"):
            args = dict(base, gpus=gpus, ttl_s=ttl_s, priority=rng.choice(("low", "normal", "normal", "high")))
            if kind == "reserve_wait":
                args.update(wait=True, timeout_s=round(rng.uniform(*w.wait_timeout_s), 1))
            return "reserve", args
        if kind in ("release", "renew"):
            target = self.knowledge.pick(rng, "mine" if rng.random() < 0.85 else "seen")
            if target is None:
                return self.next()
            if kind == "release":
                return "release", {"id": target}
            args = {"id": target, "ttl_s": ttl_s}
            if rng.random() < 0.3 and self.knowledge.token(target) is not None:
                args["token"] = self.knowledge.token(target)
            return "renew", args
        if kind in ("cancel", "preempt"):
            target = self.knowledge.pick(rng, "job" if kind == "cancel" or rng.random() < 0.7 else "mine")
            if target is None:
                return self.next()
            return kind, {"id": target} if kind == "cancel" else {"id": target, "grace_s": 1.0}
        if kind == "submit":
            name = f"{self.client}-{self.count}"
            self.jobs += 1
            preempt = rng.random() < 0.2
            args = dict(base, gpus=gpus, name=name, priority="high" if preempt else rng.choice(("low", "normal")),
                        preempt=preempt, argv=self.job_argv(name))
            return "submit", args
        return kind, {}


def cli_argv(f: str, args: dict[str, Any]) -> list[str]:
    """The `gpuconsole` arguments of one operation."""
    node = ["--node", args["node"]] if args.get("node") else []
    if f == "reserve":
        argv = ["reserve", "--gpus", str(args["gpus"]), "--for", f"{args['ttl_s']:.3f}", "--priority",
                args["priority"], "--json", *node]
        return argv + (["--wait", "--timeout", f"{args['timeout_s']}"] if args.get("wait") else [])
    if f == "release":
        return ["release", args["id"], "--json"]
    if f == "renew":
        token = ["--token", str(args["token"])] if args.get("token") is not None else []
        return ["renew", args["id"], "--for", f"{args['ttl_s']:.3f}", "--json", *token]
    if f == "submit":
        return ["submit", "--gpus", str(args["gpus"]), "--name", args["name"], "--priority", args["priority"],
                "--grace", "1", "--json", *node, *(["--preempt"] if args.get("preempt") else []),
                "--", *args["argv"]]
    if f == "cancel":
        return ["cancel", args["id"], "--json"]
    if f == "preempt":
        return ["preempt", args["id"], "--grace", str(args.get("grace_s", 1.0))]
    return [f, "--json"]  # reservations, jobs


def parse_text_result(f: str, stdout: str) -> dict[str, Any] | None:
    """`preempt` prints a line (no --json): `revoked ID on NODE` or `preempting ID on NODE`."""
    words = stdout.split()
    if f == "preempt" and len(words) >= 4 and words[2] == "on":
        return {"id": words[1], "node": words[3], "revoked": words[0] == "revoked"}
    return None
