"""Unreserved use as the node's changes see it: which GPUs have processes that no live grant
covers, since when and whose, kept in the state (`unreserved`) so the ledger records when it began
and ended (`unreserved_start`/`unreserved_end`) and `usage` counts unreserved GPU-hours.

Every transaction looks (its GPUs in use are sampled before the lock); the watcher makes one look
when its telemetry shows unreserved use begin or end, so the records are as timely as its alerts.
"""

from __future__ import annotations

from . import health
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .state import Ctx
    from .typedefs import State

MAX_USERS = 8  # users named per GPU


def track(state: State, ctx: Ctx) -> bool:
    """Bring the `unreserved` table up to what this transaction sees; True when it changed."""
    held = st.held_gpus(state, ctx.now_bt)
    seen = {g for g in ctx.gpus_in_use if g not in held and 0 <= g < ctx.gpu_count}
    table: Any = state.get("unreserved") or {}
    changed = False
    for key in [k for k in table if not (health.gpu_key(k) and int(k) in seen)]:
        del table[key]
        changed = True
    for gpu in sorted(seen):
        if str(gpu) not in table:
            users = sorted({str(u) for u in ctx.gpu_users.get(gpu, ()) if u})[:MAX_USERS]
            table[str(gpu)] = {"since_wall": ctx.now_wall, "users": users}
            changed = True
    if table:
        state["unreserved"] = table
    else:
        state.pop("unreserved", None)
    return changed
