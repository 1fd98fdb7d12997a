"""The Cloud tab against the demo's real cloud: moto EC2 whose instances boot as loopback SSH nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.fleet import Health
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.screens.cloud_dialogs import CloudUpDialog
from gpuconsole.tui.screens.dialogs import ConfirmDialog, ReserveDialog
from gpuconsole.tui.widgets.cloud_table import CloudTable
from gpuconsole.tui.widgets.fleet_tables import NodeTable
from tests.helpers import cli_json, run_cli, until


@pytest.fixture
def cloud_demo(tmp_path: Path) -> Iterator[DemoThread]:
    """One on-prem node with 2 GPUs plus the demo's EC2 (instances answer SSH 0.3 s after running)."""
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        yield demo


def _cloud_rows(app: GpuConsoleApp) -> set[str]:
    table = app.query_one(CloudTable)
    return {str(row.key.value) for row in table.ordered_rows}


def _node_rows(app: GpuConsoleApp) -> set[str]:
    return {str(row.key.value) for row in app.query_one(NodeTable).ordered_rows}


def _summary(app: GpuConsoleApp) -> str:
    return str(app.query_one("#summary").render())


async def _instance_state(demo: DemoThread, instance_id: str) -> str:
    instances = await asyncio.to_thread(demo.cloud.emulator.instances)
    return next(i.state for i in instances if i.id == instance_id)


async def test_cloud_instance_joins_the_fleet_and_leaves_after_cloud_down(cloud_demo: DemoThread) -> None:
    app = GpuConsoleApp(load_config(str(cloud_demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "cloud: 0 up" in _summary(app), "the first discovery round")
        up = await asyncio.to_thread(run_cli, "cloud", "up", "--json", config=cloud_demo.config_path)
        assert up.returncode == 0, up.stderr
        instance_id = json.loads(up.stdout)["instances"][0]["id"]

        await until(pilot, lambda: instance_id in _cloud_rows(app), "the instance in the Cloud tab")
        await until(pilot, lambda: instance_id in _node_rows(app)
                    and app.fleet.nodes[instance_id].health() is Health.UP, "its node up in the node table")
        assert app.fleet.nodes[instance_id].source == "cloud" and app.registry.node(instance_id).source == "cloud"
        assert app.poller is not None and instance_id in app.poller.polled
        await until(pilot, lambda: "ready" in str(app.query_one(CloudTable).get_cell(instance_id, "node"))
                    and "cloud: 1 up" in _summary(app), "the Cloud tab to show the node ready")
        assert str(app.query_one(NodeTable).get_cell(instance_id, "src")) == "cloud"
        assert "$" in str(app.query_one(CloudTable).get_cell(instance_id, "cost"))

        down = await asyncio.to_thread(run_cli, "cloud", "down", instance_id, config=cloud_demo.config_path)
        assert down.returncode == 0, down.stderr
        await until(pilot, lambda: instance_id not in _cloud_rows(app) and instance_id not in _node_rows(app),
                    "the instance to leave the Cloud tab and the node table")
        assert instance_id not in app.fleet.nodes
        assert all(n.name != instance_id for n in app.registry.nodes)
        assert all(n.name != instance_id for n in app.config.nodes)  # the config stays what the file said
        await until(pilot, lambda: app.poller is not None and instance_id not in app.poller.polled,
                    "the poller to stop polling it")
        assert "cloud: 0 up" in _summary(app)


async def test_cloud_up_dialog_then_terminate_only_after_yes(cloud_demo: DemoThread) -> None:
    app = GpuConsoleApp(load_config(str(cloud_demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.cloud_view is not None, "the first discovery round")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, CloudUpDialog) and app.screen.quote is not None,
                    "the quote in the cloud-up dialog")
        assert "Start g6.xlarge (1 GPU, on-demand, $" in str(app.screen.query_one("#quote", Static).render())
        await pilot.click("#ok")
        await until(pilot, lambda: any("agent ready" in n for n in app.notifications()), "agent ready toast",
                    timeout_s=30)
        assert any(": pending after" in n for n in app.notifications())
        instance_id = next(i.id for i in app.cloud_view.instances if i.live)  # type: ignore[union-attr]
        await until(pilot, lambda: instance_id in _cloud_rows(app) and instance_id in _node_rows(app),
                    "the new instance in the Cloud tab and the node table")

        await pilot.press("D")  # not in the Cloud tab: a hint, no dialog
        await until(pilot, lambda: any("select an instance" in n for n in app.notifications()), "the hint")
        assert not isinstance(app.screen, ConfirmDialog)
        app.query_one("#bottom").active = "tab-cloud"  # type: ignore[attr-defined]
        app.query_one(CloudTable).focus()
        await pilot.pause()
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the terminate confirmation")
        question = app.screen.question  # type: ignore[attr-defined]
        assert question.startswith(f"Terminate {instance_id} (g6.xlarge, $") and "so far)?" in question
        await pilot.press("n")
        seen = app.cloud_view
        await until(pilot, lambda: app.cloud_view is not seen, "a discovery round after declining")
        assert await _instance_state(cloud_demo, instance_id) == "running"
        assert instance_id in _node_rows(app)

        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation again")
        await pilot.press("y")
        await until(pilot, lambda: instance_id not in _cloud_rows(app) and instance_id not in _node_rows(app),
                    "the terminated instance to leave both tables")
        assert await _instance_state(cloud_demo, instance_id) in ("shutting-down", "terminated")


async def test_reserve_bursts_to_the_cloud_after_confirmation(cloud_demo: DemoThread) -> None:
    """4 GPUs on a fleet of one 2-GPU node: the quote is shown, and on yes a 4-GPU instance starts and
    the reservation is made there."""
    app = GpuConsoleApp(load_config(str(cloud_demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.fleet.totals()["gpus"] == 2 and app.cloud_view is not None,
                    "the on-prem node up and a discovery round")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ReserveDialog), "the reserve dialog")
        app.screen.query_one("#gpus").value = "4"  # type: ignore[attr-defined]
        app.screen.query_one("#burst").value = True  # type: ignore[attr-defined]
        await pilot.click("#ok")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the burst confirmation")
        question = app.screen.question  # type: ignore[attr-defined]
        assert question.startswith("No node has 4 free GPUs. Start g6e.12xlarge (4 GPUs, on-demand, $"), question
        await pilot.press("y")
        await until(pilot, lambda: any(n.startswith("reserved:") for n in app.notifications()), "reserved toast",
                    timeout_s=30)
        reservations = cli_json("reservations", config=cloud_demo.config_path)["reservations"]
        assert len(reservations) == 1 and reservations[0]["node"].startswith("i-")
        assert reservations[0]["gpus"] == [0, 1, 2, 3]
