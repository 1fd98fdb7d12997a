"""Node CPU, memory, disk and network counters from /proc, turned into rates between samples."""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SECTOR_BYTES = 512


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("ascii", "replace")


def _cpu_ticks() -> tuple[int, int]:
    """Return (busy, total) jiffies from the first line of /proc/stat."""
    fields = _read("/proc/stat").split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def _meminfo() -> tuple[int | None, int | None]:
    info: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            info[key] = int(parts[0]) * 1024
    total = info.get("MemTotal")
    available = info.get("MemAvailable", info.get("MemFree"))
    used = total - available if total is not None and available is not None else None
    return used, total


def _whole_disks() -> set[str] | None:
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return None
    return {n for n in names if not n.startswith(("loop", "ram", "zram", "dm-", "md", "sr"))}


def _disk_bytes(disks: set[str] | None) -> tuple[int, int]:
    read_b = write_b = 0
    for line in _read("/proc/diskstats").splitlines():
        parts = line.split()
        if len(parts) < 10:
            continue
        if disks is not None and parts[2] not in disks:
            continue
        read_b += int(parts[5]) * SECTOR_BYTES
        write_b += int(parts[9]) * SECTOR_BYTES
    return read_b, write_b


def _net_bytes() -> tuple[int, int]:
    rx_b = tx_b = 0
    for line in _read("/proc/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            continue
        parts = rest.split()
        if len(parts) >= 9:
            rx_b += int(parts[0])
            tx_b += int(parts[8])
    return rx_b, tx_b


class HostSampler:
    """Keeps the previous counters so each sample reports rates over the interval since the last."""

    def __init__(self) -> None:
        self._disks = _whole_disks()
        self._prev = self._counters()

    def _counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = {"t": time.monotonic()}
        try:
            counters["cpu"] = _cpu_ticks()
        except (OSError, ValueError, IndexError):
            counters["cpu"] = None
        try:
            counters["disk"] = _disk_bytes(self._disks)
        except (OSError, ValueError):
            counters["disk"] = None
        try:
            counters["net"] = _net_bytes()
        except (OSError, ValueError):
            counters["net"] = None
        return counters

    def age_s(self) -> float:
        """Seconds since the counters of the previous sample were taken."""
        started_s: float = self._prev["t"]
        return time.monotonic() - started_s

    def sample(self, rates: bool = True) -> dict[str, Any]:
        """Return the node I/O figures of the contract; None for what this node cannot tell (and,
        with `rates` False, for the rates: the window since the last sample is too short for them)."""
        if rates:
            now = self._counters()
            prev, self._prev = self._prev, now
        else:  # no window for rates: they stay unknown, and the kept counters start the next one's window
            now = prev = {"t": 0.0, "cpu": None, "disk": None, "net": None}
        dt = max(now["t"] - prev["t"], 1e-6)
        result: dict[str, Any] = {
            "cpu_pct": None, "mem_used_bytes": None, "mem_total_bytes": None,
            "disk_read_bps": None, "disk_write_bps": None, "net_rx_bps": None, "net_tx_bps": None,
            "load1": None, "cpu_count": os.cpu_count(),
        }
        if now["cpu"] and prev["cpu"]:
            busy = now["cpu"][0] - prev["cpu"][0]
            total = now["cpu"][1] - prev["cpu"][1]
            result["cpu_pct"] = round(100.0 * busy / total, 1) if total > 0 else 0.0
        if now["disk"] and prev["disk"]:
            result["disk_read_bps"] = max(0, int((now["disk"][0] - prev["disk"][0]) / dt))
            result["disk_write_bps"] = max(0, int((now["disk"][1] - prev["disk"][1]) / dt))
        if now["net"] and prev["net"]:
            result["net_rx_bps"] = max(0, int((now["net"][0] - prev["net"][0]) / dt))
            result["net_tx_bps"] = max(0, int((now["net"][1] - prev["net"][1]) / dt))
        try:
            result["mem_used_bytes"], result["mem_total_bytes"] = _meminfo()
        except (OSError, ValueError):
            pass
        try:
            result["load1"] = float(_read("/proc/loadavg").split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return result
