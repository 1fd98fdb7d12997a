"""The processes that make the history: CLI clients (a fresh `python -m gpuconsole` per operation:
the contract itself), API clients (the same core functions over kept-open connections, for
contention), and an observer that lists every node's reservations and jobs over its own
connection a few times a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gpuconsole.config import load_config
from gpuconsole.core import jobs as core_jobs
from gpuconsole.core import reservations as core_res
from gpuconsole.core.fleet import Fleet
from gpuconsole.errors import GpuConsoleError, UnreachableError
from gpuconsole.ssh.connection import NodeConnection
from tests.history.history import FAIL, INFO, OK, Op, Recorder
from tests.history.workload import Knowledge, Planner, classify, cli_argv, parse_text_result

OP_TIMEOUT_S = 40.0  # past the node's 10 s lock timeout plus a held lock and a slow machine
CLIENT_ENV_DROP = ("GPUCONSOLE_FAULTS", "GPUCONSOLE_FAULTS_FILE", "GPUCONSOLE_JOB_TTL_S", "GPUCONSOLE_SIM_NODE",
                   "CUDA_VISIBLE_DEVICES", "GPUCONSOLE_CONFIG", "SSH_AUTH_SOCK", "GPUCONSOLE_DEBUG")


JOB_KEYS = ("id", "name", "state", "gpus", "node")
LEASE_KEYS = ("id", "gpus", "token", "expires_in_s", "kind", "node")


def compact(f: str, result: Any) -> Any:
    """A listing keeps only what the checker reads (an hour of full listings would not fit in memory)."""
    if f not in ("jobs", "reservations") or not isinstance(result, dict):
        return result
    keys = JOB_KEYS if f == "jobs" else LEASE_KEYS
    out = {f: [{k: item[k] for k in keys if k in item} for item in result.get(f) or [] if isinstance(item, dict)]}
    if "errors" in result:
        out["errors"] = result["errors"]
    return out


class Running:
    """CLI processes in flight, so the nemesis can kill one and the teardown all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.killed: set[int] = set()

    def add(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self.procs[proc.pid] = proc

    def remove(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self.procs.pop(proc.pid, None)

    def kill(self, pid: int) -> bool:
        with self._lock:
            proc = self.procs.get(pid)
            if proc is None or proc.poll() is not None:
                return False
            self.killed.add(pid)
            proc.kill()
            return True

    def pids(self) -> list[int]:
        with self._lock:
            return [pid for pid, proc in self.procs.items() if proc.poll() is None]

    def kill_all(self) -> None:
        for pid in self.pids():
            self.kill(pid)


class Client(threading.Thread):
    """Base: draw an operation, run it, record it, learn from it, until told to stop."""

    def __init__(self, name: str, recorder: Recorder, planner: Planner, knowledge: Knowledge,
                 stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.client = name
        self.recorder = recorder
        self.planner = planner
        self.knowledge = knowledge
        self.stop = stop
        self.error: BaseException | None = None

    def record(self, op: Op, outcome: str, *, result: Any = None, exit_code: int | None = None,
               error: str = "", info: str | None = None) -> None:
        self.recorder.complete(op, outcome, result=compact(op.f, result), exit_code=exit_code, error=error,
                               info=info)
        self.knowledge.learn(op.f, op.outcome, op.args, op.result)
        if op.f == "reservations" and isinstance(op.result, dict):
            self.knowledge.saw([r["id"] for r in op.result.get("reservations") or []])


class CliClient(Client):
    """One `python -m gpuconsole --config CFG ... --json` process per operation."""

    def __init__(self, *args: Any, config_path: Path, running: Running, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_path = config_path
        self.running = running
        self.env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROP}
        # Each operation connects itself (the nemesis acts on those connections and agents), and
        # none leaves a connection keeper behind when the run ends.
        self.env["GPUCONSOLE_KEEPER"] = "0"

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                f, args = self.planner.next()
                self.one(f, args)
        except BaseException as exc:  # surfaced by the runner: a harness bug must not pass silently
            self.error = exc

    def one(self, f: str, args: dict[str, Any]) -> None:
        argv = [sys.executable, "-m", "gpuconsole", "--config", str(self.config_path), *cli_argv(f, args)]
        op = self.recorder.invoke(self.client, f, args)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env, start_new_session=True)
        self.running.add(proc)
        try:
            out, err = proc.communicate(timeout=OP_TIMEOUT_S + float(args.get("timeout_s") or 0))
        except subprocess.TimeoutExpired:
            self.running.kill(proc.pid)
            out, err = proc.communicate()
            self.record(op, INFO, exit_code=proc.returncode, error=err, info="timeout")
            return
        finally:
            self.running.remove(proc)
        code = proc.returncode
        if code < 0 and proc.pid in self.running.killed:
            self.record(op, INFO, exit_code=code, error=err, info="crash")
            return
        outcome, info = classify(code, err)
        try:
            result: Any = json.loads(out) if out.strip() else None
        except ValueError:
            result = parse_text_result(f, out)
        self.record(op, outcome, result=result, exit_code=code, error=err, info=info)


class ApiClient(Client):
    """The CLI's own core functions on kept-open connections: many more operations per second."""

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    def __init__(self, *args: Any, config_path: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_path = config_path

    async def _main(self) -> None:
        fleet = Fleet(load_config(str(self.config_path)))
        try:
            while not self.stop.is_set():
                think_s = self.planner.rng.uniform(*self.planner.workload.think_s)
                if think_s > 0:
                    await asyncio.sleep(think_s)
                f, args = self.planner.next()
                op = self.recorder.invoke(self.client, f, args)
                try:
                    result = await asyncio.wait_for(self._call(fleet, f, args), OP_TIMEOUT_S)
                except TimeoutError:
                    self.record(op, INFO, info="timeout")
                    fleet = await self._fresh(fleet)
                    continue
                except GpuConsoleError as exc:
                    outcome, info = classify(int(exc.exit_code), str(exc))
                    self.record(op, outcome, exit_code=int(exc.exit_code), error=str(exc), info=info)
                    # Fleet.call_all does not reopen a dead connection (find_node then says "not found
                    # (unreachable: …)" for as long as the fleet lives): start over, as a new CLI would.
                    if isinstance(exc, UnreachableError) or "unreachable" in str(exc):
                        fleet = await self._fresh(fleet)
                    continue
                except Exception as exc:  # a client bug is a reported failure (exit 1)
                    self.record(op, FAIL, exit_code=1, error=f"{exc.__class__.__name__}: {exc}")
                    continue
                self.record(op, OK, result=result, exit_code=0)
                if isinstance(result, dict) and result.get("errors"):
                    fleet = await self._fresh(fleet)
        finally:
            await fleet.close()

    async def _fresh(self, fleet: Fleet) -> Fleet:
        """A new fleet from the config as it is now (a restarted demo may have moved ports)."""
        await fleet.close()
        await asyncio.sleep(0.2)
        return Fleet(load_config(str(self.config_path)))

    async def _call(self, fleet: Fleet, f: str, args: dict[str, Any]) -> Any:
        if f == "reserve":
            return (await core_res.reserve(fleet, core_res.ReserveRequest(
                gpus=args["gpus"], ttl_s=args["ttl_s"], node=args.get("node"), wait=bool(args.get("wait")),
                timeout_s=args.get("timeout_s"), priority=args["priority"]))).to_json()
        if f == "release":
            return {"released": [(await core_res.release(fleet, args["id"])).to_json()], "errors": []}
        if f == "renew":
            return (await core_res.renew(fleet, args["id"], args["ttl_s"], args.get("token"))).to_json()
        if f == "submit":
            return (await core_jobs.submit(fleet, core_jobs.SubmitRequest(
                tuple(args["argv"]), args["gpus"], args.get("node"), args["priority"], args["name"], False,
                bool(args.get("preempt")), 1.0))).to_json()
        if f == "cancel":
            return (await core_jobs.cancel(fleet, args["id"])).to_json()
        if f == "preempt":
            return dataclasses.asdict(await core_jobs.preempt(fleet, args["id"], args.get("grace_s")))
        if f == "reservations":
            found, queue, errors = await core_res.list_all(fleet)
            return {"reservations": [r.to_json() for r in found], "queue": [q.to_json() for q in queue],
                    "errors": [{"node": n, "error": e} for n, e in errors.items()]}
        found_jobs, errors = await core_jobs.list_jobs(fleet)
        return {"jobs": [job.to_json() for job in found_jobs],
                "errors": [{"node": n, "error": e} for n, e in errors.items()]}


class Observer(threading.Thread):
    """Lists reservations and jobs on every node over kept-open connections, every `every_s`."""

    def __init__(self, recorder: Recorder, knowledge: Knowledge, config_path: Path, stop: threading.Event,
                 every_s: float = 0.25, jobs_every: int = 2) -> None:
        super().__init__(name="observer", daemon=True)
        self.recorder = recorder
        self.knowledge = knowledge
        self.config_path = config_path
        self.stop = stop
        self.every_s = every_s
        self.jobs_every = jobs_every  # job listings are long (the node keeps 200 ended jobs): less often
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> None:
        config = load_config(str(self.config_path))
        conns: dict[str, NodeConnection] = {}
        rounds = 0
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                what = ("reservations", "jobs") if rounds % self.jobs_every == 0 else ("reservations",)
                rounds += 1
                await asyncio.gather(*(self._observe(conns, node.name, what) for node in config.nodes))
                await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - started)))
        finally:
            await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)

    async def _observe(self, conns: dict[str, NodeConnection], name: str, whats: tuple[str, ...]) -> None:
        conn = conns.get(name)
        if conn is None or conn.closed.is_set():
            try:
                # The port may have moved (a restarted demo): read the config again.
                cfg = load_config(str(self.config_path)).node(name)
                conns[name] = conn = await NodeConnection.open(cfg, timeout_s=5.0)
            except GpuConsoleError:
                await asyncio.sleep(0.2)
                return
        leases: list[str] = []
        for what in whats:
            op = self.recorder.invoke("observer", what, {}, node=name)
            try:
                result = await conn.request(what, timeout_s=15.0)
            except GpuConsoleError as exc:
                self.recorder.complete(op, INFO if isinstance(exc, UnreachableError) else FAIL, error=str(exc),
                                       info="unreachable")
                return
            self.recorder.complete(op, OK, result=compact(what, result))
            if what == "reservations":
                leases = [r["id"] for r in result.get("reservations") or []]
                self.knowledge.saw(leases)
            else:
                running = [j["id"] for j in result.get("jobs") or [] if j.get("state") == "running"]
                self.knowledge.saw(leases, running)

