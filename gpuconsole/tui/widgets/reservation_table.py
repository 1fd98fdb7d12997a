"""Reservations and the queue across the fleet; the cursor picks the target of release/renew."""

from __future__ import annotations

from rich.text import Text

from gpuconsole.durations import format_duration_s
from gpuconsole.format import epoch_s, left_h, until_h, when_h
from gpuconsole.model.fleet import FleetState, Health
from gpuconsole.model.pending import Pending
from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

# "ends" reads "until 23:16 UTC (in 3h58m)"; narrow, "3h58m left". Ids and node names are never cut.
COLUMNS = {"id": 8, "node": 8, "gpus": 10, "owner": 10, "priority": 8, "state": 10, "ends": 26}
STEPS = (("priority", 0), ("ends", 14))


class ReservationTable(KeyedTable):
    """Active reservations first, then queued requests in grant order."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, steps=STEPS, fit=("id", "node"), **kwargs)

    def show(self, fleet: FleetState, styles: dict[str, str], now_wall_s: float) -> None:
        """`now_wall_s`: the app's wall clock, which the lease ends count from."""
        ends = left_h if self.narrowed("ends") else until_h
        rows: dict[str, list[Cell]] = {}
        for view in fleet.nodes.values():
            snap = view.snapshot
            if snap is None or view.health() is Health.UNREACHABLE:
                continue
            for res in snap.reservations:
                rows[res.id] = [res.id, res.node, ",".join(map(str, res.gpus)), res.owner, res.priority,
                                "active", ends(res.expires_at, now_wall_s)]
            for req in snap.queue:
                rows[req.id] = [req.id, req.node, f"{req.gpus_requested} wanted", req.owner, req.priority,
                                Text(f"queued #{req.position}", style=styles["gc-flag"]),
                                _starts(req.pending, now_wall_s, narrow=self.narrowed("ends"))]
        self.sync(rows)


def queue_why(fleet: FleetState, key: str | None, now_wall_s: float) -> str:
    """Why the queued request `key` waits and until when, as its node said ('' if it did not)."""
    for view in fleet.nodes.values():
        for req in view.snapshot.queue if view.snapshot is not None and key else ():
            if req.id == key and req.pending is not None:
                return f"{req.id} on {req.node}: {req.pending.describe(req.position, now_wall_s)}"
    return ""


def _starts(why: Pending | None, now_wall_s: float, *, narrow: bool) -> str:
    """A queued request's latest start as its node gave it: 'ETA 14:20 UTC (in 9m)', narrow 'ETA 9m'."""
    if why is None:
        return "-"
    at_s = epoch_s(why.eta) if why.eta is not None else None
    if at_s is None:
        return "ETA unknown"
    if narrow:
        return f"ETA {format_duration_s(max(0.0, at_s - now_wall_s))}"
    return f"ETA {when_h(at_s, now_wall_s)}"
