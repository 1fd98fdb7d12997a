"""A frozen, seeded fleet for snapshots: healthy, busy, idle-reserved, unreserved, stale, unreachable."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from gpuconsole.config import Config, parse_config
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent

NODES = ("dgx-01", "dgx-02", "dgx-03", "dgx-04", "cloud-g5-1")
FROZEN_NOW_S = 10_000.0
T0 = "2026-11-23T09:00:00Z"


def fixture_config() -> Config:
    text = "[defaults]\nreserve_for = '4h'\n" + "".join(
        f"\n[[nodes]]\nname = '{n}'\nhost = '127.0.0.1'\nport = {2200 + i}\n" for i, n in enumerate(NODES))
    return parse_config(text, Path("/fixture/config.toml"))


def _gpu(index: int, util: float, mem_mib: int, reservation: dict[str, Any] | None = None,
         procs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"index": index, "uuid": f"GPU-{index:08d}-fixture", "name": "NVIDIA H100 80GB HBM3",
            "util_pct": util, "mem_used_mib": mem_mib, "mem_total_mib": 81559,
            "temperature_c": 31 + util / 2, "power_w": 70 + util * 6, "reservation": reservation,
            "processes": procs or []}


def _node(name: str, gpus: list[dict[str, Any]], reservations: list[dict[str, Any]] = (),  # type: ignore[assignment]
          queue: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"t_wall": 1795460000.0, "cpu_pct": 37.5, "cpu_count": 128, "mem_used_bytes": 412 * 2**30,
            "mem_total_bytes": 2048 * 2**30, "disk_read_bps": 12_500_000, "disk_write_bps": 3_200_000,
            "net_rx_bps": 880_000_000, "net_tx_bps": 240_000_000, "gpu_source": "nvml",
            "gpus": gpus, "reservations": list(reservations), "queue": list(queue)}


def _res(rid: str, node: str, gpus: list[int], owner: str, expires: str) -> dict[str, Any]:
    return {"id": rid, "gpus": gpus, "owner": owner, "priority": "normal", "state": "active",
            "created_at": T0, "expires_at": expires}


def fixture_events(samples: int = 90) -> list[PollEvent]:
    """`samples` seconds of history ending at FROZEN_NOW_S, then two failing nodes."""
    rng = random.Random(7)
    events: list[PollEvent] = []
    alice = {"id": "r-a7k2m9", "owner": "alice", "expires_at": "2026-11-23T13:00:00Z"}
    bob = {"id": "r-b4x8q2", "owner": "bob", "expires_at": "2026-11-23T11:30:00Z"}
    for step in range(samples):
        at_s = FROZEN_NOW_S - (samples - 1 - step)
        wave = 60 + 35 * rng.random()
        train = {"pid": 41231, "user": "alice", "command": "python train.py --config llama.yaml", "mem_mib": 61234}
        stray = {"pid": 50117, "user": "carol", "command": "jupyter-kernel", "mem_mib": 20480}
        dgx1 = _node("dgx-01", [
            _gpu(0, wave, 61234, alice, [train]), _gpu(1, wave - 5, 60110, alice, [dict(train, pid=41232)]),
            _gpu(2, 0.0, 0, bob), _gpu(3, 0.0, 0, bob),
            _gpu(4, 40 + 20 * rng.random(), 20480, None, [stray]),
            _gpu(5, 0.0, 0), _gpu(6, 0.0, 0), _gpu(7, 0.0, 0),
        ], reservations=[_res("r-a7k2m9", "dgx-01", [0, 1], "alice", alice["expires_at"]),
                         _res("r-b4x8q2", "dgx-01", [2, 3], "bob", bob["expires_at"])],
            queue=[{"id": "r-q9w3e5", "gpus_requested": 8, "owner": "dave", "priority": "high",
                    "position": 1, "created_at": T0}])
        dgx2 = _node("dgx-02", [_gpu(i, 0.0, 0) for i in range(8)])
        for name, data in (("dgx-01", dgx1), ("dgx-02", dgx2), ("dgx-03", dgx2)):
            if name == "dgx-03" and step > samples - 13:
                continue  # dgx-03 went silent 12 s ago: stale, last data dimmed
            events.append(NodeUpdated(NodeSnapshot.from_agent(name, data), at_s))
    events.append(NodeFailed("dgx-03", "dgx-03: connection lost", False, 4.0, FROZEN_NOW_S))
    events.append(NodeFailed("dgx-04", "dgx-04: connection refused", False, 8.0, FROZEN_NOW_S))
    return events
