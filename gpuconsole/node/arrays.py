"""Job arrays: `submit --array` queues many jobs of one command in one request and one transaction.

Each job of the array is an ordinary job (its own private dir, spec and supervisor, named
NAME[i]); its spec carries the array's id and its index, which the supervisor hands the command
as GPUCONSOLE_ARRAY_ID and GPUCONSOLE_ARRAY_INDEX.
"""

from __future__ import annotations

import os

from . import jobfiles, jobs, private, waiter
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any

    from .jobops import JobOps
    from .typedefs import Args, Result, Warnings

MAX_INDEX = 10 ** 6


def indices_of(value: object) -> list[int]:
    """The array's indices as sent: distinct integers 0..MAX_INDEX, at most jobs.MAX_ARRAY, in order."""
    if not isinstance(value, list) or not 0 < len(value) <= jobs.MAX_ARRAY:
        raise st.OpError("invalid", "an array has 1 to %d jobs" % jobs.MAX_ARRAY)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_INDEX for i in value):
        raise st.OpError("invalid", "array indices must be integers from 0 to %d" % MAX_INDEX)
    if len(set(value)) != len(value):
        raise st.OpError("invalid", "array indices must be distinct")
    return sorted(value)


def submit_array(ops: JobOps, args: Args) -> tuple[Result, Warnings]:
    """Write each job's spec and start its supervisor, then queue them all in one transaction.

    A retried request (same req_id) answers from the first one and starts nothing; a request
    that fails leaves no supervisor and no job dir behind.
    """
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
        raise st.OpError("invalid", "the command must be a non-empty list of strings")
    indices = indices_of(args.get("indices"))
    cwd = args.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isdir(cwd)):
        cwd = None  # the client's directory may not exist here; run in the job dir instead
    replay = ops._replayed(args.get("req_id"))
    if replay is not None:
        return replay, []
    ops.before_submit()
    ops.txn.ensure_dir()
    array_id = st.new_id(None, "a")
    warnings: list[str] = []
    try:
        warning = private.ensure_jobs_dir(os.path.join(ops.store.dir, "jobs"))
        if warning:
            warnings.append(warning)
    except OSError as exc:
        raise ops.txn.io_error("array not submitted", exc) from None
    handle = ops.waiter_handle(warnings)
    try:
        return _submit(ops, args, argv, cwd, indices, array_id, handle, warnings)
    finally:
        if handle is not None:
            handle.release()


def _submit(ops: JobOps, args: Args, argv: list[str], cwd: str | None, indices: list[int], array_id: str,
            handle: waiter.Handle | None, warnings: list[str]) -> tuple[Result, Warnings]:
    """Each job's dir and spec (and supervisor, without a waiter), then the one transaction."""
    started: list[tuple[subprocess.Popen[bytes] | None, str]] = []
    entries: list[dict[str, Any]] = []
    try:
        for index in indices:
            job_id = st.new_id(None, "j")
            job_dir = ops._job_dir(job_id)
            os.mkdir(job_dir, 0o700)
            started.append((None, job_dir))
            dir_fd = private.open_dir(job_dir)
            try:
                spec: dict[str, Any] = {"argv": argv, "cwd": cwd, "array": {"id": array_id, "index": index}}
                if handle is not None:
                    spec["waiter"] = handle.ident
                private.write_json(dir_fd, "spec.json", spec)
                child = None if handle is not None else ops._spawn_supervisor(job_id, job_dir, dir_fd)
            finally:
                os.close(dir_fd)
            started[-1] = (child, job_dir)
            ident = handle.ident if handle is not None else ops._ident(child)  # type: ignore[arg-type]
            entries.append({"job_id": job_id, "index": index, "supervisor": ident})
    except OSError as exc:
        _discard_all(started)
        raise ops.txn.io_error("array not submitted", exc) from None
    try:
        result, more = ops.transaction("submit_array_jobs", {
            "array_id": array_id, "jobs": entries, "gpus": args.get("gpus"),
            "priority": args.get("priority", "normal"), "name": args.get("name"), "requeue": args.get("requeue"),
            "preempt": args.get("preempt"), "grace_s": args.get("grace_s", jobs.DEFAULT_GRACE_S),
            "command": " ".join(jobfiles._shell_quote(a) for a in argv), "req_id": args.get("req_id"),
        })
    except BaseException:
        _discard_all(started)
        raise
    if result.get("replayed"):
        _discard_all(started)  # a retry that raced its first attempt: the first one stands
    return result, warnings + more


def _discard_all(started: list[tuple[subprocess.Popen[bytes] | None, str]]) -> None:
    for child, job_dir in started:
        jobfiles._discard(child, job_dir)
