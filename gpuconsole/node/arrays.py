"""Job arrays: `submit --array` queues many jobs of one command in one request and one transaction.

Each job of the array is an ordinary job (its own private dir, spec and supervisor, named
NAME[i]); its spec carries the array's id and its index, which the supervisor hands the command
as GPUCONSOLE_ARRAY_ID and GPUCONSOLE_ARRAY_INDEX.
"""

from __future__ import annotations

from . import jobfiles, jobs, waiter
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
    """Write each job's spec (with no waiter, start its supervisor), then queue them all in one
    transaction: JobOps.submit's steps, once per index.

    A retried request (same req_id) answers from the first one and starts nothing; a request
    that fails leaves no supervisor and no job dir behind.
    """
    argv, cwd = ops.command_of(args)
    indices = indices_of(args.get("indices"))
    replay = ops._replayed(args.get("req_id"))
    if replay is not None:
        return replay, []
    warnings = ops.prepare("array not submitted")
    array_id = st.new_id(None, "a")
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
            started.append((None, ops._job_dir(job_id)))
            child, ident = ops.write_job(job_id, argv, cwd, handle, {"id": array_id, "index": index})
            started[-1] = (child, started[-1][1])
            entries.append({"job_id": job_id, "index": index, "supervisor": ident})
    except OSError as exc:
        _discard_all(started)
        raise ops.txn.io_error("array not submitted", exc) from None
    try:
        result, more = ops.transaction("submit_array_jobs", dict(ops.queue_args(args, argv), array_id=array_id,
                                                                 jobs=entries))
    except BaseException:
        _discard_all(started)
        raise
    if result.get("replayed"):
        _discard_all(started)  # a retry that raced its first attempt: the first one stands
    return result, warnings + more


def _discard_all(started: list[tuple[subprocess.Popen[bytes] | None, str]]) -> None:
    for child, job_dir in started:
        jobfiles._discard(child, job_dir)
