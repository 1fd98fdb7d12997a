"""The node's policy through the CLI against a demo node: a per-user cap holds a waiting request
with its reason (JSON, schema-checked, and the line under `reservations`), refuses at once with exit
3 without --wait and exit 4 beyond the cap, and the longest reservation is refused with exit 4; the
queue shows the owners' fair-share factors as a column."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli, schema_valid, wait_for

# The policy file a test points the agents at must be root-owned, as on a real node.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a root-owned policy file)")


def test_a_cap_holds_and_refuses_with_its_reason(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"max_gpus_per_user": 2, "max_reservation_s": 3600}))
    policy.chmod(0o644)
    with DemoThread(tmp_path / "demo", nodes=1, gpus=4, agent_env={"GPUCONSOLE_POLICY": str(policy)}) as demo:
        config = demo.config_path
        held = cli_json("reserve", "--gpus", "2", "--node", "node-01", "--for", "20m", config=config)
        now = run_cli("reserve", "--gpus", "1", "--node", "node-01", config=config)
        assert now.returncode == 3 and "at most 2 GPUs per user" in now.stderr
        assert len(now.stderr.strip().splitlines()) == 1
        beyond = run_cli("reserve", "--gpus", "3", "--node", "node-01", "--wait", config=config)
        assert beyond.returncode == 4 and "at most 2 GPUs per user" in beyond.stderr
        long = run_cli("reserve", "--gpus", "1", "--node", "node-01", "--for", "2h", config=config)
        assert long.returncode == 4 and "at most 1h" in long.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", "1", "--node",
             "node-01", "--wait", "--timeout", "2m", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            queued = wait_for(lambda: cli_json("reservations", config=config)["queue"], timeout_s=30,
                              message="the request to queue")
            listing = cli_json("reservations", config=config)
            schema_valid("gpuconsole:schemas/reservations", listing)
            (ticket,) = queued
            assert ticket["pending_reason"] == "quota" and ticket["quota"] == {"max_gpus_per_user": 2, "held": 2}
            assert [b["id"] for b in ticket["blockers"]] == [held["id"]] and ticket["fair_share"] is not None
            table = run_cli("reservations", config=config, env={"COLUMNS": "160"})
            assert "held by the node's quota" in table.stdout and "at most 2 per user" in table.stdout
            assert " share " in table.stdout
            assert run_cli("release", held["id"], config=config).returncode == 0
            out, err = waiting.communicate(timeout=60)
            assert waiting.returncode == 0, err
            assert json.loads(out)["state"] == "active"
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
        run_cli("release", "--mine", config=config)


def test_the_fleet_cap_counts_what_the_user_holds_on_every_node(tmp_path: Path) -> None:
    """max_gpus_per_user_fleet = 3 over two nodes: 2 on node-01, then 2 on node-02 is refused with
    exit 3 and the reason (also when only node-02 is named), 1 more is granted; then `doctor` names
    a malformed policy key."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"max_gpus_per_user_fleet": 3}))
    policy.chmod(0o644)
    with DemoThread(tmp_path / "demo", nodes=2, gpus=4, agent_env={"GPUCONSOLE_POLICY": str(policy)}) as demo:
        config = demo.config_path
        cli_json("reserve", "--gpus", "2", "--node", "node-01", config=config)
        for where in ((), ("--node", "node-02")):
            over = run_cli("reserve", "--gpus", "2", *where, config=config)
            assert over.returncode == 3, over.stderr
            assert "you hold 2 across the fleet" in over.stderr and "allows 3 per user" in over.stderr
        assert cli_json("reserve", "--gpus", "1", "--node", "node-02", config=config)["gpus"] == [0]
        run_cli("release", "--mine", config=config)
        # A malformed key: `doctor` names it in the node's policy row, with the fix.
        policy.write_text(json.dumps({"max_gpus_per_user": "four", "fair_share_weight": 2}))
        document = json.loads(run_cli("doctor", "--json", config=config).stdout)
        for node in document["nodes"]:
            (row,) = [c for c in node["checks"] if c["check"] == "policy"]
            assert row["ok"] is False and "max_gpus_per_user" in row["detail"] and row["fix"]
