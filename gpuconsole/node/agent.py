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

from . import faults, jobs, procs
from . import gpus as gpu_sources
from . import service as svc
from . import state as st
from .hostio import HostSampler
from .jobops import JobOps
from .store import CorruptState, StateStore, filesystem_type, io_error, is_network_fs
from .store import service_setup_fix as store_fix

AGENT_VERSION = 1
_PY_VERSION = "%d.%d.%d" % sys.version_info[:3]
POLICY_PATH = "/etc/gpuconsole/policy.json"
MIN_RATE_WINDOW_S = 0.1
MAX_REQUEST_BYTES = 1 << 20
# Arguments many operations share, checked once so no operation meets a list where a key belongs.
ARG_TYPES = (("id", str), ("req_id", str), ("token", int), ("name", str), ("reason", str), ("stream", str))
_ID_PREFIX = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d{1,18})\s*[,}]')
MUTATIONS = dict(st.MUTATIONS, **jobs.MUTATIONS)
ALWAYS_CHANGES = st.ALWAYS_CHANGES | frozenset(jobs.MUTATIONS)


def now_bt():
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _is_admin(user=None):
    """A member of the admin group named in the root-owned policy file.

    Root is not implicitly an admin of reservations: it can always repair the files by hand, and
    keeping it an ordinary owner makes its mistakes as refusable as anyone else's. A policy anyone
    could edit grants nothing. `user`: the service agent's caller, whose groups come from the
    group database (this process has the service account's groups).
    """
    gid = svc.admin_group_gid(POLICY_PATH)
    if gid is None:
        return False
    if user is not None:
        return svc.in_group(user, gid)
    return gid in os.getgroups() or gid == os.getgid()


