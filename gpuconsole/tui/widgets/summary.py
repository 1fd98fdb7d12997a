"""The one-line fleet summary at the top."""

from __future__ import annotations

from textual.widgets import Static

from gpuconsole.model.fleet import FleetState


class SummaryBar(Static):
    """Nodes up/total, GPUs free/reserved/in use/idle-but-reserved, unreserved use, queue, cloud."""

    def show(self, fleet: FleetState, now_s: float, cloud: str = "cloud: off") -> None:
        t = fleet.totals(now_s)
        flags = []
        if t["idle_reserved"]:
            flags.append(f"[b $warning]⚑ {t['idle_reserved']} idle[/]")
        if t["unreserved"]:
            flags.append(f"[b $warning]⚠ {t['unreserved']} unreserved[/]")
        text = (f"nodes [b]{t['up']}[/]/{t['nodes']} up  │  GPUs [b]{t['free']}[/] free · {t['reserved']} reserved"
                f" · {t['in_use']} busy / {t['gpus']}  │  queue {t['queued']}  │  {cloud}")
        if flags:
            text += "  │  " + "  ".join(flags)
        self.update(text)
