"""`submit`, `jobs`, `logs` and `cancel`."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from gpuconsole.cli.completion import remember_id
from gpuconsole.cli.jobs_view import follow_exit_code, jobs_table
from gpuconsole.cli.keeper import open_fleet
from gpuconsole.cli.options import CancelArgs, JobsArgs, LogsArgs, PreemptArgs, SubmitArgs
from gpuconsole.cli.output import console, print_json, say, say_wrapped, warn
from gpuconsole.cli.reservations import burst_plan
from gpuconsole.core import burst as core_burst
from gpuconsole.core import jobs as core
from gpuconsole.core import requeue
from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import ExitCode, UsageError
from gpuconsole.model.jobs import Job, Preempted, Submitted, SubmittedArray
from gpuconsole.textsafe import terminal_safe

if TYPE_CHECKING:
    from gpuconsole.cli.keeper import Members


def run_submit(members: Members, args: SubmitArgs) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv or not argv[0]:
        raise UsageError("submit: give the command after `--`, e.g. submit --gpus 1 -- python train.py")
    config = members.config
    if args.burst and config.aws is None:
        raise UsageError("--burst needs a [cloud.aws] section in the config")
    if args.node:
        members.node(args.node)
    indices = core.parse_array(args.array) if args.array is not None else ()
    if indices and args.burst:
        raise UsageError("--array and --burst do not go together (an array is queued on one node)")
    limit_s = parse_duration_s(args.time, what="--time") if args.time is not None else None
    if limit_s is not None and limit_s < 1:
        raise UsageError("--time: at least 1s")
    request = core.SubmitRequest(tuple(argv), args.gpus, args.node, args.priority, args.name, args.requeue,
                                 args.preempt, args.grace, indices, limit_s)
    if indices:
        return _submit_array(members, request, args.json)

    async def go() -> Submitted:
        async with open_fleet(members) as fleet:
            result = await core_burst.submit(fleet, request, burst_plan(config, args.yes) if args.burst else None)
            assert result is not None  # the CLI's confirm raises rather than say no
            return result

    result = asyncio.run(go())
    remember_id(result.id)  # for `logs`/`cancel` <TAB> (gpuconsole completion)
    if args.json:
        print_json(result.to_json())
    else:
        where = f"position {result.position}" if result.position else "starting"
        say(f"submitted {result.id} on {result.node} ({where})")
        say(f"follow it: gpuconsole logs {result.id} -f  (all jobs: gpuconsole jobs)")
    return int(ExitCode.OK)


def _submit_array(members: Members, request: core.SubmitRequest, as_json: bool) -> int:
    async def go() -> SubmittedArray:
        async with open_fleet(members) as fleet:
            return await core.submit_array(fleet, request)

    result = asyncio.run(go())
    remember_id(result.id)
    if as_json:
        print_json(result.to_json())
    else:
        say(f"submitted array {result.id} on {result.node}: {len(result.jobs)} jobs")
        say(f"list them: gpuconsole jobs  (cancel all: gpuconsole cancel {result.id})")
    return int(ExitCode.OK)


def run_jobs(members: Members, args: JobsArgs) -> int:
    async def go() -> tuple[list[Job], dict[str, str]]:
        async with open_fleet(members) as fleet:
            # The live instances come from the discovery that joined the cloud nodes: no second
            # DescribeInstances (None without a cloud or when EC2 could not be asked: nothing is lost).
            for old_id, new in await requeue.requeue_lost(fleet, members.live_instances):
                warn(f"job {old_id} lost its cloud instance: requeued as {new.id} on {new.node}")
            found, errors = await core.list_jobs(fleet)
            requeue.forget_finished(found)
            return core.select_jobs(fleet, found, mine=args.mine, user=args.user, state=args.state), errors

    found, errors = asyncio.run(go())
    for node, error in errors.items():
        warn(f"{node}: {error}")
    if args.json:
        print_json({"jobs": [job.to_json() for job in found],
                    "errors": [{"node": n, "error": e} for n, e in errors.items()]})
    elif found:  # an empty table is not printed
        out = console()
        out.print(jobs_table(found, width=out.width))
        for job in found:  # why each queued job waits, a line each under the table
            if job.pending is not None and job.state == "queued":
                say_wrapped(f"{job.id} on {job.node}: {job.pending.describe(job.position, time.time())}", out)
    elif not errors:
        say("no jobs" if not (args.mine or args.user or args.state) else "no jobs match")
    # As `status` and `reservations`: no node answered is not an empty success.
    return int(ExitCode.UNREACHABLE) if errors and len(errors) == len(members.nodes) else int(ExitCode.OK)


def run_logs(members: Members, args: LogsArgs) -> int:
    """A job's output (`--tail N`: its last N lines; `--follow`: then on until the job ends, exiting
    with the job's exit code). Its owner gets the bytes as written (colours, progress bars: what `tail`
    shows them of their own file); anyone else's output is escaped like every other text from another
    user (newlines and tabs kept)."""
    raw = [False]

    def emit(stream: str, text: str) -> None:
        target = sys.stdout if stream == "stdout" else sys.stderr
        target.write(text if raw[0] else terminal_safe(text, multiline=True))
        target.flush()

    async def go() -> Job:
        async with open_fleet(members) as fleet:
            def found(job: Job) -> None:
                hello = fleet.hello(job.node)
                raw[0] = hello is not None and hello.user == job.owner

            return await core.follow_logs(fleet, args.id, emit, follow=args.follow, on_job=found,
                                          tail_lines=args.tail)

    job = asyncio.run(go())
    return follow_exit_code(job) if args.follow else int(ExitCode.OK)


def run_preempt(members: Members, args: PreemptArgs) -> int:
    async def go() -> Preempted:
        async with open_fleet(members) as fleet:
            return await core.preempt(fleet, args.id, args.grace)

    result = asyncio.run(go())
    what = "revoked" if result.revoked else "preempting"
    say(f"{what} {result.id} on {result.node}")
    return int(ExitCode.OK)


def run_cancel(members: Members, args: CancelArgs) -> int:
    if args.id.startswith("a-"):
        return _cancel_array(members, args)
    async def go() -> Job:
        async with open_fleet(members) as fleet:
            return await core.cancel(fleet, args.id)

    result = asyncio.run(go())
    if args.json:
        print_json(result.to_json())
    elif result.already_ended:
        say(f"{result.id} on {result.node} had already ended ({result.state}); nothing to cancel")
    else:
        say(f"cancelled {result.id} on {result.node} ({result.state})")
    return int(ExitCode.OK)


def _cancel_array(members: Members, args: CancelArgs) -> int:
    """`cancel a-…`: each job of the array; --json: {"id": array, "jobs": [each job as `cancel`]}."""
    async def go() -> list[Job]:
        async with open_fleet(members) as fleet:
            return await core.cancel_array(fleet, args.id)

    results = asyncio.run(go())
    if args.json:
        print_json({"id": args.id, "jobs": [job.to_json() for job in results]})
        return int(ExitCode.OK)
    ended = sum(job.already_ended for job in results)
    note = f" ({ended} had already ended)" if ended else ""
    say(f"cancelled {len(results) - ended} jobs of array {args.id}{note}")
    return int(ExitCode.OK)
