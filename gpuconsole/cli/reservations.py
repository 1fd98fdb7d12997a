"""`reserve`, `release`, `renew` and `reservations`."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gpuconsole.cli.completion import remember_id
from gpuconsole.cli.keeper import open_fleet
from gpuconsole.cli.options import ReleaseArgs, RenewArgs, ReservationsArgs, ReserveArgs
from gpuconsole.cli.output import console, print_json, progress_json, say, say_wrapped, warn
from gpuconsole.cli.tables import Alt, Cell, Column, fit_table
from gpuconsole.config import Config
from gpuconsole.core import reservations as core
from gpuconsole.durations import format_duration_s, parse_duration_s
from gpuconsole.errors import ExitCode, GpuConsoleError, UsageError
from gpuconsole.format import NA, ago_h, epoch_s, left_h, until_h
from gpuconsole.model import QueuedRequest, Reservation
from gpuconsole.model.answers import Grant, Released, Ticket
from gpuconsole.model.pending import FIELDS as PENDING_FIELDS
from gpuconsole.textsafe import terminal_safe

if TYPE_CHECKING:
    from rich.table import Table

    from gpuconsole.cli.keeper import Members
    from gpuconsole.core.burst import BurstPlan


def _ttl_s(config: Config, args: ReserveArgs | RenewArgs) -> float:
    """`--for DUR`, else the config's reserve_for."""
    if args.duration is None:
        return config.defaults.reserve_for_s
    return parse_duration_s(args.duration, what="--for")


TERMINATED_EXIT = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class _TerminatedError(Exception):
    """SIGTERM during `reserve`: the wait has withdrawn its ticket; exit as a terminated process."""


def run_reserve(members: Members, args: ReserveArgs) -> int:
    config = members.config
    if args.burst and config.aws is None:
        raise UsageError("--burst needs a [cloud.aws] section in the config")
    if args.node:
        members.node(args.node)
    ttl_s = _ttl_s(config, args)
    timeout_s = parse_duration_s(args.timeout, what="--timeout") if args.timeout is not None else None
    if timeout_s is not None and not args.wait:
        raise UsageError("--timeout only makes sense with --wait")
    request = core.ReserveRequest(
        gpus=args.gpus, ttl_s=ttl_s, node=args.node, wait=args.wait, timeout_s=timeout_s,
        priority=args.priority, preemptible=args.preemptible, ttl_default=args.duration is None,
    )
    if args.export and args.json:
        raise UsageError("--export and --json are two different outputs: pick one")
    if args.burst and (args.node or args.wait):
        raise UsageError("--burst picks the node itself and never queues: drop --node and --wait")
    try:
        result = asyncio.run(_reserve(members, request, burst=args.burst, yes=args.yes, json_progress=args.json))
    except _TerminatedError:
        warn("terminated")
        return int(TERMINATED_EXIT)
    remember_id(result.id)  # for `renew`/`release` <TAB> (gpuconsole completion)
    if args.export:
        sys.stderr.write(terminal_safe(_granted_line(result)) + "\n")  # stdout is only for eval
        for line in export_lines(result):
            print(line)
    elif args.json:
        print_json(grant_json(result))
    else:
        say(_granted_line(result))
        say(export_lines(result)[0])  # the same quoted line --export prints: safe to paste
    return int(ExitCode.OK)


def grant_json(result: Grant) -> dict[str, object]:
    """A grant in JSON, the same fields for `reserve` and `renew` as a reservation has in
    `reservations --json` (kind, gpus, cuda_visible_devices, expires_at, token…)."""
    return {
        "id": result.id, "node": result.node, "gpus": list(result.gpus), "owner": result.owner,
        "expires_at": result.expires_at, "cuda_visible_devices": result.cuda_visible_devices,
        "token": result.token, "priority": result.priority, "kind": "reservation", "state": "active",
    }


def _granted_line(result: Grant) -> str:
    return (f"reserved {result.id} on {result.node}: GPUs {result.cuda_visible_devices} "
            f"for {result.owner} {until_h(result.expires_at, time.time())}")


