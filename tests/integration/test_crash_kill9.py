"""Real agent processes on one shared state dir, SIGKILLed at random: nothing acknowledged is lost.

Each agent is started exactly as the client starts it over SSH (constant command line, program
on stdin) and talks JSON lines. Times are compared on CLOCK_BOOTTIME, the clock the agents use,
so "expired" and "lost" are decided exactly as the node decides them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.node.store import StateStore, validate_state
from gpuconsole.ssh.bundle import agent_preamble, remote_command

GPUS = 8
WORKERS = 6
CHURN_S = 3.5
CHURN_CAP_S = 60.0
SHORT_TTLS = (1.0, 1.5, 2.0)
LONG_TTL = 30.0
MAX_TRIES = 12
EPS = 0.002  # float noise between our CLOCK_BOOTTIME reads and the agent's


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def poll_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` until truthy; fail at the deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


class AgentDiedError(Exception):
    """The agent's stdout closed before it replied (it was killed)."""


class AgentProc:
    """One real agent, started like the client starts it over SSH."""

    def __init__(self, state_dir: str, node: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "GPUCONSOLE_SIM_NODE"}
        self.proc = subprocess.Popen(["sh", "-c", remote_command(sys.executable)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self.next_id = 0
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(agent_preamble())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise AgentDiedError("killed while starting") from exc
        reply = self.call("hello", {"state_dir": state_dir, "simulate_gpus": GPUS, "node": node})
        assert reply["ok"], reply
        assert reply["result"]["state_dir_error"] is None, reply

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its reply; AgentDiedError when the process is gone."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.next_id += 1
        line = json.dumps({"id": self.next_id, "op": op, "args": args or {}}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
            raw = self.proc.stdout.readline()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise AgentDiedError(str(exc)) from exc
        if not raw:
            raise AgentDiedError("eof")
        reply: dict[str, Any] = json.loads(raw)
        assert reply.get("id") == self.next_id, reply
        return reply

    def ok(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.call(op, args)
        assert reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result

    def kill9(self) -> None:
        """SIGKILL and reap, as sshd reaps a session's process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill9()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class Node:
    """A shared state dir and a factory of agents on it (callable: starts one more agent)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.name = f"kill9-{uuid.uuid4().hex[:8]}"  # no process is bound to these simulated GPUs
        self.agents: list[AgentProc] = []

    def __call__(self) -> AgentProc:
        agent = AgentProc(self.state_dir, self.name)
        self.agents.append(agent)
        return agent


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A fresh node; every agent started on it is closed at the end."""
    (tmp_path / "state").mkdir()  # as set up: a read-only hello leaves a missing state dir missing
    shared = Node(str(tmp_path / "state"))
    yield shared
    for agent in shared.agents:
        agent.close()


# -- (a) concurrent clients under a SIGKILL nemesis ---------------------------------------------


@dataclass
class Grant:
    """A reservation some client saw acknowledged."""

    id: str
    token: int
    gpus: list[int]
    ttl: float
    min_exp: float  # lower bound on its exp_bt: first send time of the grant (or renew) + ttl
    released: bool = False
    release_unknown: bool = False


@dataclass
class Stats:
    """What the churn did and every invariant violation it saw."""

    ops: int = 0
    kills: int = 0
    kills_in_flight: int = 0
    retries: int = 0
    replays: int = 0
    reads: int = 0
    insufficient: int = 0
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


@dataclass
class Pending:
    """A request whose outcome is unknown (the agent died on every try): retried at the end."""

    op: str
    args: dict[str, Any]
    sent_bt: float
    grant: Grant | None = None


class Worker(threading.Thread):
    """One client: reserve / renew / release / abandon loops through its own agent process."""

    def __init__(self, index: int, start_agent: Node, stats: Stats,
                 stop: threading.Event) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.rng = random.Random(index)
        self.start_agent = start_agent
        self.stats = stats
        self.stop = stop
        self.lock = threading.Lock()  # guards self.agent against the nemesis
        self.agent: AgentProc | None = None
        self.held: list[Grant] = []
        self.grants: list[Grant] = []
        self.pending: list[Pending] = []
        self.error: BaseException | None = None
        self.in_flight = False

    def restart(self) -> None:
        with self.lock:
            if self.agent is not None:
                self.agent.kill9()
        for _ in range(5):
            try:
                agent = self.start_agent()
            except AgentDiedError:
                continue
            with self.lock:
                self.agent = agent
            return
        raise AssertionError("the agent does not start")

    def request(self, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Send with a req_id; on a kill restart the agent and retry the SAME req_id."""
        args = dict(args, req_id=uuid.uuid4().hex)
        for attempt in range(MAX_TRIES):
            if attempt:
                self.stats.retries += 1
            assert self.agent is not None
            self.in_flight = True
            try:
                reply = self.agent.call(op, args)
            except AgentDiedError:
                self.restart()
                continue
            finally:
                self.in_flight = False
            self.stats.ops += 1
            if reply.get("ok") and reply["result"].get("replayed"):
                self.stats.replays += 1
            return reply
        self.pending.append(Pending(op, args, 0.0))
        return None

    def run(self) -> None:
        try:
            self.restart()
            while not self.stop.is_set():
                self.step()
        except BaseException as exc:  # surfaced by the test after join
            self.error = exc

    def step(self) -> None:
        rng = self.rng
        if self.held:
            grant = self.held.pop(rng.randrange(len(self.held)))
            choice = rng.random()
            if grant.ttl < LONG_TTL and choice < 0.15:
                return  # abandon: a crashed client; the lease must expire on its own
            if grant.ttl < LONG_TTL and choice < 0.4:
                self.renew(grant)
                self.held.append(grant)
                return
            self.release(grant)
            return
        ttl = LONG_TTL if rng.random() < 0.2 else rng.choice(SHORT_TTLS)
        sent = boottime()
        args = {"gpus": rng.choice((1, 1, 2, 3)), "ttl_s": ttl}
        reply = self.request("reserve", args)
        if reply is None:
            self.pending[-1].sent_bt = sent
            return
        if self.record_reserve(reply, ttl, sent) is None:
            self.stop.wait(rng.uniform(0.01, 0.05))  # back off like a client, not a spin loop

    def record_reserve(self, reply: dict[str, Any], ttl: float, sent: float) -> Grant | None:
        if not reply["ok"]:
            if reply["error"]["code"] != "insufficient":
                self.stats.violation(f"reserve refused unexpectedly: {reply}")
            self.stats.insufficient += 1
            return None
        result = reply["result"]
        grant = Grant(result["id"], result["token"], sorted(result["gpus"]), ttl, sent + ttl)
        if len(grant.gpus) != len(set(grant.gpus)):
            self.stats.violation(f"duplicate GPUs in {result}")
        self.grants.append(grant)
        self.held.append(grant)
        return grant

    def renew(self, grant: Grant) -> None:
        ttl = self.rng.choice(SHORT_TTLS)
        sent = boottime()
        reply = self.request("renew", {"id": grant.id, "token": grant.token, "ttl_s": ttl})
        if reply is None:
            return  # unknown: the lease keeps at least its old lower bound
        self.check_gone(reply, grant, "renew")
        if reply["ok"]:
            grant.min_exp = max(grant.min_exp, sent + ttl)

    def release(self, grant: Grant) -> None:
        reply = self.request("release", {"id": grant.id, "token": grant.token})
        if reply is None:
            grant.release_unknown = True
            self.pending[-1].grant = grant
            return
        self.check_gone(reply, grant, "release")
        grant.released = True

    def check_gone(self, reply: dict[str, Any], grant: Grant, op: str) -> None:
        """A refusal of our own live lease means it was lost (or its token changed)."""
        if reply["ok"]:
            return
        now = boottime()
        code = reply["error"]["code"]
        if code == "not_found" and now + EPS >= grant.min_exp:
            return  # it expired: fine
        self.stats.violation(f"{op} of acknowledged {grant} answered {code} at {now:.3f}")


class Nemesis(threading.Thread):
    """SIGKILLs a random worker's agent every 30-200 ms; the worker restarts it and retries."""

    def __init__(self, workers: list[Worker], stats: Stats, stop: threading.Event) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.workers = workers
        self.stats = stats
        self.stop = stop
        self.rng = random.Random(99)

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.03, 0.2)):
            busy = [w for w in self.workers if w.in_flight]  # prefer a kill mid-operation
            worker = self.rng.choice(busy or self.workers)
            with worker.lock:
                if worker.agent is not None and worker.agent.proc.poll() is None:
                    worker.agent.proc.send_signal(signal.SIGKILL)
                    self.stats.kills += 1
                    self.stats.kills_in_flight += worker.in_flight


def check_snapshot(state: dict[str, Any], now_bt: float) -> list[str]:
    """I1 on one file: no GPU in two leases live at ``now_bt``, nor in two overlapping leases."""
    problems = []
    leases = sorted(state["leases"].values(), key=lambda lease: lease["token"])
    live_owner: dict[int, str] = {}
    for lease in leases:
        if lease["exp_bt"] > now_bt:
            for gpu in lease["gpus"]:
                if gpu in live_owner:
                    problems.append(f"GPU {gpu} in live leases {live_owner[gpu]} and {lease['id']}")
                live_owner[gpu] = lease["id"]
    for i, older in enumerate(leases):
        for newer in leases[i + 1:]:
            shared = set(older["gpus"]) & set(newer["gpus"])
            # the older grant must have ended (wall-clock view) before the newer one was made
            if shared and older["exp_wall"] > newer["created_wall"] + 0.01:
                problems.append(f"GPUs {sorted(shared)} in overlapping {older['id']} and {newer['id']}")
    if any(not 0 <= g < GPUS for lease in leases for g in lease["gpus"]):
        problems.append("GPU outside the inventory")
    return problems


class Reader(threading.Thread):
    """Reads state.json without the lock, like `status`: it must always parse and validate."""

    def __init__(self, path: str, stats: Stats, stop: threading.Event) -> None:
        super().__init__(name="reader", daemon=True)
        self.path = path
        self.stats = stats
        self.stop = stop
        self.last_gen = 0

    def run(self) -> None:
        while not self.stop.wait(0.005):
            now = boottime()
            try:
                with open(self.path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                continue
            try:
                state = json.loads(data)
                validate_state(state)
            except ValueError as exc:
                self.stats.violation(f"torn or invalid state.json read: {exc}")
                continue
            self.stats.reads += 1
            if state["gen"] < self.last_gen:
                self.stats.violation(f"gen went back {self.last_gen} -> {state['gen']}")
            self.last_gen = state["gen"]
            for problem in check_snapshot(state, now):
                self.stats.violation(f"gen {state['gen']}: {problem}")


def test_concurrent_agents_under_kill9_lose_nothing_and_leak_nothing(node: Node) -> None:
    """K agents reserve/renew/release while a nemesis SIGKILLs them; then audit the file."""
    stats, stop = Stats(), threading.Event()
    StateStore(node.state_dir).ensure_dir()
    workers = [Worker(i, node, stats, stop) for i in range(WORKERS)]
    nemesis = Nemesis(workers, stats, stop)
    reader = Reader(os.path.join(node.state_dir, "state.json"), stats, stop)
    for thread in (*workers, reader):
        thread.start()
    poll_until(lambda: all(w.agent is not None or w.error for w in workers), 30, "agents to start")
    for worker in workers:
        assert worker.error is None, f"{worker.name}: {worker.error!r}"
    nemesis.start()
    # At least CHURN_S, and on a loaded machine on until the churn has done enough to mean
    # something (the floors asserted below), capped so a stuck run still ends.
    start = time.monotonic()

    def enough() -> bool:
        elapsed_s = time.monotonic() - start
        if elapsed_s < CHURN_S:
            return False
        done = stats.ops >= 100 and stats.kills >= 5 and sum(len(w.grants) for w in workers) >= 20
        return done or elapsed_s > CHURN_CAP_S

    while not enough() and all(w.is_alive() for w in workers):
        stop.wait(0.05)
    stop.set()
    for thread in (*workers, nemesis, reader):
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{thread.name} hung"
    for worker in workers:
        assert worker.error is None, f"{worker.name}: {worker.error!r}"

    # Resolve unknown outcomes the way the client does: retry the same req_id, no nemesis now.
    auditor = node()
    for worker in workers:
        for pending in worker.pending:
            reply = auditor.call(pending.op, pending.args)
            stats.ops += 1
            if pending.op == "reserve":
                worker.record_reserve(reply, pending.args["ttl_s"], pending.sent_bt)
            elif pending.grant is not None:
                worker.check_gone(reply, pending.grant, pending.op)
                pending.grant.released = True

    # Audit the file right now: every acknowledged, unreleased grant is present or expired.
    now = boottime()
    state, warnings, source = StateStore(node.state_dir).load("ignored")
    assert (warnings, source) == ([], "state.json")
    validate_state(state)
    stats.violations.extend(check_snapshot(state, now))
    grants = [g for w in workers for g in w.grants]
    acked_ids = {g.id for g in grants}
    for grant in grants:
        lease = state["leases"].get(grant.id)
        if grant.released:
            if lease is not None and lease["exp_bt"] > now:
                stats.violation(f"released {grant.id} still live")
            continue
        if lease is None:
            if now + EPS < grant.min_exp:
                stats.violation(f"acknowledged {grant} lost at {now:.3f}")
            continue
        if lease["token"] != grant.token or sorted(lease["gpus"]) != grant.gpus:
            stats.violation(f"{grant.id} changed: {lease}")
        if lease["exp_bt"] + EPS < grant.min_exp:
            stats.violation(f"{grant.id} expires {lease['exp_bt']:.3f} < {grant.min_exp:.3f}")
    for phantom in set(state["leases"]) - acked_ids:
        stats.violation(f"lease {phantom} that no client was told about")

    # Release the long leases (each must still be there), then everything else must expire.
    for grant in grants:
        if not grant.released and grant.ttl >= LONG_TTL:
            reply = auditor.call("release", {"id": grant.id, "token": grant.token})
            stats.ops += 1
            if not reply["ok"]:
                stats.violation(f"final release of {grant.id}: {reply['error']}")
    remaining, _, _ = StateStore(node.state_dir).load("ignored")
    last_exp = max([lease["exp_bt"] for lease in remaining["leases"].values()] + [now])
    if last_exp > boottime() + max(SHORT_TTLS) + EPS:
        stats.violation("a long lease survived its acknowledged release")
        last_exp = boottime() + max(SHORT_TTLS)
    poll_until(lambda: boottime() > last_exp, max(SHORT_TTLS) + 5, "short leases to expire")

    def fleet_free() -> bool:
        auditor.ok("gc")
        return auditor.ok("capacity")["free"] == GPUS

    try:
        poll_until(fleet_free, 10, "all GPUs free after expiry + gc")
    except AssertionError as exc:
        stats.violation(f"leaked GPUs: {exc}")
    final, _, _ = StateStore(node.state_dir).load("ignored")
    if final["leases"] or final["queue"]:
        stats.violation(f"left after expiry + gc: {final['leases']} {final['queue']}")
    leftovers = [n for n in os.listdir(node.state_dir) if ".tmp." in n]
    if leftovers:
        stats.violation(f"temp files left after a locked op: {leftovers}")
    # The ledger (node/ledger.py) through the kills: whole (no torn record, no gap), and holding every
    # acknowledged grant (acknowledged means committed, and a grant's record commits with it).
    book = auditor.ok("ledger")
    if book["breaks"]:
        stats.violation(f"ledger chain broken after the kills: {book['breaks'][:3]}")
    in_ledger = {r["id"] for r in book["records"] if r["event"] == "grant"}
    missing = [g.id for g in grants if g.id not in in_ledger]
    if missing:
        stats.violation(f"acknowledged grants missing from the ledger: {missing[:5]}")

    print(f"\nkill9 churn: {stats.ops} ops, {stats.kills} SIGKILLs ({stats.kills_in_flight} mid-request), "
          f"{stats.retries} retries, "
          f"{stats.replays} replayed, {len(grants)} grants acknowledged, "
          f"{stats.insufficient} insufficient, {stats.reads} lock-free reads, "
          f"final gen {final['gen']}, violations {len(stats.violations)}")
    assert stats.violations == [], "\n".join(stats.violations[:20])
    assert stats.kills >= 5, "the nemesis barely ran"
    assert stats.ops >= 100, "too few operations to mean anything"
    assert len(grants) >= 20


# -- (b) a client killed while holding a short lease --------------------------------------------


def test_killed_client_lease_frees_after_ttl(node: Node) -> None:
    """kill -9 of a holder: its GPUs stay reserved until the ttl, then are free again."""
    holder = node()
    sent = boottime()
    grant = holder.ok("reserve", {"gpus": GPUS, "ttl_s": 1.5, "req_id": "holder-1"})
    assert sorted(grant["gpus"]) == list(range(GPUS))
    holder.kill9()
    observer = node()
    if boottime() < sent + 1.2:  # still inside the lease: nothing may be free yet
        assert observer.ok("capacity")["free"] == 0
        refused = observer.call("reserve", {"gpus": 1, "ttl_s": 5})
        assert refused["error"]["code"] == "insufficient", refused
    poll_until(lambda: observer.ok("capacity")["free"] == GPUS, 1.5 + 10, "the lease to expire")
    assert boottime() + EPS >= sent + 1.5, "GPUs freed before the lease's ttl"
    again = observer.ok("reserve", {"gpus": GPUS, "ttl_s": 5, "req_id": "observer-1"})
    assert again["token"] > grant["token"]


# -- (c) a waiting client killed while queued ---------------------------------------------------


def test_killed_waiter_ticket_is_dropped_and_never_granted(node: Node) -> None:
    """kill -9 of a queued waiter: gc drops its ticket (pid+start+boot dead); a live one is served."""
    blocker = node()
    block = blocker.ok("reserve", {"gpus": GPUS, "ttl_s": 60})
    doomed, alive = node(), node()
    dead_ticket = doomed.ok("reserve", {"gpus": 4, "ttl_s": 60, "wait": True})
    live_ticket = alive.ok("reserve", {"gpus": 4, "ttl_s": 60, "wait": True, "priority": "low"})
    assert dead_ticket["state"] == live_ticket["state"] == "queued"
    assert doomed.ok("poll", {"id": dead_ticket["id"]})["position"] == 1
    doomed.kill9()

    released = blocker.ok("release", {"id": block["id"], "token": block["token"]})
    assert released["released"] is True
    gone = blocker.call("poll", {"id": dead_ticket["id"]})
    assert gone["ok"] is False and gone["error"]["code"] == "not_found", gone
    served = alive.ok("poll", {"id": live_ticket["id"]})
    assert served["state"] == "granted", "the live waiter behind the dead one was not served"
    listing = blocker.ok("reservations")
    assert [r["id"] for r in listing["reservations"]] == [live_ticket["id"]]
    assert listing["queue"] == []
    assert blocker.ok("capacity")["free"] == GPUS - 4
