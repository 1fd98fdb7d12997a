"""`demo --seed`: the simulated GPUs' telemetry is reproducible for a given seed (issue 12, item 8)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.ssh.connection import NodeConnection
from tests.helpers import cli_json

# What a seed decides on an idle node: the model, the UUIDs and the first sample's noise.
SEEDED_FIELDS = ("index", "uuid", "name", "mem_total_mib", "util_pct", "temperature_c", "power_w")


@contextmanager
def _served_demo(root: Path, seed: int) -> Iterator[Path]:
    """`gpuconsole demo --serve --seed SEED` in its own process; yields its config; SIGTERM at the end."""
    config = root / "demo.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "demo", "--serve", "--no-cloud", "--nodes", "2", "--gpus", "2",
         "--seed", str(seed), "--dir", str(root / "demo"), "--write-config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"ready {config}", proc.stderr.read() if proc.stderr else ""
        yield config
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _telemetry(config: Path) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Each node's GPUs, as one fresh `status --json` (a new agent per node) reports them."""
    status = cli_json("status", config=config)
    assert all(node["reachable"] for node in status["nodes"]), status
    return [(node["name"], [tuple(gpu[key] for key in SEEDED_FIELDS) for gpu in node["gpus"]])
            for node in status["nodes"]]


def test_same_seed_same_telemetry_other_seed_other_gpus(tmp_path: Path) -> None:
    """Two demos in different directories with one seed report the same GPUs and samples; another
    seed gives other GPUs. (Before, --seed was accepted and ignored: the GPUs followed the demo dir.)"""
    with ExitStack() as stack:
        first = stack.enter_context(_served_demo(tmp_path / "a", seed=7))
        again = stack.enter_context(_served_demo(tmp_path / "b", seed=7))
        other = stack.enter_context(_served_demo(tmp_path / "c", seed=8))
        seven, seven_again, eight = _telemetry(first), _telemetry(again), _telemetry(other)
    assert seven == seven_again
    uuids = {gpu[1] for _, gpus in seven for gpu in gpus}
    assert len(uuids) == 4  # every GPU of the demo has its own UUID
    assert uuids.isdisjoint(gpu[1] for _, gpus in eight for gpu in gpus)


async def test_demo_seed_reaches_every_agent(tmp_path: Path) -> None:
    """The demo hands its seed to each agent it starts (GPUCONSOLE_SIM_SEED); without one, none."""
    for seed, expected in ((7, "7"), (None, None)):
        with DemoThread(tmp_path / f"demo-{seed}", nodes=2, gpus=1, seed=seed) as demo:
            for node in load_config(str(demo.config_path)).nodes:
                conn = await NodeConnection.open(node)
                try:
                    environ = _environ(int(conn.hello["pid"]))
                finally:
                    await conn.close()
                assert environ.get("GPUCONSOLE_SIM_SEED") == expected, (node.name, seed)


def _environ(pid: int) -> dict[str, str]:
    """A live process's initial environment, from /proc."""
    with open(f"/proc/{pid}/environ", "rb") as handle:
        items = handle.read().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in items if item)
    return {key: value for key, _, value in pairs}