def queued_json(node: str, ticket: Ticket, waited_s: float) -> dict[str, Any]:
    """A `reserve --wait --json` progress line: where the request stands and why it waits."""
    return {"event": "queued", "node": node, "id": ticket.id, "position": ticket.position,
            "waited_s": round(waited_s, 1), **ticket.why}


RELATIVE = frozenset({"ends_in_s", "idle_for_s", "idle_release_in_s"})  # counting down (or up) as time passes


def _steady(value: Any) -> Any:
    """A pending field without the times relative to now, which change on every poll."""
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if k not in RELATIVE} if isinstance(item, dict) else item
                for item in value]
    return value


def export_lines(result: Grant) -> list[str]:
    """`export` lines for a shell's eval. The values come from the node: escaped for the terminal
    and then shell-quoted, so a hostile value can neither run a command nor reach the screen raw."""
    values = {"CUDA_VISIBLE_DEVICES": result.cuda_visible_devices, "GPUCONSOLE_RESERVATION": result.id}
    return [f"export {name}={shlex.quote(terminal_safe(value))}" for name, value in values.items()]


def burst_alternative(config: Config, gpus: int) -> dict[str, Any] | None:
    """The cheapest allowed instance that fits `gpus` now, for a waiting request's reason ("or burst
    now: …"); None without [cloud.aws] or when EC2 cannot say (a hint must never fail the wait)."""
    if config.aws is None:
        return None
    from gpuconsole.cloud.ec2 import Ec2
    from gpuconsole.cloud.launch import quote

    try:
        offer = quote(Ec2(config.aws), config.aws, gpus)
    except Exception:  # any failure of EC2 or of its client costs only the hint
        return None
    return {"type": offer.instance_type, "gpus": offer.gpus, "spot": offer.spot,
            "usd_per_hour": offer.price_per_hour, "describe": offer.describe()}


async def _reserve(members: Members, request: core.ReserveRequest, burst: bool = False,
                   yes: bool = False, json_progress: bool = False) -> Grant:
    last_line: list[str] = []
    last_state: list[object] = []
    asked: list[asyncio.Future[dict[str, Any] | None]] = []

    def alternative() -> dict[str, Any] | None:
        """The burst alternative, asked of EC2 once, in a thread, when the request first waits."""
        if members.config.aws is None or burst:
            return None
        if not asked:
            asked.append(asyncio.get_running_loop().run_in_executor(None, burst_alternative, members.config,
                                                                    request.gpus))
        return asked[0].result() if asked[0].done() else None

    def progress(node: str, ticket: Ticket, elapsed_s: float) -> None:
        offer = alternative()
        if json_progress:  # a JSON line each time where it stands changes (stdout keeps the one answer)
            state = (ticket.position, *(repr(_steady(ticket.why.get(k))) for k in PENDING_FIELDS if k != "eta_in_s"),
                     offer is not None)
            if [state] != last_state:
                document = queued_json(node, ticket, elapsed_s)
                if offer is not None:
                    document["burst"] = {k: v for k, v in offer.items() if k != "describe"}
                progress_json(document)
                last_state[:] = [state]
            return
        line = f"queued on {node}: position {ticket.position}, waited {format_duration_s(elapsed_s)}"
        pending = ticket.pending
        if pending is not None:
            line += f"; {pending.describe(ticket.position, time.time())}"
        if offer is not None:
            line += f"; or burst now: {offer['describe']} (reserve … --burst)"
        line = terminal_safe(line)
        if line != (last_line[0] if last_line else None):
            if sys.stderr.isatty():  # one line, rewritten in place: never wider than the terminal
                sys.stderr.write("\r\033[K" + line[:max(20, shutil.get_terminal_size().columns - 1)])
            else:
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
            last_line[:] = [line]

    def notice(message: str) -> None:
        if last_line and sys.stderr.isatty():
            sys.stderr.write("\n")  # keep the progress line above the notice
            last_line.clear()
        warn(message)

    # SIGTERM cancels like Ctrl-C does, so a wait withdraws its ticket before the process ends.
    task, terminated = asyncio.current_task(), asyncio.Event()

    def on_sigterm() -> None:
        terminated.set()
        if task is not None:
            task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    async with open_fleet(members) as fleet:
        try:
            plan = burst_plan(members.config, yes) if burst else None
            if plan is None:  # core.burst (its cloud and job journal) is loaded only to burst
                result: Grant | None = await core.reserve(fleet, request, on_progress=progress, on_notice=notice)
            else:
                from gpuconsole.core import burst as core_burst

                result = await core_burst.reserve(fleet, request, plan, on_progress=progress, on_notice=notice)
            assert result is not None  # the CLI's confirm raises rather than say no
            return result
        except asyncio.CancelledError:
            if terminated.is_set():
                raise _TerminatedError from None
            raise
        finally:
            if last_line and sys.stderr.isatty():
                sys.stderr.write("\n")


