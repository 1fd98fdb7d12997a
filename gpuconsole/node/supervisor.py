"""The per-job supervisor: waits for the grant, runs the command, renews, records the exit.

Started detached (new session) by the owner's agent, so it runs as the owner and outlives the
SSH connection. The job runs in its own process group with CUDA_VISIBLE_DEVICES set; its output
goes to <state_dir>/jobs/<id>/stdout and stderr.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from . import faults, jobs, private, procs
from . import state as st
from .jobfiles import ENDED_MARK, PGID_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any, Callable, Mapping, Tuple

    from .store import StateStore
    from .typedefs import Args, Job, Lease, PreemptNotice, Result, State, Warnings

    Change = Callable[[str, Args], Tuple[Result, Warnings]]

POLL_S = 0.2
RUNS_FILE = "runs.json"  # in the job's private dir: how many times the job has started
RECORD_WAIT_S = 30.0
HEAD_GC_EVERY_S = 2.0
CANCEL_GRACE_S = 10.0


class Supervisor:
    """Drives one job through the node's state with the same transactions as the agent."""

    def __init__(self, store: StateStore, boot_id: str, transaction: Change, job_id: str, job_dir: str) -> None:
        """`store`, `boot_id`: the state's lock-free reads; `transaction`: a hello'd agent's, through
        which this job's changes go (a service-mode node forwards them)."""
        self.store = store
        self.boot_id = boot_id
        self.transaction = transaction
        self.job_id = job_id
        self.job_dir = job_dir
        # Everything below is read and written through this checked fd, never by path again: the
        # path lives in a group-writable directory, the fd's directory is ours alone.
        self.dir_fd = private.open_dir(job_dir)
        os.fchdir(self.dir_fd)
        self.spec = private.read_json(self.dir_fd, "spec.json", label=job_dir + "/spec.json")
        if not isinstance(self.spec.get("argv"), list) or not self.spec["argv"]:
            raise ValueError("%s/spec.json has no command" % job_dir)
        self._last_gc = 0.0
        self.lease_lost = False
        self.timed_out = False  # stopped at its `--time` limit
        self.runs_here = 0  # runs this supervisor started (a requeue after preemption runs again here)

    def _ident(self) -> dict[str, Any]:
        """Ours, for the claim: a job its user's waiter queued is held by us from the claim on."""
        pid = os.getpid()
        return {"pid": pid, "start": procs.start_ticks(pid), "boot_id": self.boot_id, "uid": os.geteuid()}

    def _read(self) -> State:
        """Lock-free read, re-parsed only when state.json changed."""
        state, _, _ = self.store.read_cached(self.boot_id)
        return state

    def _job(self) -> tuple[Job | None, Lease | None]:
        state = self._read()
        return state.get("jobs", {}).get(self.job_id), state["leases"].get(self.job_id)

    def _should_housekeep(self, state: State) -> bool:
        """Only the queue's head (or anyone, when the head's waiter is dead) takes the lock to
        expire leases, so a deep queue does not turn into lock traffic; grants made by other
        operations (release, job end) need no help."""
        now_bt = time.clock_gettime(time.CLOCK_BOOTTIME)
        order = st.queue_order(state, now_bt)
        if not order:
            return False
        if order[0]["id"] != self.job_id:
            return not procs.is_alive(order[0].get("agent"))
        expired = any(lease["exp_bt"] <= now_bt for lease in state["leases"].values())
        # Also now and then: GPUs used without a reservation free up without any operation.
        return expired or time.monotonic() - self._last_gc >= HEAD_GC_EVERY_S

    def wait_for_grant(self) -> Result | None:
        """Wait until granted (None if the job ended). The agent records the job right after
        starting us, so a job not yet in the state is waited for, briefly."""
        started = time.monotonic()
        while True:
            state = self._read()
            job = state.get("jobs", {}).get(self.job_id)
            lease = state["leases"].get(self.job_id)
            if job is None:
                if time.monotonic() - started > RECORD_WAIT_S:
                    return None
            elif job["state"] not in jobs.ACTIVE:
                return None
            elif lease is not None:
                try:
                    result, _ = self.transaction("claim_job", {"id": self.job_id, "token": lease["token"],
                                                               "supervisor": self._ident()})
                    return result
                except st.OpError as exc:
                    if exc.code not in ("not_found", "stale_token"):
                        raise
            elif self._should_housekeep(state):
                self._last_gc = time.monotonic()
                self.transaction("gc", {})
            time.sleep(POLL_S)

    def run(self) -> None:
        """Wait, run, and after a requeueing preemption wait and run again."""
        while True:
            grant = self.wait_for_grant()
            if grant is None:
                return
            exit_code = self._run_once(grant)
            result = self._finish(grant["token"], exit_code)
            if not (result or {}).get("requeued"):
                return

    def _run_once(self, grant: Result) -> int:
        env = dict(os.environ)
        for key in ("GPUCONSOLE_ROLE", "GPUCONSOLE_JOB_DIR", "GPUCONSOLE_STATE_DIR", "GPUCONSOLE_WAITER_DIR",
                    "GPUCONSOLE_SIMULATE_GPUS", "GPUCONSOLE_NODE_NAME", "GPUCONSOLE_SERVICE"):
            env.pop(key, None)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in grant["gpus"])
        env["GPUCONSOLE_JOB_ID"] = self.job_id
        array = self.spec.get("array")
        if isinstance(array, dict):  # our own spec (private dir): a job of `submit --array`
            env["GPUCONSOLE_ARRAY_ID"] = str(array.get("id"))
            env["GPUCONSOLE_ARRAY_INDEX"] = str(array.get("index"))
        env["GPUCONSOLE_PREEMPT_FILE"] = os.path.join(self.job_dir, "preempt.json")
        import subprocess  # only supervisors need it

        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        out = private.open_file(self.dir_fd, "stdout", flags)
        try:
            err = private.open_file(self.dir_fd, "stderr", flags)
        except BaseException:
            os.close(out)
            raise
        try:
            self._mark_run(out, err)
            try:
                # cwd None: our cwd is the checked job dir (fchdir), not a path that could be swapped.
                child = subprocess.Popen(self.spec["argv"], cwd=self.spec.get("cwd") or None, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as exc:
                os.write(err, ("gpuconsole: cannot start %r: %s\n" % (self.spec["argv"][0], exc)).encode())
                return 127
        finally:
            os.close(out)
            os.close(err)
        # The job's process group with its identity, so whoever adopts the job after our death
        # can end leftovers, and never a process group that merely reuses the number.
        try:
            private.write_json(self.dir_fd, PGID_FILE, {
                "pid": child.pid, "start": procs.start_ticks(child.pid), "boot_id": procs.boot_id(),
                "uid": os.geteuid()})
        except OSError:
            pass
        return self._supervise(child, grant["token"])

    def _mark_run(self, out: int, err: int) -> None:
        """Count this run in the job's private dir and, from the second run on, write a line naming
        it into both output streams, so `logs` shows where a requeued job started again."""
        try:
            runs = int(private.read_json(self.dir_fd, RUNS_FILE).get("runs", 0))
        except Exception:  # only a counter: Infinity (OverflowError), deep nesting (RecursionError)…
            runs = 0
        self.runs_here += 1
        try:
            private.write_json(self.dir_fd, RUNS_FILE, {"runs": runs + 1})
        except OSError:
            pass
        if runs < 1:
            return
        why = "requeued after preemption" if self.runs_here > 1 else "requeued after its supervisor was lost"
        line = ("\u2500\u2500 run %d (%s) \u2500\u2500\n" % (runs + 1, why)).encode()
        for fd in (out, err):
            try:
                os.write(fd, line)
            except OSError:
                pass

    def _supervise(self, child: subprocess.Popen[bytes], token: int) -> int:
        """Renew the lease while the job runs; on cancel, preemption or its time limit TERM the group,
        KILL at the deadline (the job's grace later)."""
        renew_every_s = jobs.JOB_LEASE_TTL_S / 3
        last_renew = time.monotonic()
        kill_at: float | None = None
        job, lease = self._job()
        grace_s = float(job.get("grace_s", jobs.DEFAULT_GRACE_S)) if job is not None else jobs.DEFAULT_GRACE_S
        # `--time`: the grant ends by `ends_by_bt` (its limit and grace counted from the grant, which
        # the node's ETAs and backfill rely on): TERM a grace before it, KILL at it.
        ends_by_bt = lease.get("ends_by_bt") if lease is not None else None
        keep_without_lease = faults.active("job_lease_expires")  # negative control only
        while True:
            try:
                return _exit_code(child.wait(timeout=POLL_S))
            except Exception:  # TimeoutExpired: still running
                pass
            now = time.monotonic()
            if not keep_without_lease and not self._holds(token):
                # Our grant is gone, so the node may hand these GPUs to someone else: stop now.
                _signal_group(child.pid, signal.SIGKILL)
                self.lease_lost = True
                return _exit_code(child.wait())
            if now - last_renew >= renew_every_s:
                try:
                    self.transaction("renew", {"id": self.job_id, "token": token,
                                                      "ttl_s": jobs.JOB_LEASE_TTL_S})
                    last_renew = now
                except st.OpError:
                    pass
            if kill_at is None:
                job, _ = self._job()
                notice = job.get("preempt") if job is not None else None
                if job is not None and job.get("cancel_requested"):
                    kill_at = now + CANCEL_GRACE_S
                elif notice:
                    self._write_notice(notice)
                    kill_at = now + float(notice.get("grace_s", jobs.DEFAULT_GRACE_S))
                elif ends_by_bt is not None and time.clock_gettime(time.CLOCK_BOOTTIME) >= ends_by_bt - grace_s:
                    self.timed_out = True
                    kill_at = now + max(0.0, ends_by_bt - time.clock_gettime(time.CLOCK_BOOTTIME))
                if kill_at is not None:
                    _signal_group(child.pid, signal.SIGTERM)
            elif now >= kill_at:
                _signal_group(child.pid, signal.SIGKILL)

    def _holds(self, token: int) -> bool:
        """True while the node still records our grant (same token); a read error is not a loss."""
        try:
            _, lease = self._job()
        except Exception:
            return True
        return lease is not None and lease.get("token") == token

    def _write_notice(self, notice: PreemptNotice) -> None:
        try:
            private.write_json(self.dir_fd, "preempt.json", {
                "deadline": st.iso_utc(notice["deadline_wall"]), "by": notice.get("by"),
                "reason": "preempted by a higher-priority request"})
        except OSError:
            pass

    def _finish(self, token: int, exit_code: int) -> Result | None:
        args: dict[str, Any] = {"id": self.job_id, "token": token, "exit_code": exit_code}
        if self.lease_lost:
            args = {"id": self.job_id, "exit_code": exit_code, "lease_lost": True}
        elif self.timed_out:
            args["timed_out"] = True
        for attempt in range(50):
            try:
                result, _ = self.transaction("finish_job", args)
                if not (result or {}).get("requeued"):
                    self._mark_ended()
                return result
            except st.OpError as exc:
                if exc.code != "busy":
                    return None
                time.sleep(0.1 * (attempt + 1))
        return None

    def _mark_ended(self) -> None:
        """A private marker: this job ran to its end, so no forged record can have it run again."""
        try:
            private.write_json(self.dir_fd, ENDED_MARK, {"ended": True})
        except OSError:
            pass


def _die_with_parent() -> None:
    """In the job's child: be killed if the supervisor dies (SIGKILL included), so a lost job
    does not keep its GPUs busy with no one accounting for them (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def hello_args(environ: Mapping[str, str]) -> Args:
    """The hello a supervisor's agent says: the settings its submitting agent passed (JobOps)."""
    hello: Args = {
        "state_dir": environ["GPUCONSOLE_STATE_DIR"],
        "simulate_gpus": int(environ.get("GPUCONSOLE_SIMULATE_GPUS") or 0),
        "node": environ.get("GPUCONSOLE_NODE_NAME") or None,
    }
    if environ.get("GPUCONSOLE_SERVICE"):
        user, _, path = environ["GPUCONSOLE_SERVICE"].partition(":")
        hello.update(mode="service", service_user=user, service_agent=path)
    return hello


def main(store: StateStore, boot_id: str, transaction: Change) -> None:
    """Entry point when the agent program runs with GPUCONSOLE_ROLE=supervisor, after its agent's
    hello (hello_args): that agent's state and transaction are what the job's changes go through."""
    if not os.environ.get("GPUCONSOLE_JOB_ID") and os.environ.get("GPUCONSOLE_WAITER_DIR"):
        from . import waiter

        waiter.main(store, boot_id, transaction, os.environ["GPUCONSOLE_WAITER_DIR"])
        return
    job_id = os.environ["GPUCONSOLE_JOB_ID"]
    job_dir = os.environ["GPUCONSOLE_JOB_DIR"]
    try:
        supervisor = Supervisor(store, boot_id, transaction, job_id, job_dir)
    except (OSError, ValueError) as exc:
        # Not our files (or unreadable): run nothing; the job is reaped as lost.
        reason = getattr(exc, "strerror", None) or exc
        sys.stderr.write("gpuconsole supervisor: job %s refused: %s\n" % (job_id, reason))
        return
    supervisor.run()
