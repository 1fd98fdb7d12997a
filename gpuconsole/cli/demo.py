"""`gpuconsole demo`: a simulated cluster on loopback, headless (`--serve`) or with the console."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from gpuconsole.errors import ExitCode, UsageError


def run_demo(args: Any) -> int:
    if args.nodes > 256:
        raise UsageError("--nodes: at most 256 simulated nodes")
    if args.gpus > 64:
        raise UsageError("--gpus: at most 64 simulated GPUs per node")
    if args.write_config and not args.serve:
        raise UsageError("--write-config is for --serve")
    keep = args.dir is not None
    root = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="gpuconsole-demo-"))
    try:
        if args.serve:
            return asyncio.run(_serve(root, args))
        return _console(root, args)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


async def _serve(root: Path, args: Any) -> int:
    from gpuconsole.demo.cluster import DemoCluster

    cluster = DemoCluster(root, args.nodes, args.gpus)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.start()
        target = Path(args.write_config) if args.write_config else cluster.config_path
        if target != cluster.config_path:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cluster.config_text())
        print(f"ready {target}", flush=True)
        await stop.wait()
    finally:
        await cluster.stop()
    print("stopped", file=sys.stderr)
    return int(ExitCode.OK)


def _console(root: Path, args: Any) -> int:
    from gpuconsole.cli.console import run_console
    from gpuconsole.config import load_config
    from gpuconsole.demo.cluster import DemoThread

    demo = DemoThread(root, args.nodes, args.gpus)
    with demo:
        return run_console(load_config(str(demo.config_path)), args)