def burst_plan(config: Config, yes: bool = False) -> BurstPlan:
    """The CLI's burst: the quote on stderr, asked about (y/N) on a terminal, `--yes` for scripts (a
    command whose stdin is not a terminal is refused without it, exit 2); launch phases and what the
    instance keeps costing go to stderr too. Loads the cloud side (boto3) only here, when a command bursts."""
    from gpuconsole.cli.cloud import burst_confirm, burst_started, cloud_progress
    from gpuconsole.cloud.burst import ec2_offers
    from gpuconsole.cloud.monitor import CloudMonitor
    from gpuconsole.core.burst import BurstPlan

    return BurstPlan(ec2_offers(CloudMonitor(config)), burst_confirm(yes), cloud_progress, burst_started(config))


def run_release(members: Members, args: ReleaseArgs) -> int:
    if not args.ids and not args.mine:
        raise UsageError("release: give reservation IDs or --mine")
    if args.ids and args.mine:
        raise UsageError("release: give IDs or --mine, not both")
    results, failures = asyncio.run(_release(members, args))
    if args.json:
        errors = [{"id": rid, "error": str(exc), "exit_code": int(exc.exit_code)} for rid, exc in failures]
        released = [r.to_json() for r in results]
        # `results`: one flat list, an entry per id with `ok`, for scripts that loop over one list.
        print_json({"released": released, "errors": errors, "results": [
            *({**r, "ok": True} for r in released), *({**e, "ok": False} for e in errors)]})
    else:
        for result in results:
            gpus = ",".join(str(g) for g in result.gpus) or "-"
            say(f"released {result.id} on {result.node} (GPUs {gpus})")
        if args.mine and not results:
            say("nothing to release")
    for rid, exc in failures:
        warn(f"{rid}: {exc}")
    return int(failures[0][1].exit_code) if failures else int(ExitCode.OK)


async def _release(members: Members, args: ReleaseArgs) -> tuple[list[Released], list[tuple[str, GpuConsoleError]]]:
    results: list[Released] = []
    failures: list[tuple[str, GpuConsoleError]] = []
    async with open_fleet(members) as fleet:
        if args.mine:
            return await core.release_mine(fleet), failures
        for rid in args.ids:
            try:
                results.append(await core.release(fleet, rid, args.token))
            except GpuConsoleError as exc:
                failures.append((rid, exc))
    return results, failures


def run_renew(members: Members, args: RenewArgs) -> int:
    ttl_s = _ttl_s(members.config, args)

    async def go() -> Grant:
        async with open_fleet(members) as fleet:
            return await core.renew(fleet, args.id, ttl_s, args.token)

    result = asyncio.run(go())
    if args.json:
        print_json(grant_json(result))
    else:
        say(f"renewed {result.id} on {result.node} {until_h(result.expires_at, time.time())}")
    return int(ExitCode.OK)


