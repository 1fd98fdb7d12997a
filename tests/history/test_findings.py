"""Minimal reproductions of defects the history checker found on its own (notes in
/work/notes/history-findings.md). Each is xfail(strict=False) while its fix is pending and an
ordinary regression test once the fix lands (H1: a927b0a; H2, H3, H1b: b8c2b4f)."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpuconsole.config import load_config
from gpuconsole.core import reservations as core
from gpuconsole.core.fleet import Fleet
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.errors import NoCapacityError, UnreachableError
from gpuconsole.ssh.bundle import remote_command
from tests.helpers import cli_json, run_cli, wait_for

LOSSY_AGENT = Path(__file__).with_name("lossy_agent.py")


def lossy(mode: str) -> str:
    """The demo's command for a node whose connection loses replies (see lossy_agent.py)."""
    real = remote_command(sys.executable).removeprefix("exec ")
    return f"exec {shlex.quote(sys.executable)} {shlex.quote(str(LOSSY_AGENT))} {shlex.quote(mode)} {real}"


def test_a_timed_out_wait_leaves_no_grant_behind(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    faults.write_text("")
    with DemoThread(tmp_path / "demo", nodes=1, gpus=1, agent_env={"GPUCONSOLE_FAULTS_FILE": str(faults)}) as demo:
        config = load_config(str(demo.config_path))

        async def scenario() -> list[str]:
            async with Fleet(config) as holder, Fleet(config) as waiter:  # the waiter's connection stays open,
                held = await core.reserve(holder, core.ReserveRequest(gpus=1, ttl_s=60))  # as in the console
                waiting = asyncio.create_task(core.reserve(waiter, core.ReserveRequest(
                    gpus=1, ttl_s=60, wait=True, timeout_s=2.0)))
                for _ in range(100):  # until the ticket is queued
                    if (await core.list_all(holder))[1]:
                        break
                    await asyncio.sleep(0.05)
                faults.write_text("enospc:tmp")  # the disk is full when the wait times out
                # A timeout (3) when the ticket could be withdrawn; when the full disk kept the node
                # from hearing it, exit 5 "may have been granted". Either way nothing may be left.
                with pytest.raises((NoCapacityError, UnreachableError)):
                    await waiting
                faults.write_text("")
                await core.release(holder, held.id)
                reservations, queue, _ = await core.list_all(holder)
                return [r.id for r in reservations] + [q.id for q in queue]

        left = asyncio.run(scenario())
    assert left == [], f"the failed wait left {left} behind: GPUs held (or queued) for no one"


@pytest.mark.parametrize("command", ["release", "renew", "preempt"])
def test_an_id_on_an_unreachable_node_is_not_reported_gone(demo: DemoThread, command: str) -> None:
    granted = cli_json("reserve", "--gpus", "1", "--node", "node-01", "--for", "10m", config=demo.config_path)
    demo.stop_node("node-01")
    try:
        result = run_cli(command, granted["id"], config=demo.config_path)
    finally:
        demo.start_node("node-01")
    assert result.returncode == 5, f"exit {result.returncode}: {result.stderr.strip()}"
    assert "node-01" in result.stderr


def test_a_grant_whose_reply_was_lost_is_not_reported_as_no_capacity(tmp_path: Path) -> None:
    with DemoThread(tmp_path / "demo", nodes=1, gpus=1, command_overrides={"node-01": lossy("reserve")}) as demo:
        result = run_cli("reserve", "--gpus", "1", "--json", config=demo.config_path)
        listed = cli_json("reservations", config=demo.config_path)["reservations"]
    assert listed, "the proxy did not let the grant commit: no reproduction"
    assert result.returncode != 3, (f"exit 3 ({result.stderr.strip()}) although {listed[0]['id']} was granted: "
                                    "the outcome is unknown, not a refusal")


def test_a_wait_granted_while_unreachable_does_not_claim_a_timeout(tmp_path: Path) -> None:
    down = tmp_path / "node-down"
    with DemoThread(tmp_path / "demo", nodes=1, gpus=1,
                    command_overrides={"node-01": lossy(f"granted:{down}")}) as demo:
        held = cli_json("reserve", "--gpus", "1", "--for", "10m", config=demo.config_path)
        waiter = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path), "reserve",
                                   # Long enough for the two CLI calls below on a loaded machine: a
                                   # wait that timed out before the release is no reproduction.
                                   "--gpus", "1", "--wait", "--timeout", "8", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: cli_json("reservations", config=demo.config_path)["queue"], message="queued")
            assert run_cli("release", held["id"], config=demo.config_path).returncode == 0  # granted to the waiter
            _, err = waiter.communicate(timeout=60)
        finally:
            waiter.kill()
        down.unlink()  # the node is back
        listed = cli_json("reservations", config=demo.config_path)["reservations"]
    assert listed, "the waiter's ticket was never granted: no reproduction"
    assert waiter.returncode != 3, (f"exit 3 ({err.strip().splitlines()[-1]}) although {listed[0]['id']} was "
                                    "granted: the outcome is unknown, not a timeout")
