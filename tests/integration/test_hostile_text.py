"""Nothing from a node or another user reaches a terminal as control sequences or markup (issue 11,
item 4): a job whose name and argv carry OSC 52 (clipboard), OSC 2 (window title), C1 CSI, a bidi
override and rich markup is listed by `jobs` with exit 0 and every such character shown as a visible
escape, while `jobs --json` keeps the exact strings. Status tables, warning and error lines on stderr
and the watcher's human lines follow the same rule."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from gpuconsole.cli.status import render
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.alerts import Alert
from gpuconsole.watch.sinks import StdoutSink
from tests.helpers import FORBIDDEN, HOSTILE, OSC2, OSC52, jobs_by_name, run_cli, submit_job, wait_for


def assert_terminal_clean(text: str) -> None:
    """No control (other than the newlines between lines), C1 or bidi character anywhere."""
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN})
    assert not bad, f"terminal-bound output carries {bad}: {text!r}"


def test_jobs_table_shows_hostile_name_and_command_escaped(demo: DemoThread) -> None:
    config = demo.config_path
    job = submit_job(config, HOSTILE, "--gpus", "1",
                     argv=[sys.executable, "-c", "import time; time.sleep(60)", HOSTILE])
    wait_for(lambda: jobs_by_name(config).get(HOSTILE, {}).get("state") == "running", timeout_s=20,
             message="the hostile job running")
    shown = run_cli("jobs", config=config)
    assert shown.returncode == 0, shown.stderr  # `[/]` used to be a rich MarkupError: exit 1 for everyone
    assert_terminal_clean(shown.stdout)
    assert_terminal_clean(shown.stderr)
    assert job["id"] in shown.stdout
    assert "\\x1b]52;c;aGVsbG8=\\x07[/]" in shown.stdout  # the markup shown literally, ESC as an escape
    assert "[bold red]x\\u202e\\x9b31m" in shown.stdout
    listed = jobs_by_name(config)  # --json keeps the exact strings
    assert HOSTILE in listed and listed[HOSTILE]["id"] == job["id"]
    assert HOSTILE in listed[HOSTILE]["command"]
    cancel = run_cli("cancel", job["id"], config=config)
    assert cancel.returncode == 0, cancel.stderr
    assert_terminal_clean(cancel.stdout)


def test_error_and_warning_lines_are_escaped(demo: DemoThread, tmp_path: Path) -> None:
    """stderr lines quote what they were given: the warning line of `release` (one per failed id), the
    top-level error printer (argparse's and a config file's errors); each escaped, with its exit code."""
    config = demo.config_path
    cases = [(["release", HOSTILE, "r-1"], 6), (["jobs", HOSTILE], 2)]
    for args, code in cases:
        result = run_cli(*args, config=config)
        assert result.returncode == code, result.stderr
        assert_terminal_clean(result.stdout)
        assert_terminal_clean(result.stderr)
        assert "\\x1b]52;c;aGVsbG8=\\x07[/]" in result.stderr
    bad_config = tmp_path / f"{OSC2}[bold]{OSC52}"  # a file name is text too (no `/` in one)
    bad_config.write_text("not toml [\n")
    result = run_cli("status", config=bad_config)
    assert result.returncode == 2, result.stderr
    assert_terminal_clean(result.stderr)
    assert "\\x1b]2;pwned\\x07" in result.stderr


HOSTILE_NODE = {
    "t_wall": 1795460000.0, "cpu_pct": 1.0, "cpu_count": 8, "mem_used_bytes": 1, "mem_total_bytes": 2,
    "gpu_source": "nvml", "warnings": [f"driver says {HOSTILE}"],
    "gpus": [{"index": 0, "uuid": "GPU-0", "name": f"NVIDIA {HOSTILE}", "util_pct": 5.0, "mem_used_mib": 1,
              "mem_total_mib": 2, "temperature_c": 30, "power_w": 70,
              "reservation": {"id": f"r-{HOSTILE}", "owner": HOSTILE, "expires_at": "2026-11-23T13:00:00Z"},
              "processes": [{"pid": 1, "user": HOSTILE, "command": HOSTILE, "mem_mib": 1}]},
             {"index": 1, "uuid": "GPU-1", "name": HOSTILE, "util_pct": 5.0, "mem_used_mib": 1,
              "mem_total_mib": 2, "temperature_c": 30, "power_w": 70, "reservation": None,
              "processes": [{"pid": 2, "user": HOSTILE, "command": HOSTILE, "mem_mib": 1}]}],
    "reservations": [], "queue": [],
}


def test_status_tables_escape_hostile_snapshot_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """GPU names, reservation owners, process users, a node's state error and an unreachable
    node's error: rendered, not interpreted (the demo's GPU names cannot be made hostile)."""
    ok = NodeSnapshot.from_agent("n1", HOSTILE_NODE)
    broken = NodeSnapshot.from_agent("n2", dict(HOSTILE_NODE, state_error=f"state.json: {HOSTILE}"))
    down = NodeSnapshot.unreachable("n3", f"n3: {HOSTILE}")
    render([ok, broken, down])
    out = capsys.readouterr().out
    assert_terminal_clean(out)
    assert "[/]" in out and "[bold red]x" in out
    assert "\\x1b]52;c;aGVsbG8=\\x07" in out


def test_watch_human_line_escapes_owner_and_message(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    alert = Alert(kind="idle_reservation", node="n1", message=f"reservation r-1 of {HOSTILE} idle",
                  since="2026-11-23T09:00:00Z", gpus=(0,), owner=HOSTILE, reservation="r-1")
    StdoutSink(False, lambda: 1795426200.0).write(alert)
    assert_terminal_clean(stdout.getvalue())
    assert "of \\x1b]52;c;aGVsbG8=\\x07[/]" in stdout.getvalue()
    stdout.seek(0)
    stdout.truncate()
    StdoutSink(True, lambda: 1795426200.0).write(alert)  # --json: the exact strings
    assert json.loads(stdout.getvalue())["owner"] == HOSTILE
