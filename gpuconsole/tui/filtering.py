"""The node table's filter (`/`; enter keeps it, `esc` clears it) and order (`o`), mixed into the app.

An active filter shows in the node table's title with its text, so a short list is never mistaken
for the fleet; rows keep their order while it narrows and widens, and the GPU panel follows the
selection to a node that is still shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Input

from gpuconsole.model.fleet import FleetState, NodeView
from gpuconsole.textsafe import rich_text
from gpuconsole.tui.sorting import SORTS, next_sort, sort_nodes
from gpuconsole.tui.widgets.fleet_tables import NodeTable

if TYPE_CHECKING:
    from textual.app import App

    _AppBase = App[int]
else:
    _AppBase = object


class NodeListSide(_AppBase):
    """Which nodes the node table shows, and in what order; the app calls `init_node_list`."""

    # Provided by GpuConsoleApp.
    fleet: FleetState
    selected_node: str | None

    if TYPE_CHECKING:
        def render_fleet(self) -> None: ...

    def init_node_list(self) -> None:
        self.name_filter = ""
        self.node_sort = SORTS[0]
        self._node_title_shown: Text | None = None

    def visible_nodes(self) -> list[NodeView]:
        """The nodes the table shows: those whose name contains the filter, in the chosen order."""
        return sort_nodes(self.fleet.visible(self.name_filter), self.node_sort)

    def show_node_list(self, table: NodeTable, views: list[NodeView]) -> None:
        """After the table took ``views``: its title names an active filter and order, and a selected
        node the filter hid gives way to the row under the cursor (the GPU panel follows)."""
        title = Text("nodes")
        if self.node_sort != SORTS[0]:
            title.append(f" · by {self.node_sort}")
        if self.name_filter:
            title.append(" · ")
            title.append_text(rich_text(f" filter: {self.name_filter} ", "reverse"))
            title.append(f" {len(views)} of {len(self.fleet.nodes)} · esc clears")
        if title != self._node_title_shown:
            self._node_title_shown = title
            table.border_title = title
        names = {view.name for view in views}
        if self.selected_node not in names:
            self.selected_node = table.selected_key or (views[0].name if views else None)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-open")
        box.focus()

    def action_close_filter(self) -> None:
        """`esc`: clear the filter (and close its box)."""
        box = self.query_one("#filter", Input)
        if not (box.has_class("-open") or self.name_filter):
            return
        box.remove_class("-open")
        box.value = ""
        self.name_filter = ""
        self.query_one(NodeTable).focus()
        self.render_fleet()

    def action_cycle_sort(self) -> None:
        """`o`: the next order of the node table."""
        self.node_sort = next_sort(self.node_sort)
        self.render_fleet()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.name_filter = event.value.strip()
            self.render_fleet()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the filter box: close it, keep the filter (its title says so; `esc` clears)."""
        if event.input.id == "filter":
            event.input.remove_class("-open")
            self.query_one(NodeTable).focus()
