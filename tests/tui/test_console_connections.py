"""The console holds one SSH connection and one agent per node: its actions ask over the connections
the poller streams on (the registry's), and what a node warns about reaches the screen."""

from __future__ import annotations

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.screens.dialogs import ConfirmDialog, ReserveDialog
from gpuconsole.tui.widgets.fleet_tables import GpuTable
from tests.helpers import cli_json, until


def _sessions(demo: DemoThread) -> dict[str, int]:
    """SSH sessions with a running command (an agent) per node, as the demo's servers see them."""
    return {name: len(node.children) for name, node in demo.cluster.nodes.items()}


async def test_console_actions_reuse_the_pollers_connection(demo: DemoThread) -> None:
    """A reserve and a release from the console: one session per node before, during and after (the
    actions used to open a second SSH connection and agent on every node)."""
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    peak: dict[str, int] = {}

    def sampled(predicate: object) -> bool:
        for name, count in _sessions(demo).items():
            peak[name] = max(peak.get(name, 0), count)
        return bool(predicate() if callable(predicate) else predicate)

    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: sampled(app.fleet.totals()["gpus"] == 8), "both nodes streaming")
        assert _sessions(demo) == {"node-01": 1, "node-02": 1}
        await pilot.press("r")
        await until(pilot, lambda: sampled(isinstance(app.screen, ReserveDialog)), "reserve dialog")
        app.screen.query_one("#gpus").value = "2"  # type: ignore[attr-defined]
        await pilot.click("#ok")
        await until(pilot, lambda: sampled(any(n.startswith("reserved") for n in app.notifications())),
                    "the reserved toast", timeout_s=30)
        await until(pilot, lambda: sampled(app.fleet.totals()["reserved"] == 2), "the reservation shown")
        app.query_one(GpuTable).focus()
        await pilot.pause()
        await pilot.press("x")
        await until(pilot, lambda: sampled(isinstance(app.screen, ConfirmDialog)), "confirmation")
        await pilot.press("y")
        await until(pilot, lambda: sampled(any(n.startswith("released") for n in app.notifications())),
                    "the released toast", timeout_s=30)
        assert _sessions(demo) == {"node-01": 1, "node-02": 1}
    assert peak == {"node-01": 1, "node-02": 1}, peak
    assert not cli_json("reservations", config=demo.config_path)["reservations"]



async def test_a_nodes_warning_on_a_reply_is_a_notification(faulty: DemoThread) -> None:
    """A reserve committed on a full disk carries the node's warning (its mirror copy was not written):
    the console shows it as a toast (it used to go to a stderr hidden under the screen, or nowhere)."""
    app = GpuConsoleApp(load_config(str(faulty.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.fleet.totals()["gpus"] == 4, "the node streaming")
        faulty.faults.write_text("enospc:mirror")  # type: ignore[attr-defined]
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ReserveDialog), "reserve dialog")
        await pilot.click("#ok")
        await until(pilot, lambda: any(n.startswith("reserved") for n in app.notifications()),
                    "the reserved toast", timeout_s=30)
        await until(pilot, lambda: any(n.startswith("node warning") and "committed, but" in n
                                       for n in app.notifications()), "the node's warning as a toast")
        faulty.faults.write_text("")  # type: ignore[attr-defined]
