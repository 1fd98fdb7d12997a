"""GPU health on the demo's simulated GPUs: an injected XID (the sim's fault file) withholds the GPU
from `reserve`, flags it in `status` (JSON, schema-checked, and the line under the table), tells the
owner of a reservation on it, raises one `gpu_unhealthy` alert in `watch` and a ledger record, and
`gpu clear` by an admin returns it (exit 4 for anyone else)."""

from __future__ import annotations

import grp
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from gpuconsole.node.health import SIM_FILE
from tests.helpers import cli_json, run_cli, schema_valid

# The policy file a test points the agents at must be root-owned, as on a real node.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a root-owned policy file)")

NODE = "node-01"


def _gpu(config: Path, index: int) -> dict[str, Any]:
    status = cli_json("status", "--node", NODE, config=config)
    schema_valid("gpuconsole:schemas/status", status)
    gpu: dict[str, Any] = status["nodes"][0]["gpus"][index]
    return gpu




def test_an_injected_xid_withholds_the_gpu_until_an_admin_clears_it(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text("{}")
    policy.chmod(0o644)
    with DemoThread(tmp_path / "demo", nodes=1, gpus=4, agent_env={"GPUCONSOLE_POLICY": str(policy)}) as demo:
        config = demo.config_path
        held = cli_json("reserve", "--gpus", "1", "--node", NODE, "--for", "20m", config=config)
        assert held["gpus"] == [0]
        assert _gpu(config, 0)["withheld"] is None
        (demo.cluster.nodes[NODE].state_dir / SIM_FILE).write_text(json.dumps({"0": {"xid": 79}}))

        gpu = _gpu(config, 0)
        assert gpu["withheld"]["reason"] == "XID 79" and gpu["health"]["xid"] == 79
        text = run_cli("status", "--node", NODE, config=config, env={"COLUMNS": "200"})
        assert "GPU 0 withheld since" in text.stdout and f"gpu clear {NODE}:0" in text.stdout
        # No new grant takes it: three GPUs remain, not four.
        assert run_cli("reserve", "--gpus", "4", "--node", NODE, config=config).returncode == 3
        three = cli_json("reserve", "--gpus", "2", "--node", NODE, config=config)
        assert 0 not in three["gpus"]
        # The owner of the reservation on it is told, in JSON and in the table's lines.
        listing = cli_json("reservations", config=config)
        mine = next(r for r in listing["reservations"] if r["id"] == held["id"])
        assert mine["withheld_gpus"] == [0]
        assert "showed errors" in run_cli("reservations", config=config, env={"COLUMNS": "200"}).stdout
        # One alert, on the first look and not again on the next.
        flags = ("watch", "--once", "--json", "--state-file", str(tmp_path / "watch.json"))
        first = [json.loads(line) for line in run_cli(*flags, config=config).stdout.splitlines()]
        unhealthy = [a for a in first if a["kind"] == "gpu_unhealthy"]
        assert [(a["node"], a["gpus"], a["reservation"]) for a in unhealthy] == [(NODE, [0], held["id"])]
        again = [json.loads(line) for line in run_cli(*flags, config=config).stdout.splitlines()]
        assert not [a for a in again if a["kind"] == "gpu_unhealthy"]
        # The ledger has it.
        audit = cli_json("audit", config=config)
        assert [r["gpu"] for r in audit["records"] if r["event"] == "gpu_withheld"] == [0]

        # Not an admin: refused with exit 4, still withheld.
        refused = run_cli("gpu", "clear", f"{NODE}:0", config=config)
        assert refused.returncode == 4 and "admin" in refused.stderr
        assert run_cli("gpu", "clear", "nonsense", config=config).returncode == 2
        # An admin (the policy names our group) returns it.
        policy.write_text(json.dumps({"admin_group": grp.getgrgid(os.getgid()).gr_name}))
        cleared = cli_json("gpu", "clear", f"{NODE}:0", config=config)
        schema_valid("gpuconsole:schemas/gpu", cleared)
        assert cleared["was_withheld"] is True and cleared["reason"] == "XID 79"
        assert _gpu(config, 0)["withheld"] is None
        run_cli("release", "--mine", config=config)
        assert cli_json("reserve", "--gpus", "4", "--node", NODE, config=config)["gpus"] == [0, 1, 2, 3]
        run_cli("release", "--mine", config=config)
