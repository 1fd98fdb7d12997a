"""One waiter per user per node: queued jobs cost no process of their own.

A submit queues the job with the user's waiter as the ticket's waiter (its identity: pid, start
time, boot id). The waiter blocks on inotify of the state dir (a slow poll where there is none)
and, the moment one of its jobs is granted, starts that job's supervisor, which claims the grant
and names itself the job's supervisor from then on. The waiter exits when no queued job names it.

Its files live in `<state_dir>/jobs/waiter-<uid>/` (private: ours, 0700): `lock`, held by a submit
from choosing the waiter until its job is committed, and by the waiter while it decides to exit
(it exits holding it, after removing `waiter.json`), so no job is ever committed naming a waiter
that is leaving; and `waiter.json`, the live waiter's identity. A job is started only when its own
private spec names this waiter: a record in the group-writable state file proves nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import sys
import time

from . import private, procs
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any, Callable, Tuple

    from .store import StateStore
    from .typedefs import Args, Ident, Result, State, Warnings

    Change = Callable[[str, Args], Tuple[Result, Warnings]]

IDENTITY_FILE = "waiter.json"
LAUNCHED_MARK = "launched"  # in a job's private dir: its supervisor was started by a waiter
HEAD_GC_EVERY_S = 2.0  # as the supervisor's: the queue head's waiter expires leases now and then
IDLE_WAKE_S = 5.0  # with inotify, a safety net only (a dead head's waiter, a missed event)
POLL_S = 0.2  # without inotify
ENABLED = os.environ.get("GPUCONSOLE_JOB_WAITER", "1") != "0"  # 0: one polling supervisor per job (as before)


def same(a: Any, b: Any) -> bool:
    """Two identity records name the same process (pid, start time, boot)."""
    keys = ("pid", "start", "boot_id")
    return isinstance(a, dict) and isinstance(b, dict) and all(a.get(k) == b.get(k) for k in keys)


class Handle:
    """A submit's hold on the user's live waiter: commit the job, then release()."""

    def __init__(self, dir_fd: int, lock_fd: int, ident: dict[str, Any]) -> None:
        self.dir_fd = dir_fd
        self.lock_fd = lock_fd
        self.ident = ident

    def release(self) -> None:
        os.close(self.lock_fd)  # closing drops the flock
        os.close(self.dir_fd)


def acquire(state_dir: str, uid: int, spawn: Callable[[str, int], subprocess.Popen[bytes]],
            ident_of: Callable[[subprocess.Popen[bytes]], dict[str, Any]]) -> Handle:
    """Lock the user's waiter dir and hand back its live waiter, started now if there is none.
    OSError (a NotPrivate dir another user planted, a full disk): the caller falls back."""
    path = os.path.join(state_dir, "jobs", "waiter-%d" % uid)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    dir_fd = private.open_dir(path)
    try:
        lock_fd = private.open_file(dir_fd, "lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                ident: Any = private.read_json(dir_fd, IDENTITY_FILE)  # ours: the dir is private
            except (OSError, ValueError):
                ident = None
            if not (isinstance(ident, dict) and isinstance(ident.get("pid"), int) and ident.get("uid") == uid
                    and procs.is_alive(_as_ident(ident)) and procs.proc_uid(ident["pid"]) == uid):
                ident = ident_of(spawn(path, dir_fd))
                private.write_json(dir_fd, IDENTITY_FILE, ident)
            return Handle(dir_fd, lock_fd, ident)
        except BaseException:
            os.close(lock_fd)
            raise
    except BaseException:
        os.close(dir_fd)
        raise


class Inotify:
    """Wakes on changes in one directory (libc inotify through ctypes); None-safe fallback: poll."""

    IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x8, 0x80, 0x100, 0x200

    def __init__(self, path: str) -> None:
        self.fd = -1
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            mask = self.IN_CLOSE_WRITE | self.IN_MOVED_TO | self.IN_CREATE | self.IN_DELETE
            if libc.inotify_add_watch(fd, path.encode(), mask) < 0:
                os.close(fd)
                return
            self.fd = fd
        except (OSError, AttributeError):  # no libc symbol (not Linux, an old libc): poll
            self.fd = -1

    def wait(self, timeout_s: float) -> None:
        """Until something in the directory changed or `timeout_s` passed."""
        if self.fd < 0:
            time.sleep(min(timeout_s, POLL_S))
            return
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if ready:
            try:
                while os.read(self.fd, 65536):
                    pass
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise


class Waiter:
    """The user's waiter: starts each of its jobs' supervisors when the job is granted."""

    def __init__(self, store: StateStore, boot_id: str, transaction: Change, path: str) -> None:
        self.store = store
        self.boot_id = boot_id
        self.transaction = transaction
        self.uid = os.geteuid()
        self.ident: Ident = {"pid": os.getpid(), "start": procs.start_ticks(os.getpid()), "boot_id": boot_id,
                             "uid": self.uid}
        self.dir_fd = private.open_dir(path)
        self.lock_fd = private.open_file(self.dir_fd, "lock", os.O_RDWR | os.O_CREAT)
        self.verified: dict[str, bool] = {}  # job id → its private spec names us
        self.launched: dict[str, subprocess.Popen[bytes]] = {}
        self.last_gc = 0.0

    def _mine(self, state: State) -> list[str]:
        """Queued jobs that name us in the state and in their own private spec."""
        found = []
        for job in state.get("jobs", {}).values():
            if job["state"] == "queued" and job["uid"] == self.uid and same(job.get("supervisor"), self.ident):
                if job["id"] not in self.verified:
                    self.verified[job["id"]] = self._spec_names_us(job["id"])
                if self.verified[job["id"]]:
                    found.append(job["id"])
        return found

    def _spec_names_us(self, job_id: str) -> bool:
        from .jobfiles import ENDED_MARK, job_dir_of

        try:
            dir_fd = private.open_dir(job_dir_of(self.store.dir, job_id))
        except (OSError, st.OpError):
            return False
        try:
            spec = private.read_json(dir_fd, "spec.json")
            if _exists(dir_fd, ENDED_MARK) or _exists(dir_fd, LAUNCHED_MARK):
                return False
            return isinstance(spec, dict) and same(spec.get("waiter"), self.ident)
        except (OSError, ValueError):
            return False
        finally:
            os.close(dir_fd)

    def _launch(self, job_id: str) -> None:
        from .jobfiles import job_dir_of, spawn_program

        job_dir = job_dir_of(self.store.dir, job_id)
        dir_fd = private.open_dir(job_dir)
        try:
            private.write_json(dir_fd, LAUNCHED_MARK, {"by": self.ident})
            self.launched[job_id] = spawn_program(self.store.dir, {}, {
                "GPUCONSOLE_JOB_ID": job_id, "GPUCONSOLE_JOB_DIR": job_dir}, dir_fd, "supervisor.log")
        finally:
            os.close(dir_fd)

    def _step(self) -> list[str]:
        """One look at the state: start the granted, reap the started, keep the queue moving."""
        # Supervisors that ended are seen before the state is read: one that claimed, ran and
        # finished its job after an earlier read would otherwise look like one that died unclaimed.
        ended = [job_id for job_id, child in self.launched.items() if child.poll() is not None]
        if ended:
            state, _, _ = self.store.load(self.boot_id)  # not the cache: its key may miss a change
        else:
            state, _, _ = self.store.read_cached(self.boot_id)
        mine = self._mine(state)
        for job_id in mine:
            if job_id in state["leases"] and job_id not in self.launched:
                try:
                    self._launch(job_id)
                except OSError as exc:
                    sys.stderr.write("gpuconsole waiter: job %s not started: %s\n" % (job_id, exc))
                    self._lost(job_id)
        for job_id in ended:
            del self.launched[job_id]
            if job_id in mine:  # its supervisor died before it claimed the grant
                self._lost(job_id)
        order = st.queue_order(state, time.clock_gettime(time.CLOCK_BOOTTIME))
        if order and (same(order[0].get("agent"), self.ident) or not procs.is_alive(order[0].get("agent"))):
            now_bt = time.clock_gettime(time.CLOCK_BOOTTIME)
            expired = any(lease["exp_bt"] <= now_bt for lease in state["leases"].values())
            if expired or time.monotonic() - self.last_gc >= HEAD_GC_EVERY_S:
                self.last_gc = time.monotonic()
                try:
                    self.transaction("gc", {})
                except st.OpError:
                    pass
        return mine

    def _lost(self, job_id: str) -> None:
        try:
            self.transaction("finish_job", {"id": job_id, "exit_code": None, "lease_lost": True})
        except st.OpError:
            pass

    def _leave_if_idle(self) -> bool:
        """Under the submit lock: with no queued job naming us, withdraw our identity and leave."""
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        state, _, _ = self.store.read_cached(self.boot_id)
        if self._mine(state):
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            return False
        try:
            if same(private.read_json(self.dir_fd, IDENTITY_FILE), self.ident):
                os.unlink(IDENTITY_FILE, dir_fd=self.dir_fd)
        except (OSError, ValueError):
            pass
        return True  # the process ends with the lock held: the next submit starts a new waiter

    def run(self) -> None:
        watch = Inotify(self.store.dir)
        while True:
            mine = self._step()
            if not mine and self._leave_if_idle():
                return
            state, _, _ = self.store.read_cached(self.boot_id)
            order = st.queue_order(state, time.clock_gettime(time.CLOCK_BOOTTIME))
            head = bool(order) and same(order[0].get("agent"), self.ident)
            watch.wait(HEAD_GC_EVERY_S if head else IDLE_WAKE_S)


def _as_ident(value: Any) -> Ident:
    return value  # type: ignore[no-any-return]  # checked by is_alive itself


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def main(store: StateStore, boot_id: str, transaction: Change, path: str) -> None:
    """Entry point of GPUCONSOLE_ROLE=supervisor with GPUCONSOLE_WAITER_DIR (and no job id)."""
    try:
        waiter = Waiter(store, boot_id, transaction, path)
    except (OSError, ValueError) as exc:
        sys.stderr.write("gpuconsole waiter: refused: %s\n" % (getattr(exc, "strerror", None) or exc))
        return
    waiter.run()
    sys.stderr.flush()
    os._exit(0)  # the lock is released with the process, after our identity is gone