class Agent(JobOps):
    """Serves one client connection: state operations and an optional telemetry stream."""

    def __init__(self, out, service=None):
        self.out = out
        self.write_lock = threading.Lock()
        self.sample_lock = threading.Lock()
        # `service`: the installed agent's settings (user, state_dir, simulate_gpus) when this
        # process is the service account serving a sudo caller; None for a user's own agent.
        self.service = service
        self.mode = "service" if service is not None else "cooperative"
        self.link = None  # a user's agent on a service-mode node: where changes go
        self.link_error = None
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
        self.gpus = None
        self.host = HostSampler()
        self.store = None
        self.stream_s = None
        self.stream_wake = threading.Event()
        self.stream_thread = None
        self.in_critical = False
        self.stop_requested = False
        self.hello_warnings = []

    # -- output -----------------------------------------------------------------------------

    def send(self, message):
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self.write_lock:
            self.out.write(line.encode())
            self.out.flush()

    # -- telemetry --------------------------------------------------------------------------

    def snapshot(self):
        """Host I/O, GPUs with their reservations and processes, and the state listing."""
        with self.sample_lock:
            wait_s = MIN_RATE_WINDOW_S - self.host.age_s()
            if wait_s > 0:
                time.sleep(wait_s)  # rates need a window; only the first sample of a connection waits
            host = self.host.sample()
            gpu_list = self.gpus.sample() if self.gpus else []
        ctx = self._ctx()
        state_error, warnings = None, []
        try:
            state, warnings, _ = self.store.read_cached(self.boot_id)
        except CorruptState as exc:
            state, state_error = st.new_state(self.boot_id), "state unreadable: %s" % exc
        except OSError as exc:
            state, state_error = st.new_state(self.boot_id), "state dir: %s" % exc
        ctx.gpus_in_use = {g["index"] for g in gpu_list if g.get("processes")}
        state = self._view(state, ctx)
        by_lease = {}
        for lease in state["leases"].values():
            if lease["exp_bt"] > ctx.now_bt:
                for gpu in lease["gpus"]:
                    by_lease[gpu] = lease
        for gpu in gpu_list:
            lease = by_lease.get(gpu["index"])
            gpu["reservation"] = None if lease is None else {
                "id": lease["id"], "owner": lease["owner"],
                "expires_at": st.iso_utc(ctx.wall_at(lease["exp_bt"])),
                "priority": st.PRIORITY_NAMES.get(lease["priority"], "normal"),
            }
            gpu["unreserved_use"] = lease is None and bool(gpu.get("processes"))
        data = dict(host)
        data.update({
            "t_wall": ctx.now_wall, "gpus": gpu_list,
            "gpu_source": self.gpus.source if self.gpus else "none",
            "state_error": state_error, "warnings": warnings,
        })
        data.update(st.listing(state, ctx))
        data["jobs"] = jobs.recent(state, ctx)
        return data

    def _view(self, state, ctx):
        """The state as the next transaction's housekeeping would find it, for lock-free views.

        A reboot, a job lease kept by its live supervisor, and a waiter that died are shown as
        they will be, so no view calls a dead waiter queued or a held GPU free. Copies only
        when something differs (the read cache's object is shared).
        """
        reboot = state.get("boot_id") != self.boot_id
        dead = [ticket_id for ticket_id, ticket in state["queue"].items()
                if not ticket.get("job") and (st.wait_expired(ticket, ctx) or not ctx.alive(ticket.get("agent")))]
        if not (reboot or dead or jobs.lapsing_supervised(state, ctx)):
            return state
        state = json.loads(json.dumps(state))
        if reboot:
            st.reboot_recovery(state, self.boot_id, ctx)
        for ticket_id in dead:
            state["queue"].pop(ticket_id, None)
        jobs.hold_while_supervised(state, ctx)
        return state

    def _stream_loop(self):
        while not self.stop_requested:
            interval = self.stream_s
            if interval is None:
                self.stream_wake.wait()
                self.stream_wake.clear()
                continue
            started = time.monotonic()
            try:
                self.send({"event": "snapshot", "data": self.snapshot()})
            except (BrokenPipeError, ValueError):
                return
            except Exception as exc:  # a bad sample must not end the stream
                try:
                    self.send({"event": "error", "message": "%s: %s" % (exc.__class__.__name__, exc)})
                except (BrokenPipeError, ValueError):
                    return
            self.stream_wake.wait(max(0.0, interval - (time.monotonic() - started)))
            self.stream_wake.clear()

    # -- state operations -------------------------------------------------------------------

    def _ctx(self):
        return st.Ctx(self.uid, self.user, now_bt(), time.time(),
                      self.gpus.count() if self.gpus else 0, admin=self.admin,
                      agent=self.ident, alive=procs.is_alive)

    def _gpus_in_use(self):
        """GPUs with processes, observed before the lock is taken (no NVML under the lock)."""
        if not self.gpus:
            return set()
        with self.sample_lock:
            return {g for g, items in self.gpus.processes().items() if items}

    def transaction(self, op, args):
        """One atomic step: lock, load, replay or gc → op → dispatch, commit only on change.

        The rename inside commit() is the commit point: an error before it is a refusal (nothing
        changed), anything that goes wrong after it is a warning on a successful reply. A user's
        agent on a service-mode node hands the whole step to the service agent instead.
        """
        if self.mode == "service" and self.service is None:
            return svc.forward(self, op, args)
        func = MUTATIONS[op]
        # Every transaction's housekeeping may dispatch, so every one needs the GPUs in use.
        in_use = self._gpus_in_use()
        req_id = args.get("req_id")
        self.in_critical = True
        try:
            self.store.acquire()
        except OSError as exc:
            self.in_critical = False
            raise self._io_error("cannot open the state lock", exc) from None
        try:
            ctx = self._ctx()
            ctx.gpus_in_use = in_use
            try:
                state, warnings, _, loaded = self.store.load_locked_with_body(self.boot_id)
            except CorruptState as exc:
                raise st.OpError("corrupt", "node state unreadable, refusing changes until an admin "
                                 "repairs %s: %s" % (self.store.dir, exc)) from None
            except OSError as exc:
                raise self._io_error("cannot read the state", exc) from None
            if req_id and req_id in state["applied"]:
                result = dict(state["applied"][req_id]["res"], replayed=True)
                return result, warnings
            state.pop("checksum", None)
            must_write = loaded is None  # a new node, a recovery or a quarantine that must be persisted
            baseline = loaded if loaded is not None else json.dumps(state)
            try:
                changed = self._housekeep(state, ctx)
                result = func(state, ctx, args)
            except st.OpError:
                # Refused: keep only what housekeeping changed, re-derived from what was read.
                state = json.loads(baseline)
                if self._housekeep(state, ctx) or must_write:
                    warnings = warnings + self._commit(state)
                raise
            if op in ALWAYS_CHANGES:
                if req_id:
                    state["applied"][req_id] = {"bt": ctx.now_bt, "res": result}
                changed = True
            if changed or must_write:
                warnings = warnings + self._commit(state)
            return result, warnings
        finally:
            self.store.release_lock()
            self.in_critical = False

    def _io_error(self, what, exc):
        return io_error(what, exc, self.store.dir, svc.service_user(self) if self.mode == "service" else None)

    def _commit(self, state):
        """Commit, or raise OpError("io") when nothing was committed; returns post-commit warnings."""
        if faults.active("ack_before_commit"):  # negative control for the history checker only
            return []
        try:
            return self.store.commit(state)
        except OSError as exc:
            raise self._io_error("not changed: cannot write the state", exc) from None

    def _housekeep(self, state, ctx):
        """Reboot rule, expiry, dead waiters, then queued grants; True when anything changed."""
        changed = False
        if state.get("boot_id") != self.boot_id:
            st.reboot_recovery(state, self.boot_id, ctx)
            changed = True
        changed = jobs.hold_while_supervised(state, ctx) or changed
        changed = st.gc(state, ctx) or changed
        changed = jobs.reap(state, ctx) or changed
        changed = bool(st.dispatch(state, ctx)) or changed
        if jobs.preempt_for_head(state, ctx):
            st.dispatch(state, ctx)  # revoked reservations free GPUs at once
            changed = True
        return changed

    # -- request handling -------------------------------------------------------------------

    def op_hello(self, args):
        node = args.get("node") or self.node
        simulate = args.get("simulate_gpus") or 0
        state_dir = args.get("state_dir") or "/var/lib/gpuconsole"
        if self.service is not None:  # the installed agent serves what its admin chose, not the caller
            simulate, state_dir = self.service.get("simulate_gpus") or 0, self.service["state_dir"]
        if isinstance(simulate, bool) or not isinstance(simulate, int) or not 0 <= simulate <= 64:
            raise st.OpError("invalid", "simulate_gpus must be an integer 0..64")
        if not isinstance(state_dir, str) or "\0" in state_dir:
            raise st.OpError("invalid", "state_dir must be a path")
        mode = args.get("mode") or "cooperative"
        if mode not in ("cooperative", "service"):
            raise st.OpError("invalid", "mode must be cooperative or service")
        if self.service is None:
            self.mode = mode
        sim_node = (os.environ.get("GPUCONSOLE_SIM_NODE") if self.service is None else None) or node
        self.gpus = gpu_sources.open_gpus(simulate, sim_node, args.get("seed") or 0)
        self.store = StateStore(state_dir, service=self.service is not None)
        self.hello_args = {"simulate": simulate, "node": node}
        state_dir_error = None
        try:
            self.store.ensure_dir(create=self.mode == "cooperative")
        except OSError as exc:
            state_dir_error = exc.strerror if self.mode == "service" else str(exc)
        if self.mode == "service" and self.service is None:
            # The link starts with the first change: read-only commands never pay for sudo.
            self.hello_args["service"] = svc.link_settings(args)
        if self.service is None:  # the service agent serves state operations, never telemetry
            self.set_stream(args.get("stream_s"))
        self.hello_warnings = []
        if state_dir_error is None and os.environ.get("GPUCONSOLE_ROLE") != "supervisor" \
                and self.service is None:
            try:
                self.hello_warnings = self._adopt_orphans()
            except Exception as exc:  # a bad record must never cost the user the node
                self.hello_warnings = ["jobs not restarted: %s: %s" % (exc.__class__.__name__, exc)]
        return {
            "agent_version": AGENT_VERSION, "user": self.user, "uid": self.uid,
            "admin": self.admin, "hostname": self.node, "boot_id": self.boot_id,
            "python": _PY_VERSION, "gpu_source": self.gpus.source,
            "gpu_count": self.gpus.count(), "gpu_error": getattr(self.gpus, "reason", None),
            "state_dir": self.store.dir, "state_dir_error": state_dir_error, "pid": os.getpid(),
            "mode": self.mode, "service_error": self.link_error,
            "agent_digest": getattr(sys.modules.get(__package__), "DIGEST", None),
        }

    def set_stream(self, interval):
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                     or not 0.05 <= interval <= 3600):
            raise st.OpError("invalid", "stream_s must be between 0.05 and 3600 seconds")
        self.stream_s = interval
        if interval is not None and self.stream_thread is None:
            self.stream_thread = threading.Thread(target=self._stream_loop, daemon=True)
            self.stream_thread.start()
        self.stream_wake.set()

    def _read_state(self):
        try:
            return self.store.load(self.boot_id)
        except CorruptState as exc:
            raise st.OpError("corrupt", "node state unreadable: %s" % exc) from None

    def op_capacity(self):
        """Free GPUs and queue length, read without the lock, for choosing a node."""
        ctx = self._ctx()
        ctx.gpus_in_use = self._gpus_in_use()
        try:
            state, _, _ = self.store.load(self.boot_id)
        except CorruptState as exc:
            raise st.OpError("corrupt", "node state unreadable: %s" % exc) from None
        state = self._view(state, ctx)
        return {"gpu_count": ctx.gpu_count, "free": len(st.free_gpus(state, ctx)),
                "queued": len(state["queue"]), "unreserved": st.unreserved_gpus(state, ctx)}

    def op_doctor(self, args):
        checks = []
        info = None
        try:
            info = os.stat(self.store.dir)
        except OSError as exc:
            checks.append(["state_dir", False, "%s: %s" % (self.store.dir, exc.strerror),
                           "sudo install -d -m 2775 -g gpu %s" % self.store.dir if self.mode == "cooperative"
                           else store_fix(self.store.dir, svc.service_user(self))])
        if info is not None and self.mode == "service":
            checks.extend(svc.doctor_checks(self, info))
        elif info is not None:
            writable = os.access(self.store.dir, os.W_OK | os.X_OK)
            detail = "%s mode %o" % (self.store.dir, info.st_mode & 0o7777)
            if not writable and svc.looks_like_service(info):
                detail += ", owned by %s and closed to others: a service-mode node (set mode = \"service\")" \
                    % procs.user_name(info.st_uid)
            checks.append(["state_dir", writable, detail,
                           None if writable else "sudo install -d -m 2775 -g gpu %s && add %s to group gpu"
                           % (self.store.dir, self.user)])
        if info is not None:
            fstype = filesystem_type(self.store.dir)
            checks.append(["filesystem", not is_network_fs(fstype), "%s is on %s" % (self.store.dir, fstype),
                           None if not is_network_fs(fstype) else "use a local disk for state_dir"])
            try:
                self.store.load(self.boot_id)
                checks.append(["state_file", True, "readable", None])
            except CorruptState as exc:
                checks.append(["state_file", False, str(exc), "inspect %s/corrupt and restore" % self.store.dir])
        checks.append(["python", sys.version_info >= (3, 8), _PY_VERSION, None])
        gpu_ok = self.gpus is not None and self.gpus.source != "none"
        checks.append(["gpus", gpu_ok, "%s, %d GPUs" % (self.gpus.source, self.gpus.count())
                       if self.gpus else "no source",
                       None if gpu_ok else "install the NVIDIA driver and `pip install nvidia-ml-py`"])
        return {"checks": [dict(zip(("check", "ok", "detail", "fix"), c)) for c in checks]}

    def handle(self, request):
        op = request.get("op")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise st.OpError("invalid", "args must be an object")
        for key, kind in ARG_TYPES:
            value = args.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise st.OpError("invalid", "%s must be a %s" % (key, "string" if kind is str else "number"))
        if op == "hello":
            return self.op_hello(args), self.hello_warnings
        if self.store is None:
            raise st.OpError("invalid", "hello must come first")
        if self.service is not None:
            if op not in svc.SERVED and op not in MUTATIONS:
                raise st.OpError("invalid", "the service agent does not serve %r" % (op,))
            if op in ("submit_job", "adopt_job"):
                svc.check_supervisor(args, self._ctx())
        if op == "snapshot":
            return self.snapshot(), []
        if op == "stream":
            self.set_stream(args.get("interval_s"))
            return {"stream_s": self.stream_s}, []
        if op == "reservations":
            try:
                state, warnings, _ = self.store.load(self.boot_id)
            except CorruptState as exc:
                raise st.OpError("corrupt", "node state unreadable: %s" % exc) from None
            ctx = self._ctx()
            return st.listing(self._view(state, ctx), ctx), warnings
        if op == "capacity":
            return self.op_capacity(), []
        if op == "doctor":
            return self.op_doctor(args), []
        if op == "ping":
            return {"pong": True}, []
        if op == "submit":
            return self.op_submit(args)
        if op == "jobs":
            state, warnings, _ = self._read_state()
            ctx = self._ctx()
            if any(j["state"] in jobs.ACTIVE and not ctx.alive(j.get("supervisor"))
                   for j in state.get("jobs", {}).values()):
                self.transaction("gc", {})  # record lost jobs now rather than at the next change
                state, warnings, _ = self._read_state()
            return jobs.listing(self._view(state, ctx), ctx), warnings
        if op == "logs":
            return self.op_logs(args), []
        if op == "cancel":
            return self.transaction("cancel_job", args)
        if op in MUTATIONS:
            return self.transaction(op, args)
        raise st.OpError("invalid", "unknown op %r" % (op,))

    def serve(self, stream_in):
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


def main(service=None):
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
    if os.environ.get("GPUCONSOLE_ROLE") == "supervisor":
        from . import supervisor

        with open(os.devnull, "wb") as sink:
            supervisor.main(Agent(sink))
        return
    _serve(Agent(sys.stdout.buffer))


def _serve(agent):
    """Serve stdin with SIGHUP/SIGTERM/SIGINT deferred inside a transaction."""

    def on_signal(signum, frame):
        # Inside a transaction the signal is deferred: the step completes or never happened.
        agent.stop_requested = True
        if not agent.in_critical:
            raise SystemExit(0)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        agent.serve(sys.stdin.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        agent.stop_requested = True
        agent.stream_wake.set()
        if agent.link is not None:
            agent.link.close()


if __name__ == "__main__":
    main()
