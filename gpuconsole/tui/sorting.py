"""The node table's orders (`o` cycles them): the config's order, by name, most free GPUs first,
busiest first. Nodes without data sort last; ties keep the config's order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpuconsole.model.fleet import NodeView

SORTS = ("config", "name", "free", "util")


def _free(view: NodeView) -> float:
    return -float(view.snapshot.gpus_free) if view.snapshot is not None else 0.0


def _util(view: NodeView) -> float:
    gpus = view.snapshot.gpus if view.snapshot is not None else ()
    utils = [g.util_pct for g in gpus if g.util_pct is not None]
    return -sum(utils) / len(utils) if utils else 0.0


_KEYS: dict[str, Callable[[NodeView], float]] = {"free": _free, "util": _util}


def sort_nodes(views: Sequence[NodeView], order: str) -> list[NodeView]:
    """``views`` (in config order) in ``order``, one of SORTS."""
    if order == "name":
        return sorted(views, key=lambda v: v.name)
    key = _KEYS.get(order)
    if key is None:
        return list(views)
    return sorted(views, key=lambda v: (v.snapshot is None, key(v)))  # stable: ties keep config order


def next_sort(order: str) -> str:
    return SORTS[(SORTS.index(order) + 1) % len(SORTS)] if order in SORTS else SORTS[0]
