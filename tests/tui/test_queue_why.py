"""The console shows why the queued request under the cursor waits and until when (its node's
explanation, node/pending.py), in a line under the reservations; the queue row's last cell shows
its ETA; nothing is shown for an active reservation; a node's text in it is escaped."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable, Static

from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeUpdated
from tests.helpers import until
from tests.tui.fixture_fleet import FROZEN_NOW_S, T0, frozen_console

ETA = "2026-11-23T11:30:00Z"  # bob's reservation ends then: two hours after the frozen clock


def _queued(owner: str) -> dict[str, Any]:
    return {"id": "r-q9w3e5", "gpus_requested": 8, "owner": "dave", "priority": "high", "position": 1,
            "created_at": T0, "pending_reason": "resources", "ahead": [],
            "blockers": [{"id": "r-b4x8q2", "owner": owner, "kind": "reservation", "gpus": [2, 3],
                          "priority": "normal", "ends_at": ETA, "ends_in_s": 7200.0}],
            "eta": ETA, "eta_in_s": 7200.0}


async def test_the_selected_queue_row_says_why_it_waits() -> None:
    app = frozen_console()
    snap = {"gpus": [], "reservations": [{"id": "r-b4x8q2", "gpus": [2, 3], "owner": "bob",
                                          "created_at": T0, "expires_at": ETA}],
            "queue": [_queued("bob\x1b[31m")]}
    app.inject(NodeUpdated(NodeSnapshot.from_agent("dgx-01", snap), FROZEN_NOW_S))
    async with app.run_test(size=(140, 44)) as pilot:
        app.query_one("#bottom").active = "tab-reservations"  # type: ignore[attr-defined]
        table = app.query_one("#reservations", DataTable)
        await until(pilot, lambda: table.row_count == 2, "the reservation and the queued request")
        why = app.query_one("#queue-why", Static)
        table.focus()
        table.move_cursor(row=0)
        await pilot.pause()
        assert not why.display  # an active reservation: nothing to explain
        await pilot.press("down")
        await until(pilot, lambda: why.display, "the queued request's reason")
        shown = str(why.render())
        assert shown.startswith("r-q9w3e5 on dgx-01: GPUs 2-3 held by bob")
        assert "until 11:30 UTC (in 2h)" in shown and shown.endswith("starts by 11:30 UTC (in 2h)")
        assert "\x1b" not in shown  # the node's text reaches the screen escaped
        assert "ETA 11:30 UTC (in 2h)" in str(table.get_row("r-q9w3e5"))
        await pilot.press("up")
        await until(pilot, lambda: not why.display, "the line hidden again on an active reservation")
