"""Numbers and times to short strings, shared by the CLI, TUI and watcher so all show the same thing."""

from __future__ import annotations

from datetime import UTC, datetime

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
