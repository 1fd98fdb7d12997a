"""Messages workers post to the app: frozen values only (poller events, cloud views), nothing mutable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from gpuconsole.model.events import PollEvent

if TYPE_CHECKING:
    from gpuconsole.cloud.monitor import CloudView
    from gpuconsole.tui.widgets.usage_table import UsageLine


class PollEventArrived(Message):
    """A NodeUpdated or NodeFailed from the poller."""

    def __init__(self, event: PollEvent) -> None:
        super().__init__()
        self.event = event


class CloudViewArrived(Message):
    """One cloud discovery round (a frozen CloudView) from the cloud worker."""

    def __init__(self, view: CloudView) -> None:
        super().__init__()
        self.view = view


class UsageArrived(Message):
    """One reading of the ledgers for the Usage tab: a line per user, and the nodes not read."""

    def __init__(self, lines: tuple[UsageLine, ...], failed: tuple[str, ...], at_s: float) -> None:
        super().__init__()
        self.lines = lines
        self.failed = failed
        self.at_s = at_s
