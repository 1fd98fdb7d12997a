"""`cloud up | ls | down`: managed EC2 instances with price, uptime and cost so far."""

from __future__ import annotations

import asyncio
import re
import time

from gpuconsole.cli.options import CloudArgs, CloudDownArgs, CloudLsArgs, CloudUpArgs
from gpuconsole.cli.output import add_row, console, print_json, say, warn
from gpuconsole.config import Config
from gpuconsole.durations import format_duration_s, parse_duration_s
from gpuconsole.errors import ExitCode, NotFoundError, UsageError
from gpuconsole.model.cloud import LISTED_STATES, PHASE_LABELS

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


def _up(config: Config, args: CloudUpArgs) -> int:
    from gpuconsole.cloud.ec2 import Ec2
    from gpuconsole.cloud.launch import Launched, launch, quote, wait_ready

    aws = config.aws
    assert aws is not None
    timeout_s = parse_duration_s(args.timeout, what="--timeout")
    ec2 = Ec2(aws)
    chosen = quote(ec2, aws, args.gpus, args.instance_type, args.spot)
    warn(f"launching {args.count} × {chosen.describe()}")
    instances = launch(ec2, aws, chosen.instance_type, spot=chosen.spot, count=args.count)
    launched = [Launched(i) for i in instances]
    if not args.no_wait:
        asyncio.run(wait_ready(ec2, config, launched, timeout_s=timeout_s, progress=cloud_progress))
    if args.json:
        print_json({"instances": [{**item.instance.to_json(), "phases_s": item.phases_s} for item in launched]})
    else:
        for item in launched:
            node = item.node.name if item.node else "(not ready yet)"
            say(f"{item.instance.id} {item.instance.type} node={node}")
    return int(ExitCode.OK)


def _ls(config: Config, args: CloudLsArgs) -> int:
    from gpuconsole.cloud.ec2 import Ec2

    assert config.aws is not None
    states = None if args.all else LISTED_STATES
    instances = Ec2(config.aws).describe(states=states)
    now_s = time.time()
    if args.json:
        print_json({"instances": [i.to_json(now_s) for i in instances]})
        return int(ExitCode.OK)
    from rich.table import Table

    table = Table(title="cloud instances (gpuconsole-managed)", title_justify="left", header_style="bold")
    for column in ("id", "type", "state", "spot", "GPUs", "$/h", "uptime", "cost so far", "owner"):
        table.add_column(column, no_wrap=True)
    for i in instances:
        add_row(
            table, i.id, i.type, i.state, "spot" if i.spot else "on-demand", str(i.gpus if i.gpus is not None else "?"),
            f"{i.price_per_hour:.2f}" if i.price_per_hour is not None else "?",
            format_duration_s(i.uptime_s(now_s)) if i.live else "-",
            f"${i.cost_so_far(now_s):.2f}" if i.cost_so_far(now_s) is not None else "?", i.owner or "-",
        )
    console().print(table)
    burn = sum(i.price_per_hour or 0.0 for i in instances if i.live)
    warn(f"{sum(1 for i in instances if i.live)} live, ${burn:.2f}/h")
    return int(ExitCode.OK)


def _down(config: Config, args: CloudDownArgs) -> int:
    from gpuconsole.cloud.ec2 import Ec2

    assert config.aws is not None
    for instance_id in args.ids:
        if not INSTANCE_ID_RE.match(instance_id):
            raise NotFoundError(f"{instance_id!r} is not an instance id (i-…)")
    ec2 = Ec2(config.aws)
    done = ec2.stop(list(args.ids)) if args.stop else ec2.terminate(list(args.ids))
    verb = "stopping" if args.stop else "terminating"
    if args.json:
        print_json({"instances": [{"id": i.id, "action": "stop" if args.stop else "terminate"} for i in done]})
    else:
        for i in done:
            say(f"{verb} {i.id} ({i.type})")
    return int(ExitCode.OK)
