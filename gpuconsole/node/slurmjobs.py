"""Jobs on a Slurm cluster, answered in the node protocol's shapes (node/slurm.py's other half):
`submit` is `sbatch` with a script built from the argv, each word quoted, given on stdin; `jobs`
lists what `squeue` shows; `logs` reads the job's output from this user's private directory, where
every gpuconsole job writes it (never a path a job record names); `cancel` is `scancel`, so Slurm
decides who may. `preempt` is refused: Slurm decides preemption (its PreemptMode says how)."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import time

from . import private
from . import state as st
from .jobfiles import read_chunk
from .slurm import JOBID_RE, Backend, new_tag
from .slurmread import RESERVE_NAME, last_line, placed, refused, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .typedefs import Args, Result

OUTPUT_DIR = "~/.local/state/gpuconsole/slurm"  # home is shared with the compute nodes on a Slurm site
# Slurm's job states as the node protocol names them (the rest: "failed").
STATES = {"PENDING": "queued", "REQUEUED": "queued", "CONFIGURING": "running", "RUNNING": "running",
          "COMPLETING": "running", "SUSPENDED": "running", "COMPLETED": "succeeded", "CANCELLED": "cancelled",
          "TIMEOUT": "timed_out", "DEADLINE": "timed_out", "PREEMPTED": "preempted", "NODE_FAIL": "lost"}
ACTIVE = ("queued", "running")
NICE = {"low": 1000, "normal": 0}  # a user may only lower their priority; "high" needs the site's QOS


def output_dir() -> str:
    """This user's private directory for job output, made 0700 if missing."""
    path = os.path.expanduser(OUTPUT_DIR)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise st.OpError("io", "%s: %s" % (OUTPUT_DIR, exc.strerror or exc)) from None
    return path


def script(argv: list[str], cwd: str | None) -> str:
    """A batch script that runs exactly `argv` (in `cwd`): every word quoted, nothing expanded."""
    lines = ["#!/bin/sh"]
    if cwd:
        lines.append("cd -- %s || exit 1" % shlex.quote(cwd))
    lines.append("exec " + " ".join(shlex.quote(word) for word in argv))  # argv[0] never starts with '-'

    return "\n".join(lines) + "\n"


def reserve_waiting(backend: Backend, args: Args) -> Result:
    """`reserve --wait`: a detached `salloc --no-shell` that waits in Slurm's queue (bounded by the
    client's `wait_s` through `--immediate`, so Slurm withdraws it when the client gives up) and
    outlives this agent; a granted allocation, or a ticket that `poll` follows by its job id."""
    wait_s = args.get("wait_s")
    immediate = None
    if isinstance(wait_s, (int, float)) and not isinstance(wait_s, bool) and math.isfinite(wait_s):
        immediate = int(min(max(wait_s, 1.0), 365 * 86400.0) + 0.999)
    tag = new_tag()
    argv = backend.salloc(args, immediate, tag)
    note = os.path.join(output_dir(), "salloc-%s.err" % tag)
    try:
        with open(note, "w") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)  # its own session: a dropped connection leaves it
        deadline = time.monotonic() + 15.0
        text = ""
        while time.monotonic() < deadline:
            with open(note) as err:
                text = err.read()
            match = JOBID_RE.search(text)
            if match is not None:
                return poll(backend, {"id": backend.reservation_id(int(match.group(1)))})
            if proc.poll() is not None:  # salloc ended without naming a job: refused
                raise refused("salloc", text, "insufficient")
            time.sleep(0.1)
        # Slurm did not answer in time: withdraw whatever salloc may have queued, then say so.
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        backend.cancel_tagged(tag)
        raise st.OpError("busy", "salloc named no job within 15 s: %s" % last_line(text))
    except FileNotFoundError:
        raise st.OpError("io", "salloc: not found on the login node (is Slurm's client installed?)") from None
    except OSError as exc:
        raise st.OpError("io", "reserve --wait: %s" % (exc.strerror or exc)) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(note)


