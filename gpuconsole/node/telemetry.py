"""The agent's telemetry: one snapshot (host, GPUs, who holds them, the listing) and the stream.

A snapshot reads the state without the lock (the read cache), shown as the next transaction
would find it; the stream sends one every `stream_s` from its own thread until the agent stops.
"""

from __future__ import annotations

import os
import threading
import time

from . import health, jobs, pending
from . import state as st
from .fileio import read_regular
from .store import CorruptState, no_dir_note

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .gpus import GpuSource
    from .hostio import HostSampler
    from .state import Ctx
    from .txn import Transactions
    from .typedefs import Lease, Result

MIN_RATE_WINDOW_S = 0.1

SNAPSHOT_PENDING_MAX = 20  # queued requests a snapshot explains


class Telemetry:
    """Samples for one connection, and its optional stream of them."""

    def __init__(self, send: Callable[[dict[str, Any]], None], host: HostSampler,
                 snapshot: Callable[[], Result], stopped: Callable[[], bool]) -> None:
        """`snapshot`: what the stream sends (the agent's current snapshot); `stopped`: the agent is ending."""
        self.send = send
        self.host = host
        self.snapshot = snapshot
        self.stopped = stopped
        self.sample_lock = threading.Lock()
        self.stream_s: float | None = None
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.gpu_users: dict[int, list[str]] = {}  # as gpus_in_use last saw them

    def gpus_in_use(self, gpus: GpuSource) -> set[int]:
        """GPUs with processes on them (any owner); who runs them is kept in `gpu_users`."""
        with self.sample_lock:
            found = {g: items for g, items in gpus.processes().items() if items}
            self.gpu_users = {g: sorted({str(p.get("user") or "?") for p in items}) for g, items in found.items()}
            return set(found)

    def collect(self, gpus: GpuSource | None, txn: Transactions, new_ctx: Callable[[], Ctx],
                rates: bool = True) -> Result:
        """Host I/O, GPUs with their reservations and processes, and the state listing.

        Rates need a window of MIN_RATE_WINDOW_S since the previous sample: only the first sample of
        a connection is that young. It waits for it, unless the caller does not show rates (`rates`
        False: a single `status --json`); then the rates are null (unknown) and nothing waits.
        """
        with self.sample_lock:
            wait_s = MIN_RATE_WINDOW_S - self.host.age_s()
            if wait_s > 0 and rates:
                time.sleep(wait_s)
            host = self.host.sample(rates=rates or wait_s <= 0)
            gpu_list = gpus.sample() if gpus else []
            readings = gpus.health(sim_faults(gpus, txn.store.dir)) if gpus else {}
        ctx = new_ctx()
        state_error = None
        warnings: list[str] = []
        try:
            state, warnings, source = txn.store.read_cached(txn.boot_id)
            if source == "new" and not os.path.isdir(txn.store.dir):  # said, never created, on a read
                warnings = ["%s yet: %s" % no_dir_note(txn.store.dir, txn.service_user)]
        except CorruptState as exc:
            state, state_error = st.new_state(txn.boot_id), "state unreadable: %s" % exc
        except OSError as exc:
            state, state_error = st.new_state(txn.boot_id), "state dir: %s" % exc
        ctx.gpus_in_use = {g["index"] for g in gpu_list if g.get("processes")}
        state = txn.view(state, ctx)
        by_lease: dict[int, Lease] = {}
        for lease in state["leases"].values():
            if lease["exp_bt"] > ctx.now_bt:
                for index in lease["gpus"]:
                    by_lease[index] = lease
        for gpu in gpu_list:
            held = by_lease.get(gpu["index"])
            gpu["reservation"] = None if held is None else {
                "id": held["id"], "owner": held["owner"],
                "expires_at": st.iso_utc(ctx.wall_at(held["exp_bt"])),
                "priority": st.PRIORITY_NAMES.get(held["priority"], "normal"),
            }
            gpu["unreserved_use"] = held is None and bool(gpu.get("processes"))
            reading = readings.get(gpu["index"])
            gpu["health"] = {k: v for k, v in reading.items() if v is not None} or None if reading else None
            gpu["withheld"] = _withheld(state, gpu["index"], reading, ctx)
        data = dict(host)
        data.update({
            "t_wall": ctx.now_wall, "gpus": gpu_list,
            "gpu_source": gpus.source if gpus else "none",
            "state_error": state_error, "warnings": warnings,
        })
        # Why the first few queued requests wait (the console shows it): not a whole deep queue's,
        # which would grow every snapshot by hundreds of KB.
        data.update(st.listing(state, ctx, pending.explain(state, ctx, SNAPSHOT_PENDING_MAX)
                               if state["queue"] else {}))
        data["jobs"] = jobs.recent(state, ctx)
        return data

    def set_stream(self, interval: object) -> None:
        """Stream a snapshot every `interval` seconds (0.05..3600), or stop streaming (None)."""
        if interval is not None:
            interval = st.number(interval, "stream_s must be between 0.05 and 3600 seconds", 0.05, 3600)
        self.stream_s = interval
        if interval is not None and self.thread is None:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        self.wake.set()

    def _loop(self) -> None:
        while not self.stopped():
            interval = self.stream_s
            if interval is None:
                self.wake.wait()
                self.wake.clear()
                continue
            started = time.monotonic()
            try:
                message = {"event": "snapshot", "data": self.snapshot()}
            except Exception as exc:  # a bad sample (even a ValueError) must not end the stream
                message = {"event": "error", "message": "%s: %s" % (exc.__class__.__name__, exc)}
            try:
                self.send(message)
            except (BrokenPipeError, ValueError):  # the client is gone (ValueError: a closed stdout)
                return
            self.wake.wait(max(0.0, interval - (time.monotonic() - started)))
            self.wake.clear()


def _withheld(state: Any, index: int, reading: Any, ctx: Ctx) -> Result | None:
    """Why a GPU is withheld from new grants, as the next transaction would find it: withheld in
    the state, or showing a fresh error now (which that transaction will withhold)."""
    entry = (state.get("gpu_health") or {}).get(str(index))
    held = entry.get("withheld") if isinstance(entry, dict) else None
    if isinstance(held, dict):
        return {"reason": str(held.get("reason")), "since": st.iso_utc(float(held.get("since_wall") or 0))}
    why = health.fault(reading, entry) if reading else None
    return None if why is None else {"reason": why, "since": st.iso_utc(ctx.now_wall)}


def sim_faults(gpus: GpuSource, state_dir: str) -> tuple[bytes, float] | None:
    """The simulation's fault file (health.SIM_FILE in the state dir, anyone's to write there): read
    as a regular file of bounded size, never followed or waited on; None on a real node or without it."""
    if gpus.source != "simulated":
        return None
    path = os.path.join(state_dir, health.SIM_FILE)
    try:
        return read_regular(path, limit=health.MAX_SIM_BYTES), os.stat(path).st_mtime
    except (OSError, ValueError):
        return None
