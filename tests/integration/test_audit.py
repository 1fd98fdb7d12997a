"""`gpuconsole audit` against the demo's nodes: the ledgers list each grant and its end and each
job's start and end, every chain whole (schema-checked JSON, a line per node in text); a byte
changed in one node's ledger is reported with its place and exits 7, the other node still whole."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, edit_state, run_cli, schema_valid, wait_for


def test_audit_lists_the_ledgers_and_reports_a_changed_byte(demo: DemoThread) -> None:
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "2", "--node", "node-01", config=config)
    assert run_cli("release", grant["id"], config=config).returncode == 0
    job = run_cli("submit", "--gpus", "1", "--node", "node-02", "--json", "--", "true", config=config)
    job_id = json.loads(job.stdout)["id"]
    wait_for(lambda: any(r["event"] == "job_end" and r["id"] == job_id
                         for r in cli_json("audit", config=config)["records"]), timeout_s=30, message="the job's end")
    audit = cli_json("audit", config=config)
    schema_valid("gpuconsole:schemas/audit", audit)
    assert [(n["node"], n["ok"]) for n in audit["nodes"]] == [("node-01", True), ("node-02", True)]
    events = [(r["node"], r["event"], r["id"], r.get("reason") or r.get("state")) for r in audit["records"]]
    assert ("node-01", "grant", grant["id"], None) in events and ("node-01", "end", grant["id"], "released") in events
    assert ("node-02", "job_start", job_id, None) in events and ("node-02", "job_end", job_id, "succeeded") in events
    only_mine = cli_json("audit", "--node", "node-01", "--user", "nobody-here", config=config)
    assert only_mine["records"] == [] and [n["node"] for n in only_mine["nodes"]] == ["node-01"]
    text = run_cli("audit", config=config)
    assert text.returncode == 0 and "node-01: chain whole, 2 records" in text.stdout
    # A byte changed in node-01's first record (its owner): the second no longer follows it.
    segment = Path(demo.cluster.nodes["node-01"].state_dir) / "ledger" / "seg-000001.jsonl"
    data = bytearray(segment.read_bytes())
    data[data.index(b'"owner":"') + 9] ^= 0x20
    segment.write_bytes(bytes(data))
    broken = run_cli("audit", config=config)
    assert broken.returncode == 7, broken.stderr
    assert "node-01: chain BROKEN at segment 1 line 2 (seq 2)" in broken.stdout
    assert "node-02: chain whole" in broken.stdout


def test_usage_reads_the_ledgers(demo: DemoThread) -> None:
    """`usage` over the demo: a reservation held a few seconds shows as GPU-hours of its owner (JSON,
    schema-checked), as CSV with a header, and per node."""
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "2", "--node", "node-01", config=config)
    assert run_cli("release", grant["id"], config=config).returncode == 0
    report = cli_json("usage", "--since", "1h", config=config)
    schema_valid("gpuconsole:schemas/usage", report)
    (row,) = report["rows"]
    assert row["key"] == grant["owner"] and 0 <= row["gpu_hours_held"] < 2 * 60 / 3600
    csv_out = run_cli("usage", "--csv", "--by", "node", config=config)
    assert csv_out.returncode == 0
    header, *lines = csv_out.stdout.splitlines()
    assert header.startswith("node,gpu_hours_held") and lines[0].startswith("node-01,")
    assert run_cli("usage", "--since", "soon", config=config).returncode == 2


def test_unreserved_use_is_in_the_ledger_and_in_usage(demo: DemoThread) -> None:
    """A process on demo GPU 3 that no reservation covers: the node's next change records when it
    began and whose it is, the change after it stopped records its end, and `usage` counts it."""
    config = demo.config_path
    env = dict(os.environ, GPUCONSOLE_SIM_NODE=demo.cluster.nodes["node-01"].sim_key, CUDA_VISIBLE_DEVICES="3")
    squatter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    try:
        wait_for(lambda: cli_json("status", "--node", "node-01", config=config)["nodes"][0]["gpus"][3][
            "unreserved_use"], timeout_s=20, message="GPU 3 in unreserved use")
        grant = cli_json("reserve", "--gpus", "1", "--node", "node-01", config=config)  # a change: it looks
        began_s = time.time()
        # The ledger's times are whole seconds: let the use last a few, so its hours cannot round to 0.
        wait_for(lambda: time.time() >= began_s + 3, timeout_s=10, message="three seconds of unreserved use")
    finally:
        squatter.kill()
        squatter.wait()
    wait_for(lambda: not cli_json("status", "--node", "node-01", config=config)["nodes"][0]["gpus"][3][
        "unreserved_use"], timeout_s=20, message="GPU 3 free again")
    assert run_cli("release", grant["id"], config=config).returncode == 0  # the next change sees it end
    records = [r for r in cli_json("audit", "--node", "node-01", config=config)["records"]
               if r["event"].startswith("unreserved_")]
    me = pwd.getpwuid(os.getuid()).pw_name
    assert [(r["event"], r["gpu"], r["users"]) for r in records] == [
        ("unreserved_start", 3, [me]), ("unreserved_end", 3, [me])]
    usage = cli_json("usage", config=config)
    schema_valid("gpuconsole:schemas/usage", usage)
    (row,) = [r for r in usage["rows"] if r["key"] == me]
    assert row["gpu_hours_unreserved"] > 0 and row["gpu_hours_idle"] == 0 and row["cloud_usd"] == 0, (records, row)


def test_a_consistently_rewritten_ledger_is_caught_by_an_earlier_audit(demo: DemoThread, tmp_path: Path) -> None:
    """Someone who can write the state dir rewrites node-01's whole ledger so that its chain is whole
    again (and the state's head with it): the chain alone cannot tell, but the head an earlier audit
    of this user saw is gone from it, which the next audit reports (exit 7)."""
    config = demo.config_path
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    grant = cli_json("reserve", "--gpus", "1", "--node", "node-01", config=config)
    assert run_cli("release", grant["id"], config=config).returncode == 0
    first = run_cli("audit", "--json", config=config, env=env)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "xdg-state" / "gpuconsole").is_dir()
    # The rewrite: the same events with another owner, re-chained, and the head in the state to match.
    state_dir = Path(demo.cluster.nodes["node-01"].state_dir)
    segment = state_dir / "ledger" / "seg-000001.jsonl"
    prev, lines = "0" * 64, []
    for raw in segment.read_bytes().splitlines():
        record = json.loads(raw)
        record.update(owner="someone-else", prev=prev)
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        prev = hashlib.sha256(line).hexdigest()
        lines.append(line)
    segment.write_bytes(b"".join(lines))

    def forge(state: dict[str, Any]) -> None:
        state["ledger"] = dict(state["ledger"], hash=prev, size=len(b"".join(lines)))

    edit_state(state_dir, forge)
    fresh = run_cli("audit", "--json", config=config)  # another user's audit, with no earlier head
    assert fresh.returncode == 0, fresh.stderr
    caught = run_cli("audit", config=config, env=env)
    assert caught.returncode == 7, caught.stdout
    assert "node-01: chain BROKEN (seq 2): the ledger no longer holds record 2" in caught.stdout
    assert "node-02: chain whole" in caught.stdout
