"""`cloud up | ls | down`: managed EC2 instances with price, uptime and cost so far; the CLI's burst
consent and its reminder of what a started instance keeps costing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gpuconsole.cli.confirm import ask, ask_async, can_ask
from gpuconsole.cli.options import CloudArgs, CloudDownArgs, CloudLsArgs, CloudUpArgs
from gpuconsole.cli.output import console, print_json, say, warn
from gpuconsole.config import AwsConfig, Config
from gpuconsole.durations import format_duration_s, parse_duration_s
from gpuconsole.errors import ExitCode, NoCapacityError, NotFoundError, UsageError
from gpuconsole.model.cloud import LISTED_STATES, LIVE_STATES, PHASE_LABELS, Instance

if TYPE_CHECKING:
    from gpuconsole.cli.tables import Column
    from gpuconsole.cloud.usage import Usage
    from gpuconsole.core.burst import Offer

INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")


def run_cloud(config: Config, opts: CloudArgs) -> int:
    if config.aws is None:
        raise UsageError("cloud: no [cloud.aws] section in the config")
    if isinstance(opts, CloudUpArgs):
        return _up(config, opts)
    if isinstance(opts, CloudLsArgs):
        return _ls(config, opts)
    return _down(config, opts)


def cloud_progress(instance_id: str, phase: str, elapsed_s: float) -> None:
    """One stderr line per launch phase (`cloud up` and bursts)."""
    warn(f"{instance_id}: {PHASE_LABELS.get(phase, phase)} after {elapsed_s:.1f}s")


def keeps_costing(aws: AwsConfig, instance_id: str, price_per_hour: float | None) -> str:
    """The reminder once an instance runs: what it costs until someone or the idle stop ends it."""
    price = f"${price_per_hour:.2f}/h" if price_per_hour is not None else "its hourly price (not in the price table)"
    action = "terminates" if aws.idle_action == "terminate" else "stops"
    return (f"{instance_id} keeps costing {price} until `gpuconsole cloud down {instance_id}` or the idle stop "
            f"(`gpuconsole watch --stop-idle-cloud` {action} it after [cloud.aws] idle_stop_minutes = "
            f"{aws.idle_stop_minutes:g} idle minutes)")


def burst_confirm(yes: bool) -> Callable[[int, Offer], Awaitable[bool]]:
    """The CLI's yes to a burst: `--yes`, else a (y/N) question on the terminal. Without a terminal
    and without `--yes` the command is refused here, before anything is asked of any node (exit 2):
    a script never starts a paid instance it did not ask for. A no is exit 3 (no capacity)."""
    if not yes and not can_ask():
        raise UsageError("--burst may start a paid cloud instance: it asks first on a terminal; "
                         "in a script, add --yes to allow it")

    async def confirm(gpus: int, offer: Offer) -> bool:
        if yes:
            warn(f"no node can take {gpus} GPU(s) now: bursting to {offer.describe()}")
            return True
        if not await ask_async(f"no node can take {gpus} GPU(s) now: start {offer.describe()}?"):
            raise NoCapacityError(f"no node can take {gpus} GPU(s) now; no instance started")
        return True

    return confirm


def burst_started(config: Config) -> Callable[[str, Offer], None]:
    """Once a burst's instance answers, say on stderr what it keeps costing and how it ends."""
    aws = config.aws
    assert aws is not None

    def started(node: str, offer: Offer) -> None:
        warn(keeps_costing(aws, node, offer.price_per_hour))

    return started


def _up(config: Config, args: CloudUpArgs) -> int:
    from gpuconsole.cloud.ec2 import Ec2
    from gpuconsole.cloud.launch import Launched, launch, quote, wait_ready

    aws = config.aws
    assert aws is not None
    timeout_s = parse_duration_s(args.timeout, what="--timeout")
    ec2 = Ec2(aws)
    chosen = quote(ec2, aws, args.gpus, args.instance_type, args.spot)
    # Said only once EC2 has started all K (launch starts K or none): never "launching K" before a refusal.
    instances = launch(ec2, aws, chosen.instance_type, spot=chosen.spot, count=args.count)
    warn(f"launched {len(instances)} × {chosen.describe()}: {', '.join(i.id for i in instances)}")
    launched = [Launched(i) for i in instances]
    if not args.no_wait:
        asyncio.run(wait_ready(ec2, config, launched, timeout_s=timeout_s, progress=cloud_progress))
    for item in launched:
        warn(keeps_costing(aws, item.instance.id, chosen.price_per_hour))
    if args.json:
        print_json({"instances": [{**item.instance.to_json(), "phases_s": item.phases_s} for item in launched]})
    else:
        for item in launched:
            node = item.node.name if item.node else "(not ready yet)"
            say(f"{item.instance.id} {item.instance.type} node={node}")
    return int(ExitCode.OK)


