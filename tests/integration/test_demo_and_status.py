"""`demo --serve`, `status` (once, JSON, watch), unreserved-use detection and `doctor`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli, wait_for


def test_demo_serve_prints_ready_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    """`demo --serve --write-config` prints `ready PATH` once nodes accept; SIGTERM stops it cleanly."""
    config = tmp_path / "out" / "demo.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "demo", "--serve", "--write-config", str(config),
         "--nodes", "3", "--gpus", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == f"ready {config}"
        status = cli_json("status", config=config)
        assert [n["name"] for n in status["nodes"]] == ["node-01", "node-02", "node-03"]
        assert all(n["reachable"] and len(n["gpus"]) == 2 for n in status["nodes"])
        grant = cli_json("reserve", "--gpus", "2", config=config)
        assert grant["node"].startswith("node-")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    # No answer from any node is exit 5 for every fleet read, not an empty success (the on-prem part
    # of the config: the gone EC2 endpoint would only add botocore's retries to each run).
    onprem = config.with_name("onprem.toml")
    onprem.write_text(config.read_text().split("[cloud.aws]")[0])
    after = run_cli("status", config=onprem)
    assert after.returncode == 5  # every node is gone with the demo
    for command in ("reservations", "jobs"):
        gone = run_cli(command, "--json", config=onprem)
        assert gone.returncode == 5, (command, gone.stderr)
        assert len(json.loads(gone.stdout)["errors"]) == 3  # the document still says which and why


def test_status_json_contract_fields(demo: DemoThread) -> None:
    status = cli_json("status", config=demo.config_path)
    node = status["nodes"][0]
    for key in ("name", "source", "reachable", "error", "cpu_pct", "mem_used_bytes", "mem_total_bytes",
                "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps", "gpus"):
        assert key in node
    assert node["source"] == "onprem" and node["reachable"] is True and node["error"] is None
    # One cold JSON snapshot has no rate window: the rates are null (README; tests/integration/test_cold_status.py).
    assert node["cpu_pct"] is None and node["mem_total_bytes"] > node["mem_used_bytes"] > 0
    gpu = node["gpus"][0]
    for key in ("index", "uuid", "name", "util_pct", "mem_used_mib", "mem_total_mib", "temperature_c",
                "power_w", "reservation", "processes"):
        assert key in gpu
    assert gpu["uuid"].startswith("GPU-") and gpu["mem_total_mib"] > 0


def test_status_node_filter_and_human_table(demo: DemoThread) -> None:
    one = cli_json("status", "--node", "node-02", config=demo.config_path)
    assert [n["name"] for n in one["nodes"]] == ["node-02"]
    human = run_cli("status", config=demo.config_path)
    assert human.returncode == 0 and "node-01" in human.stdout and "node-02" in human.stdout


def test_status_watch_json_streams_lines(demo: DemoThread) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path), "status", "--json",
         "--watch", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        docs = [json.loads(proc.stdout.readline()) for _ in range(3)]  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert all(len(d["nodes"]) == 2 for d in docs)


def test_unreserved_use_is_flagged_and_never_granted(demo: DemoThread) -> None:
    """A process on GPU 2 with no reservation: flagged in status, utilization follows it, reserve skips it."""
    env = dict(os.environ, GPUCONSOLE_SIM_NODE=demo.cluster.nodes["node-01"].sim_key, CUDA_VISIBLE_DEVICES="2")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    try:
        def flagged() -> dict[str, object] | None:
            gpus = cli_json("status", "--node", "node-01", config=demo.config_path)["nodes"][0]["gpus"]
            gpu = gpus[2]
            return gpu if gpu["unreserved_use"] and gpu["util_pct"] > 10 else None

        gpu = wait_for(flagged, timeout_s=20, interval_s=0.2, message="unreserved use on GPU 2")
        assert gpu["processes"][0]["pid"] == burner.pid  # type: ignore[index]
        grant = cli_json("reserve", "--gpus", "3", "--node", "node-01", config=demo.config_path)
        assert 2 not in grant["gpus"]
        refused = run_cli("reserve", "--gpus", "1", "--node", "node-01", config=demo.config_path)
        assert refused.returncode == 3
    finally:
        burner.kill()
        burner.wait()


def test_doctor_reports_every_node(demo: DemoThread) -> None:
    result = run_cli("doctor", "--json", config=demo.config_path)
    report = json.loads(result.stdout)
    nodes = {n["node"]: {c["check"]: c["ok"] for c in n["checks"]} for n in report["nodes"]}
    assert set(nodes) == {"node-01", "node-02"}
    assert all(checks["ssh"] and checks["state_dir"] and checks["python"] for checks in nodes.values())
    assert result.returncode == 0  # simulated GPUs count as a GPU source


def test_no_color_before_or_after_the_command_drops_colours(demo: DemoThread) -> None:
    # issue 13 item 2: `--no-color` beside NO_COLOR. FORCE_COLOR makes rich colour a pipe, so
    # the control run shows colour codes that the flag must remove (styles such as bold may stay).
    colour = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7])[;m]")
    forced = {"FORCE_COLOR": "1", "NO_COLOR": ""}
    control = run_cli("status", config=demo.config_path, env=forced)
    assert control.returncode == 0 and colour.search(control.stdout), "control: no colour to remove"
    for argv in (("status", "--no-color"), ("--no-color", "status")):
        result = run_cli(*argv, config=demo.config_path, env=forced)
        assert result.returncode == 0, result.stderr
        assert not colour.search(result.stdout), argv
        assert "node-01" in result.stdout
