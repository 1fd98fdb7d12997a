"""Cloud burst end to end: boto3 against a real moto server on loopback, instances as real SSH nodes.

moto invents instance addresses; nothing here dials them. Each managed instance that runs becomes a
simulated node on 127.0.0.1 (the demo's CloudBridge), found by discovery through `host_map`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, jobs_by_name, run_cli, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cloud_demo(tmp_path: Path) -> Iterator[DemoThread]:
    """1 on-prem node × 2 GPUs plus the moto EC2 (max_instances 4, 0.3 s simulated boot)."""
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        yield demo


def _nodes(config: Path) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in cli_json("status", config=config)["nodes"]}


def _instances(config: Path, *flags: str) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in cli_json("cloud", "ls", *flags, config=config)["instances"]}


def _variant(config: Path, name: str, **values: Any) -> Path:
    """A copy of the demo config with [cloud.aws] keys changed (the demo rewrites its own file
    whenever a node comes or goes; cloud nodes come from discovery, so a copy sees them too)."""
    copy = config.with_name(f"{name}.toml")
    lines = config.read_text().splitlines()
    start = lines.index("[cloud.aws]")
    for key, value in values.items():
        rendered = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
        for index in range(start, len(lines)):
            if lines[index].startswith(f"{key} ="):
                lines[index] = f"{key} = {rendered}"
                break
        else:
            lines.insert(start + 1, f"{key} = {rendered}")
    copy.write_text("\n".join(lines) + "\n")
    return copy


def test_cloud_up_node_in_status_reserve_then_down_removes_node_and_reservation(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    up = run_cli("cloud", "up", "--gpus", "1", "--json", config=config)
    assert up.returncode == 0, up.stderr
    launched = json.loads(up.stdout)["instances"]
    assert len(launched) == 1
    instance = launched[0]
    assert instance["type"] == "g6.xlarge"  # the cheapest allowed 1-GPU type
    assert list(instance["phases_s"]) == ["pending", "running", "ssh", "agent"]
    for phase in ("running after", "SSH reachable after", "agent ready after"):
        assert phase in up.stderr
    node = instance["id"]

    nodes = _nodes(config)
    assert nodes[node]["source"] == "cloud" and nodes[node]["reachable"] is True
    assert len(nodes[node]["gpus"]) == 1
    assert nodes["node-01"]["source"] == "onprem"

    reserved = cli_json("reserve", "--gpus", "1", "--node", node, config=config)
    assert reserved["node"] == node and reserved["gpus"] == [0]
    listing = cli_json("reservations", config=config)
    assert [r["id"] for r in listing["reservations"]] == [reserved["id"]]

    listed = _instances(config)[node]
    assert listed["state"] == "running" and listed["gpus"] == 1 and listed["managed"] is True
    assert listed["price_per_hour"] == pytest.approx(0.8048)
    assert listed["cost_so_far"] is not None and listed["node"] == node

    down = run_cli("cloud", "down", "--force", node, config=config)  # it holds a reservation
    assert down.returncode == 0, down.stderr
    assert node not in _nodes(config)
    assert cli_json("reservations", config=config)["reservations"] == []
    gone = run_cli("release", reserved["id"], config=config)
    assert gone.returncode == 6


def test_unmanaged_instances_are_never_listed_as_managed_nor_touched(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    emulator = cloud_demo.cloud.emulator
    by_hand = emulator.run_unmanaged("g5.xlarge")
    assert by_hand not in _instances(config, "--all")
    assert by_hand not in _nodes(config)
    for argv in (["cloud", "down", by_hand], ["cloud", "down", "--stop", by_hand]):
        refused = run_cli(*argv, config=config)
        assert refused.returncode == 4, refused.stderr
        assert refused.stderr.count("\n") == 1 and "not managed by gpuconsole" in refused.stderr
    states = {i.id: i.state for i in emulator.instances()}
    assert states[by_hand] == "running"


def test_burst_with_onprem_full_starts_exactly_one_instance_and_reserves_on_it(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    onprem = cli_json("reserve", "--gpus", "2", config=config)
    assert onprem["node"] == "node-01"
    no_burst = run_cli("reserve", "--gpus", "1", config=config)
    assert no_burst.returncode == 3
    burst = run_cli("reserve", "--burst", "--yes", "--gpus", "1", "--json", config=config)
    assert burst.returncode == 0, burst.stderr
    granted = json.loads(burst.stdout)
    assert "bursting to g6.xlarge" in burst.stderr and "$0.80/h" in burst.stderr
    live = [i for i in cloud_demo.cloud.emulator.instances() if i.managed and i.live]
    assert [i.id for i in live] == [granted["node"]]
    assert _nodes(config)[granted["node"]]["gpus"][0]["reservation"]["id"] == granted["id"]


def test_max_instances_is_enforced_under_concurrent_bursts(cloud_demo: DemoThread) -> None:
    config = _variant(cloud_demo.config_path, "max2", max_instances=2)
    cli_json("reserve", "--gpus", "2", config=config)  # on-prem full
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--burst", "--yes", "--gpus",
            "1", "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(5)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    granted = [json.loads(out) for rc, out, _err in results if rc == 0]
    refused = [err for rc, _out, err in results if rc == 3]
    assert len(granted) + len(refused) == 5, results
    live = [i for i in cloud_demo.cloud.emulator.instances() if i.managed and i.live]
    assert 1 <= len(live) <= 2
    assert len(granted) == len(live)  # every instance that stayed up was reserved, one GPU each
    assert len({(g["node"], tuple(g["gpus"])) for g in granted}) == len(granted)
    assert all("max_instances = 2" in err for err in refused)


def test_cloud_errors_are_one_line_with_contract_exit_codes(cloud_demo: DemoThread, tmp_path: Path) -> None:
    config = cloud_demo.config_path
    cases: list[tuple[list[str], int, str]] = [
        (["cloud", "up", "--type", "p9.huge"], 2, "not an allowed type"),
        (["cloud", "up", "--gpus", "64"], 3, "no allowed instance type has 64 GPUs"),
        (["cloud", "down", "i-0123456789abcdef0"], 6, "does not exist"),
        (["cloud", "down", "i-;rm -rf"], 6, "not an instance id"),
    ]
    for argv, code, text in cases:
        result = run_cli(*argv, config=config)
        assert result.returncode == code, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and text in result.stderr and "Traceback" not in result.stderr

    bad_ami = _variant(config, "bad-ami", ami="ami-00000000")
    result = run_cli("cloud", "up", config=bad_ami)
    assert result.returncode == 2 and "InvalidAMIID" in result.stderr

    quota = _variant(config, "quota", max_instances=0)
    result = run_cli("cloud", "up", config=quota)
    assert result.returncode == 3 and "max_instances = 0 reached" in result.stderr

    region = _variant(config, "region", region="xx-nowhere-1")
    result = run_cli("cloud", "ls", config=region)
    assert result.returncode == 2 and "not an EC2 region" in result.stderr
    assert [i for i in cloud_demo.cloud.emulator.instances() if i.live] == []


def test_missing_credentials_exit_2_without_touching_the_network(tmp_path: Path) -> None:
    config = tmp_path / "aws.toml"
    config.write_text('[cloud.aws]\nregion = "us-east-1"\nami = "ami-12345678"\n')
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    result = run_cli("cloud", "ls", config=config, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "no credentials" in result.stderr
    result = run_cli("cloud", "ls", config=config, env=dict(env, AWS_PROFILE="nobody"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "nobody" in result.stderr
    no_cloud = tmp_path / "plain.toml"
    no_cloud.write_text("")
    result = run_cli("cloud", "ls", config=no_cloud)
    assert result.returncode == 2 and "no [cloud.aws]" in result.stderr


def test_instance_that_never_answers_ssh_is_terminated_and_reported(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    bridge = cloud_demo.cloud
    bridge.never_boot = True
    result = run_cli("cloud", "up", "--timeout", "2s", config=config)
    assert result.returncode == 5, result.stderr
    assert "did not become reachable over SSH within 2s; terminated" in result.stderr
    wait_for(lambda: all(not i.live for i in bridge.emulator.instances()), timeout_s=10,
             message="the unreachable instance terminated")


def test_reclaimed_instance_ends_its_reservations_and_requeues_its_jobs(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    onprem = cli_json("reserve", "--gpus", "2", config=config)
    submitted = run_cli("submit", "--burst", "--yes", "--requeue", "--gpus", "2", "--name", "train", "--json", "--",
                        "sleep", "300", config=config)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    instance = job["node"]
    assert instance.startswith("i-") and "bursting to g6e.12xlarge" in submitted.stderr
    wait_for(lambda: jobs_by_name(config)["train"]["state"] == "running", timeout_s=30, message="train running")
    held = cli_json("reserve", "--gpus", "1", "--node", instance, config=config)

    cloud_demo.cloud.emulator.terminate_out_of_band(instance)  # a spot reclaim
    wait_for(lambda: instance not in _nodes(config), timeout_s=20, message="the instance left status")
    listing = cli_json("reservations", config=config)
    assert held["id"] not in [r["id"] for r in listing["reservations"]]
    assert [r["id"] for r in listing["reservations"]] == [onprem["id"]]

    result = run_cli("jobs", "--json", config=config)
    assert result.returncode == 0, result.stderr
    assert f"job {job['id']} lost its cloud instance: requeued as" in result.stderr
    train = {j["name"]: j for j in json.loads(result.stdout)["jobs"]}["train"]
    assert train["node"] == "node-01" and train["state"] == "queued" and train["id"] != job["id"]
    again = run_cli("jobs", "--json", config=config)
    assert "requeued" not in again.stderr  # once only
    released = run_cli("release", onprem["id"], config=config)
    assert released.returncode == 0, released.stderr
    wait_for(lambda: jobs_by_name(config)["train"]["state"] == "running", timeout_s=20,
             message="the requeued job runs on-prem")
    cancel = run_cli("cancel", jobs_by_name(config)["train"]["id"], config=config)
    assert cancel.returncode == 0, cancel.stderr


def test_spot_is_offered_and_marked_with_its_price(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    up = run_cli("cloud", "up", "--spot", "--type", "g5.xlarge", "--json", config=config)
    assert up.returncode == 0, up.stderr
    assert "spot, $0.43/h" in up.stderr
    instance = json.loads(up.stdout)["instances"][0]
    listed = _instances(config)[instance["id"]]
    assert listed["spot"] is True and listed["price_per_hour"] == pytest.approx(0.43)
