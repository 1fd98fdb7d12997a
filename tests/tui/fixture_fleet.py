"""A frozen, seeded fleet for snapshots: healthy, busy, idle-reserved, unreserved, stale, unreachable;
plus a cloud discovery round (running, pending and stopped instances) for the Cloud tab."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuconsole.config import Config, NodeConfig, parse_config
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.cloud import Instance
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent

if TYPE_CHECKING:
    from gpuconsole.tui.app import GpuConsoleApp

NODES = ("dgx-01", "dgx-02", "dgx-03", "dgx-04", "cloud-g5-1")
FROZEN_NOW_S = 10_000.0  # the monotonic clock
FROZEN_WALL_S = 1_795_426_200.0  # the wall clock at FROZEN_NOW_S: 2026-11-23T09:30:00Z
T0 = "2026-11-23T09:00:00Z"
CLOUD_SECTION = "\n[cloud.aws]\nregion = 'us-east-1'\nendpoint_url = 'http://127.0.0.1:1'\n"


def fixture_config(cloud: bool = False) -> Config:
    """Five nodes; idle after 1 minute (so the 90 s history raises an idle alert); optionally a cloud."""
    text = "[defaults]\nreserve_for = '4h'\n\n[watch]\nidle_minutes = 1\n" + "".join(
        f"\n[[nodes]]\nname = '{n}'\nhost = '127.0.0.1'\nport = {2200 + i}\n" for i, n in enumerate(NODES))
    return parse_config(text + (CLOUD_SECTION if cloud else ""), Path("/fixture/config.toml"))


CLOUD_NODE = "i-0a1b2c3d4e5f60718"


def fixture_instances() -> tuple[Instance, ...]:
    """A running on-demand g5 (up 2h, a node), a pending spot g6e and a stopped g6."""
    return (
        Instance(CLOUD_NODE, "g5.xlarge", "running", False, 1, 1.006, FROZEN_WALL_S - 7200, True, "alice"),
        Instance("i-0f9e8d7c6b5a43210", "g6e.12xlarge", "pending", True, 4, 3.12, FROZEN_WALL_S - 20, True, "bob"),
        Instance("i-07c1d2e3f4a5b6c7d", "g6.xlarge", "stopped", False, 1, 0.805, FROZEN_WALL_S - 86400, True, "carol"),
    )


def fixture_cloud_node() -> NodeConfig:
    return NodeConfig(CLOUD_NODE, "127.0.0.1", port=2299, source="cloud")


def fixture_cloud_node_event() -> PollEvent:
    """The running instance's agent answering: one A10G, reserved by alice and busy."""
    res = {"id": "r-c10ud5", "owner": "alice", "expires_at": "2026-11-23T11:00:00Z"}
    gpu = dict(_gpu(0, 88.0, 20111, res, [{"pid": 7001, "user": "alice", "command": "python finetune.py",
                                           "mem_mib": 20111}]), name="NVIDIA A10G", mem_total_mib=23028)
    data = dict(_node(CLOUD_NODE, [gpu], [_res("r-c10ud5", CLOUD_NODE, [0], "alice", res["expires_at"])]),
                cpu_count=4, mem_total_bytes=16 * 2**30, mem_used_bytes=9 * 2**30)
    return NodeUpdated(NodeSnapshot.from_agent(CLOUD_NODE, data, "cloud"), FROZEN_NOW_S)


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


def frozen_console(cloud: bool = False, theme: str = "gpuconsole-dark", events: bool = True) -> GpuConsoleApp:
    """The console over this fleet with frozen clocks and no poller (snapshots and layout tests);
    `events=False`: before any node has answered."""
    from gpuconsole.cloud.monitor import CloudView
    from gpuconsole.tui.app import GpuConsoleApp

    app = GpuConsoleApp(fixture_config(cloud), theme_name=theme, poll=False, clock=lambda: FROZEN_NOW_S,
                        wall_clock=lambda: FROZEN_WALL_S)
    for event in fixture_events() if events else ():
        app.inject(event)
    if cloud and events:
        app.inject_cloud(CloudView(fixture_instances(), (fixture_cloud_node(),), None, FROZEN_WALL_S))
        app.inject(fixture_cloud_node_event())
    return app
