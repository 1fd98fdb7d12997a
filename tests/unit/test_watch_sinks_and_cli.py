"""Sinks (retry, isolation, exec, apprise URLs), the cloud hook of the runner, and `watch` flag checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.cli import main
from gpuconsole.config import parse_config
from gpuconsole.errors import UsageError
from gpuconsole.model.alerts import Alert
from gpuconsole.watch.runner import WatchRunner, WatchSettings
from gpuconsole.watch.sinks import Dispatcher, ExecSink, NotifySink, StdoutSink

T0 = 1_800_000_000.0
ALERT = Alert(kind="node_down", node="n1", message="node n1 is down: refused", since="2027-01-15T08:00:00Z",
              key="node_down:n1")


class Recorder:
    """A sink that fails its first `failures` sends."""

    def __init__(self, name: str, failures: int = 0) -> None:
        self.name, self.failures, self.calls, self.got = name, failures, 0, []

    async def send(self, alert: Alert) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("receiver down")
        self.got.append(alert)


async def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_failing_sink_is_retried_and_a_dead_one_holds_up_no_other() -> None:
    logs: list[str] = []
    flaky, dead, ok = Recorder("flaky", failures=2), Recorder("dead", failures=99), Recorder("ok")
    dispatcher = Dispatcher(None, [dead, flaky, ok], logs.append, attempts=3, backoff_s=0.01)
    dispatcher.backoff_s = 0.01
    dispatcher.start()
    second = Alert(kind="resolved", node="n1", message="back", since=ALERT.since, key=ALERT.key)
    dispatcher.publish(ALERT)
    dispatcher.publish(second)
    await _until(lambda: len(ok.got) == 2 and len(flaky.got) == 2)
    assert flaky.got == [ALERT, second] and flaky.calls == 4
    await dispatcher.drain(5)
    assert dead.calls == 6 and len(logs) == 2
    assert all(line.startswith("watch: dead: ") and "not delivered after 3 attempts: receiver down" in line
               for line in logs)


async def test_shutdown_skips_the_backoff_of_a_dead_sink() -> None:
    logs: list[str] = []
    dead = Recorder("dead", failures=99)
    dispatcher = Dispatcher(None, [dead], logs.append, attempts=3, backoff_s=30.0)
    dispatcher.start()
    dispatcher.publish(ALERT)
    await _until(lambda: dead.calls == 1)
    started = time.monotonic()
    await dispatcher.drain(5)
    assert time.monotonic() - started < 2 and dead.calls == 3 and len(logs) == 1


async def test_exec_gets_the_alert_json_on_stdin_and_failures_carry_stderr(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    await ExecSink(f'cat > {out}; test "$GPUCONSOLE_ALERT_KIND" = node_down').send(ALERT)
    assert json.loads(out.read_text()) == ALERT.to_json()
    with pytest.raises(RuntimeError, match="exit 3: nope"):
        await ExecSink("echo nope >&2; exit 3").send(ALERT)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out"):
        await ExecSink("sleep 30", timeout_s=0.2).send(ALERT)
    assert time.monotonic() - started < 5


def test_notify_urls_are_checked_and_never_named_with_their_secrets() -> None:
    with pytest.raises(UsageError, match="not a URL apprise supports"):
        NotifySink("notaurl://secret@x", 1)
    sink = NotifySink("json://127.0.0.1:9/path-with-token", 2)
    assert sink.name == "notify[2] json://…"


def test_stdout_json_lines_and_human_lines(capsys: pytest.CaptureFixture[str]) -> None:
    StdoutSink(True, lambda: T0).write(ALERT)
    StdoutSink(False, lambda: T0).write(ALERT)
    json_line, human = capsys.readouterr().out.splitlines()
    assert json.loads(json_line) == {"kind": "node_down", "node": "n1", "gpus": [], "owner": None,
                                     "reservation": None, "since": "2027-01-15T08:00:00Z",
                                     "message": "node n1 is down: refused", "key": "node_down:n1"}
    assert human.startswith("2027-01-15T08:00:00Z  node_down") and human.endswith("node n1 is down: refused")


async def test_cloud_hook_conditions_alert_once_call_the_action_and_survive_hook_failures(tmp_path: Path) -> None:
    """The hook the cloud watcher plugs in: `extra_conditions(now_s)` and `on_idle_cloud(alert)`."""
    config = parse_config("", tmp_path / "c.toml")
    now = [T0]
    idle_cloud = Alert(kind="idle_cloud", node="i-0abc", message="i-0abc idle", since="2027-01-15T08:00:00Z",
                       gpus=(0,), key="idle_cloud:i-0abc")
    hook_result: list[Alert] | Exception = [idle_cloud]
    acted: list[str] = []

    async def extra(now_s: float) -> list[Alert]:
        assert now_s == now[0]
        if isinstance(hook_result, Exception):
            raise hook_result
        return hook_result

    async def act(alert: Alert) -> None:
        acted.append(alert.key)

    logs: list[str] = []
    settings = WatchSettings(idle_s=60, util_below_pct=5, cooldown_s=3600, interval_s=1,
                             state_path=tmp_path / "s.json")
    runner = WatchRunner(config, settings, Dispatcher(None, [], logs.append), logs.append,
                         extra_conditions=extra, on_idle_cloud=act, clock=lambda: now[0])
    runner.load_state()
    runner.dispatcher.start()
    try:
        assert [a.kind for a in await runner.tick()] == ["idle_cloud"] and acted == ["idle_cloud:i-0abc"]
        now[0] += 10
        assert await runner.tick() == []
        hook_result = RuntimeError("EC2 throttled")
        for _ in range(3):
            now[0] += 10
            assert await runner.tick() == []  # kept, not resolved, while the hook fails
        assert logs == ["watch: cloud conditions unavailable: EC2 throttled"]
        hook_result = []
        assert [(a.kind, a.resolves) for a in await runner.tick()] == [("resolved", "idle_cloud")]
    finally:
        await runner.close()
    assert json.loads((tmp_path / "s.json").read_text())["alerts"] == {}


@pytest.fixture
def dead_config(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text("[[nodes]]\nname = 'n1'\nhost = '127.0.0.1'\nport = 1\nconnect_timeout = 1\n"
                    "[watch]\nidle_minutes = 10\n")
    return path


@pytest.mark.parametrize("flags", [
    ["--idle-minutes", "-1"], ["--idle-minutes", "nan"], ["--util-below", "0"], ["--util-below", "150"],
    ["--cooldown-minutes", "-5"], ["--interval", "0"], ["--grace-minutes", "5"],
    ["--release-idle", "--grace-minutes", "0"], ["--stop-idle-cloud"], ["--notify", "notaurl://x"],
    ["--exec", " "], ["--state-file", ""],
])
def test_bad_watch_flags_exit_2_with_one_line(flags: list[str], dead_config: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(dead_config), "watch", "--once", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err


def test_config_watch_table_is_the_default_and_flags_override(dead_config: Path) -> None:
    from gpuconsole.cli.options import WatchArgs
    from gpuconsole.cli.watch import settings_from
    from gpuconsole.config import load_config

    config = load_config(str(dead_config))
    args = WatchArgs(once=True)
    assert settings_from(config, args).idle_s == 600 and settings_from(config, args).cooldown_s == 3600
    args = WatchArgs(once=True, idle_minutes=0.5, util_below=20.0)
    assert (settings_from(config, args).idle_s, settings_from(config, args).util_below_pct) == (30, 20)


def test_watch_once_on_a_dead_node_is_one_node_down_and_imports_no_textual_or_boto3(dead_config: Path) -> None:
    probe = (
        "import sys\nfrom gpuconsole.cli import main\n"
        f"code = main(['--config', {str(dead_config)!r}, 'watch', '--once', '--json'])\n"
        "heavy = [m for m in ('textual', 'boto3', 'botocore') if m in sys.modules]\n"
        "print(f'CODE={code} LOADED={\",\".join(heavy)}', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "CODE=0 LOADED=", result.stderr
    (alert,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (alert["kind"], alert["node"]) == ("node_down", "n1") and "refused" in alert["message"]


async def test_nodes_that_join_are_judged_and_nodes_that_leave_are_resolved_and_ignored(tmp_path: Path) -> None:
    """The runner's `nodes_changed(added, removed)` (cloud discovery calls it): a node that left is
    "left the fleet", not "back", and a late sample from it raises nothing."""
    from gpuconsole.config import NodeConfig
    from gpuconsole.model.events import NodeUpdated
    from tests.unit.watch_fixtures import gpu, snap

    sent: list[Alert] = []
    settings = WatchSettings(idle_s=60, util_below_pct=5, cooldown_s=3600, interval_s=1, state_path=None)
    runner = WatchRunner(parse_config("", tmp_path / "c.toml"), settings, Dispatcher(None, [], print), print,
                         clock=lambda: T0)
    runner.dispatcher.publish = sent.append  # type: ignore[method-assign]
    runner.nodes_changed([NodeConfig(name="i-1", host="127.0.0.1", source="cloud")], [])
    assert "i-1" in runner.detector.expected_nodes
    busy = NodeUpdated(snap("i-1", gpu(0, procs=((5, "bob"),))), 0.0)
    runner.on_event(busy)
    assert [(a.kind, a.node) for a in await runner.tick()] == [("unreserved_use", "i-1")]
    runner.nodes_changed([], ["i-1"])
    assert [(a.kind, a.resolves) for a in sent[-1:]] == [("resolved", "unreserved_use")]
    assert "left the fleet" in sent[-1].message
    runner.on_event(busy)  # a late sample, before its poll task was cancelled
    assert await runner.tick() == [] and "i-1" not in runner.detector.snapshots
