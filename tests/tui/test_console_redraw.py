"""Issue 14: the console redraws only what changed. A poll that changes one GPU's utilization renders
that GPU's changed cells again, not every visible cell of both tables; a cell whose text stays but
whose look changes (a node gone stale: its last data dimmed) is updated all the same."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

from gpuconsole.model.events import NodeFailed, NodeUpdated
from gpuconsole.tui.widgets.fleet_tables import GpuTable, NodeTable
from tests.helpers import until
from tests.tui.fixture_fleet import FROZEN_NOW_S, frozen_console

Rendered = list[tuple[str | None, str | None, str | None]]  # (table id, row key, column key)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> Rendered:
    """Every cell DataTable renders (header cells have row key None), by table."""
    cells: Rendered = []
    render_cell = DataTable._render_cell

    def counting(self: DataTable[Any], row_index: int, column_index: int, *args: Any, **kwargs: Any) -> Any:
        row_key = self._row_locations.get_key(row_index) if row_index >= 0 else None
        column_key = self._column_locations.get_key(column_index) if column_index >= 0 else None
        row, column = (None if row_key is None else row_key.value), (None if column_key is None else column_key.value)
        cells.append((self.id, row, column))
        return render_cell(self, row_index, column_index, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_cell", counting)
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