def run_list(members: Members, args: ReservationsArgs) -> int:
    if args.mine and args.user is not None:
        raise UsageError("reservations: give --mine or --user, not both")

    async def go() -> tuple[list[Reservation], list[QueuedRequest], dict[str, str]]:
        async with open_fleet(members) as fleet:
            found, waiting, failed = await core.list_all(fleet)
            if args.mine:  # the owner each node reports for our SSH user: `release --mine`'s rule
                found = [r for r in found if core.is_mine(fleet, r)]
                waiting = [q for q in waiting if core.is_mine(fleet, q)]
            elif args.user is not None:
                found = [r for r in found if r.owner == args.user]
                waiting = [q for q in waiting if q.owner == args.user]
            return found, waiting, failed

    reservations, queue, errors = asyncio.run(go())
    for node, error in errors.items():
        warn(f"{node}: {error}")
    if args.json:
        print_json({
            "reservations": [r.to_json() for r in reservations],
            "queue": [q.to_json() for q in queue],
            "errors": [{"node": n, "error": e} for n, e in errors.items()],
        })
    elif reservations or queue:
        out = console()
        out.print(reservations_table(reservations, queue))
        for r in reservations:  # the owner is told when the node withholds one of its GPUs
            if r.withheld_gpus:
                many = len(r.withheld_gpus) > 1
                say_wrapped(f"{r.id} on {r.node}: GPU{'s' if many else ''} {','.join(map(str, r.withheld_gpus))} "
                            f"showed errors and {'are' if many else 'is'} withheld from new grants: save your work "
                            "and reserve again (`gpuconsole status` says why)", out)
        for q in queue:  # why each waits, a line each under the table
            if q.pending is not None:
                say_wrapped(f"{q.id} on {q.node}: {q.pending.describe(q.position, time.time())}", out)
    else:  # an empty table says less than a line
        say(f"no reservations of {args.user}" if args.user is not None else
            "no reservations of yours" if args.mine else "no reservations")
    if errors and not reservations and not queue and len(errors) == len(members.nodes):
        return int(ExitCode.UNREACHABLE)
    return int(ExitCode.OK)


RESERVATION_COLUMNS = (
    Column("id"), Column("kind"), Column("node"), Column("gpus"), Column("owner"), Column("priority", priority=2),
    Column("state"), Column("created", priority=1), Column("expires", priority=3, narrow_at=2),
)
SHARE_COLUMN = Column("share", priority=0, justify="right")


def _node_now_s(r: Reservation) -> float:
    """Now on the node's clock when it answered (its expiry minus the time it said was left), so a
    skewed local clock cannot misstate a lease; our clock when the node did not say."""
    at_s = epoch_s(r.expires_at)
    return time.time() if at_s is None or r.expires_in_s is None else at_s - r.expires_in_s


def reservations_table(reservations: list[Reservation], queue: list[QueuedRequest],
                       width: int | None = None) -> Table:
    """The `reservations` table: active ones, then the queue; job grants as kind `job` (they last as long
    as the job, not a one-minute lease); times as people read them; fits `width` (default: the
    console's) by dropping priority, created, then expires; every cell shown literally."""
    rows: list[list[Cell]] = []
    for r in reservations:
        now_s = _node_now_s(r)
        expires: Cell = (Alt("with the job", "with job") if r.kind == "job"
                         else Alt(until_h(r.expires_at, now_s), left_h(r.expires_at, now_s)))
        rows.append([r.id, r.kind, r.node, ",".join(map(str, r.gpus)), r.owner, r.priority, r.state,
                     ago_h(r.created_at, now_s), expires])
    rows.extend([q.id, q.kind, q.node, f"{q.gpus_requested} wanted", q.owner, q.priority,
                 f"queued #{q.position}", ago_h(q.created_at, time.time()), NA] for q in queue)
    columns: Sequence[Column] = RESERVATION_COLUMNS
    shares = [q.pending.fair_share if q.pending else None for q in queue]
    if any(share is not None for share in shares):  # the queue's fair-share factors (node/fairshare.py)
        columns = (*RESERVATION_COLUMNS[:6], SHARE_COLUMN, *RESERVATION_COLUMNS[6:])
        blank = [""] * len(reservations)
        rows = [[*row[:6], share, *row[6:]]
                for row, share in zip(rows, blank + [NA if f is None else f"{f:.2f}" for f in shares], strict=True)]
    return fit_table("reservations", columns, rows, console().width if width is None else width)
