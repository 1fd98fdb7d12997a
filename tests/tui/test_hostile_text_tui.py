"""The console fed hostile text (issue 11, item 4): escape sequences, C1 controls, a bidi override and
rich markup in GPU names, process users and commands, owners, job names and commands, node errors,
alert messages, cloud errors, dialogs, toasts and job output. The app keeps running, and what it
draws carries none of those characters (they appear as visible escapes) and shows `[/]` literally."""

from __future__ import annotations

from gpuconsole.tui.screens.dialogs import ConfirmDialog, LogScreen
from tests.helpers import HOSTILE, OSC2, OSC52, until
from tests.tui.hostile_console import SIZE, assert_clean, hostile_app, show_tab

SHOWN = "\\x1b]52;c;aGVsbG8=\\x07[/]"  # how the start of HOSTILE must look on screen
OSC_OUTPUT = "\x1b]2;pwned\x07\x1b[2J[/]\r"  # retitle, clear screen, markup, carriage return


async def test_hostile_fleet_renders_escaped_in_every_tab() -> None:
    app = hostile_app()
    async with app.run_test(size=SIZE) as pilot:
        app.judge_alerts()
        assert app.alerts.entries, "the hostile idle reservation raised no alert"
        processes = await show_tab(pilot, "tab-processes")
        assert SHOWN[:20] in processes  # GPU name, holder and process columns are narrow: their start
        assert "python \\x1b]52" in processes
        assert "\\x1b]52" in await show_tab(pilot, "tab-reservations")
        jobs = await show_tab(pilot, "tab-jobs")
        assert "j-h0st1le" in jobs and "\\x1b]52" in jobs
        cloud = await show_tab(pilot, "tab-cloud")
        assert "throttled: \\x1b]52" in cloud
        alerts = await show_tab(pilot, "tab-alerts")
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
        assert_clean(app.screen_text())
        question = str(app.screen.query_one(".dialog-title").render())  # the label wraps on screen
        assert f"GPUs 0, {SHOWN}" in question
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), "the dialog closed")
        app.notify(f"no job {HOSTILE}", title=HOSTILE, severity="error")  # error texts reach toasts
        await until(pilot, lambda: "no job" in app.screen_text(), "the toast")
        await pilot.pause()
        toast = app.screen_text()
        assert_clean(toast)
        assert f"no job {SHOWN}" in toast
        logs = LogScreen("j-h0st1le", f"output of {HOSTILE}")
        await app.push_screen(logs)
        await pilot.pause()
        logs.add_output("stdout", f"step 1\n{OSC_OUTPUT}\nstep 2\n")
        await pilot.pause()
        output = app.screen_text()
        assert_clean(output)
        assert "step 1" in output and "step 2" in output and "\\x1b]2;pwned\\x07" in output
        assert app.is_running


async def test_escape_sequences_without_markup_are_escaped_too() -> None:
    """Textual itself writes ESC and C1 characters in a Text to the terminal as they are (8.2 does:
    rich's Text drops only BEL, BS, VT, FF and CR), so the escaping must be ours."""
    app = hostile_app(OSC52 + OSC2 + "\x9b31m\u202e")
    async with app.run_test(size=SIZE) as pilot:
        for tab in ("tab-processes", "tab-reservations", "tab-jobs", "tab-cloud", "tab-alerts"):
            assert "\\x1b]52;c;" in await show_tab(pilot, tab)
