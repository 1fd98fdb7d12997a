"""Parse and format the CLI's durations (`90s`, `30m`, `4h`, `1d`, plain seconds)."""

from __future__ import annotations

import math
import re

from gpuconsole.errors import UsageError

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
MAX_DURATION_S = 366 * 86400.0


def parse_duration_s(text: str, *, what: str = "duration") -> float:
    """Return the number of seconds in ``text``; raise UsageError with a one-line reason."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise UsageError(f"{what}: {text!r} is not a duration (use 90s, 30m, 4h, 1d or seconds)")
    value_s = float(match.group(1)) * _UNITS_S[match.group(2) or "s"]
    if not math.isfinite(value_s) or value_s <= 0:
        raise UsageError(f"{what}: {text!r} must be greater than zero")
    if value_s > MAX_DURATION_S:
        raise UsageError(f"{what}: {text!r} is longer than 366 days")
    return value_s


def format_duration_s(seconds: float) -> str:
    """Short human form: 45s, 12m, 3h20m, 2d4h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, rem = divmod(seconds, 3600)
        return f"{hours}h{rem // 60:02d}m" if rem >= 60 else f"{hours}h"
    days, rem = divmod(seconds, 86400)
    return f"{days}d{rem // 3600}h" if rem >= 3600 else f"{days}d"
