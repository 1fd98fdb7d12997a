"""What the console shows, read back as text: the toasts and the screen, for tests and scripts that
check outcomes through the UI instead of Textual's private attributes."""

from __future__ import annotations

from typing import Any

from textual.app import App


class ReadBack(App[Any]):
    """Public read-only views of what the user sees; mixed into the console's App."""

    def notifications(self) -> list[str]:
        """The toasts now showing, oldest first, as `title: message`."""
        return [f"{n.title}: {n.message}" for n in self._notifications]

    def screen_text(self) -> str:
        """Every character the current screen would send to the terminal, as text without styles."""
        update = self.screen._compositor.render_full_update()
        return "\n".join("".join(strip.text for strip in line) for line in update.strips)
