"""Minimal reproductions of defects the history checker found on its own (notes in
/work/notes/history-findings.md). Each is xfail(strict=False) while its fix is pending and becomes
an ordinary regression test once it passes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuconsole.config import load_config
from gpuconsole.core import reservations as core
from gpuconsole.core.fleet import Fleet
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.errors import NoCapacityError


@pytest.mark.xfail(strict=False, reason="finding H1: a timed-out `reserve --wait` that cannot withdraw its "
                   "ticket reports exit 3 and leaves the ticket queued; it is granted later to no one")
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
                with pytest.raises(NoCapacityError):
                    await waiting
                faults.write_text("")
                await core.release(holder, held["id"])
                reservations, queue, _ = await core.list_all(holder)
                return [r.id for r in reservations] + [q.id for q in queue]

        left = asyncio.run(scenario())
    assert left == [], f"the failed wait left {left} behind: GPUs held (or queued) for no one"
