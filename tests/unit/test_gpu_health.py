"""GPU health (node/health.py): NVML's readings through the facade (None where unsupported), the rule
that withholds a GPU with a fresh error, and the transactions that withhold it and let an admin
return it, with its ledger records."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.node import gpus, health, ledger
from gpuconsole.node import state as st
from gpuconsole.node.store import StateStore
from gpuconsole.node.txn import Critical, Transactions

BOOT = "boot-health"


class _NVMLError(Exception):
    pass


class _Event:
    def __init__(self, device: object, xid: int) -> None:
        self.device = device
        self.eventData = xid


def _fake_pynvml(unsupported: set[str], events: list[_Event]) -> types.ModuleType:
    """A stand-in for nvidia-ml-py with two GPUs: GPU 1 has two uncorrectable volatile ECC errors,
    a pending row remap and hardware slowdown; `events` are XIDs waiting to be drained."""
    mod = types.ModuleType("pynvml")
    handles = [object(), object()]
    consts = {"NVMLError": _NVMLError, "NVML_TEMPERATURE_GPU": 0, "nvmlEventTypeXidCriticalError": 8,
              "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
              "NVML_VOLATILE_ECC": 0, "NVML_AGGREGATE_ECC": 1, "NVML_PCIE_UTIL_TX_BYTES": 0,
              "NVML_PCIE_UTIL_RX_BYTES": 1}
    for name, value in consts.items():
        setattr(mod, name, value)

    def ecc(handle: object, kind: int, counter: int) -> int:
        if handle is handles[1] and kind == 1:
            return 2 if counter == 0 else 7
        return 0

    def wait(_set: object, _timeout_ms: int) -> _Event:
        if not events:
            raise _NVMLError("timeout")
        return events.pop(0)

    functions: dict[str, Any] = {
        "nvmlInit": lambda: None, "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: handles[i], "nvmlDeviceGetIndex": handles.index,
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100", "nvmlDeviceGetUUID": lambda h: "GPU-x",
        "nvmlEventSetCreate": lambda: object(), "nvmlDeviceRegisterEvents": lambda h, t, s: None,
        "nvmlEventSetWait": wait, "nvmlDeviceGetTotalEccErrors": ecc,
        "nvmlDeviceGetRemappedRows": lambda h: (0, 1, h is handles[1], False),
        "nvmlDeviceGetRetiredPagesPendingStatus": lambda h: 0,
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: 0x8 | 0x1 if h is handles[1] else 0,
        "nvmlDeviceGetPcieThroughput": lambda h, which: 1200 if which == 0 else 800,
    }
    for name, func in functions.items():
        if name in unsupported:
            def refuse(*_args: object, _name: str = name) -> object:
                raise _NVMLError(_name)
            setattr(mod, name, refuse)
        else:
            setattr(mod, name, func)
    return mod


def test_nvml_health_readings_map_and_unsupported_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[_Event] = []
    mod = _fake_pynvml({"nvmlDeviceGetRetiredPagesPendingStatus"}, events)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    source = gpus.NvmlGpus()
    readings = source.health(None)
    good, bad = readings[0], readings[1]
    assert good["ecc_uncorrected_volatile"] == 0 and good["xid"] is None and good["throttle"] == []
    assert bad["ecc_uncorrected_volatile"] == 2 and bad["ecc_uncorrected_aggregate"] == 7
    assert bad["remap_pending"] is True and bad["remap_failure"] is False
    assert bad["throttle"] == ["gpu_idle", "hw_slowdown"]
    assert bad["pcie_tx_kib_s"] == 1200 and bad["pcie_rx_kib_s"] == 800
    assert good["retired_pages_pending"] is None  # unsupported: None, never an error
    assert good["nvlink_tx_kib_s"] is None  # this nvidia-ml-py has no field values: None
    events.append(_Event(mod.nvmlDeviceGetHandleByIndex(0), 79))
    again = source.health(None)
    assert again[0]["xid"] == 79 and again[0]["xid_at_wall"] is not None
    assert health.fault(again[0], None) == "XID 79"
    assert health.fault(again[1], None) == "2 uncorrectable ECC errors since the driver loaded"


def test_the_fault_rule_counts_only_what_is_new_since_the_last_clear() -> None:
    reading = dict(health.empty(), ecc_uncorrected_aggregate=3, remap_pending=True)
    assert health.fault(reading, None) == "3 uncorrectable ECC errors (lifetime)"
    cleared: Any = {"baseline": {"ecc_uncorrected_aggregate": 3, "remap_pending": True}, "cleared_wall": 100.0}
    assert health.fault(reading, cleared) is None
    assert health.fault(dict(reading, ecc_uncorrected_aggregate=4), cleared) == \
        "1 uncorrectable ECC errors (lifetime)"
    # An XID before the clear is old news; one after it is fresh.
    assert health.fault(dict(reading, xid=48, xid_at_wall=90.0), cleared) is None
    assert health.fault(dict(reading, xid=48, xid_at_wall=110.0), cleared) == "XID 48"
    # A condition cleared while it held counts again once it went away and came back.
    assert health.fault(dict(reading, remap_failure=True), cleared) == "row remapping failed"


class Node:
    def __init__(self, tmp_path: Path) -> None:
        self.readings: dict[int, dict[str, Any]] = {}
        self.admin = False
        self.txn = Transactions(StateStore(str(tmp_path / "state")), BOOT, self.ctx, set, Critical(), None,
                                lambda: self.readings)

    def ctx(self) -> st.Ctx:
        return st.Ctx(1001, "alice", 1000.0, 1_700_000_000.0, 4, admin=self.admin)

    def run(self, op: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.txn.run(op, args)[0]
        return result


def test_a_gpu_with_a_fresh_error_is_withheld_until_an_admin_clears_it(tmp_path: Path) -> None:
    node = Node(tmp_path)
    held = node.run("reserve", gpus=1, ttl_s=600)
    node.readings = {0: dict(health.empty(), xid=79, xid_at_wall=1_699_999_990.0)}
    with pytest.raises(st.OpError) as full:
        node.run("reserve", gpus=4, ttl_s=600)
    assert full.value.code == "insufficient"
    assert 0 not in node.run("reserve", gpus=3, ttl_s=600)["gpus"]
    state = node.txn.read()[0]
    assert health.withheld(state) == {0}
    listed = st.listing(state, node.ctx())["reservations"]
    assert next(r for r in listed if r["id"] == held["id"])["withheld_gpus"] == [0]
    with pytest.raises(st.OpError) as refused:
        node.run("gpu_clear", gpu=0)
    assert refused.value.code == "permission"
    node.admin = True
    with pytest.raises(st.OpError) as missing:
        node.run("gpu_clear", gpu=9)
    assert missing.value.code == "not_found"
    assert node.run("gpu_clear", gpu=0) == {"gpu": 0, "was_withheld": True, "reason": "XID 79"}
    node.admin = False
    node.run("release", id=held["id"])
    assert node.run("reserve", gpus=1, ttl_s=600)["gpus"] == [0]  # the same XID reading is old news now
    records, breaks = ledger.verify(node.txn.store.dir, ledger.head_of(node.txn.read()[0], node.txn.store.dir))
    assert not breaks
    events = [(r["event"], r.get("gpu")) for r in records if r["event"].startswith("gpu_")]
    assert events == [("gpu_withheld", 0), ("gpu_cleared", 0)]
    assert next(r for r in records if r["event"] == "gpu_withheld")["owner"] == "alice"
