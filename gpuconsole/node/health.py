"""GPU health: the readings (XID errors, ECC, retired pages, row remapping, throttle reasons, PCIe
and NVLink throughput) and the rule that withholds a GPU with fresh errors from new grants.

Readings come from the GPU facade (gpus.py): NVML where it supports them, None where it does not,
and, on simulated GPUs, a fault file a test or the demo writes (`sim-health.json` in the state
dir: {"3": {"xid": 79}} injects XID 79 on GPU 3). A GPU is withheld from the time a transaction
sees a fresh error until an admin clears it (`gpuconsole gpu clear NODE:GPU`): an XID seen after
the last clear, uncorrectable ECC errors past the counts at the last clear (volatile ones count from
the driver's load), pages waiting for retirement or rows for remapping (both need a GPU reset), or a
failed row remapping. The withholding lives in the state (`gpu_health`), so every agent honours it.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

    from .typedefs import State

    Reading = Dict[str, Any]
    Readings = Dict[int, Reading]

# Throttle reasons of nvmlDeviceGetCurrentClocksThrottleReasons, by bit.
THROTTLE_BITS = ((0x1, "gpu_idle"), (0x2, "applications_clocks"), (0x4, "sw_power_cap"), (0x8, "hw_slowdown"),
                 (0x10, "sync_boost"), (0x20, "sw_thermal"), (0x40, "hw_thermal"), (0x80, "hw_power_brake"),
                 (0x100, "display_clocks"))
COUNTERS = ("ecc_uncorrected_volatile", "ecc_uncorrected_aggregate")
CONDITIONS = ("remap_failure", "remap_pending", "retired_pages_pending")
FIELDS = ("xid", "xid_at_wall", "ecc_uncorrected_volatile", "ecc_uncorrected_aggregate", "ecc_corrected_volatile",
          "retired_pages_pending", "remap_pending", "remap_failure", "throttle", "pcie_tx_kib_s", "pcie_rx_kib_s",
          "nvlink_tx_kib_s", "nvlink_rx_kib_s")
SIM_FILE = "sim-health.json"
UNCORRECTED = "NVML_MEMORY_ERROR_TYPE_UNCORRECTED"
MAX_SIM_BYTES = 64 << 10


def gpu_key(key: object) -> bool:
    """A table key naming a GPU index as this code writes it: ASCII digits, no leading zero (any
    group member can write the state: "²" or "03" must never reach int() or alias a GPU)."""
    return (isinstance(key, str) and 0 < len(key) <= 4 and key.isascii() and key.isdigit()
            and (key == "0" or not key.startswith("0")))


def empty() -> Reading:
    """A GPU whose source reports no health reading at all."""
    return dict.fromkeys(FIELDS)


def throttle_names(mask: object) -> list[str] | None:
    if not isinstance(mask, int):
        return None
    return [name for bit, name in THROTTLE_BITS if mask & bit]


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63 else None


def _wall(value: object) -> bool:
    """A finite Unix time a clock can show (the fault file is anyone's to write)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 2 ** 33


def simulated(data: bytes | None, count: int, written_wall: float | None) -> Readings:
    """Healthy simulated GPUs, unless the fault file's bytes (`data`, read by the caller as a regular
    file of bounded size; written at `written_wall`) say otherwise for some (sim only, never real)."""
    try:
        faults: Any = json.loads(data.decode("utf-8")) if data else {}
    except ValueError:
        faults = {}
    if not isinstance(faults, dict):
        faults = {}
    out: Readings = {}
    for index in range(count):
        fault = faults.get(str(index))
        fault = fault if isinstance(fault, dict) else {}
        xid = _count(fault.get("xid"))
        at = fault.get("at_wall")  # when the XID happened; default: when the file was written
        # A healthy simulated GPU reports nothing (a fleet of them costs no bytes per snapshot);
        # an injected fault reports itself.
        reading = empty()
        reading.update({
            "xid": xid, "xid_at_wall": (float(at) if isinstance(at, (int, float)) and _wall(at) else written_wall)
            if xid else None,
            "ecc_uncorrected_volatile": _count(fault.get("ecc_uncorrected_volatile")),
            "ecc_uncorrected_aggregate": _count(fault.get("ecc_uncorrected_aggregate")),
            "ecc_corrected_volatile": _count(fault.get("ecc_corrected_volatile")),
        })
        for name in CONDITIONS:
            reading[name] = True if fault.get(name) is True else None
        out[index] = reading
    return out


def fault(reading: Reading, entry: Any) -> str | None:
    """Why this GPU must be withheld now (a fresh error), or None; `entry`: its gpu_health record."""
    entry = entry if isinstance(entry, dict) else {}
    cleared_wall = entry.get("cleared_wall") or 0.0
    baseline = entry.get("baseline") if isinstance(entry.get("baseline"), dict) else {}
    xid, xid_at = reading.get("xid"), reading.get("xid_at_wall")
    if xid is not None and (xid_at > cleared_wall if isinstance(xid_at, (int, float)) else not cleared_wall):
        return "XID %d" % xid
    for name, what in (("ecc_uncorrected_volatile", "uncorrectable ECC errors since the driver loaded"),
                       ("ecc_uncorrected_aggregate", "uncorrectable ECC errors (lifetime)")):
        value = reading.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > int(baseline.get(name) or 0):
            return "%d %s" % (value - int(baseline.get(name) or 0), what)
    # A condition an admin cleared while it held counts again only once it has gone and come back.
    for name, what in (("remap_failure", "row remapping failed"),
                       ("remap_pending", "rows waiting to be remapped (needs a GPU reset)"),
                       ("retired_pages_pending", "pages waiting to be retired (needs a GPU reset)")):
        if reading.get(name) and not baseline.get(name):
            return what
    return None


def withheld(state: State) -> set[int]:
    """The GPUs no new grant may take."""
    table: Any = state.get("gpu_health") or {}
    return {int(index) for index, entry in table.items()
            if isinstance(entry, dict) and entry.get("withheld") and gpu_key(index)}


def mark(state: State, readings: Readings, user: str, now_wall: float) -> bool:
    """Withhold each GPU with a fresh error (in the state); True when one was newly withheld."""
    changed = False
    for index, reading in readings.items():
        entry: Any = state.get("gpu_health", {}).get(str(index))
        if isinstance(entry, dict) and entry.get("withheld"):
            continue
        why = fault(reading, entry)
        if why is None:
            continue
        table: Any = state.setdefault("gpu_health", {})
        record = dict(entry or {})
        record["withheld"] = {"reason": why, "since_wall": now_wall, "seen_by": user,
                              "reading": {k: reading.get(k) for k in FIELDS if k not in ("throttle",)}}
        table[str(index)] = record
        changed = True
    return changed


def clear(state: State, index: int, reading: Reading | None, user: str, now_wall: float) -> Any | None:
    """An admin returns GPU `index`: its counters now become the baseline; the withholding it had
    (or None when it had none)."""
    table: Any = state.setdefault("gpu_health", {})
    entry = dict(table.get(str(index)) or {})
    was = entry.pop("withheld", None)
    reading = reading or {}
    entry["baseline"] = {name: reading.get(name) for name in COUNTERS + CONDITIONS
                         if isinstance(reading.get(name), (int, bool))}
    entry["cleared_wall"] = now_wall
    entry["cleared_by"] = user
    table[str(index)] = entry
    return was


class NvmlHealth:
    """The health readings NVML gives, each None where the device or driver does not support it.

    XIDs are events: this agent sees those that happen while it is connected (the keeper's, the
    console's or the watcher's agent stays connected), drained without waiting at each reading.
    """

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self.nvml = nvml
        self.handles = handles
        self.last_xid: dict[int, tuple[int, float]] = {}
        self.events: Any = None
        self.nvlink_prev: dict[int, tuple[float, int, int]] = {}
        try:
            self.events = nvml.nvmlEventSetCreate()
            for handle in handles:
                self._call("nvmlDeviceRegisterEvents", handle, nvml.nvmlEventTypeXidCriticalError, self.events)
        except Exception:  # no event support: XIDs stay None
            self.events = None

    def _call(self, name: str, *args: Any) -> Any:
        """One NVML call; unsupported, not permitted or missing in this nvidia-ml-py: None."""
        func = getattr(self.nvml, name, None)
        if func is None:
            return None
        try:
            return func(*args)
        except Exception:
            return None

    def _drain_xids(self, now_wall: float) -> None:
        if self.events is None:
            return
        for _ in range(1000):
            data = self._call("nvmlEventSetWait", self.events, 0)
            if data is None:
                return
            index = self._call("nvmlDeviceGetIndex", data.device)
            if isinstance(index, int):
                self.last_xid[index] = (int(data.eventData), now_wall)

    def _ecc(self, handle: Any, error_type: str, counter: str) -> int | None:
        nvml = self.nvml
        value = self._call("nvmlDeviceGetTotalEccErrors", handle, getattr(nvml, error_type, None),
                           getattr(nvml, counter, None))
        return _count(value)

    def _nvlink(self, index: int, handle: Any, now_s: float) -> tuple[int | None, int | None]:
        """NVLink data throughput (KiB/s) from the cumulative counters; None on the first reading."""
        tx_id = getattr(self.nvml, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", None)
        rx_id = getattr(self.nvml, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", None)
        values = self._call("nvmlDeviceGetFieldValues", handle, [tx_id, rx_id]) if tx_id and rx_id else None
        try:
            tx, rx = int(values[0].value.ullVal), int(values[1].value.ullVal)  # type: ignore[index]
            if values[0].nvmlReturn or values[1].nvmlReturn:  # type: ignore[index]
                return None, None
        except (TypeError, AttributeError, IndexError, ValueError):
            return None, None
        prev = self.nvlink_prev.get(index)
        self.nvlink_prev[index] = (now_s, tx, rx)
        if prev is None or now_s <= prev[0]:
            return None, None
        span = now_s - prev[0]
        return int((tx - prev[1]) / span), int((rx - prev[2]) / span)

    def read(self, now_wall: float, now_s: float) -> Readings:
        nvml = self.nvml
        self._drain_xids(now_wall)
        out: Readings = {}
        for index, handle in enumerate(self.handles):
            remap = self._call("nvmlDeviceGetRemappedRows", handle)
            pending = self._call("nvmlDeviceGetRetiredPagesPendingStatus", handle)
            xid = self.last_xid.get(index)
            tx, rx = self._nvlink(index, handle, now_s)
            out[index] = {
                "xid": xid[0] if xid else None, "xid_at_wall": xid[1] if xid else None,
                "ecc_uncorrected_volatile": self._ecc(handle, UNCORRECTED, "NVML_VOLATILE_ECC"),
                "ecc_uncorrected_aggregate": self._ecc(handle, UNCORRECTED, "NVML_AGGREGATE_ECC"),
                "ecc_corrected_volatile": self._ecc(handle, "NVML_MEMORY_ERROR_TYPE_CORRECTED", "NVML_VOLATILE_ECC"),
                "retired_pages_pending": None if pending is None else bool(pending),
                "remap_pending": bool(remap[2]) if isinstance(remap, (tuple, list)) and len(remap) >= 4 else None,
                "remap_failure": bool(remap[3]) if isinstance(remap, (tuple, list)) and len(remap) >= 4 else None,
                "throttle": throttle_names(self._call("nvmlDeviceGetCurrentClocksThrottleReasons", handle)),
                "pcie_tx_kib_s": _count(self._call("nvmlDeviceGetPcieThroughput", handle,
                                                   getattr(nvml, "NVML_PCIE_UTIL_TX_BYTES", 0))),
                "pcie_rx_kib_s": _count(self._call("nvmlDeviceGetPcieThroughput", handle,
                                                   getattr(nvml, "NVML_PCIE_UTIL_RX_BYTES", 1))),
                "nvlink_tx_kib_s": tx, "nvlink_rx_kib_s": rx,
            }
        return out
