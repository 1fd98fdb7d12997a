"""The console fed hostile text (issue 11, item 4): escape sequences, C1 controls, a bidi override and
rich markup in GPU names, process users and commands, owners, job names and commands, node errors,
alert messages, cloud errors, dialogs, toasts and job output. The app keeps running, and what it
draws carries none of those characters (they appear as visible escapes) and shows `[/]` literally."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets._toast import Toast

from gpuconsole.cloud.monitor import CloudView
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.cloud import Instance
from gpuconsole.model.events import NodeFailed, NodeUpdated
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.screens.dialogs import ConfirmDialog, LogScreen
from tests.integration.test_hostile_text import FORBIDDEN, HOSTILE, OSC2, OSC52
from tests.tui.fixture_fleet import FROZEN_NOW_S, FROZEN_WALL_S, T0, fixture_config
from tests.tui.test_console import until

SIZE = (160, 50)
SHOWN = "\\x1b]52;c;aGVsbG8=\\x07[/]"  # how the start of HOSTILE must look on screen
OSC_OUTPUT = "\x1b]2;pwned\x07\x1b[2J[/]\r"  # retitle, clear screen, markup, carriage return


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


def screen_text(app: GpuConsoleApp) -> str:
    """Every character the current screen would send to the terminal as text (no styles)."""
    update = app.screen._compositor.render_full_update()
    return "\n".join("".join(strip.text for strip in line) for line in update.strips)


def assert_clean(text: str) -> None:
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN})
    assert not bad, f"the screen carries {bad}"


async def _show_tab(pilot: Pilot[int], tab: str) -> str:
    pilot.app.query_one("#bottom").active = tab  # type: ignore[attr-defined]
    await pilot.pause()
    app = pilot.app
    assert isinstance(app, GpuConsoleApp)
    app.render_fleet()
    await pilot.pause()
    text = screen_text(app)
    assert_clean(text)
    return text


async def test_hostile_fleet_renders_escaped_in_every_tab() -> None:
    app = hostile_app()
    async with app.run_test(size=SIZE) as pilot:
        app.judge_alerts()
        assert app.alerts.entries, "the hostile idle reservation raised no alert"
        processes = await _show_tab(pilot, "tab-processes")
        assert SHOWN[:20] in processes  # GPU name, holder and process columns are narrow: their start
        assert "python \\x1b]52" in processes
        assert "\\x1b]52" in await _show_tab(pilot, "tab-reservations")
        jobs = await _show_tab(pilot, "tab-jobs")
        assert "j-h0st1le" in jobs and "\\x1b]52" in jobs
        cloud = await _show_tab(pilot, "tab-cloud")
        assert "throttled: \\x1b]52" in cloud
        alerts = await _show_tab(pilot, "tab-alerts")
        assert "idle_reservation" in alerts
        assert SHOWN in alerts  # the detail line under the log shows the whole message
        assert app.is_running


async def test_hostile_text_in_dialogs_toasts_and_job_output() -> None:
    app = hostile_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        app.query_one("#bottom").active = "tab-reservations"  # type: ignore[attr-defined]
        app.query_one("#reservations").focus()
        await pilot.pause()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the release confirmation")
        await pilot.pause()
        assert_clean(screen_text(app))
        question = str(app.screen.query_one(".dialog-title").render())  # the label wraps on screen
        assert f"GPUs 0, {SHOWN}" in question
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), "the dialog closed")
        app.notify(f"no job {HOSTILE}", title=HOSTILE, severity="error")  # error texts reach toasts
        await until(pilot, lambda: app.screen.query(Toast), "the toast")
        await pilot.pause()
        toast = screen_text(app)
        assert_clean(toast)
        assert f"no job {SHOWN}" in toast
        logs = LogScreen("j-h0st1le", f"output of {HOSTILE}")
        await app.push_screen(logs)
        await pilot.pause()
        logs.add_output("stdout", f"step 1\n{OSC_OUTPUT}\nstep 2\n")
        await pilot.pause()
        output = screen_text(app)
        assert_clean(output)
        assert "step 1" in output and "step 2" in output and "\\x1b]2;pwned\\x07" in output
        assert app.is_running


async def test_escape_sequences_without_markup_are_escaped_too() -> None:
    """Textual itself writes ESC and C1 characters in a Text to the terminal as they are (8.2 does:
    rich's Text drops only BEL, BS, VT, FF and CR), so the escaping must be ours."""
    app = hostile_app(OSC52 + OSC2 + "\x9b31m\u202e")
    async with app.run_test(size=SIZE) as pilot:
        for tab in ("tab-processes", "tab-reservations", "tab-jobs", "tab-cloud", "tab-alerts"):
            assert "\\x1b]52;c;" in await _show_tab(pilot, tab)
