"""Job operations of the agent: submit (spec, supervisor, queue), logs, adoption of orphans.

A mixin for Agent, kept apart so each file stays one concept; it uses the agent's store,
transactions and identity.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from . import jobs, loader, procs
from . import state as st
from .store import CorruptState, make_shared_dir

MAX_LOG_CHUNK = 256 * 1024


class JobOps:
    """Agent methods for batch jobs."""

    def _job_dir(self, job_id):
        if not isinstance(job_id, str) or not job_id.startswith("j-") or not job_id[2:].isalnum():
            raise st.OpError("not_found", "no job %r on this node" % (job_id,))
        return os.path.join(self.store.dir, "jobs", job_id)

    def op_submit(self, args):
        """Write the job's spec, start its detached supervisor, then queue the job (one transaction)."""
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) \
                or not argv[0]:
            raise st.OpError("invalid", "the command must be a non-empty list of strings")
        cwd = args.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not os.path.isdir(cwd)):
            cwd = None  # the client's directory may not exist here; run in the job dir instead
        job_id = st.new_id({"leases": {}, "queue": {}}, "j")
        job_dir = self._job_dir(job_id)
        make_shared_dir(os.path.dirname(job_dir))  # jobs/ is shared by the group; each job dir is private
        os.mkdir(job_dir, 0o700)
        with open(os.path.join(job_dir, "spec.json"), "w") as handle:
            json.dump({"argv": argv, "cwd": cwd or job_dir}, handle)
        child = self._spawn_supervisor(job_id, job_dir)
        ident = {"pid": child.pid, "start": procs.start_ticks(child.pid), "boot_id": self.boot_id}
        try:
            result, _ = self.transaction("submit_job", {
                "job_id": job_id, "gpus": args.get("gpus"), "priority": args.get("priority", "normal"),
                "name": args.get("name"), "requeue": args.get("requeue"), "supervisor": ident,
                "preempt": args.get("preempt"), "grace_s": args.get("grace_s", jobs.DEFAULT_GRACE_S),
                "command": " ".join(_shell_quote(a) for a in argv), "req_id": args.get("req_id"),
            })
        except st.OpError:
            child.kill()
            child.wait()
            raise
        return result

    def _adopt_orphans(self):
        """Requeued jobs of ours whose supervisor died (e.g. a reboot) get a new one now."""
        try:
            state, _, _ = self.store.load(self.boot_id)
        except (CorruptState, OSError):
            return
        for job_id in jobs.orphans(state, self.uid):
            _kill_leftovers(self._job_dir(job_id))
            child = self._spawn_supervisor(job_id, self._job_dir(job_id))
            ident = {"pid": child.pid, "start": procs.start_ticks(child.pid), "boot_id": self.boot_id}
            try:
                self.transaction("adopt_job", {"id": job_id, "supervisor": ident})
            except st.OpError:
                child.kill()

    def _spawn_supervisor(self, job_id, job_dir):
        import subprocess  # only submit needs it

        codes = sys.modules[__package__]
        program = loader.build_program(codes.SOURCES, codes.DIGEST, codes.MODULES) \
            if hasattr(codes, "SOURCES") else _local_program()
        env = dict(os.environ, GPUCONSOLE_ROLE="supervisor", GPUCONSOLE_JOB_ID=job_id,
                   GPUCONSOLE_JOB_DIR=job_dir, GPUCONSOLE_STATE_DIR=self.store.dir,
                   GPUCONSOLE_SIMULATE_GPUS=str(self.hello_args["simulate"]),
                   GPUCONSOLE_NODE_NAME=self.hello_args["node"])
        with open(os.path.join(job_dir, "supervisor.log"), "ab") as log:
            child = subprocess.Popen([sys.executable, "-S", "-c", loader.BOOTSTRAP], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=job_dir,
                                     start_new_session=True, close_fds=True)
        child.stdin.write(loader.preamble(program))
        child.stdin.close()
        # Reap it when it ends, so a dead supervisor is gone from /proc rather than a zombie.
        threading.Thread(target=child.wait, daemon=True).start()
        return child

    def op_logs(self, args):
        """A chunk of a job's stdout or stderr from `offset` (the files are the owner's own)."""
        job_dir = self._job_dir(args.get("id"))
        stream = args.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise st.OpError("invalid", "stream must be stdout or stderr")
        offset = args.get("offset") or 0
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise st.OpError("invalid", "offset must be a non-negative integer")
        state, _, _ = self._read_state()
        job = state.get("jobs", {}).get(args.get("id"))
        if job is None:
            raise st.OpError("not_found", "no job %s on this node" % args.get("id"))
        try:
            with open(os.path.join(job_dir, stream), "rb") as handle:
                handle.seek(offset)
                data = handle.read(MAX_LOG_CHUNK)
        except FileNotFoundError:
            data = b""
        except PermissionError:
            raise st.OpError("permission", "job %s belongs to %s" % (job["id"], job["owner"])) from None
        return {"data": data.decode("utf-8", "replace"), "offset": offset + len(data),
                "state": job["state"], "ended": job["state"] not in jobs.ACTIVE}


def _shell_quote(arg):
    """Display form of one argument (for `jobs`; the job itself is exec'd from the list)."""
    safe = all(c.isalnum() or c in "@%+=:,./-_" for c in arg)
    return arg if arg and safe else "'" + arg.replace("'", "'\\''") + "'"


def _kill_leftovers(job_dir):
    """End what a dead supervisor's job left running (its process group; our own processes),
    so the GPUs are free again before the job runs a second time."""
    import signal

    try:
        with open(os.path.join(job_dir, "pgid")) as handle:
            os.killpg(int(handle.read().strip()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _local_program():
    """The program when running from the installed package (tests), not from a shipped bundle."""
    here = os.path.dirname(os.path.abspath(__file__))
    sources = {}
    for name in loader.MODULES:
        with open(os.path.join(here, name + ".py")) as handle:
            sources[name] = handle.read()
    return loader.build_program(sources, loader.digest(sources), loader.MODULES)
