"""The CLI's fleet commands get one registry: the config as the file has it, plus the cloud nodes one
discovery found (boto3 against the demo's moto server, instances as real SSH nodes on loopback)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.cli import main
from gpuconsole.cli.options import StatusArgs
from gpuconsole.cloud.ec2 import Ec2
from gpuconsole.config import load_config, parse_config
from gpuconsole.core.registry import Registry
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli, schema_valid, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cloud_demo(tmp_path: Path) -> Iterator[DemoThread]:
    """1 on-prem node × 2 GPUs plus the moto EC2 (0.3 s simulated boot)."""
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        yield demo


def _cloud_up(config: Path) -> str:
    up = run_cli("cloud", "up", "--gpus", "1", "--json", config=config)
    assert up.returncode == 0, up.stderr
    (instance,) = json.loads(up.stdout)["instances"]
    return str(instance["id"])


def test_a_fleet_command_gets_the_file_config_and_the_discovered_cloud_nodes(
    cloud_demo: DemoThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = cloud_demo.config_path
    instance = _cloud_up(config)
    seen: list[Any] = []

    def handler(members: Any, opts: StatusArgs) -> int:
        seen.append(members)
        return 0

    monkeypatch.setattr("gpuconsole.cli.status.run_status", handler)
    assert main(["--config", str(config), "status"]) == 0
    (registry,) = seen
    assert isinstance(registry, Registry)
    assert registry.config == load_config(str(config))  # what the file says: no cloud node in it
    assert [n.name for n in registry.config.nodes] == ["node-01"]
    assert [(n.name, n.source) for n in registry.nodes] == [("node-01", "onprem"), (instance, "cloud")]
    assert registry.live_instances == frozenset({instance})

    doctor = cli_json("doctor", config=config)  # the handlers read the nodes from the registry
    assert [n["node"] for n in doctor["nodes"]] == ["node-01", instance]


def test_jobs_asks_ec2_once(
    cloud_demo: DemoThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The live instances `jobs` requeues against come from the discovery that joined the cloud nodes,
    not from a second DescribeInstances."""
    calls: list[tuple[str, ...] | None] = []
    describe = Ec2.describe
    emulator = cloud_demo.cloud.emulator.ec2  # the demo's own client, which watches its instances

    def counted(self: Ec2, *args: Any, **kwargs: Any) -> Any:
        if self is not emulator:
            calls.append(kwargs.get("states"))
        return describe(self, *args, **kwargs)

    monkeypatch.setattr(Ec2, "describe", counted)
    assert main(["--config", str(cloud_demo.config_path), "jobs", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document.pop("generated_at") and document == {"jobs": [], "errors": []}
    assert len(calls) == 1, calls


def test_the_console_and_the_watcher_start_from_the_registry_they_are_given(tmp_path: Path) -> None:
    """The cloud nodes the CLI discovered are in the console's fleet view and the watcher's expected
    nodes from the start (they are in the registry, not in the config)."""
    from gpuconsole.tui.app import GpuConsoleApp
    from gpuconsole.watch.runner import WatchRunner, WatchSettings
    from gpuconsole.watch.sinks import Dispatcher

    config = parse_config("[[nodes]]\nname = 'n1'\nhost = '127.0.0.1'\nport = 1\n", tmp_path / "c.toml")
    cloud = dataclasses.replace(config.nodes[0], name="i-0123456789abcdef0", source="cloud")
    registry = Registry(config, [cloud])
    app = GpuConsoleApp(registry, poll=False)
    assert app.registry is registry and app.config is config
    assert list(app.fleet.nodes) == ["n1", cloud.name] and app.fleet.nodes[cloud.name].source == "cloud"
    settings = WatchSettings(idle_s=60, util_below_pct=5, cooldown_s=60, interval_s=1, state_path=None)
    runner = WatchRunner(registry, settings, Dispatcher(None, [], print), print)
    assert runner.registry is registry and runner.config is config
    assert runner.detector.expected_nodes == {"n1", cloud.name}


def test_a_waiting_reserve_names_the_burst_alternative(cloud_demo: DemoThread) -> None:
    """With [cloud.aws], a request that waits says what bursting would start instead (the cheapest
    allowed type that fits), in its JSON progress and its text line; nothing is launched."""
    config = cloud_demo.config_path
    held = cli_json("reserve", "--gpus", "2", "--node", "node-01", config=config)
    lines: list[dict[str, Any]] = []
    waiting = subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", "2", "--node", "node-01",
         "--wait", "--timeout", "2m", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: lines.extend(
        json.loads(x) for x in waiting.stderr if x.startswith("{")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        offer = wait_for(lambda: next((x["burst"] for x in list(lines) if "burst" in x), None), timeout_s=30,
                         message=f"the burst alternative; lines: {lines}")
        schema_valid("gpuconsole:schemas/reserve#/$defs/progress", next(x for x in lines if "burst" in x))
        assert offer["gpus"] >= 2 and offer["type"] and offer["usd_per_hour"] > 0
        assert cli_json("cloud", "ls", config=config)["instances"] == []  # only said, never started
    finally:
        waiting.kill()
        waiting.communicate()
        run_cli("release", held["id"], config=config)


def test_usage_and_the_exporter_count_a_managed_instance(cloud_demo: DemoThread) -> None:
    """A managed instance's hours and cost at its list price, under the user who launched it, in
    `usage`; and with [cloud.aws] the exporter lists its price and cost so far and polls the running
    instance as a node like any other."""
    config = cloud_demo.config_path
    instance = _cloud_up(config)
    listed = {i["id"]: i for i in cli_json("cloud", "ls", config=config)["instances"]}
    price = listed[instance]["price_per_hour"]
    launched_s = time.time()
    exporter = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(config), "exporter",
                                 "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    try:
        assert exporter.stderr is not None
        url = exporter.stderr.readline().split()[-1]

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: str = response.read().decode()
            return body

        wanted = (f'gpuconsole_cloud_price_usd_per_hour{{instance="{instance}"',
                  f'gpuconsole_node_up{{node="{instance}"}} 1.0')
        text = wait_for(lambda: t if all(w in (t := scrape()) for w in wanted) else None, timeout_s=40,
                        message="the instance's price and its node in the metrics")
        assert 'gpuconsole_cloud_instances{state="running"} 1.0' in text
        wait_for(lambda: time.time() >= launched_s + 2, timeout_s=10, message="two seconds of uptime")
        usage = cli_json("usage", config=config)
        schema_valid("gpuconsole:schemas/usage", usage)
        (row,) = [r for r in usage["rows"] if r["cloud_hours"] > 0]
        assert row["key"] == listed[instance]["owner"]
        assert row["cloud_usd"] > 0 and row["cloud_usd"] == pytest.approx(row["cloud_hours"] * price, abs=2e-4)
    finally:
        exporter.terminate()
        assert exporter.wait(timeout=30) == 0
        run_cli("cloud", "down", instance, config=config)
