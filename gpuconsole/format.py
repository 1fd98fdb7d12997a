"""Numbers and times to short strings, shared by the CLI, TUI and watcher so all show the same thing."""

from __future__ import annotations

from datetime import UTC, datetime

from gpuconsole.durations import format_duration_s

NA = "–"


def bytes_h(value: float | None) -> str:
    """1536 → '1.5K', binary units."""
    if value is None:
        return NA
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return NA


def rate_h(bps: float | None) -> str:
    return NA if bps is None else f"{bytes_h(bps)}/s"


def mib_h(mib: float | None) -> str:
    if mib is None:
        return NA
    return f"{mib / 1024:.1f}G" if mib >= 1024 else f"{mib:.0f}M"


def pct_h(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}%"


def num_h(value: float | None, unit: str) -> str:
    return NA if value is None else f"{value:.0f}{unit}"


def iso_utc(epoch_s: float) -> str:
    """ISO 8601 UTC with a Z, second precision: every time in the CLI contract's JSON."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_s(iso: str) -> float | None:
    """An ISO 8601 time from a node (hostile: anything may come) as epoch seconds, None if it is not one."""
    try:
        parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _clock(at_s: float, now_s: float) -> str:
    """'23:16 UTC' within a day, 'Dec 03 23:16 UTC' further out (a bare clock would read as today)."""
    at = datetime.fromtimestamp(at_s, UTC)
    return at.strftime("%H:%M UTC") if at_s - now_s < 86400 else at.strftime("%b %d %H:%M UTC")


def left_h(iso: str, now_s: float) -> str:
    """'3h58m left' (or 'expired 5m ago'): how long a lease has, for narrow cells."""
    at_s = epoch_s(iso)
    if at_s is None:
        return NA
    if at_s <= now_s:
        return f"expired {format_duration_s(now_s - at_s)} ago"
    return f"{format_duration_s(at_s - now_s)} left"


def when_h(at_s: float, now_s: float) -> str:
    """'23:16 UTC (in 3h58m)': a time to come as people read it ('now' once it is here)."""
    if at_s <= now_s:
        return "now"
    return f"{_clock(at_s, now_s)} (in {format_duration_s(at_s - now_s)})"


def until_h(iso: str, now_s: float) -> str:
    """'until 23:16 UTC (in 3h58m)', or 'ended 5m ago' once past: a lease's end as people read it."""
    at_s = epoch_s(iso)
    if at_s is None:
        return NA
    if at_s <= now_s:
        return f"ended {format_duration_s(now_s - at_s)} ago"
    return f"until {_clock(at_s, now_s)} (in {format_duration_s(at_s - now_s)})"


def ago_h(iso: str, now_s: float) -> str:
    """'5m ago' for a time in the past ('in 2m' for a future one a skewed clock gave)."""
    at_s = epoch_s(iso)
    if at_s is None:
        return NA
    if at_s > now_s:
        return f"in {format_duration_s(at_s - now_s)}"
    return f"{format_duration_s(now_s - at_s)} ago"
