"""The Cloud tab's table: managed EC2 instances with price, uptime, cost so far and node readiness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from gpuconsole.durations import format_duration_s
from gpuconsole.model.cloud import Instance
from gpuconsole.model.fleet import FleetState, Health
from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

if TYPE_CHECKING:
    from gpuconsole.cloud.monitor import CloudView

COLUMNS = {"id": 19, "type": 12, "state": 13, "market": 9, "GPUs": 4, "$/h": 6, "uptime": 7, "cost": 8,
           "owner": 8, "node": 13}
STEPS = (("market", 0), ("uptime", 0), ("GPUs", 0), ("owner", 0))  # narrow, these go first; the id stays whole
STATE_STYLE = {"running": "gc-free", "pending": "gc-flag", "stopping": "gc-stale", "stopped": "gc-stale",
               "shutting-down": "gc-unreachable", "terminated": "gc-unreachable"}


def node_readiness(instance: Instance, fleet: FleetState, styles: dict[str, str]) -> Text:
    """Whether the instance serves as a node yet: booting until its agent answers, then its health."""
    if instance.state != "running":
        return Text("-", style=styles["gc-stale"])
    view = fleet.nodes.get(instance.id)
    if view is None:
        return Text("○ booting", style=styles["gc-stale"])
    health = view.health()
    if health is Health.UP:
        return Text("● ready", style=styles["gc-free"])
    if health is Health.CONNECTING:
        return Text("○ connecting", style=styles["gc-stale"])
    if health is Health.STALE:
        return Text("◌ stale", style=styles["gc-stale"])
    return Text("✕ unreachable", style=styles["gc-unreachable"])


def describe_instance(instance: Instance, now_wall_s: float) -> str:
    """`g5.xlarge, $1.01/h, up 2h, $2.01 so far` (what the terminate confirmation names)."""
    price = f"${instance.price_per_hour:.2f}/h" if instance.price_per_hour is not None else "price unknown"
    if not instance.live:
        return f"{instance.type}, {price}, {instance.state}"
    cost = instance.cost_so_far(now_wall_s)
    so_far = f"${cost:.2f} so far" if cost is not None else "cost unknown"
    return f"{instance.type}, {price}, up {format_duration_s(instance.uptime_s(now_wall_s))}, {so_far}"


class CloudTable(KeyedTable):
    """One row per managed instance, keyed by instance id; uptime and cost tick with the wall clock."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, steps=STEPS, fit=("id",), **kwargs)

    def show(self, view: CloudView | None, fleet: FleetState, styles: dict[str, str], now_wall_s: float) -> None:
        rows: dict[str, list[Cell]] = {}
        for instance in view.instances if view is not None else ():
            cost = instance.cost_so_far(now_wall_s)
            rows[instance.id] = [
                instance.id, instance.type,
                Text(instance.state, style=styles[STATE_STYLE.get(instance.state, "gc-stale")]),
                "spot" if instance.spot else "on-demand",
                "?" if instance.gpus is None else str(instance.gpus),
                "?" if instance.price_per_hour is None else f"{instance.price_per_hour:.2f}",
                format_duration_s(instance.uptime_s(now_wall_s)) if instance.live else "-",
                "-" if not instance.live else "?" if cost is None else f"${cost:.2f}",
                instance.owner or "-", node_readiness(instance, fleet, styles),
            ]
        self.sync(rows)
