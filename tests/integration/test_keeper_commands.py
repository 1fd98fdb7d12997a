"""One-shot commands through the connection keeper (core/keeper_fleet.py): reserve, release,
reservations, submit and jobs answer as they do directly, a keeper killed in the middle of a change
never makes it twice, and what holds its own connection (a waiting reserve) never goes through it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.core import keeper_client as kc
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import run_cli, wait_for
from tests.integration.keeper_fixtures import _alive, _keeper, _warm, keeper_on  # noqa: F401  (the fixture below)

pytestmark = pytest.mark.usefixtures("keeper_on")

VOLATILE = frozenset({"id", "generated_at", "expires_at", "created_at", "token", "submitted_at", "started_at",
                      "ended_at", "pid", "exit_code", "runtime_s", "state", "position"})


def _same(doc: Any) -> Any:
    """A JSON answer without what differs between two runs of the same command (ids, times)."""
    if isinstance(doc, dict):
        return {k: _same(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [_same(v) for v in doc]
    return doc


def _session(config: Path, *flags: str) -> list[Any]:
    """A reserve, the listing, a job and the release, each answer as JSON."""
    granted = json.loads(_ok(*flags, "reserve", "--gpus", "2", "--node", "node-01", "--json", config=config))
    listed = json.loads(_ok(*flags, "reservations", "--json", config=config))
    submitted = json.loads(_ok(*flags, "submit", "--gpus", "1", "--node", "node-02", "--json", "--", "true",
                               config=config))
    jobs = json.loads(_ok(*flags, "jobs", "--json", config=config))
    released = json.loads(_ok(*flags, "release", granted["id"], "--json", config=config))
    mine = _ok(*flags, "reservations", "--mine", config=config)
    assert listed["reservations"][0]["id"] == granted["id"] and submitted["id"] in {j["id"] for j in jobs["jobs"]}
    return [granted, listed, submitted, released, mine]


def _ok(*args: str, config: Path) -> str:
    result = run_cli(*args, config=config)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def test_changes_and_listings_answer_the_same_through_the_keeper(demo: DemoThread) -> None:
    config = demo.config_path
    direct = _session(config, "--no-keeper")
    before = _warm(config)["requests"]
    through = _session(config)
    assert _same(through) == _same(direct)
    # Each of the six commands went through the keeper (reserve: capacity, then the grant).
    assert _keeper(config)["requests"] - before >= 6
    # …without loading the SSH stack: the keeper holds the connections. A process started for the
    # command hands it to the keeper's resident CLI and imports nothing but the stub that does so.
    traced = run_cli("reservations", "--json", config=config, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert traced.returncode == 0 and "gpuconsole.cli.forward" in traced.stderr
    assert "asyncssh" not in traced.stderr and "gpuconsole.cli.options" not in traced.stderr
    # Run in the process itself (main given its argv: nothing forwarded), it still uses the keeper.
    probe = ("import sys\nfrom gpuconsole.cli import main\ncode = main(['--config', sys.argv[1], 'reservations', "
             "'--json'])\nprint('asyncssh' in sys.modules, 'gpuconsole.core.keeper_fleet' in sys.modules, code)")
    inline = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ))
    assert inline.stdout.splitlines()[-1] == "False True 0", inline.stderr


def test_a_keeper_killed_during_a_reserve_grants_it_once(demo: DemoThread) -> None:
    """The node's state lock is held, so the reserve waits inside the keeper's agent; the keeper is
    killed then, the command goes direct with the same request id, and the lock is let go: whichever
    agent commits first, the node holds one reservation and the command names it."""
    config = demo.config_path
    pid = _warm(config)["pid"]
    paths = kc.keeper_paths(config)
    lock_fd = os.open(demo.cluster.nodes["node-01"].state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    command: subprocess.Popen[str] | None = None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        command = subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", "1", "--node",
             "node-01", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        wait_for(lambda: kc.ask(paths, {"op": "keeper.status"}, 5.0)["active"] == 1,
                 message="the keeper to hold the reserve")
        os.kill(pid, signal.SIGKILL)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    assert command is not None
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    granted = json.loads(out)
    listed = json.loads(_ok("--no-keeper", "reservations", "--json", config=config))
    assert [r["id"] for r in listed["reservations"]] == [granted["id"]]


def test_what_holds_its_connection_never_goes_through_the_keeper(demo: DemoThread) -> None:
    config = demo.config_path
    before = _warm(config)["requests"]
    full = json.loads(_ok("reserve", "--gpus", "4", "--node", "node-01", "--json", config=config))
    # A waiting reserve owns its queue ticket: it connects itself (the keeper's count does not move).
    waiting = run_cli("reserve", "--gpus", "1", "--node", "node-01", "--wait", "--timeout", "1s", config=config)
    assert waiting.returncode != 0 and _keeper(config)["requests"] == before + 2
    _ok("release", full["id"], config=config)
    # Nor does the keeper hand on what would change its own agent or bind a ticket to it.
    paths = kc.keeper_paths(config)
    text = config.read_bytes()
    for node_op, args in (("hello", {"node": "x", "state_dir": "/tmp"}), ("stream", {"interval_s": 1}),
                          ("reserve", {"gpus": 1, "ttl_s": 60, "wait": True}), ("claim_job", {})):
        request = kc.exchange_request(config, text, node_op, args, ["node-01"], 5.0, 0)
        with pytest.raises(kc.KeeperUnavailableError, match="declined"):
            kc.ask(paths, request, 5.0)


def test_a_keeper_of_other_code_stops_and_the_next_command_replaces_it(demo: DemoThread) -> None:
    """A keeper started before an upgrade (its code mark differs from the client's) declines, exits,
    and the next command starts one of the installed code; an older client can still stop it."""
    config = demo.config_path
    pid = _warm(config)["pid"]
    paths = kc.keeper_paths(config)
    with pytest.raises(kc.KeeperUnavailableError, match="not served"):  # no code named: declined, kept
        kc.ask(paths, {"op": "keeper.bogus"}, 5.0)
    assert _keeper(config)["pid"] == pid
    request = kc.exchange_request(config, config.read_bytes(), "snapshot", None, None, 5.0)
    with pytest.raises(kc.KeeperUnavailableError, match="installed code changed"):
        kc.ask(paths, {**request, "code": "0" * 16}, 5.0)
    wait_for(lambda: not _alive(pid), message="the old keeper to exit")
    assert run_cli("status", "--json", config=config).returncode == 0  # direct, and starts a new one
    fresh = wait_for(lambda: (s := _keeper(config))["running"] and s, message="a new keeper")
    assert fresh["pid"] != pid
    assert kc.ask(paths, {"v": 1, "op": "keeper.stop"}, 5.0)["pid"] == fresh["pid"]
    wait_for(lambda: not _alive(fresh["pid"]), message="the new keeper to stop")


def test_a_start_that_did_not_listen_is_not_retried_by_every_command(demo: DemoThread) -> None:
    config = demo.config_path
    paths = kc.keeper_paths(config)
    marker = paths.directory / f"{paths.socket.stem}.start"
    marker.touch()  # a start moments ago that never listened (it failed, or is still starting)
    kc.start(config)
    assert not paths.log.exists() and not paths.socket.exists()  # nothing spawned
    os.utime(marker, (0, 0))  # long ago: worth another try, which removes the marker once listening
    kc.start(config)
    wait_for(lambda: _keeper(config)["running"], message="the keeper to listen")
    assert not marker.exists()
