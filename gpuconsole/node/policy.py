"""The node's policy file: admin group, fair share and per-user caps, as the admin wrote them.

`/etc/gpuconsole/policy.json`, root-owned and writable by root alone (a policy anyone could edit
decides nothing). A user's own (cooperative) agent may be pointed at another file with
GPUCONSOLE_POLICY (tests), which must be root's too, so a user cannot make themselves an admin or
lift the caps with a file of their own; the service agent never reads another.
Keys, each optional:
  admin_group               group whose members may end or change anyone's grants
  fair_share_half_life_s    half-life of the usage behind the fair-share factor (default 7 days; 0: off)
  fair_share_weight         priority levels the factor is worth (default 1: 15 min of queue aging)
  max_gpus_per_user         GPUs one user may hold on this node at once
  max_gpus_per_user_fleet   GPUs one user may hold on all nodes together: checked by the client
                            before it reserves (no node knows what the others granted), so advisory
  max_reservation_s         longest a reservation may last from its grant (renewals included)
A malformed value is ignored (its default holds) and reported by `doctor`.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

    Policy = Dict[str, Any]

PATH = "/etc/gpuconsole/policy.json"
DEFAULTS: Policy = {"admin_group": None, "fair_share_half_life_s": 7 * 86400.0, "fair_share_weight": 1.0,
                    "max_gpus_per_user": None, "max_gpus_per_user_fleet": None, "max_reservation_s": None}
MAX_BYTES = 64 << 10

_cache: dict[str, tuple[tuple[int, int, int, int], Policy, list[str]]] = {}


def path(service: bool) -> str:
    """Where this agent reads its policy."""
    override = os.environ.get("GPUCONSOLE_POLICY")
    return override if override and not service else PATH


def _number(value: object, low: float, integral: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= low and value == value and value != float("inf") and (not integral or float(value).is_integer())


def parse(raw: object) -> tuple[Policy, list[str]]:
    """The policy with defaults for what is missing or malformed, and a line per malformed key."""
    policy = dict(DEFAULTS)
    problems: list[str] = []
    if not isinstance(raw, dict):
        return policy, ["the policy is not a JSON object"]
    checks: dict[str, Any] = {
        "admin_group": lambda v: isinstance(v, str) and 0 < len(v) <= 64,
        "fair_share_half_life_s": lambda v: _number(v, 0),
        "fair_share_weight": lambda v: _number(v, 0) and v <= 100,
        "max_gpus_per_user": lambda v: _number(v, 1, integral=True),
        "max_gpus_per_user_fleet": lambda v: _number(v, 1, integral=True),
        "max_reservation_s": lambda v: _number(v, 1),
    }
    for key, value in raw.items():
        check = checks.get(key)
        if check is None:
            problems.append("unknown key %r" % str(key)[:40])
        elif value is not None and not check(value):
            problems.append("%s: %r is not allowed" % (key, str(value)[:40]))
        elif value is not None:
            policy[key] = int(value) if key.startswith("max_gpus") else value
    return policy, problems


def load(service: bool = False) -> tuple[Policy, list[str]]:
    """(policy, problems) from the file, re-read only when it changes; the defaults without one."""
    where = path(service)
    try:
        info = os.stat(where)
    except OSError:
        return dict(DEFAULTS), []
    if info.st_uid != 0 or info.st_mode & 0o022:
        return dict(DEFAULTS), ["%s is not owned by root alone (uid %d, mode %o): ignored"
                                % (where, info.st_uid, info.st_mode & 0o7777)]
    key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_uid)
    cached = _cache.get(where)
    if cached is not None and cached[0] == key:
        return dict(cached[1]), list(cached[2])
    try:
        with open(where, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ValueError("larger than %d bytes" % MAX_BYTES)
        policy, problems = parse(json.loads(data.decode("utf-8")))
    except (OSError, ValueError) as exc:
        policy, problems = dict(DEFAULTS), ["%s unreadable: %s" % (where, str(exc)[:80])]
    _cache[where] = (key, policy, problems)
    return dict(policy), list(problems)


def cap_text(policy: Policy) -> str:
    """The per-user cap in force, for a refusal or a pending reason ("at most 4 GPUs per user")."""
    cap = policy.get("max_gpus_per_user")
    return "no cap" if cap is None else "at most %d GPU%s per user on this node" % (cap, "" if cap == 1 else "s")



def human_s(seconds: float) -> str:
    """A duration as the CLI takes it: 90s, 30m, 4h, 2d (whole units when exact, else one decimal)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            value = seconds / size
            return ("%d%s" % (value, unit)) if value.is_integer() else ("%.1f%s" % (value, unit))
    return "%gs" % round(seconds, 1)
