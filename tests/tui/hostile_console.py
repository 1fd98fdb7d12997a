"""The console fed hostile text: a fleet whose every string field carries escape sequences, C1
controls, a bidi override and markup, and the checks that the screen shows none of them. Shared by
the hostile-text and fuzz tests of the console."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from gpuconsole.cloud.monitor import CloudView
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.cloud import Instance
from gpuconsole.model.events import NodeFailed, NodeUpdated
from gpuconsole.tui.app import GpuConsoleApp
from tests.helpers import FORBIDDEN, HOSTILE
from tests.tui.fixture_fleet import FROZEN_NOW_S, FROZEN_WALL_S, T0, fixture_config

SIZE = (160, 50)


def _gpu(index: int, util: float, reservation: dict[str, Any] | None, text: str) -> dict[str, Any]:
    return {"index": index, "uuid": f"GPU-{index}", "name": f"NVIDIA {text}", "util_pct": util,
            "mem_used_mib": 100, "mem_total_mib": 81559, "temperature_c": 30, "power_w": 70,
            "reservation": reservation,
            "processes": [{"pid": 100 + index, "user": text, "command": f"python {text}", "mem_mib": 100}]}


def hostile_node(name: str, text: str = HOSTILE) -> dict[str, Any]:
    """GPU 0 reserved by a hostile owner and idle (an idle alert whose message names the owner);
    GPU 1 in unreserved use by a hostile user; a running job with a hostile name and command."""
    reservation = {"id": "r-h0st1le", "owner": text, "expires_at": "2026-11-23T13:00:00Z"}
    return {
        "t_wall": FROZEN_WALL_S, "cpu_pct": 5.0, "cpu_count": 8, "mem_used_bytes": 1, "mem_total_bytes": 2,
        "gpu_source": "nvml", "gpus": [_gpu(0, 0.0, reservation, text), _gpu(1, 50.0, None, text)],
        "reservations": [{"id": "r-h0st1le", "gpus": [0], "owner": text, "priority": "normal",
                          "state": "active", "created_at": T0, "expires_at": "2026-11-23T13:00:00Z"}],
        "queue": [{"id": "r-qu3u3d", "gpus_requested": 2, "owner": text, "priority": "high", "position": 1,
                   "created_at": T0}],
        "jobs": [{"id": "j-h0st1le", "name": text, "gpus": [1], "gpus_requested": 1, "owner": text,
                  "priority": "normal", "state": "running", "exit_code": None, "command": f"python {text}",
                  "created_at": T0, "started_at": T0, "ended_at": None}],
    }


def hostile_app(text: str = HOSTILE) -> GpuConsoleApp:
    """dgx-01 streams hostile data for 90 s (so its idle reservation raises an alert); dgx-04 is down
    with a hostile error; the cloud answers with a hostile error and a hostile instance owner."""
    app = GpuConsoleApp(fixture_config(cloud=True), poll=False, clock=lambda: FROZEN_NOW_S,
                        wall_clock=lambda: FROZEN_WALL_S)
    for step in range(90):
        snapshot = NodeSnapshot.from_agent("dgx-01", hostile_node("dgx-01", text))
        app.inject(NodeUpdated(snapshot, FROZEN_NOW_S - 89 + step))
    app.inject(NodeFailed("dgx-04", f"dgx-04: {text}", False, 4.0, FROZEN_NOW_S))
    instance = Instance("i-0a1b2c3d4e5f60718", "g5.xlarge", "running", False, 1, 1.0, FROZEN_WALL_S - 60, True,
                        text)
    app.inject_cloud(CloudView((instance,), (), f"throttled: {text}", FROZEN_WALL_S))
    return app


def assert_clean(text: str) -> None:
    """No control, C1 or bidi character in what the screen shows."""
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN})
    assert not bad, f"the screen carries {bad}"


async def show_tab(pilot: Pilot[int], tab: str) -> str:
    """Bring ``tab`` to the front, redraw, and return the screen's text, which must be clean."""
    pilot.app.query_one("#bottom").active = tab  # type: ignore[attr-defined]
    await pilot.pause()
    app = pilot.app
    assert isinstance(app, GpuConsoleApp)
    app.render_fleet()
    await pilot.pause()
    text = app.screen_text()
    assert_clean(text)
    return text
