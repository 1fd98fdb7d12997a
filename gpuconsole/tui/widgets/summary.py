"""The one-line fleet summary at the top."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from gpuconsole.model.fleet import FleetState


class SummaryBar(Widget):
    """Nodes up/total, GPUs free/reserved/busy, queue, cloud, and the idle/unreserved flags.

    A fixed one-line widget that repaints only when its text changes: `Static.update` would ask
    for a full layout pass on every tick, which was most of the console's CPU at 64 nodes.
    """

    DEFAULT_CSS = "SummaryBar { height: 1; }"

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._markup = text

    def render(self) -> Text:
        warning = self.app.current_theme.warning or "yellow"
        return Text.from_markup(self._markup.replace("$warning", warning))

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
        if text != self._markup:
            self._markup = text
            self.refresh()
