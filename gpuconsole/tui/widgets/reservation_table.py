"""Reservations and the queue across the fleet; the cursor picks the target of release/renew."""

from __future__ import annotations

from rich.text import Text

from gpuconsole.model.fleet import FleetState, Health
from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

COLUMNS = {"id": 9, "node": 14, "gpus": 10, "owner": 10, "priority": 8, "state": 10, "expires": 20}


class ReservationTable(KeyedTable):
    """Active reservations first, then queued requests in grant order."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, **kwargs)

    def show(self, fleet: FleetState, styles: dict[str, str]) -> None:
        rows: dict[str, list[Cell]] = {}
        for view in fleet.nodes.values():
            snap = view.snapshot
            if snap is None or view.health() is Health.UNREACHABLE:
                continue
            for res in snap.reservations:
                rows[res.id] = [res.id, res.node, ",".join(map(str, res.gpus)), res.owner, res.priority,
                                "active", res.expires_at.replace("T", " ")]
            for req in snap.queue:
                rows[req.id] = [req.id, req.node, f"{req.gpus_requested} wanted", req.owner, req.priority,
                                Text(f"queued #{req.position}", style=styles["gc-flag"]), "-"]
        self.sync(rows)
