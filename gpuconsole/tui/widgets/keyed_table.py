"""A DataTable that is updated by key: only changed cells are touched, no rebuilds, no flicker.

Every table of the console is one, so this is where cells are made safe: a `str` cell would be
parsed as markup by DataTable, so each cell becomes a `Text` with `rich_text` (terminal escapes
visible, markup shown literally) before it is shown or compared.

It also fits its width: when the columns do not fit, `steps` narrow or drop the lesser ones in
order (a narrowed column's cells switch to their short form: see `narrowed`), and `fit` columns
(ids, names) widen to their longest cell, so an id is never cut."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import DataTable

from gpuconsole.textsafe import rich_text, terminal_safe

Cell = str | Text
Step = tuple[str, int]  # (column, width): width 0 drops the column, a smaller width narrows it
FIT_MAX = 40  # a `fit` column grows to its longest cell, up to this (a hostile name cannot eat the table)


def _safe(cell: Cell) -> Text:
    """`cell` as a Text that shows it literally; a `str` is cropped to its one line, as DataTable
    crops the markup it would otherwise have parsed from it."""
    if isinstance(cell, str):
        return Text(terminal_safe(cell), no_wrap=True, end="")
    return rich_text(cell)


_JOIN = Text("\n")


def _same(new: Text, old: Text) -> bool:
    """Equal as shown: `Text.__eq__` compares only the characters and spans, so a cell that only
    turned dim (a node gone stale) would keep its old look."""
    return (new.plain == old.plain and new.style == old.style and new.spans == old.spans
            and new.justify == old.justify and new.overflow == old.overflow)


class KeyedTable(DataTable[Cell]):
    """Rows are identified by a stable key; `sync` diffs the wanted rows against what is shown."""

    class LayoutChanged(Message):
        """Columns were dropped, narrowed or restored: the owner repaints so narrowed cells get their
        short form."""

    def __init__(self, columns: Mapping[str, int], *, steps: Sequence[Step] = (), fit: Sequence[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._column_widths = dict(columns)
        self._steps = tuple(steps)
        self._fit = frozenset(fit)
        self._layout = dict(columns)  # the columns shown now, with their widths
        self._shown: dict[str, tuple[Text, ...]] = {}
        self._given: dict[str, Sequence[Cell]] = {}  # the rows as given to `sync`: the same object is unchanged
        # Rendered cells by (row, column, cursor, hover): (the value, what else it depends on, lines).
        # DataTable's own cell cache is keyed by its table-wide update count, so one changed cell
        # (a poll, a new node in the GPU panel) made it re-render every visible cell.
        self._cell_lines: dict[tuple[object, object, bool, bool], tuple[object, tuple[object, ...],
                                                                        list[list[Segment]]]] = {}

    def on_mount(self) -> None:
        for label, width in self._layout.items():
            self.add_column(label, key=label, width=width)

    # -- layout -----------------------------------------------------------------------------

    @property
    def shown_columns(self) -> list[str]:
        """The columns on screen now, in order (the lesser ones drop out when the table is narrow)."""
        return list(self._layout)

    def narrowed(self, column: str) -> bool:
        """True when ``column`` is narrower than its full width (or dropped): show its short form."""
        width = self._layout.get(column)
        return width is None or width < self._column_widths[column]

    def _wanted_layout(self, available: int) -> dict[str, int]:
        names = list(self._column_widths)
        widths = dict(self._column_widths)
        for column in self._fit:
            index = names.index(column)
            longest = max((cells[index].cell_len for cells in self._shown.values()), default=0)
            widths[column] = max(widths[column], len(column), min(longest, FIT_MAX))
        for column, width in self._steps:
            if sum(w + 2 * self.cell_padding for w in widths.values()) <= available:
                break
            if width == 0:
                widths.pop(column, None)
            elif column in widths:
                widths[column] = width
        return widths

    def relayout(self) -> None:
        """Choose the columns for the current width; rebuild the table only if they changed."""
        available = self.size.width
        if self.row_count > self.size.height - int(self.show_header):  # rows overflow: a scrollbar shows
            available -= self.styles.scrollbar_size_vertical
        if available <= 0 or not self.is_mounted:
            return
        wanted = self._wanted_layout(available)
        if wanted == self._layout:
            return
        self._layout = wanted
        keep = self.selected_key
        rows = dict(self._shown)
        self.clear(columns=True)
        self._shown.clear()
        for label, width in wanted.items():
            self.add_column(label, key=label, width=width)
        for key, cells in rows.items():
            self.add_row(*self._project(cells), key=key)
            self._shown[key] = cells
        if keep is not None and keep in self._shown:
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        self.post_message(self.LayoutChanged())

    def on_resize(self, event: events.Resize) -> None:
        self.relayout()

    def _project(self, cells: Sequence[Text]) -> list[Text]:
        return [cell for column, cell in zip(self._column_widths, cells, strict=True) if column in self._layout]

    # -- rendering --------------------------------------------------------------------------

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        """DataTable's cell rendering, reused while the cell's value (the same object: `sync` only
        replaces changed cells) and its look (row, width, cursor, focus) stay the same."""
        column_key = self._column_locations.get_key(column_index) if column_index >= 0 else None
        row_key = self._row_locations.get_key(row_index) if row_index >= 0 else None
        if column_key is None or (row_key is None and row_index >= 0):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        if row_key is None:  # the header
            value: object = self.columns[column_key].label
            height = self.header_height
        else:
            value = self._data[row_key][column_key]
            height = self.rows[row_key].height
        stamp = (row_index, base_style, width, height, self.show_cursor, self._show_hover_cursor,
                 self._pseudo_class_state)
        slot = (row_key, column_key, cursor, hover)
        hit = self._cell_lines.get(slot)
        if hit is not None and hit[0] is value and hit[1] == stamp:
            return hit[2]
        lines = None
        if height == 1 and isinstance(value, Text):
            lines = self._render_line_cell(value, row_index, column_index, base_style, width, cursor, hover)
        if lines is None:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._cell_lines[slot] = (value, stamp, lines)
        return lines

    def _render_line_cell(self, cell: Text, row_index: int, column_index: int, base_style: Style, width: int,
                          cursor: bool, hover: bool) -> list[list[Segment]] | None:
        """DataTable's rendering of a one-line Text cell (Styled(Padding(cell)) through the console's
        render_lines), without its layers: a third of the time. The same segments (a test compares
        them); None for what it does not handle."""
        padding = self.cell_padding
        inner = width - 2 * padding
        plain = cell.plain
        if inner <= 0 or "\n" in plain or "\t" in plain or cell.justify not in (None, "default"):
            return None
        is_header = row_index < 0
        fixed = not is_header and (row_index < self.fixed_rows or column_index < self.fixed_columns)
        component, post = self._get_styles_to_render_cell(
            is_header, False, fixed, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component
        line = cell.copy()
        line.truncate(inner, overflow=cell.overflow or "fold")
        blank = Style.null()
        margin = [Segment(" " * padding, blank)] if padding else []
        # join: as Text.__rich_console__ does, which turns the base style into a span (render alone drops it)
        segments = [*margin, *_JOIN.join([line]).render(self.app.console)]
        short = inner - line.cell_len
        if short > 0:
            segments.append(Segment(" " * short, blank))
        segments += margin
        return [list(Segment.apply_style(segments, pre, post))]

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._cell_lines.clear()

    def notify_style_update(self) -> None:
        self._cell_lines.clear()  # a theme or CSS change: every cell's look
        super().notify_style_update()

    # -- rows -------------------------------------------------------------------------------

    def sync(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Make the table show exactly ``rows``, in their given order (a row that comes back after a
        filter goes back to its place)."""
        gone = [k for k in self._shown if k not in rows]
        for key in gone:
            self.remove_row(key)
            del self._shown[key]
            self._given.pop(key, None)
        if gone:  # a RowKey equals its string
            self._cell_lines = {slot: hit for slot, hit in self._cell_lines.items() if slot[0] not in rows}
        rows_before = self.row_count
        grew = False
        changed = 0
        for key, given in rows.items():
            old = self._shown.get(key)
            if old is not None and self._given.get(key) is given:
                continue  # the caller's very row again: nothing in it changed
            self._given[key] = given
            cells = tuple(_safe(cell) for cell in given)
            if old is None:
                self.add_row(*self._project(cells), key=key)
            else:
                for column, new_cell, old_cell in zip(self._column_widths, cells, old, strict=True):
                    if column in self._layout and not _same(new_cell, old_cell):
                        # update_cell's own work, with one refresh for all of them (below)
                        self._data[key][column] = new_cell  # type: ignore[index]  # RowKey equals its str
                        changed += 1
            grew = grew or any(cells[i].cell_len > self._layout.get(c, FIT_MAX)
                               for i, c in enumerate(self._column_widths) if c in self._fit)
            self._shown[key] = cells
        if changed:
            self._update_count += 1
            self.refresh()
        if list(self._shown) != list(rows):
            self.rebuild(rows)
        elif grew or self.row_count != rows_before:
            self.relayout()

    def rebuild(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Show exactly ``rows`` in their given order, keeping the cursor on the same key if it stays
        (for tables whose order changes, such as a log shown newest first)."""
        keep = self.selected_key
        self.clear()
        self._shown.clear()
        self._given.clear()
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
