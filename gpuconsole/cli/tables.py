"""CLI tables that fit the terminal by dropping columns, never by cutting cells.

Each column has a priority: essential ones (ids, GPU lists, states, owners) are never dropped, and
the others go lowest priority first until the table fits the console's width. A cell may offer a
narrow alternative (`Alt`: "until 23:16 UTC (in 3h58m)" or "3h58m left") that is used before the
column's turn to be dropped. Whatever still does not fit wraps onto more lines; rich's ellipsis
never replaces part of a value. Every cell goes through `output.cell` (shown literally, escaped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from gpuconsole.cli.output import cell

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

WRAP_MIN_CELLS = 20  # a wrapping column (free text such as process lists) needs at least this much room
WIDE = 120  # below this many columns the lesser columns go (the README's rule of thumb)


class Alt(NamedTuple):
    """A cell with a shorter form for narrow terminals."""

    wide: str | Text
    narrow: str | Text


Cell: TypeAlias = "str | Text | Alt"  # a string: rich stays unimported until a table is built


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. `priority` None: essential, never dropped; otherwise the lowest go first.
    `narrow_at`: the priority at which this column's `Alt` cells switch to their narrow form
    (default: before any column is dropped). `wrap`: free text that may wrap instead of widening."""

    header: str
    priority: int | None = None
    wrap: bool = False
    narrow_at: int = -1
    justify: str = "left"


def _width(value: str | Text) -> int:
    return cell(value).cell_len


def _needed(column: Column, values: list[str | Text]) -> int:
    widest = max([_width(column.header), *(_width(v) for v in values)])
    return min(widest, WRAP_MIN_CELLS) if column.wrap else widest


def table_width(widths: Sequence[int]) -> int:
    """Cells a rich table with the default box needs: one space either side of each column and a
    border before, between and after them."""
    return sum(widths) + 3 * len(widths) + 1


def fit(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> tuple[list[int], set[int]]:
    """Which columns to keep (their indexes, in order) and which use their narrow form, so that the
    table is at most `width` cells wide if dropping the droppable columns can make it so."""
    kept = list(range(len(columns)))
    narrow: set[int] = set()
    has_alt = [any(isinstance(row[i], Alt) for row in rows) for i in range(len(columns))]
    needs = [(_needed(c, [_pick(row[i], False) for row in rows]),
              _needed(c, [_pick(row[i], True) for row in rows]) if has_alt[i] else 0)
             for i, c in enumerate(columns)]
    steps = sorted(
        [(c.narrow_at, 0, i) for i, c in enumerate(columns) if has_alt[i]]
        + [(c.priority, 1, i) for i, c in enumerate(columns) if c.priority is not None],
    )

    def total() -> int:
        return table_width([needs[i][1 if i in narrow else 0] for i in kept])

    for _, action, index in steps:
        if total() <= width:
            break
        if action == 0:
            narrow.add(index)
        elif index in kept:
            kept.remove(index)
    return kept, narrow


def _pick(value: Cell, narrow: bool) -> str | Text:
    if isinstance(value, Alt):
        return value.narrow if narrow else value.wide
    return value


def fit_table(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> Table:
    """A rich table of `rows` under `columns` that fits `width` cells (see `fit`); cells never end in
    an ellipsis: a value that still cannot fit wraps (folds) instead."""
    from rich.table import Table

    kept, narrow = fit(columns, rows, width)
    table = Table(title=title, title_justify="left", header_style="bold")
    for i in kept:
        column = columns[i]
        table.add_column(column.header, no_wrap=False, overflow="fold",
                         justify="right" if column.justify == "right" else "left")
    for row in rows:
        table.add_row(*(cell(_pick(row[i], i in narrow)) for i in kept))
    return table
