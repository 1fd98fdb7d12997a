"""`reserve --wait` survives the network and never leaves a ticket behind (issue 11, item 8).

A dropped connection (the node's server gone and every session on it killed, or just the waiter's
agent killed) is reconnected within `--timeout`, and the waiter ends granted, never exit 6. A
SIGINT or SIGTERM withdraws the ticket before the process exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli, wait_for


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `gpuconsole` processes in the background; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, config: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(config), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _queue(config: Path) -> list[dict[str, Any]]:
    return list(cli_json("reservations", config=config)["queue"])


def _state(demo: DemoThread, node: str = "node-01") -> dict[str, Any]:
    return dict(json.loads((demo.cluster.nodes[node].state_dir / "state.json").read_text()))


def _agent_pid(demo: DemoThread, ticket_id: str) -> int:
    """The pid of the agent process that holds a queued ticket (the waiter's end of its connection)."""
    return int(_state(demo)["queue"][ticket_id]["agent"]["pid"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _one_queued(config: Path) -> dict[str, Any]:
    queue = wait_for(lambda: _queue(config), timeout_s=20, message="the waiter's ticket in the queue")
    assert len(queue) == 1, queue
    return dict(queue[0])


def _finish(proc: subprocess.Popen[str], timeout_s: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def test_wait_survives_a_node_outage_and_is_granted(demo_factory: Callable[..., DemoThread],
                                                    spawn: Callable[..., subprocess.Popen[str]]) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    blocker = cli_json("reserve", "--gpus", "2", config=config)
    waiter = spawn("reserve", "--gpus", "1", "--wait", "--timeout", "120s", "--json", config=config)
    agent = _agent_pid(demo, _one_queued(config)["id"])
    # The network goes: the node's server closes and every session on it is killed.
    demo.stop_node("node-01")
    wait_for(lambda: not _alive(agent), timeout_s=10, message="the waiter's agent to die")
    assert waiter.poll() is None, waiter.communicate()  # still waiting through the outage
    demo.start_node("node-01")
    # Back: the waiter reconnects by itself and is queued again...
    wait_for(lambda: _queue(config), timeout_s=30, message="the waiter queued again after the outage")
    assert waiter.poll() is None, waiter.communicate()
    # ...and gets the GPU when it frees up.
    assert run_cli("release", blocker["id"], config=config).returncode == 0
    code, out, err = _finish(waiter)
    assert code == 0, err
    grant = json.loads(out)
    assert grant["node"] == "node-01" and len(grant["gpus"]) == 1
    assert "Traceback" not in err
    assert "reconnect" in err  # the user is told what happened


def test_wait_survives_its_agent_being_killed(demo_factory: Callable[..., DemoThread],
                                              spawn: Callable[..., subprocess.Popen[str]]) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    blocker = cli_json("reserve", "--gpus", "2", config=config)
    waiter = spawn("reserve", "--gpus", "2", "--wait", "--timeout", "120s", "--json", config=config)
    ticket = _one_queued(config)
    agent = _agent_pid(demo, ticket["id"])
    os.kill(agent, signal.SIGKILL)  # the waiter's session on the node is gone
    wait_for(lambda: not _alive(agent), timeout_s=10, message="the waiter's agent to die")

    def reattached() -> bool:
        queue = _state(demo)["queue"]
        return any(_alive(int(t["agent"]["pid"])) for t in queue.values())

    wait_for(reattached, timeout_s=30, message="the waiter's ticket held by a live agent again")
    assert waiter.poll() is None, waiter.communicate()
    assert run_cli("release", blocker["id"], config=config).returncode == 0
    code, out, err = _finish(waiter)
    assert code == 0, err
    assert json.loads(out)["gpus"] == [0, 1]


def test_a_node_back_with_another_host_key_ends_the_wait(demo_factory: Callable[..., DemoThread],
                                                       spawn: Callable[..., subprocess.Popen[str]]) -> None:
    """Reconnecting never retries what cannot heal: a changed host key ends the wait with exit 5."""
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    cli_json("reserve", "--gpus", "2", config=config)
    waiter = spawn("reserve", "--gpus", "1", "--wait", "--json", config=config)  # no --timeout
    agent = _agent_pid(demo, _one_queued(config)["id"])
    demo.stop_node("node-01")
    wait_for(lambda: not _alive(agent), timeout_s=10, message="the waiter's agent to die")
    demo.cluster.nodes["node-01"].host_key = asyncssh.generate_private_key("ssh-ed25519")
    demo.start_node("node-01")
    code, _out, err = _finish(waiter, timeout_s=30)
    assert code == 5, err
    assert "host key not verified" in err.splitlines()[-1], err
    assert "Traceback" not in err


def test_a_reconnected_waiter_keeps_its_place(demo_factory: Callable[..., DemoThread],
                                              spawn: Callable[..., subprocess.Popen[str]]) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    blocker = cli_json("reserve", "--gpus", "2", config=config)
    first = spawn("reserve", "--gpus", "2", "--wait", "--timeout", "120s", "--json", config=config)
    first_ticket = _one_queued(config)["id"]
    second = spawn("reserve", "--gpus", "2", "--wait", "--timeout", "120s", "--json", config=config)
    wait_for(lambda: len(_queue(config)) == 2, timeout_s=20, message="two waiters queued")
    agent = _agent_pid(demo, first_ticket)
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: not _alive(agent), timeout_s=10, message="the first waiter's agent to die")

    def first_back_at_the_head() -> bool:
        queue = _queue(config)
        ticket = _state(demo)["queue"].get(first_ticket)
        return bool(queue and queue[0]["id"] == first_ticket and ticket
                    and _alive(int(ticket["agent"]["pid"])))

    wait_for(first_back_at_the_head, timeout_s=15, message="the first waiter back at the head, same ticket")
    assert run_cli("release", blocker["id"], config=config).returncode == 0
    code, out, err = _finish(first)
    assert code == 0, err
    assert json.loads(out)["id"] == first_ticket
    assert second.poll() is None  # still behind it


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_wait_withdraws_its_ticket(demo_factory: Callable[..., DemoThread],
                                                  spawn: Callable[..., subprocess.Popen[str]],
                                                  signum: int, exit_code: int) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    cli_json("reserve", "--gpus", "2", config=config)
    waiter = spawn("reserve", "--gpus", "1", "--wait", "--json", config=config)
    ticket = _one_queued(config)
    wait_for(lambda: (_state(demo)["queue"].get(ticket["id"]) or {}).get("agent"), timeout_s=5)
    waiter.send_signal(signum)
    code, out, err = _finish(waiter, timeout_s=15)
    assert code == exit_code, err
    assert out == ""
    assert "Traceback" not in err
    assert f"withdrew queued request {ticket['id']}" in err, err
    # Gone the moment the process has exited: no housekeeping or polling needed.
    assert _queue(config) == []
    assert ticket["id"] not in _state(demo)["queue"]


def test_a_killed_waiters_ticket_is_never_shown_as_queued(demo_factory: Callable[..., DemoThread],
                                                          spawn: Callable[..., subprocess.Popen[str]]) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    cli_json("reserve", "--gpus", "2", config=config)
    waiter = spawn("reserve", "--gpus", "1", "--wait", "--json", config=config)
    agent = _agent_pid(demo, _one_queued(config)["id"])
    waiter.kill()  # no chance to withdraw
    waiter.communicate(timeout=10)
    wait_for(lambda: not _alive(agent), timeout_s=10, message="the dead waiter's agent to end")
    assert _queue(config) == []  # a read-only view: nothing ran housekeeping
