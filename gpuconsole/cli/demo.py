"""`gpuconsole demo`: a simulated cluster on loopback, headless (`--serve`) or with the console."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gpuconsole.cli.options import DemoArgs
from gpuconsole.errors import ExitCode, GpuConsoleError, UsageError

if TYPE_CHECKING:
    from gpuconsole.demo.cloud import CloudBridge
    from gpuconsole.demo.nodes import DemoCluster


def run_demo(args: DemoArgs) -> int:
    if args.nodes > 256:
        raise UsageError("--nodes: at most 256 simulated nodes")
    if args.gpus > 64:
        raise UsageError("--gpus: at most 64 simulated GPUs per node")
    if args.write_config and not args.serve:
        raise UsageError("--write-config is for --serve")
    keep = args.dir is not None
    root = Path(args.dir) if args.dir is not None else Path(tempfile.mkdtemp(prefix="gpuconsole-demo-"))
    try:
        if args.serve:
            return asyncio.run(_serve(root, args))
        return _console(root, args)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


async def _serve(root: Path, args: DemoArgs) -> int:
    from gpuconsole.demo.nodes import DemoCluster

    cluster = DemoCluster(root, args.nodes, args.gpus, seed=args.seed)
    bridge = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.start()
        bridge = await _start_cloud(cluster, args)
        target = Path(args.write_config) if args.write_config else cluster.config_path
        if target != cluster.config_path:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cluster.config_text())
        print(f"ready {target}", flush=True)
        await stop.wait()
    finally:
        if bridge is not None:
            await bridge.stop()
        await cluster.stop()
    print("stopped", file=sys.stderr)
    return int(ExitCode.OK)


async def _start_cloud(cluster: DemoCluster, args: DemoArgs) -> CloudBridge | None:
    """The local EC2 (moto) unless --no-cloud; without moto installed the demo runs on-prem only."""
    if args.no_cloud:
        return None
    from gpuconsole.demo.cloud import CloudBridge

    bridge = CloudBridge(cluster)
    try:
        await bridge.start()
    except GpuConsoleError as exc:
        from gpuconsole.cli.output import warn

        warn(f"{exc}; the demo runs without cloud")
        return None
    return bridge


def _console(root: Path, args: DemoArgs) -> int:
    from gpuconsole.cli.console import run_console
    from gpuconsole.config import load_config
    from gpuconsole.core.registry import Registry
    from gpuconsole.demo.cluster import DemoThread

    # The cluster (and moto) take seconds to start: say so instead of a blank terminal.
    cloud = "" if args.no_cloud else " and a local EC2"
    print(f"starting the demo: {args.nodes} nodes × {args.gpus} GPUs{cloud}…", file=sys.stderr, flush=True)
    demo = DemoThread(root, args.nodes, args.gpus, seed=args.seed)
    with demo:
        if not args.no_cloud:
            demo.cloud = demo.call(_start_cloud(demo.cluster, args))
        return run_console(Registry(load_config(str(demo.config_path))), args)
