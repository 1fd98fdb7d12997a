"""Fair share with no server: each node weighs a queued request by how much its owner used the node
lately, as Slurm's classic fair-share factor does, from what the node's ledger records.

Usage is GPU-seconds decayed with the policy's half-life: every grant that ends (the ledger's `end`
record) adds its GPUs × the decayed length of its hold to its owner's total in the state's `usage`
table, in the transaction that ends it; live grants count up to now. The factor of a user is
2^-(share of the node's usage / fair share), with equal shares for every user in the table or the
queue: 1 for a user with no recent use, 0.5 for everyone when all used alike. A queued request
gains factor × `fair_share_weight` priority levels (one level = AGING_S_PER_LEVEL of waiting), so
a light user goes before a heavy one who queued at about the same time, and waiting still wins.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Tuple

    from .typedefs import FairShare, State, UsageEntry

    # leases by id: (owner, GPU count, granted at (wall), ended at (wall) when it ended)
    Ended = List[Tuple[str, int, float, float]]

FORGET_GPU_S = 1.0  # a user whose decayed usage falls below this leaves the table
LN2 = math.log(2)


def _integral(count: int, start_wall: float, end_wall: float, at_wall: float, half_life_s: float) -> float:
    """count × ∫ 2^-((at - t) / half_life) dt over [start, end]: a hold's usage valued at `at`."""
    start_wall = min(start_wall, end_wall)
    scale = half_life_s / LN2
    return float(count * scale) * float(2.0 ** (-(at_wall - end_wall) / half_life_s)
                                      - 2.0 ** (-(at_wall - start_wall) / half_life_s))


def decayed(entry: UsageEntry, at_wall: float, half_life_s: float) -> float:
    """A usage entry's GPU-seconds valued at `at_wall` (never grown by a clock that went back)."""
    age_s = max(0.0, at_wall - float(entry["at_wall"]))
    return float(entry["gpu_s"]) * float(2.0 ** (-age_s / half_life_s))


def charge(state: State, ended: Ended, now_wall: float, half_life_s: float | None) -> None:
    """Add each ended hold to its owner's decayed usage (in the transaction that ended it)."""
    if not half_life_s or not ended:
        return
    usage = state.setdefault("usage", {})
    for owner, count, start_wall, end_wall in ended:
        entry = usage.get(owner)
        total = decayed(entry, now_wall, half_life_s) if entry else 0.0
        usage[owner] = {"gpu_s": round(total + _integral(count, start_wall, end_wall, now_wall, half_life_s), 3),
                        "at_wall": now_wall}


def usage_now(state: State, now_bt: float, now_wall: float, half_life_s: float) -> dict[str, float]:
    """Each user's decayed GPU-seconds now: what ended (the table) and what is held (live grants)."""
    totals = {owner: decayed(entry, now_wall, half_life_s) for owner, entry in state.get("usage", {}).items()}
    for lease in state["leases"].values():
        if lease["exp_bt"] > now_bt:
            totals[lease["owner"]] = totals.get(lease["owner"], 0.0) + _integral(
                len(lease["gpus"]), float(lease["created_wall"]), now_wall, now_wall, half_life_s)
    return totals


def refresh(state: State, now_bt: float, now_wall: float, policy: dict[str, Any]) -> None:
    """Recompute every user's factor for this transaction's grants (and later views); forget users
    whose usage has decayed away; with fair share off, drop the tables."""
    half_life_s = policy.get("fair_share_half_life_s")
    if not half_life_s:
        state.pop("usage", None)
        state.pop("fair_share", None)
        state.pop("fair_share_weight", None)
        return
    usage = state.get("usage", {})
    for owner in [o for o, entry in usage.items() if decayed(entry, now_wall, half_life_s) < FORGET_GPU_S]:
        del usage[owner]
    if not usage:
        state.pop("usage", None)
    totals = usage_now(state, now_bt, now_wall, half_life_s)
    users = set(totals) | {ticket["owner"] for ticket in state["queue"].values()}
    grand = sum(totals.values())
    table: dict[str, FairShare] = {}
    for user in sorted(users):
        share = totals.get(user, 0.0) / grand if grand > 0 else 0.0
        table[user] = {"factor": round(2.0 ** (-share * len(users)), 4),
                       "gpu_h": round(totals.get(user, 0.0) / 3600, 3)}
    state["fair_share"] = table
    state["fair_share_weight"] = float(policy.get("fair_share_weight", 1.0))


def factor(state: State, owner: str) -> float | None:
    """The owner's fair-share factor as last computed (1.0 for a user with no recent use), or None
    with fair share off."""
    if not isinstance(state.get("fair_share_weight"), (int, float)):
        return None
    entry = state.get("fair_share", {}).get(owner)
    return float(entry["factor"]) if entry else 1.0


def levels(state: State) -> Any:
    """owner → priority levels fair share adds to the owner's queued requests (0 with it off)."""
    weight = float(state.get("fair_share_weight") or 0.0)
    table = state.get("fair_share", {})
    return lambda owner: weight * float(table[owner]["factor"] if owner in table else 1.0)
