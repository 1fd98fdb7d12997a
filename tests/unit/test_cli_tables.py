"""Tables that fit by dropping lesser columns (gpuconsole.cli.tables) and `status`'s node choice,
order and glyphs (gpuconsole.cli.status_view), without a cluster."""

from __future__ import annotations

from typing import Any

from gpuconsole.cli.parser import STATUS_SORTS
from gpuconsole.cli.status_view import SORTS, View, footer, gpu_glyphs, select
from gpuconsole.cli.tables import Alt, Cell, Column, fit, table_width
from gpuconsole.model import NodeSnapshot

COLUMNS = (Column("id"), Column("src", priority=1), Column("created", priority=2),
           Column("expires", priority=3, narrow_at=2), Column("processes", priority=4, wrap=True))
ROW: list[Cell] = ["r-0123456789", "onprem", "5m ago", Alt("until 23:16 UTC (in 3h58m)", "3h58m left"), "alice:1 " * 10]


def test_columns_go_lowest_priority_first_and_narrow_forms_come_at_their_turn() -> None:
    # Widths: id 12, src 6 ("onprem"), created 7, expires 26 wide or 10 narrow,
    # processes 20 (a wrapping column counts at most 20).
    assert fit(COLUMNS, [ROW], 200) == ([0, 1, 2, 3, 4], set())
    assert fit(COLUMNS, [ROW], table_width([12, 6, 7, 26, 20]) - 1) == ([0, 2, 3, 4], set())  # src first
    assert fit(COLUMNS, [ROW], table_width([12, 7, 26, 20]) - 1) == ([0, 2, 3, 4], {3})  # then narrow
    assert fit(COLUMNS, [ROW], table_width([12, 7, 10, 20]) - 1) == ([0, 3, 4], {3})  # then created
    assert fit(COLUMNS, [ROW], table_width([12, 10, 20]) - 1) == ([0, 4], {3})
    assert fit(COLUMNS, [ROW], 10) == ([0], {3})  # the essential id stays, whatever the width


def _node(name: str, states: list[str], util: float = 0.0) -> NodeSnapshot:
    def gpu(i: int, state: str) -> dict[str, Any]:
        held = {"id": "r-1", "owner": "alice", "expires_at": "2026-11-23T13:00:00Z"}
        procs = [{"pid": 1, "user": "bob", "command": "x", "mem_mib": 1}]
        return {"index": i, "util_pct": util, "reservation": held if state in "RB" else None,
                "processes": procs if state in "BU" else []}
    return NodeSnapshot.from_agent(name, {"gpus": [gpu(i, s) for i, s in enumerate(states)]})


def test_select_filters_and_sorts_nodes() -> None:
    nodes = [_node("node-10", list("FFRR"), 90.0), _node("node-2", list("RRRR"), 10.0),
             _node("node-3", list("FUBR"), 50.0), NodeSnapshot.unreachable("node-1", "node-1: down")]

    def names(view: View) -> list[str]:
        return [s.name for s in select(nodes, view)]

    assert names(View()) == ["node-10", "node-2", "node-3", "node-1"]  # the config's order
    assert names(View(sort="name")) == ["node-1", "node-2", "node-3", "node-10"]
    assert names(View(sort="free")) == ["node-10", "node-3", "node-2", "node-1"]
    assert names(View(sort="util")) == ["node-10", "node-3", "node-2", "node-1"]
    assert names(View(free=True)) == ["node-10", "node-3", "node-1"]  # an unreachable node may have some
    assert names(View(user="bob")) == ["node-3", "node-1"]  # bob runs processes there
    assert names(View(user="alice", free=True)) == ["node-10", "node-3", "node-1"]
    assert STATUS_SORTS == SORTS  # the parser keeps its own copy (--help imports no view code)


def test_glyphs_per_gpu_or_counts_on_a_big_node_and_the_footer_totals() -> None:
    assert gpu_glyphs(_node("n", list("FRBU")).gpus).plain == "○◐●▲"
    assert gpu_glyphs(_node("n", list("FFRRBBUU")).gpus).plain == "○○◐◐ ●●▲▲"
    assert gpu_glyphs(_node("n", list("F" * 14 + "RRRB")).gpus).plain == "○14 ◐3 ●1"
    nodes = [_node("a", list("FRBU")), NodeSnapshot.unreachable("b", "b: down")]
    assert footer(nodes, 3) == ("1/2 nodes up · 4 GPUs: ○ 1 free · ◐ 1 reserved · ● 1 busy · ▲ 1 unreserved use"
                                " · showing 2 of 3 nodes")
