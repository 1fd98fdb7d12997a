"""A waiting request says who it waits for and until when, between two real OS users on one node
behind a real OpenSSH sshd: alice holds all four GPUs for ten minutes, bob queues for four; bob's
`reserve --wait --json` names alice's reservation and an ETA within her lease, alice's listing shows
the same, and bob is granted when alice lets go."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from gpuconsole.format import epoch_s
from tests.helpers import schema_valid, wait_for
from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import GPUS, NODE, SshdNode

if (_why := sshd_fixture.missing_tools()) is not None:
    pytest.skip(_why, allow_module_level=True)

pytestmark = pytest.mark.sshd


def _progress(stream: Any) -> dict[str, Any]:
    """The next JSON progress line on a waiting reserve's stderr (other lines are notices)."""
    for line in stream:
        if line.startswith("{"):
            document: dict[str, Any] = json.loads(line)
            return document
    raise AssertionError("the waiting reserve ended without a progress line")


def test_a_waiting_request_names_the_grant_it_waits_for_and_when(sshd_node: SshdNode) -> None:
    alice, bob = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    held = sshd_fixture.ok_json(alice, "reserve", "--gpus", str(GPUS), "--node", NODE, "--for", "10m")
    waiting: subprocess.Popen[str] | None = None
    granted: dict[str, Any] | None = None
    try:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(bob), "reserve", "--gpus", str(GPUS), "--node",
             NODE, "--wait", "--timeout", "2m", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = _progress(waiting.stderr)
        schema_valid("gpuconsole:schemas/reserve#/$defs/progress", line)
        assert line["event"] == "queued" and line["position"] == 1 and line["pending_reason"] == "resources"
        (blocker,) = line["blockers"]
        assert (blocker["id"], blocker["owner"], blocker["gpus"]) == (held["id"], "gcutest1", list(range(GPUS)))
        assert 540 < line["eta_in_s"] <= 600
        assert abs(epoch_s(line["eta"]) - epoch_s(held["expires_at"])) <= 2  # type: ignore[operator]
        # Alice's listing explains bob's wait the same way, and its text says it in a line.
        listing = sshd_fixture.ok_json(alice, "reservations")
        schema_valid("gpuconsole:schemas/reservations", listing)
        (queued,) = listing["queue"]
        assert queued["owner"] == "gcutest2" and queued["blockers"][0]["id"] == held["id"]
        table = sshd_fixture.cli(alice, "reservations")
        assert f"GPUs 0-{GPUS - 1} held by gcutest1 {held['id']} until " in table.stdout
        assert "starts by " in table.stdout
        sshd_fixture.ok_json(alice, "release", held["id"])
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        granted = json.loads(out)
        assert granted["gpus"] == list(range(GPUS)) and granted["owner"] == "gcutest2"
    finally:
        if waiting is not None and waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
        for config, grant in ((alice, held), (bob, granted)):
            if grant is not None:
                sshd_fixture.cli(config, "release", grant["id"])


def _queue(config: Any) -> list[dict[str, Any]]:
    listing = sshd_fixture.ok_json(config, "reservations")
    schema_valid("gpuconsole:schemas/reservations", listing)
    queue: list[dict[str, Any]] = listing["queue"]
    return queue


def _waiting_reserve(config: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", str(GPUS), "--node",
         NODE, "--for", "1m", "--wait", "--timeout", "2m", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_fair_share_grants_the_lighter_user_first(sshd_node: SshdNode) -> None:
    """alice (gcutest1) has held every GPU for a while; she queues for all of them again, then bob
    (gcutest2) does with equal priority: bob, the lighter user, is first in line, shows the higher
    fair-share factor, and is granted when alice lets go; alice after him."""
    alice, bob = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    held = sshd_fixture.ok_json(alice, "reserve", "--gpus", str(GPUS), "--node", NODE, "--for", "10m")
    waiters: list[subprocess.Popen[str]] = []
    grants: list[tuple[Any, str]] = []
    try:
        waiters.append(_waiting_reserve(alice))
        wait_for(lambda: len(_queue(alice)) == 1, timeout_s=30, message="alice's request to queue")
        waiters.append(_waiting_reserve(bob))
        queue = wait_for(lambda: q if len(q := _queue(alice)) == 2 else None, timeout_s=30,
                         message="bob's request to queue")
        first, second = queue
        assert (first["owner"], second["owner"]) == ("gcutest2", "gcutest1")  # bob asked later
        assert first["fair_share"] > second["fair_share"]
        assert "share" in sshd_fixture.cli(alice, "reservations").stdout
        sshd_fixture.ok_json(alice, "release", held["id"])
        out, err = waiters[1].communicate(timeout=60)
        assert waiters[1].returncode == 0, err
        grants.append((bob, json.loads(out)["id"]))
        assert [q["owner"] for q in _queue(alice)] == ["gcutest1"]
        sshd_fixture.ok_json(bob, "release", grants[-1][1])
        out, err = waiters[0].communicate(timeout=60)
        assert waiters[0].returncode == 0, err
        grants.append((alice, json.loads(out)["id"]))
    finally:
        for waiter in waiters:
            if waiter.poll() is None:
                waiter.kill()
                waiter.communicate()
        for config, grant_id in grants:
            sshd_fixture.cli(config, "release", grant_id)
        sshd_fixture.cli(alice, "release", held["id"])