def poll(backend: Backend, args: Args) -> Result:
    """Where one of the caller's own allocation requests stands: granted (running) or queued with
    Slurm's reason."""
    job = backend.allocation(args.get("id"))
    job_id = job["job_id"]
    if job["state"] not in ("PENDING", "RUNNING", "CONFIGURING") or job["user"] != backend.user:
        raise st.OpError("not_found", "no waiting or granted allocation %s of yours on %s" % (job_id, backend.cluster))
    if job["state"] != "PENDING":
        return backend.grant(job_id, job)
    pending = [j["job_id"] for j in backend.view()[1] if j["state"] == "PENDING"]
    ticket: Result = {"state": "queued", "id": backend.reservation_id(job_id), "owner": job["user"],
                      "position": pending.index(job_id) + 1 if job_id in pending else 1,
                      "gpus_requested": job["gpus"], "slurm_job_id": job_id}
    if job["reason"] and job["reason"] != "None":
        ticket["pending_reason"] = job["reason"]
    return ticket


def submit(backend: Backend, args: Args) -> Result:
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise st.OpError("invalid", "argv must be a non-empty list of strings")
    gpus = st.integer(args.get("gpus") or 0, "gpus must be an integer 0..64", 0, 64)
    priority = args.get("priority") or "normal"
    if not isinstance(priority, str):
        raise st.OpError("invalid", "priority must be low, normal or high")
    if argv[0].startswith("-"):
        raise st.OpError("invalid", "the command must not start with '-'")
    if priority not in NICE:
        raise st.OpError("permission", "priority %s: on a Slurm cluster only the site's QOS raises a job's "
                                       "priority (gpuconsole never does)" % (priority,))
    # The submitter's directory where the cluster has it (a shared file system); otherwise the job
    # starts in the private output dir, never in $HOME, where a relative path could do harm.
    cwd = args.get("cwd")
    cwd = cwd if isinstance(cwd, str) and os.path.isabs(cwd) and os.path.isdir(cwd) else None
    name = args.get("name")
    name = name if isinstance(name, str) and name and name != RESERVE_NAME else os.path.basename(argv[0])
    out = output_dir()
    command = ["sbatch", "--parsable", "--nodes=1", "--job-name=" + name[:200], "--chdir=" + (cwd or out),
               "--output=%s/%%j.out" % out, "--error=%s/%%j.err" % out,
               "--requeue" if args.get("requeue") else "--no-requeue", "--nice=%d" % NICE[priority]]
    if gpus:
        command.append("--gres=gpu:%d" % gpus)
    limit_s = args.get("time_limit_s")
    if isinstance(limit_s, (int, float)) and not isinstance(limit_s, bool) and limit_s > 0:
        command.append("--time=%d" % max(1, int((limit_s + 59) // 60)))
    code, stdout, err = run(command, stdin=script(argv, cwd))
    job_id = stdout.strip().split(";")[0]
    if code != 0 or not job_id.isascii() or not job_id.isdigit():
        raise refused("sbatch", err or stdout)
    return {"id": backend.reservation_id(int(job_id)), "state": "queued", "position": None,
            "owner": backend.user, "slurm_job_id": int(job_id)}


def job_view(backend: Backend, job: Result, position: int | None = None) -> Result:
    """A Slurm job as the node protocol's job record."""
    gpus = placed(job)[1]
    state = STATES.get(job["state"], "failed")
    view: Result = {
        "id": backend.reservation_id(job["job_id"]), "name": job["name"], "gpus": gpus,
        "gpus_requested": job["gpus"], "owner": job["user"], "priority": "normal", "state": state,
        "exit_code": job.get("exit_code"), "command": "",
        "created_at": _iso(job.get("submit_s")), "started_at": _iso(job["start_s"]) if state != "queued" else None,
        "ended_at": _iso(job["end_s"]) if state not in ACTIVE else None, "position": position,
        "time_limit_s": job["time_limit_min"] * 60.0 if job["time_limit_min"] else None,
        "slurm_job_id": job["job_id"], "slurm_state": job["state"],
    }
    if state == "queued" and job["reason"] and job["reason"] != "None":
        view["pending_reason"] = job["reason"]
    return view


def _iso(epoch_s: Any) -> str | None:
    return st.iso_utc(epoch_s) if isinstance(epoch_s, int) and epoch_s > 0 else None


def listing(backend: Backend) -> Result:
    """Every batch job Slurm shows (not the allocations `reserve` made: those are reservations)."""
    jobs = [j for j in backend.view()[1] if j["name"] != RESERVE_NAME]
    queued = [j["job_id"] for j in jobs if j["state"] == "PENDING"]
    return {"jobs": [job_view(backend, j, queued.index(j["job_id"]) + 1 if j["job_id"] in queued else None)
                     for j in jobs]}


def _own_job(backend: Backend, args: Args) -> Result:
    job_id = backend.job_id(args.get("id"))
    job = backend.find(job_id)
    if job is None:
        raise st.OpError("not_found", "no job %s on Slurm cluster %s" % (job_id, backend.cluster))
    return job


def cancel(backend: Backend, args: Args) -> Result:
    """`scancel`: Slurm decides whether this user may (exit 4 with its words if not)."""
    job = _own_job(backend, args)
    code, _out, err = run(["scancel", str(job["job_id"])])
    if code != 0:
        raise refused("scancel", err)
    try:
        after = backend.find(job["job_id"]) or job
    except st.OpError:  # the cancel is committed; its record can wait for the next listing
        after = job
    view = job_view(backend, after)
    if view["state"] in ACTIVE:  # Slurm took the cancel; the job's record catches up a moment later
        view.update(state="cancelled", ended_at=None)
    return view


def logs(backend: Backend, args: Args) -> Result:
    """A chunk of one's own job's stdout or stderr from `offset` (or its last `tail_lines` lines).
    A job Slurm no longer lists (past MinJobAge) is read from its file all the same: only the
    caller's own jobs write into the caller's private dir."""
    job_id = backend.job_id(args.get("id"))
    found = backend.find(job_id)
    if found is not None and found["user"] != backend.user:
        raise st.OpError("permission", "job %s belongs to %s" % (backend.reservation_id(job_id), found["user"]))
    job = found or {"job_id": job_id, "state": "ENDED"}
    stream = args.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise st.OpError("invalid", "stream must be stdout or stderr")
    offset = st.integer(args.get("offset") or 0, "offset must be a non-negative integer", low=0)
    tail = args.get("tail_lines")
    state = STATES.get(job["state"], "failed") if found is not None else "ended"
    ended = state not in ACTIVE
    name = "%d.%s" % (job["job_id"], "out" if stream == "stdout" else "err")
    try:
        dir_fd = private.open_dir(output_dir())
        try:
            fd = private.open_file(dir_fd, name, label=name, shared_mode=True)  # slurmstepd's umask
        finally:
            os.close(dir_fd)
    except FileNotFoundError:
        if found is None:
            raise st.OpError("not_found", "no job %s on Slurm cluster %s" % (job_id, backend.cluster)) from None
        return {"data": "", "offset": offset, "state": state, "ended": ended}
    except OSError as exc:
        raise st.OpError("permission", "logs of job %s: %s" % (job["job_id"], exc.strerror or exc)) from None
    if tail is not None:
        tail = st.integer(tail, "tail_lines must be a non-negative integer", low=0)
    try:
        data, offset = read_chunk(fd, offset, tail, ended)
    finally:
        os.close(fd)
    return {"data": data.decode("utf-8", "replace"), "offset": offset + len(data), "state": state, "ended": ended}


def shell_argv(backend: Backend, reservation: str, argv: list[str] | None, tty: bool) -> tuple[list[str], list[int]]:
    """`gpuconsole shell` in one of the caller's own running allocations: `srun --jobid … --overlap`
    runs the login shell (or the argv) as a step of it on its node, where Slurm sets the GPUs; with
    the GPUs Slurm gave it."""
    job = _own_running(backend, reservation)
    if argv is not None and argv[0].startswith("-"):
        raise st.OpError("invalid", "the command must not start with '-'")
    if argv is None:
        import pwd

        argv = [pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh", "-l"]
    step = ["srun", "--jobid=%d" % job["job_id"], "--overlap", "--nodes=1", "--ntasks=1"] + (["--pty"] if tty else [])
    return step + argv, placed(job)[1]


def _own_running(backend: Backend, reservation: Any) -> Result:
    """The caller's own running job `reservation` (shell and renew act on nothing else)."""
    job_id = backend.job_id(reservation)
    job = backend.find(job_id)
    if job is None or job["state"] not in ("RUNNING", "CONFIGURING"):
        raise st.OpError("not_found", "no running allocation %s on Slurm cluster %s" % (
            backend.reservation_id(job_id), backend.cluster))
    if job["user"] != backend.user:
        raise st.OpError("permission", "allocation %s belongs to %s; only your own" % (
            backend.reservation_id(job_id), job["user"]))
    return job


def renewed(backend: Backend, args: Args) -> Result:
    """`renew`: Slurm sets an allocation's time limit and users cannot raise it; the grant as it
    stands, its true end (the shell's renew loop then simply keeps it)."""
    job = _own_running(backend, args.get("id"))
    grant = backend.grant(job["job_id"], job)  # the record just read: no second squeue
    grant.pop("state", None)
    return dict(grant, extended=False)


def doctor(backend: Backend) -> Result:
    """`doctor` on a login node: Slurm answers and how it is read, GPUs it schedules, where job output goes."""
    rows: list[list[Any]] = []
    code, out, err = run(["sinfo", "--version"])
    rows.append(["slurm", code == 0, last_line(out) if code == 0 else "sinfo: %s" % last_line(err),
                 None if code == 0 else "load Slurm's client on the login node (module load slurm), or fix "
                                        "SLURM_CONF for non-interactive SSH sessions"])
    if code == 0:
        nodes, _jobs, source = backend.view()
        rows.append(["slurm_json", True, "read from sinfo/squeue --json" if source == "json" else
                     "read from text output (no --json before Slurm 21.08): GPU indices per job unknown", None])
        gpus = sum(n["gpus"] for n in nodes)
        rows.append(["gres_gpu", gpus > 0, "%d GPUs on %d nodes" % (gpus, len(nodes)),
                     None if gpus else "no node has a gpu GRES (GresTypes=gpu and Gres=gpu:N in slurm.conf)"])
    try:
        os.close(private.open_dir(output_dir()))
        rows.append(["job_output", True, OUTPUT_DIR, None])
    except OSError as exc:
        rows.append(["job_output", False, "%s: %s" % (OUTPUT_DIR, exc.strerror or exc),
                     "mkdir -p %s && chmod 700 %s" % (OUTPUT_DIR, OUTPUT_DIR)])
    return {"checks": [{"check": c, "ok": ok, "detail": detail, "fix": fix} for c, ok, detail, fix in rows]}


def preempt_refusal(backend: Backend) -> st.OpError:
    """Slurm decides preemption: say how this site has it set."""
    code, out, _err = run(["scontrol", "show", "config"])
    mode = "unknown"
    for line in out.splitlines() if code == 0 else ():
        key, _, value = line.partition("=")
        if key.strip() == "PreemptMode":
            mode = value.strip() or mode
    return st.OpError("permission", "Slurm decides preemption on cluster %s (PreemptMode=%s); gpuconsole never "
                                    "preempts there: ask with a preemptible QOS or an admin" % (backend.cluster,
                                                                                              last_line(mode)))


def handle(backend: Backend, op: str, args: Args) -> Result:
    """One operation of the node protocol on a Slurm login node."""
    if op == "snapshot":
        return backend.snapshot()
    if op == "reserve":
        return reserve_waiting(backend, args) if args.get("wait") else backend.reserve(args)
    if op in ("poll", "reattach"):  # the request waits in Slurm, not in this agent: nothing to take back
        return poll(backend, args)
    if op == "renew":
        return renewed(backend, args)
    if op == "release":
        return backend.release(args)
    if op == "reservations":
        return backend.listing()
    if op == "capacity":
        return backend.capacity()
    if op == "submit":
        return submit(backend, args)
    if op == "jobs":
        return listing(backend)
    if op == "cancel":
        return cancel(backend, args)
    if op == "logs":
        return logs(backend, args)
    if op == "preempt":
        raise preempt_refusal(backend)
    if op == "doctor":
        return doctor(backend)
    if op == "ping":
        return {"pong": True}
    raise st.OpError("invalid", "%r is not available on a Slurm cluster" % (op,))
