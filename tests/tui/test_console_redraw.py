"""Issue 14: the console redraws only what changed. A poll that changes one GPU's utilization renders
that GPU's changed cells again, not every visible cell of both tables; a cell whose text stays but
whose look changes (a node gone stale: its last data dimmed) is updated all the same."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from rich.style import Style
from rich.text import Text
from textual.screen import Screen
from textual.widgets import DataTable

from gpuconsole.model.events import NodeFailed, NodeUpdated
from gpuconsole.tui.widgets.fleet_tables import GpuTable, NodeTable
from gpuconsole.tui.widgets.keyed_table import KeyedTable
from tests.helpers import until
from tests.tui.fixture_fleet import FROZEN_NOW_S, frozen_console

Rendered = list[tuple[str | None, str | None, str | None]]  # (table id, row key, column key)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> Rendered:
    """Every cell a KeyedTable renders, not reuses (header cells have row key None): a cell's text is
    cut to its width once per rendering, whichever way it is rendered."""
    cells: Rendered = []
    rendering: Rendered = []
    render_cell, truncate = KeyedTable._render_cell, Text.truncate

    def tracking(self: KeyedTable, row_index: int, column_index: int, *args: Any, **kwargs: Any) -> Any:
        row_key = self._row_locations.get_key(row_index) if row_index >= 0 else None
        column_key = self._column_locations.get_key(column_index) if column_index >= 0 else None
        rendering.append((self.id, None if row_key is None else row_key.value,
                          None if column_key is None else column_key.value))
        try:
            return render_cell(self, row_index, column_index, *args, **kwargs)
        finally:
            rendering.pop()

    def counting(self: Text, *args: Any, **kwargs: Any) -> None:
        if rendering:
            cells.append(rendering[-1])
        truncate(self, *args, **kwargs)

    monkeypatch.setattr(KeyedTable, "_render_cell", tracking)
    monkeypatch.setattr(Text, "truncate", counting)
    return cells


async def test_a_poll_that_changes_one_gpu_renders_only_that_gpus_cells(rendered: Rendered) -> None:
    app = frozen_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "alice · 3h30m left" in app.screen_text(), "the first frame")
        view = app.fleet.nodes["dgx-01"]
        assert view.snapshot is not None and app.selected_node == "dgx-01"
        gpus = tuple(dataclasses.replace(gpu, util_pct=55.0) if gpu.index == 5 else gpu for gpu in view.snapshot.gpus)
        rendered.clear()
        app.inject(NodeUpdated(dataclasses.replace(view.snapshot, gpus=gpus), FROZEN_NOW_S))
        app.render_fleet()
        await until(pilot, lambda: ("gpus", "5", "util") in rendered, "GPU 5's utilization repainted")
        gpu_cells = {(row, column) for table, row, column in rendered if table == "gpus"}
        # GPU 5's bar, and the sparklines that took the new sample; nothing else of either table.
        assert gpu_cells - {(row, "history") for row in "01234567"} == {("5", "util")}
        assert {table for table, _, _ in rendered} == {"gpus"}
        assert "55%" in app.screen_text()


def _style(cell: object) -> Style:
    assert isinstance(cell, Text)
    return Style.parse(cell.style) if isinstance(cell.style, str) else cell.style


async def test_a_node_gone_stale_dims_its_last_data() -> None:
    """dgx-02's CPU, memory and GPU counts keep their text when it stops answering; they turn dim."""
    app = frozen_console()
    async with app.run_test(size=(120, 40)) as pilot:
        nodes = app.query_one(NodeTable)
        await until(pilot, lambda: nodes.row_count == 5, "the node rows")
        cpu_before = nodes.get_cell("dgx-02", "CPU")
        assert not _style(cpu_before).dim
        app.inject(NodeFailed("dgx-02", "dgx-02: connection lost", False, 4.0, FROZEN_NOW_S))
        app.render_fleet()
        await until(pilot, lambda: "◌ stale" in str(nodes.get_cell("dgx-02", "health")), "dgx-02 stale")
        cpu_after = nodes.get_cell("dgx-02", "CPU")
        assert str(cpu_after) == str(cpu_before)
        assert _style(cpu_after).dim
        assert _style(nodes.get_cell("dgx-02", "GPUs free")).dim
        # The GPU panel shows the stale node's GPUs dimmed too (their text unchanged).
        await pilot.press("down")
        gpus = app.query_one(GpuTable)
        await until(pilot, lambda: app.selected_node == "dgx-02", "dgx-02 selected")
        assert _style(gpus.get_cell("5", "temp")).dim


HOSTILE_CELLS: list[str | Text] = [
                 "", "日本語のテキストはとても長い", "🚀 launch ✓", "e\u0301t\u0301e\u0301", "x" * 80, "a  b   ",
                 Text("reverse", style="reverse"), Text("dim", style="dim"), Text("cut me off", overflow="ellipsis"),
                 Text("line\n", end="\n"), Text.assemble(("red", "red"), " and ", ("bold", "bold")),
                 Text("right", justify="right"), "[b]not markup[/b]"]


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_cells_render_as_datatable_renders_them(size: tuple[int, int]) -> None:
    """KeyedTable's own rendering of one-line cells gives DataTable's segments exactly: every cell and
    header of every table of the console, hostile texts, narrow widths, under and off the cursor."""
    app = frozen_console(cloud=True)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: "alice · 3h30m left" in app.screen_text(), "the first frame")
        processes = app.query_one("#processes", KeyedTable)
        processes.sync({f"h{i}": [cell, str(i), cell, cell, cell] for i, cell in enumerate(HOSTILE_CELLS)})
        compared = 0
        for table in app.query(KeyedTable):
            table._pseudo_class_state = table.get_pseudo_class_state()
            for row in range(-1, table.row_count):
                for column, spec in enumerate(table.ordered_columns):
                    for width in {spec.get_render_width(table), 1, 2, 3, 7, 30}:
                        for cursor, hover in ((False, False), (True, False), (False, True), (True, True)):
                            table._clear_caches()
                            theirs = DataTable._render_cell(table, row, column, table.rich_style, width, cursor, hover)
                            ours = table._render_cell(row, column, table.rich_style, width, cursor, hover)
                            assert ours == theirs, (table.id, row, column, width, cursor, hover)
                            compared += 1
        assert compared > 2000


async def test_a_key_moves_the_cursor_and_the_gpu_panel_in_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Down: the frame that shows the cursor on the next node also shows that node's GPUs (the
    panel used to follow a frame later, when the RowHighlighted message got its turn)."""
    frames: list[set[str | None]] = []
    on_timer_update = Screen._on_timer_update

    def recording(self: Screen[Any]) -> None:
        if self._dirty_widgets:
            frames.append({widget.id for widget in self._dirty_widgets})
        on_timer_update(self)

    monkeypatch.setattr(Screen, "_on_timer_update", recording)
    app = frozen_console()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "alice · 3h30m left" in app.screen_text(), "the first frame")
        for key, node in (("down", "dgx-02"), ("down", "dgx-03"), ("up", "dgx-02")):
            frames.clear()
            await pilot.press(key)
            def shown(name: str = node) -> bool:
                return app.selected_node == name and any("nodes" in frame for frame in frames)

            await until(pilot, shown, f"{node} under the cursor")
            first = next(f for f in frames if "nodes" in f)
            assert "gpus" in first, frames
