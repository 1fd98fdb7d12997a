"""The watcher with `[cloud.aws]`: an instance launched while it runs joins the watched fleet, goes
idle, raises `idle_cloud` and, with --stop-idle-cloud, is stopped and leaves the fleet again.
(moto EC2 on loopback; each running instance is a simulated SSH node of the demo.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.conftest import cli_json, run_cli, wait_for
from tests.integration.test_watch import FAST, WatchProc, of_kind

pytestmark = pytest.mark.timeout(180)


def test_watch_stop_idle_cloud_stops_an_instance_that_joined_and_went_idle(tmp_path: Path) -> None:
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        config = tmp_path / "watch.toml"
        config.write_text(demo.config_path.read_text().replace("poll_seconds = 1.0", "poll_seconds = 0.2")
                          .replace("idle_stop_minutes = 30.0", "idle_stop_minutes = 0.02"))
        watcher = WatchProc(config, tmp_path / "state.json", *FAST, "--stop-idle-cloud")
        try:
            up = run_cli("cloud", "up", "--gpus", "1", "--json", config=config)
            assert up.returncode == 0, up.stderr
            instance = json.loads(up.stdout)["instances"][0]["id"]
            idle = watcher.wait_alert(of_kind("idle_cloud", node=instance), "idle_cloud for the new instance",
                                      timeout_s=40)
            assert idle["since"].endswith("Z")
            watcher.wait_stderr(f"stopped idle instance {instance}", timeout_s=30)
            wait_for(lambda: cli_json("cloud", "ls", "--all", config=config)["instances"][0]["state"] == "stopped",
                     timeout_s=30, message="the instance stopped")
            watcher.wait_alert(of_kind("resolved", resolves="idle_cloud", node=instance), "idle_cloud resolved",
                               timeout_s=30)
            assert not [a for a in watcher.alerts if a["kind"] == "node_down"]  # leaving is not going down
        finally:
            assert watcher.stop() == 0
