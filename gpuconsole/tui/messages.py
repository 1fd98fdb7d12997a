"""Messages the poll worker posts to the app: frozen poller events, nothing mutable."""

from __future__ import annotations

from textual.message import Message

from gpuconsole.model.events import PollEvent


class PollEventArrived(Message):
    """A NodeUpdated or NodeFailed from the poller."""

    def __init__(self, event: PollEvent) -> None:
        super().__init__()
        self.event = event
