"""Job operations of the agent: submit (spec, supervisor, queue), logs, adoption of orphans.

Everything run or signalled here comes from the job's private directory (see private.py), never
from the shared state file alone. The agent holds one JobOps after hello and hands it only what
it uses: the state's reads, the agent's transaction (which a service-mode node forwards), the
caller's uid, what a supervisor needs to know, and a hook run before a submit (that node's link).
"""

from __future__ import annotations

import os
import threading

from . import jobs, private, procs, waiter
from . import state as st
from .jobfiles import (  # noqa: F401
    ENDED_MARK,
    PGID_FILE,
    TAIL_SCAN_MAX,
    _discard,
    _exists,
    _local_program,
    _shell_quote,
    job_dir_of,
    kill_leftovers,
    read_chunk,
    spawn_program,
)
from .store import CorruptState

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any, Callable

    from .txn import Transactions
    from .typedefs import Args, Result, Warnings

class JobOps:
    """Batch jobs of one caller: their private dirs, supervisors, logs, and records in the state."""

    def __init__(self, txn: Transactions, transaction: Callable[[str, Args], tuple[Result, Warnings]],
                 uid: int, supervisor_env: dict[str, str], before_submit: Callable[[], object]) -> None:
        """`txn`: reads and I/O errors of the state dir; `transaction`: how a change is made;
        `supervisor_env`: GPUCONSOLE_* settings a supervisor needs to say the same hello;
        `before_submit`: run before anything is written (a service-mode node starts its link)."""
        self.txn = txn
        self.transaction = transaction
        self.store = txn.store
        self.boot_id = txn.boot_id
        self.uid = uid
        self.supervisor_env = supervisor_env
        self.before_submit = before_submit

    def _job_dir(self, job_id: object) -> str:
        return job_dir_of(self.store.dir, job_id)

    def _replayed(self, req_id: object) -> Result | None:
        """The recorded answer of an already committed request (a client's retry), else None."""
        if not req_id or not self.store.mentions(str(req_id)):
            return None
        try:
            state, _, _ = self.store.load(self.boot_id)
        except (CorruptState, OSError):
            return None
        entry = state["applied"].get(str(req_id))
        return None if entry is None else dict(entry["res"], replayed=True)

    def _ident(self, child: subprocess.Popen[bytes]) -> dict[str, Any]:
        return {"pid": child.pid, "start": procs.start_ticks(child.pid), "boot_id": self.boot_id, "uid": self.uid}

    def submit(self, args: Args) -> tuple[Result, Warnings]:
        """Write the job's spec (its supervisor starts when granted, or now without a waiter),
        then queue the job (one transaction).

        A retried submit (same req_id) answers from the first one and starts nothing; a submit
        that fails leaves no supervisor and no job dir behind.
        """
        argv, cwd = self.command_of(args)
        replay = self._replayed(args.get("req_id"))
        if replay is not None:
            return replay, []
        warnings = self.prepare("job not submitted")
        job_id = st.new_id(None, "j")
        job_dir = self._job_dir(job_id)
        handle = self.waiter_handle(warnings)
        try:
            try:
                child, ident = self.write_job(job_id, argv, cwd, handle)
            except OSError as exc:
                _discard(None, job_dir)
                raise self.txn.io_error("job not submitted", exc) from None
            return self._queue(args, argv, job_id, job_dir, child, ident, warnings)
        finally:
            if handle is not None:
                handle.release()

    @staticmethod
    def command_of(args: Args) -> tuple[list[str], str | None]:
        """The command (a non-empty list of strings) and the directory a submit runs it in."""
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) \
                or not argv[0]:
            raise st.OpError("invalid", "the command must be a non-empty list of strings")
        cwd = args.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not os.path.isdir(cwd)):
            cwd = None  # the client's directory may not exist here; run in the job dir instead
        return argv, cwd

    def prepare(self, what: str) -> list[str]:
        """Before a submit writes anything: the node's link, the state dir and the shared jobs/ dir;
        warnings (jobs/ not sticky), or OpError("io") starting with `what`."""
        self.before_submit()  # on a service-mode node its link's hello makes jobs/ where nothing changed yet
        self.txn.ensure_dir()  # a cooperative node's first change creates the state dir
        try:
            warning = private.ensure_jobs_dir(os.path.join(self.store.dir, "jobs"))
        except OSError as exc:
            raise self.txn.io_error(what, exc) from None
        return [warning] if warning else []

    def write_job(self, job_id: str, argv: list[str], cwd: str | None, handle: waiter.Handle | None,
                  array: dict[str, Any] | None = None) -> tuple[subprocess.Popen[bytes] | None, dict[str, Any]]:
        """The job's private dir and spec naming the waiter of `handle`, or, with none, its supervisor
        started now: (that supervisor or None, the identity the job is queued under). On OSError
        no supervisor was started and the caller removes the job dir."""
        job_dir = self._job_dir(job_id)
        os.mkdir(job_dir, 0o700)
        dir_fd = private.open_dir(job_dir)
        try:
            spec: dict[str, Any] = {"argv": argv, "cwd": cwd}
            if array is not None:
                spec["array"] = array
            if handle is not None:
                spec["waiter"] = handle.ident
            private.write_json(dir_fd, "spec.json", spec)
            if handle is not None:
                return None, handle.ident
            child = self._spawn_supervisor(job_id, job_dir, dir_fd)
        finally:
            os.close(dir_fd)
        return child, self._ident(child)

    @staticmethod
    def queue_args(args: Args, argv: list[str]) -> dict[str, Any]:
        """What the queueing transaction takes from a submit's request (its job or jobs aside)."""
        return {"gpus": args.get("gpus"), "priority": args.get("priority", "normal"), "name": args.get("name"),
                "requeue": args.get("requeue"), "preempt": args.get("preempt"),
                "grace_s": args.get("grace_s", jobs.DEFAULT_GRACE_S), "time_limit_s": args.get("time_limit_s"),
                "command": " ".join(_shell_quote(a) for a in argv), "req_id": args.get("req_id")}

    def waiter_handle(self, warnings: list[str]) -> waiter.Handle | None:
        """The user's waiter, locked for one submit (None: one supervisor per job, as before, with
        the reason in `warnings` when the waiter's dir could not be used)."""
        if not waiter.ENABLED:
            return None
        try:
            return waiter.acquire(self.store.dir, self.uid, self._spawn_waiter, self._ident)
        except OSError as exc:
            warnings.append("no job waiter (%s): one supervisor per job" % (getattr(exc, "strerror", None) or exc))
            return None

    def _spawn_waiter(self, path: str, dir_fd: int) -> subprocess.Popen[bytes]:
        child = spawn_program(self.store.dir, self.supervisor_env, {"GPUCONSOLE_WAITER_DIR": path}, dir_fd,
                              "waiter.log")
        threading.Thread(target=child.wait, daemon=True).start()
        return child

    def _queue(self, args: Args, argv: list[str], job_id: str, job_dir: str, child: subprocess.Popen[bytes] | None,
               ident: dict[str, Any], warnings: list[str]) -> tuple[Result, Warnings]:
        try:
            result, more = self.transaction("submit_job", dict(self.queue_args(args, argv), job_id=job_id,
                                                                supervisor=ident))
        except BaseException:
            _discard(child, job_dir)
            raise
        if result.get("replayed"):
            _discard(child, job_dir)  # a retry that raced its first attempt: the first one stands
        return result, warnings + more

    def adopt_orphans(self) -> Warnings:
        """Requeued jobs of ours whose supervisor died (e.g. a reboot) get a new one now.

        Only a job whose private directory and spec this user wrote is run again; a record that
        merely claims to be ours (the state file is group-writable) is reported and marked lost.
        """
        warnings: list[str] = []
        try:
            state, _, _ = self.store.load(self.boot_id)
        except (CorruptState, OSError):
            return warnings
        for job_id in jobs.orphans(state, self.uid):
            try:
                job_dir = self._job_dir(job_id)
                dir_fd = private.open_dir(job_dir)
                try:
                    if _exists(dir_fd, ENDED_MARK):
                        raise ValueError("job %s already ended" % job_id)
                    private.read_json(dir_fd, "spec.json", label=job_dir + "/spec.json")
                    kill_leftovers(dir_fd, self.uid)
                    child = self._spawn_supervisor(job_id, job_dir, dir_fd)
                finally:
                    os.close(dir_fd)
            except (OSError, ValueError, st.OpError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                warnings.append("job %s not restarted: %s" % (job_id, reason))
                try:
                    self.transaction("abandon_job", {"id": job_id, "reason": reason})
                except st.OpError:
                    pass
                continue
            try:
                self.transaction("adopt_job", {"id": job_id, "supervisor": self._ident(child)})
            except st.OpError as exc:
                child.kill()
                warnings.append("job %s not restarted: %s" % (job_id, exc.message))
        return warnings

    def _spawn_supervisor(self, job_id: str, job_dir: str, dir_fd: int) -> subprocess.Popen[bytes]:
        """Start the detached supervisor; it re-checks the job dir itself before trusting it."""
        child = spawn_program(self.store.dir, self.supervisor_env,
                              {"GPUCONSOLE_JOB_ID": job_id, "GPUCONSOLE_JOB_DIR": job_dir}, dir_fd, "supervisor.log")
        # Reap it when it ends, so a dead supervisor is gone from /proc rather than a zombie.
        threading.Thread(target=child.wait, daemon=True).start()
        return child

    def logs(self, args: Args) -> Result:
        """A chunk of a job's stdout or stderr from `offset`, cut at a whole UTF-8 character; with
        `tail_lines` N, from the start of its last N lines instead (the reply's offset goes on from there)."""
        job_id: Any = args.get("id")
        job_dir = self._job_dir(job_id)
        stream = args.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise st.OpError("invalid", "stream must be stdout or stderr")
        offset = st.integer(args.get("offset") or 0, "offset must be a non-negative integer", low=0)
        tail = args.get("tail_lines")
        if tail is not None:
            tail = st.integer(tail, "tail_lines must be a non-negative integer", low=0)
        state, _, _ = self.txn.read()
        job = state.get("jobs", {}).get(job_id)
        if job is None:
            raise st.OpError("not_found", "no job %s on this node" % args.get("id"))
        if job["uid"] != self.uid:
            raise st.OpError("permission", "job %s belongs to %s" % (job["id"], job["owner"]))
        ended = job["state"] not in jobs.ACTIVE
        try:
            dir_fd = private.open_dir(job_dir)
            try:
                fd = private.open_file(dir_fd, stream, label=job_dir + "/" + stream)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise st.OpError("permission", "logs of job %s: %s" % (job["id"], exc.strerror or exc)) from None
        else:
            try:
                data, offset = read_chunk(fd, offset, tail, ended)
            finally:
                os.close(fd)
        return {"data": data.decode("utf-8", "replace"), "offset": offset + len(data),
                "state": job["state"], "ended": ended}
