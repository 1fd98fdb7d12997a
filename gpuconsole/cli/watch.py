"""`gpuconsole watch`: validate flags over `[watch]`, build the sinks, run until SIGTERM (or `--once`)."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gpuconsole.cli.options import WatchArgs
from gpuconsole.cli.output import warn
from gpuconsole.config import Config
from gpuconsole.core.registry import Registry
from gpuconsole.errors import UsageError
from gpuconsole.model.events import PollEvent
from gpuconsole.watch.runner import WatchRunner, WatchSettings
from gpuconsole.watch.sinks import Dispatcher, ExecSink, NotifySink, Sink, StdoutSink
from gpuconsole.watch.statefile import default_state_path

if TYPE_CHECKING:
    from gpuconsole.exporter.webconfig import WebConfig

Metrics = tuple[tuple[str, int], "WebConfig | None"]  # --metrics HOST:PORT and its web config

DEFAULT_INTERVAL_S = 5.0
DEFAULT_GRACE_MINUTES = 15.0
MAX_MINUTES = 100000.0


def _minutes(value: float | None, default: float, flag: str, *, allow_zero: bool = False) -> float:
    """Minutes from a flag (or the config default), checked: finite, positive (or zero), bounded."""
    minutes = default if value is None else value
    low_ok = minutes >= 0 if allow_zero else minutes > 0
    if not math.isfinite(minutes) or not low_ok or minutes > MAX_MINUTES:
        bound = "at least 0" if allow_zero else "greater than 0"
        raise UsageError(f"{flag}: {minutes:g} must be {bound} and at most {MAX_MINUTES:g}")
    return minutes


def settings_from(config: Config, args: WatchArgs) -> WatchSettings:
    """CLI flags override `[watch]`; every value is validated here (exit 2, one line)."""
    base = config.watch
    idle_min = _minutes(args.idle_minutes, base.idle_minutes, "--idle-minutes")
    cooldown_min = _minutes(args.cooldown_minutes, base.cooldown_minutes, "--cooldown-minutes", allow_zero=True)
    util = base.util_below_pct if args.util_below is None else args.util_below
    if not math.isfinite(util) or not 0 < util <= 100:
        raise UsageError(f"--util-below: {util:g} must be a percentage in (0, 100]")
    interval_s = DEFAULT_INTERVAL_S if args.interval is None else args.interval
    if not math.isfinite(interval_s) or not 0.05 <= interval_s <= 3600:
        raise UsageError(f"--interval: {interval_s:g} must be between 0.05 and 3600 seconds")
    if args.grace_minutes is not None and not args.release_idle:
        raise UsageError("--grace-minutes only makes sense with --release-idle")
    grace_min = _minutes(args.grace_minutes, DEFAULT_GRACE_MINUTES, "--grace-minutes")
    if args.stop_idle_cloud and config.aws is None:
        raise UsageError("--stop-idle-cloud needs a [cloud.aws] section in the config")
    if args.state_file is not None and not args.state_file.strip():
        raise UsageError("--state-file: empty path")
    state_path = Path(args.state_file).expanduser() if args.state_file else default_state_path(config.path)
    return WatchSettings(
        idle_s=idle_min * 60.0, util_below_pct=util, cooldown_s=cooldown_min * 60.0, interval_s=interval_s,
        state_path=state_path, release_idle=bool(args.release_idle), grace_s=grace_min * 60.0,
        once=bool(args.once),
    )


def build_sinks(config: Config, args: WatchArgs) -> list[Sink]:
    """`--exec` (else `[watch] exec`) and every `--notify` URL (else `[watch] notify`)."""
    sinks: list[Sink] = []
    command = args.exec_cmd if args.exec_cmd is not None else config.watch.exec
    if command is not None:
        if not command.strip():
            raise UsageError("--exec: empty command")
        sinks.append(ExecSink(command))
    urls = list(args.notify) if args.notify else list(config.watch.notify)
    sinks.extend(NotifySink(url, index) for index, url in enumerate(urls, start=1))
    return sinks


def attach_cloud(config: Config, runner: WatchRunner, stop_idle_cloud: bool) -> None:
    """With `[cloud.aws]`: managed instances join and leave the watched fleet as discovery sees them,
    idle ones raise `idle_cloud`, and with --stop-idle-cloud they are stopped (or terminated)."""
    if config.aws is None:
        return
    from gpuconsole.cloud.watching import CloudWatch

    cloud = CloudWatch(config, detector=runner.detector, stop_idle=stop_idle_cloud,
                       log=warn, on_nodes_changed=runner.nodes_changed, nodes=runner.registry.nodes)
    runner.extra_conditions = cloud.conditions
    runner.on_idle_cloud = cloud.on_idle_cloud


def run_watch(registry: Registry, args: WatchArgs) -> int:
    settings = settings_from(registry.config, args)
    sinks = build_sinks(registry.config, args)
    metrics = None
    if args.web_config is not None and args.metrics is None:
        raise UsageError("--web-config secures --metrics: give --metrics HOST:PORT too")
    if args.metrics is not None:
        if settings.once:
            raise UsageError("--metrics serves while the watcher runs: drop --once")
        from gpuconsole.cli.exporter import parse_listen, web_config_for

        metrics = parse_listen(args.metrics), web_config_for(registry.config, args.web_config)
    return asyncio.run(_watch(registry, settings, sinks, bool(args.json), bool(args.stop_idle_cloud), metrics))


def _serve_metrics(registry: Registry, runner: WatchRunner, metrics: Metrics) -> Callable[[], None]:
    """`--metrics`: the exporter's /metrics fed by the watcher's own poll events; its closer."""
    from gpuconsole.exporter.server import MetricsEndpoint

    listen, web = metrics
    try:
        endpoint = MetricsEndpoint(registry, *listen, web)
    except OSError as exc:
        raise UsageError(f"--metrics {listen[0]}:{listen[1]}: {exc.strerror or exc}") from None
    judge = runner.on_event

    def both(event: PollEvent) -> None:
        judge(event)
        endpoint.folder(event)

    runner.on_event = both  # type: ignore[method-assign]
    warn(f"watch: serving {endpoint.start()}")
    return endpoint.close


async def _watch(registry: Registry, settings: WatchSettings, sinks: list[Sink], as_json: bool,
                 stop_idle_cloud: bool, metrics: Metrics | None = None) -> int:
    runner = WatchRunner(registry, settings, Dispatcher(StdoutSink(as_json, time.time), sinks, warn), warn)
    attach_cloud(registry.config, runner, stop_idle_cloud)
    runner.load_state()  # takes the state file's lock first: a second watcher stops here (exit 2)
    if settings.once:
        return await runner.run_once()  # default signal handling: a cron run can simply be killed
    close_metrics = _serve_metrics(registry, runner, metrics) if metrics is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    idle = f"{settings.idle_s / 60:g}m"
    count = len(registry.nodes)
    warn(f"watch: {count} node{'s' if count != 1 else ''}, idle = below "
         f"{settings.util_below_pct:g}% for {idle}, {len(sinks)} sink{'s' if len(sinks) != 1 else ''} "
         f"besides stdout, state in {settings.state_path}")
    try:
        code = await runner.run(stop)
    finally:
        if close_metrics is not None:
            close_metrics()
    sys.stdout.flush()
    return code
