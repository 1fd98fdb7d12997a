"""A DataTable that is updated by key: only changed cells are touched, no rebuilds, no flicker.

Every table of the console is one, so this is where cells are made safe: a `str` cell would be
parsed as markup by DataTable, so each cell becomes a `Text` with `rich_text` (terminal escapes
visible, markup shown literally) before it is shown or compared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable

from gpuconsole.textsafe import rich_text, terminal_safe

Cell = str | Text


def _safe(cell: Cell) -> Text:
    """`cell` as a Text that shows it literally; a `str` is cropped to its one line, as DataTable
    crops the markup it would otherwise have parsed from it."""
    if isinstance(cell, str):
        return Text(terminal_safe(cell), no_wrap=True, end="")
    return rich_text(cell)


class KeyedTable(DataTable[Cell]):
    """Rows are identified by a stable key; `sync` diffs the wanted rows against what is shown."""

    def __init__(self, columns: Mapping[str, int], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._column_widths = dict(columns)
        self._shown: dict[str, tuple[Cell, ...]] = {}

    def on_mount(self) -> None:
        for label, width in self._column_widths.items():
            self.add_column(label, key=label, width=width)

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Make the table show exactly ``rows`` (in the given order for new keys)."""
        for key in [k for k in self._shown if k not in rows]:
            self.remove_row(key)
            del self._shown[key]
        columns = list(self._column_widths)
        for key, given in rows.items():
            cells: tuple[Cell, ...] = tuple(_safe(cell) for cell in given)
            old = self._shown.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            elif old != cells:
                for column, new_cell, old_cell in zip(columns, cells, old, strict=True):
                    if new_cell != old_cell:
                        self.update_cell(key, column, new_cell)
            self._shown[key] = cells

    def rebuild(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Show exactly ``rows`` in their given order, keeping the cursor on the same key if it stays
        (for tables whose order changes, such as a log shown newest first)."""
        keep = self.selected_key
        self.clear()
        self._shown.clear()
        self.sync(rows)
        if keep is not None and keep in self._shown:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return None if row_key.value is None else str(row_key.value)
