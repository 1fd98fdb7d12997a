"""The watcher with `[cloud.aws]`: instances launched while it runs join the watched fleet; the idle
one raises `idle_cloud` and, with --stop-idle-cloud, is stopped and leaves the fleet; the busy one is left alone.
(moto EC2 on loopback; each running instance is a simulated SSH node of the demo.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import FAST, WatchProc, cli_json, of_kind, run_cli, wait_for

pytestmark = pytest.mark.timeout(180)


def test_watch_stop_idle_cloud_stops_the_idle_instance_and_never_the_busy_one(tmp_path: Path) -> None:
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        config = tmp_path / "watch.toml"
        config.write_text(demo.config_path.read_text().replace("poll_seconds = 1.0", "poll_seconds = 0.2")
                          .replace("idle_stop_minutes = 30.0", "idle_stop_minutes = 0.1"))
        watcher = WatchProc(config, tmp_path / "state.json", *FAST, "--stop-idle-cloud")
        try:
            up = run_cli("cloud", "up", "--gpus", "1", "--count", "2", "--json", config=config)
            assert up.returncode == 0, up.stderr
            instance, busy = (i["id"] for i in json.loads(up.stdout)["instances"])
            held = run_cli("reserve", "--gpus", "1", "--node", busy, config=config)  # 6 s before it could be idle
            assert held.returncode == 0, held.stderr
            idle = watcher.wait_alert(of_kind("idle_cloud", node=instance), "idle_cloud for the new instance",
                                      timeout_s=40)
            assert idle["since"].endswith("Z")
            watcher.wait_stderr(f"stopped idle instance {instance}", timeout_s=30)
            def states() -> dict[str, str]:
                return {i["id"]: i["state"] for i in cli_json("cloud", "ls", "--all", config=config)["instances"]}

            wait_for(lambda: states()[instance] == "stopped", timeout_s=30, message="the idle instance stopped")
            watcher.wait_alert(of_kind("resolved", resolves="idle_cloud", node=instance), "idle_cloud resolved",
                               timeout_s=30)
            assert not [a for a in watcher.alerts if a["kind"] == "node_down"]  # leaving is not going down
            assert states()[busy] == "running"  # reserved: never idle, never stopped
            assert not [a for a in watcher.alerts if a["kind"] == "idle_cloud" and a["node"] == busy]
        finally:
            assert watcher.stop() == 0