def _ls_columns() -> tuple[Column, ...]:
    """`cloud ls` columns: at a narrow width the lesser ones go (spot first), never an id or a state."""
    from gpuconsole.cli.tables import Column

    return (Column("id"), Column("type", 6), Column("state"), Column("spot", 1), Column("GPUs", 2),
            Column("$/h", 4, justify="right"), Column("uptime", 3), Column("cost so far", 7, justify="right"),
            Column("owner", 5))


def _ls(config: Config, args: CloudLsArgs) -> int:
    from gpuconsole.cloud.ec2 import Ec2

    assert config.aws is not None
    states = None if args.all else LISTED_STATES
    instances = Ec2(config.aws).describe(states=states)
    now_s = time.time()
    if args.json:
        print_json({"instances": [i.to_json(now_s) for i in instances]})
        return int(ExitCode.OK)
    from gpuconsole.cli.tables import fit_table

    rows = [_ls_row(i, now_s) for i in instances]
    if rows:  # an empty table is not printed: the line below says "0 live"
        out = console()
        out.print(fit_table("cloud instances (gpuconsole-managed)", _ls_columns(), rows, out.width))
    burn = sum(i.price_per_hour or 0.0 for i in instances if i.live)
    warn(f"{sum(1 for i in instances if i.live)} live, ${burn:.2f}/h")
    return int(ExitCode.OK)


def _ls_row(i: Instance, now_s: float) -> tuple[str, ...]:
    """One instance's cells in `_ls_columns` order (an ended one keeps its uptime and final cost)."""
    cost = i.cost_so_far(now_s)
    uptime_s = i.uptime_s(now_s)
    return (
        i.id, i.type, i.state, "spot" if i.spot else "on-demand", str(i.gpus if i.gpus is not None else "?"),
        f"{i.price_per_hour:.2f}" if i.price_per_hour is not None else "?",
        format_duration_s(uptime_s) if i.live or uptime_s > 0 else "-",
        f"${cost:.2f}" if cost is not None else "?", i.owner or "-",
    )


def _down(config: Config, args: CloudDownArgs) -> int:
    from gpuconsole.cloud.ec2 import Ec2
    from gpuconsole.cloud.launch import launcher
    from gpuconsole.cloud.usage import usage

    assert config.aws is not None
    if args.ids and (args.mine or args.idle):
        raise UsageError("cloud down: give instance IDs, or --mine / --idle, not both")
    if not args.ids and not (args.mine or args.idle):
        raise UsageError("cloud down: give instance IDs, --mine or --idle")
    for instance_id in args.ids:
        if not INSTANCE_ID_RE.match(instance_id):
            raise NotFoundError(f"{instance_id!r} is not an instance id (i-…)")
    ec2 = Ec2(config.aws)
    if args.ids:
        targets = ec2.managed(list(args.ids))  # refuses unknown and unmanaged ones before anything
    else:
        targets = [i for i in ec2.describe(states=LIVE_STATES) if i.managed]
        if args.mine:
            targets = [i for i in targets if i.owner == launcher()]
    # --force needs no look at the instances' agents (a dead one would only cost its connect timeout).
    uses = asyncio.run(usage(config, targets)) if targets and (args.idle or not args.force) else {}
    if args.idle:
        targets = [i for i in targets if i.state == "running" and uses[i.id].idle]
    busy = [uses[i.id] for i in targets if i.id in uses and not uses[i.id].idle]
    if not targets or (busy and not args.force and not _consent(busy, args.stop)):
        # Nothing to do, or a person said no: nothing changed (the JSON document lists nothing).
        if not args.json:
            say("nothing done" if targets else f"no instance to {'stop' if args.stop else 'terminate'}")
        done: list[Instance] = []
    else:
        ids = [i.id for i in targets]
        done = ec2.stop(ids) if args.stop else ec2.terminate(ids)
    verb = "stopping" if args.stop else "terminating"
    if args.json:
        print_json({"instances": [{"id": i.id, "action": "stop" if args.stop else "terminate"} for i in done]})
    else:
        for i in done:
            say(f"{verb} {i.id} ({i.type})")
    return int(ExitCode.OK)


def _consent(busy: list[Usage], stop: bool) -> bool:
    """Name what a down would end, then ask on a terminal; without one, refuse (exit 2): a script
    that says `cloud down` never ends someone's reservation or job unless it says --force."""
    for use in busy:
        if use.error is not None:
            warn(f"{use.instance_id}: cannot tell whether it is in use ({use.error})")
        else:
            warn(f"{use.instance_id} is in use: {', '.join(use.uses) or use.busy}")
    verb = "stop" if stop else "terminate"
    if not can_ask():
        raise UsageError(f"cloud down: not touching instances that may be in use; add --force to {verb} "
                         "them anyway (their reservations and jobs end)")
    return ask(f"{verb} anyway? Their reservations and jobs end")
