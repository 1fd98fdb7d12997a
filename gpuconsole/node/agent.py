"""The node agent: one long-lived process per SSH connection, JSON lines in and out.

Requests arrive on stdin as `{"id": N, "op": NAME, "args": {...}}`; replies go to stdout as
`{"id": N, "ok": true, "result": {...}}` or `{"id": N, "ok": false, "error": {"code", "message"}}`.
Telemetry, when streaming, is `{"event": "snapshot", "data": {...}}`. The caller's identity is the
OS user this process runs as (in service mode, the installed agent's sudo caller: service.py);
nothing the client sends can change it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from functools import partial

from . import arrays, doctor, jobs, ledger, loader, pending, procs, slurm, slurmjobs
from . import gpus as gpu_sources
from . import policy as node_policy
from . import service as svc
from . import state as st
from .hostio import HostSampler
from .jobops import JobOps
from .store import StateStore
from .telemetry import Telemetry, sim_faults
from .txn import MUTATIONS, Critical, Transactions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import IO, Any, Callable, Tuple

    from .gpus import GpuSource
    from .health import Readings
    from .typedefs import Args, Result, Warnings

    Reply = Tuple[Result, Warnings]
    Handler = Callable[[Args], Reply]

AGENT_VERSION = 1
_PY_VERSION = "%d.%d.%d" % sys.version_info[:3]
MAX_REQUEST_BYTES = 1 << 20
# Arguments many operations share, checked once so no operation meets a list where a key belongs.
ARG_TYPES = (("id", str), ("req_id", str), ("token", int), ("name", str), ("reason", str), ("stream", str))
_ID_PREFIX = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d{1,18})\s*[,}]')


LEDGER_MAX = 10000  # records one `ledger` answer carries (the newest)

def now_bt() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _is_admin(user: str | None = None) -> bool:
    """A member of the admin group named in the root-owned policy file.

    Root is not implicitly an admin of reservations: it can always repair the files by hand, and
    keeping it an ordinary owner makes its mistakes as refusable as anyone else's. A policy anyone
    could edit grants nothing. `user`: the service agent's caller, whose groups come from the
    group database (this process has the service account's groups).
    """
    # A user's own agent may be pointed at another root-owned policy (GPUCONSOLE_POLICY: tests);
    # the service agent (`user` given) reads /etc's alone.
    gid = svc.admin_group_gid(node_policy.path(service=user is not None))
    if gid is None:
        return False
    if user is not None:
        return svc.in_group(user, gid)
    return gid in os.getgroups() or gid == os.getgid()


class Agent:
    """Serves one client connection: a dispatch table of operations and an optional telemetry stream."""

    def __init__(self, out: IO[bytes], service: dict[str, Any] | None = None) -> None:
        self.out = out
        self.write_lock = threading.Lock()
        # `service`: the installed agent's settings (user, state_dir, simulate_gpus) when this
        # process is the service account serving a sudo caller; None for a user's own agent.
        self.service = service
        self.mode = "service" if service is not None else "cooperative"
        self.forwarder: svc.Forwarder | None = None  # a user's agent on a service-mode node: where changes go
        if service is not None:
            self.uid, self.user = svc.caller(service)
            self.admin = _is_admin(self.user)
        else:
            self.uid = os.getuid()
            self.user = procs.user_name(self.uid)
            self.admin = _is_admin()
        self.ident = procs.identity()
        self.boot_id = self.ident["boot_id"]
        self.node = os.uname().nodename
        self.config_name = self.node
        self.gpus: GpuSource | None = None
        self.store: StateStore | None = None
        self.txn: Transactions | None = None
        self.job_ops: JobOps | None = None
        self.critical = Critical()
        self.stop_requested = False
        self.telemetry = Telemetry(self.send, HostSampler(), self.snapshot, lambda: self.stop_requested)
        self.stream_wake = self.telemetry.wake
        self.hello_warnings: list[str] = []
        self.slurm: slurm.Backend | None = None  # a Slurm cluster's login node (hello kind "slurm")
        self.handlers: dict[str, Handler] = {
            "snapshot": lambda args: (self.snapshot(rates=args.get("rates") is not False), []),
            "stream": self._op_stream,
            "reservations": self._op_reservations,
            "capacity": lambda args: (self._op_capacity(), []),
            "doctor": lambda args: (self._op_doctor(), []),
            "ping": lambda args: ({"pong": True}, []),
            "submit": lambda args: self._job_ops().submit(args),
            "submit_array": lambda args: arrays.submit_array(self._job_ops(), args),
            "jobs": self._op_jobs,
            "logs": lambda args: (self._job_ops().logs(args), []),
            "cancel": lambda args: self.transaction("cancel_job", args),
            "ledger": self._op_ledger,
        }

    # -- output and telemetry ---------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self.write_lock:
            self.out.write(line.encode())
            self.out.flush()

    def snapshot(self, rates: bool = True) -> Result:
        """Host I/O, GPUs with their reservations and processes, and the state listing (`rates` False:
        no wait for a rate window; see Telemetry.collect); on a Slurm login node, Slurm's view."""
        if self.slurm is not None:
            return self.slurm.snapshot()
        return self.telemetry.collect(self.gpus, self._txn(), self.new_ctx, rates)

    def set_stream(self, interval: object) -> None:
        self.telemetry.set_stream(interval)

    # -- state operations -------------------------------------------------------------------

    def new_ctx(self) -> st.Ctx:
        """Who asks and what the node sees now (no GPU processes: transactions add those)."""
        return st.Ctx(self.uid, self.user, now_bt(), time.time(),
                      self.gpus.count() if self.gpus else 0, admin=self.admin,
                      agent=self.ident, alive=procs.is_alive, policy=node_policy.load(self.service is not None)[0])

    def gpus_in_use(self) -> set[int]:
        """GPUs with processes, observed before the lock is taken (no NVML under the lock)."""
        if not self.gpus:
            return set()
        return self.telemetry.gpus_in_use(self.gpus)

    def gpu_health(self) -> Readings:
        """The GPUs' health readings, taken before the lock like gpus_in_use."""
        if not self.gpus or self.txn is None:
            return {}
        faults = sim_faults(self.gpus, self.txn.store.dir)  # read outside the sample lock
        with self.telemetry.sample_lock:
            return self.gpus.health(faults)

    def _txn(self) -> Transactions:
        if self.txn is None:
            raise st.OpError("invalid", "hello must come first")
        return self.txn

    def _job_ops(self) -> JobOps:
        if self.job_ops is None:
            raise st.OpError("invalid", "hello must come first")
        return self.job_ops

    def transaction(self, op: str, args: Args) -> Reply:
        """One atomic step on the state (txn.py); a user's agent on a service-mode node hands the
        whole step to the service agent instead."""
        if self.forwarder is not None:
            return self.forwarder.forward(op, args)
        return self._txn().run(op, args)

    # -- operations -------------------------------------------------------------------------

    def op_hello(self, args: Args) -> Result:
        node = args.get("node") or self.node
        self.config_name = str(node)  # the client's name for this node (the `ledger` op's witnesses)
        if args.get("kind") == "slurm":
            return self._hello_slurm(str(node), args)
        simulate = args.get("simulate_gpus") or 0
        state_dir = args.get("state_dir") or "/var/lib/gpuconsole"
        if self.service is not None:  # the installed agent serves what its admin chose, not the caller
            simulate, state_dir = self.service.get("simulate_gpus") or 0, self.service["state_dir"]
        simulate = st.integer(simulate, "simulate_gpus must be an integer 0..64", 0, 64)
        if not isinstance(state_dir, str) or "\0" in state_dir:
            raise st.OpError("invalid", "state_dir must be a path")
        mode = args.get("mode") or "cooperative"
        if mode not in ("cooperative", "service"):
            raise st.OpError("invalid", "mode must be cooperative or service")
        if self.service is None:
            self.mode = mode
        sim_node = (os.environ.get("GPUCONSOLE_SIM_NODE") if self.service is None else None) or node
        # `demo --seed`: simulated GPUs that follow the node's name and the seed, not the demo's dir.
        sim_seed = os.environ.get("GPUCONSOLE_SIM_SEED") if self.service is None else None
        self.gpus = gpus = gpu_sources.open_gpus(simulate, sim_node, sim_seed or args.get("seed") or 0,
                                                 identity=None if sim_seed is None else str(node))
        self.store = store = StateStore(state_dir, service=self.service is not None)
        state_dir_error = None
        try:
            store.ensure_dir(create=False)  # reads never create it: Transactions.ensure_dir
        except OSError as exc:
            state_dir_error = exc.strerror if self.mode == "service" else str(exc)
        supervisor_env = {"GPUCONSOLE_SIMULATE_GPUS": str(simulate), "GPUCONSOLE_NODE_NAME": node}
        if self.forwarder is not None:  # a second hello: the link it had is not this one's
            self.forwarder.close()
            self.forwarder = None
        service_user = self.service["user"] if self.service is not None else None
        before_submit: Callable[[], object] = lambda: None  # noqa: E731
        if self.mode == "service" and self.service is None:
            # The link starts with the first change: read-only commands never pay for sudo.
            settings = svc.link_settings(args)
            service_user = settings[0]
            self.forwarder = forwarder = svc.Forwarder(settings, node, self.uid, store.dir, self.critical)
            before_submit = forwarder.ready
            # A supervisor's changes go through its own sudo link.
            supervisor_env["GPUCONSOLE_SERVICE"] = "%s:%s" % settings
        self.txn = Transactions(store, self.boot_id, self.new_ctx, self.gpus_in_use, self.critical,
                                service_user, self.gpu_health, lambda: self.telemetry.gpu_users)
        self.job_ops = JobOps(self.txn, self.transaction, self.uid, supervisor_env, before_submit)
        if self.service is None:  # the service agent serves state operations, never telemetry
            self.set_stream(args.get("stream_s"))
        self.hello_warnings = []
        if state_dir_error is None and os.environ.get("GPUCONSOLE_ROLE") != "supervisor" \
                and self.service is None:
            try:
                self.hello_warnings = self.job_ops.adopt_orphans()
            except Exception as exc:  # a bad record must never cost the user the node
                self.hello_warnings = ["jobs not restarted: %s: %s" % (exc.__class__.__name__, exc)]
        return {
            "agent_version": AGENT_VERSION, "user": self.user, "uid": self.uid,
            "admin": self.admin, "hostname": self.node, "boot_id": self.boot_id,
            "python": _PY_VERSION, "gpu_source": gpus.source,
            "gpu_count": gpus.count(), "gpu_error": getattr(gpus, "reason", None),
            "state_dir": store.dir, "state_dir_error": state_dir_error, "pid": os.getpid(),
            "mode": self.mode, "service_error": self.forwarder.error if self.forwarder else None,
            "agent_digest": getattr(sys.modules.get(__package__ or ""), "DIGEST", None),
        }

    def _hello_slurm(self, cluster: str, args: Args) -> Result:
        """A Slurm cluster's login node: Slurm's commands answer the operations (slurm.py), as this user."""
        if self.service is not None:
            raise st.OpError("invalid", "the service agent does not serve Slurm clusters")
        self.slurm = slurm.Backend(cluster, self.user, self.uid)
        self.mode = "slurm"
        answer = {"agent_version": AGENT_VERSION, "user": self.user, "uid": self.uid, "admin": False,
                  "hostname": self.node, "boot_id": self.boot_id, "python": _PY_VERSION, "state_dir": None,
                  "state_dir_error": None, "pid": os.getpid(), "mode": "slurm", "service_error": None,
                  "agent_digest": getattr(sys.modules.get(__package__ or ""), "DIGEST", None)}
        answer.update(self.slurm.hello())
        self.set_stream(slurm.stream_interval(args.get("stream_s")))
        return answer

    def _op_stream(self, args: Args) -> Reply:
        self.set_stream(args.get("interval_s"))
        return {"stream_s": self.telemetry.stream_s}, []

    def _op_reservations(self, args: Args) -> Reply:
        txn = self._txn()
        state, warnings, ctx = txn.settled_read(self.new_ctx)
        ctx.gpus_in_use = self.gpus_in_use()  # GPUs busy outside any grant count for the ETAs
        state = txn.view(state, ctx)
        return st.listing(state, ctx, pending.explain(state, ctx)), warnings

    def _op_capacity(self) -> Result:
        """Free GPUs and queue length, read without the lock, for choosing a node."""
        txn = self._txn()
        state, _, ctx = txn.settled_read(self.new_ctx)
        ctx.gpus_in_use = self.gpus_in_use()
        state = txn.view(state, ctx)
        return {"gpu_count": ctx.gpu_count, "free": len(st.free_gpus(state, ctx)),
                "queued": len(state["queue"]), "unreserved": st.unreserved_gpus(state, ctx),
                # For the client's fleet-wide cap (policy.py): what the caller holds here, and the cap.
                "mine": st.held_by_user(state, ctx).get(ctx.uid, 0),
                "fleet_cap": ctx.policy.get("max_gpus_per_user_fleet")}

    def _op_jobs(self, args: Args) -> Reply:
        txn = self._txn()
        state, warnings, _ = txn.read()
        ctx = self.new_ctx()
        if any(j["state"] in jobs.ACTIVE and not ctx.alive(j.get("supervisor"))
               for j in state.get("jobs", {}).values()):
            self.transaction("gc", {})  # record lost jobs now rather than at the next change
            state, warnings, _ = txn.read()
        ctx.gpus_in_use = self.gpus_in_use()
        state = txn.view(state, ctx)
        return jobs.listing(state, ctx, pending.explain(state, ctx)), warnings

    def _op_ledger(self, args: Args) -> Reply:
        """The node's ledger, its chain checked here (`audit`): the records at or after `since` (ISO
        time) of `user` (owner or actor), the last LEDGER_MAX of them, and every break."""
        txn = self._txn()
        state, warnings, _ = txn.read()
        head = ledger.head_of(state, txn.store.dir)
        records, breaks = ledger.verify(txn.store.dir, head)
        since, user = args.get("since"), args.get("user")
        if not all(value is None or isinstance(value, str) for value in (since, user)):
            raise st.OpError("invalid", "since and user must be strings")
        chosen = [r for r in records if (since is None or str(r.get("at", "")) >= since)
                  and (user is None or user in (r.get("owner"), r.get("by")))]
        answer = {"head": {"seq": head.get("seq"), "hash": head.get("hash")}, "count": len(records),
                  "records": chosen[-LEDGER_MAX:], "breaks": breaks[:LEDGER_MAX]}
        witnesses: Any = args.get("witnesses")
        if isinstance(witnesses, dict) and self.config_name in witnesses:
            answer["witness"] = ledger.witnessed(records, head, witnesses[self.config_name])
        return answer, warnings

    def _op_doctor(self) -> Result:
        txn = self._txn()
        user = txn.service_user  # set on a service-mode node, on either side of the link
        service_rows = None if user is None else partial(svc.doctor_checks, user, txn.store.dir, self.forwarder)
        return {"checks": doctor.checks(txn.store, self.boot_id, self.user, self.gpus, service_rows,
                                        txn.service_user)}

    # -- request handling -------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> Reply:
        """Check what every operation shares, then dispatch by op name (the handler table, else a
        state transition, else unknown)."""
        op = request.get("op")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise st.OpError("invalid", "args must be an object")
        for key, kind in ARG_TYPES:
            value = args.get(key)
            if value is None:
                continue
            if kind is int:
                st.integer(value, "%s must be a number" % key)
            elif not isinstance(value, str):
                raise st.OpError("invalid", "%s must be a string" % key)
        if op == "hello":
            return self.op_hello(args), self.hello_warnings
        if self.slurm is not None:
            if op == "stream":
                self.set_stream(slurm.stream_interval(args.get("interval_s")))
                return {"stream_s": self.telemetry.stream_s}, []
            return slurmjobs.handle(self.slurm, str(op), args), []
        self._txn()
        if self.service is not None:
            if op not in svc.SERVED and op not in MUTATIONS:
                raise st.OpError("invalid", "the service agent does not serve %r" % (op,))
            if op in ("submit_job", "adopt_job"):
                svc.check_supervisor(args, self.new_ctx())
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is not None:
            return handler(args)
        if isinstance(op, str) and op in MUTATIONS:
            return self.transaction(op, args)
        raise st.OpError("invalid", "unknown op %r" % (op,))

    def serve(self, stream_in: IO[bytes] | loader.PrefixedLines) -> None:
        while True:
            raw = stream_in.readline(MAX_REQUEST_BYTES + 1)
            if not raw:
                break
            if len(raw) > MAX_REQUEST_BYTES:
                # Answer at once, with the request's id when its prefix names one, and skip the
                # rest of the line without holding it in memory.
                match = _ID_PREFIX.match(raw)
                while raw and not raw.endswith(b"\n"):
                    raw = stream_in.readline(MAX_REQUEST_BYTES)
                self.send({"id": int(match.group(1)) if match else None, "ok": False,
                           "error": {"code": "too_large",
                                     "message": "request larger than %d bytes" % MAX_REQUEST_BYTES}})
                continue
            req_id = None
            reply: dict[str, Any]
            try:
                request = json.loads(raw.decode("utf-8"))
                if not isinstance(request, dict):
                    raise ValueError("request must be an object")
                req_id = request.get("id")
                result, warnings = self.handle(request)
                reply = {"id": req_id, "ok": True, "result": result}
                if warnings:
                    reply["warnings"] = warnings
            except st.OpError as exc:
                reply = {"id": req_id, "ok": False, "error": exc.to_dict()}
            except (ValueError, UnicodeDecodeError) as exc:
                reply = {"id": req_id, "ok": False, "error": {"code": "invalid", "message": str(exc)}}
            except Exception as exc:  # report, keep serving: one bad request must not drop the node
                reply = {"id": req_id, "ok": False,
                         "error": {"code": "internal", "message": "%s: %s" % (exc.__class__.__name__, exc)}}
            self.send(reply)
            if self.stop_requested:
                break


def main(service: dict[str, Any] | None = None) -> None:
    """Entry point on the node: serve requests from stdin until EOF or a signal.

    `service`: the settings baked into the installed service agent (see service.py); then the
    caller comes from sudo and only state operations are served.
    """
    if service is not None:
        os.umask(0o022)
        os.chdir("/")
        try:
            svc.caller(service)  # refused before anything else happens
        except svc.NotService as exc:
            sys.stderr.write("gpuconsole service agent: %s\n" % exc)
            sys.exit(2)
        svc.detach()
        _serve(Agent(sys.stdout.buffer, service))
        return
    if sys.argv[1:] == ["shell"]:  # `gpuconsole shell`, started by ptyshell.BOOTSTRAP: one request, then exec
        from . import ptyshell

        ptyshell.main(Agent)
        return
    if os.environ.get("GPUCONSOLE_ROLE") == "supervisor":
        from . import supervisor

        with open(os.devnull, "wb") as sink:
            agent = Agent(sink)
            agent.op_hello(supervisor.hello_args(os.environ))
            supervisor.main(agent._txn().store, agent.boot_id, agent.transaction)
        return
    _serve(Agent(sys.stdout.buffer))


def _serve(agent: Agent) -> None:
    """Serve stdin with SIGHUP/SIGTERM/SIGINT deferred inside a transaction."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Inside a transaction the signal is deferred: the step completes or never happened.
        agent.stop_requested = True
        if not agent.critical.active:
            raise SystemExit(0)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        agent.serve(loader.request_lines(sys.stdin.buffer))
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        agent.stop_requested = True
        agent.stream_wake.set()
        if agent.forwarder is not None:
            agent.forwarder.close()


if __name__ == "__main__":
    main()
