"""`gpuconsole watch` end to end: the real CLI in a subprocess against the demo cluster (real SSH,
real agents, simulated GPUs whose load follows local processes), tiny thresholds, JSON lines read
with deadlines. Each test ends the watcher with SIGTERM and checks it exits 0.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import FAST, Alert, WatchProc, cli_json, of_kind, run_cli, wait_for


def fast_config(demo: DemoThread, tmp_path: Path) -> Path:
    """The demo's config with telemetry every 0.2 s instead of 1 s."""
    path = tmp_path / "watch.toml"
    path.write_text(demo.config_path.read_text().replace("poll_seconds = 1.0", "poll_seconds = 0.2"))
    return path


@contextlib.contextmanager
def gpu_load(demo: DemoThread, node: str, gpu: int) -> Iterator[subprocess.Popen[bytes]]:
    """A busy process that the node's simulated GPU `gpu` counts as its own (its CPU use is the util)."""
    env = dict(os.environ, GPUCONSOLE_SIM_NODE=demo.cluster.nodes[node].sim_key, CUDA_VISIBLE_DEVICES=str(gpu))
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_watch_demo_idle_reservation_alerts_once_then_resolves_when_work_starts(
        demo: DemoThread, tmp_path: Path) -> None:
    """A reservation with nothing running: exactly one idle_reservation naming owner, node, GPUs and
    reservation; starting work on its GPUs resolves it."""
    config = fast_config(demo, tmp_path)
    grant = cli_json("reserve", "--gpus", "2", "--node", "node-01", config=config)
    watcher = WatchProc(config, tmp_path / "state.json", *FAST, "--cooldown-minutes", "60")
    try:
        idle = watcher.wait_alert(of_kind("idle_reservation"), "an idle_reservation alert")
        assert (idle["reservation"], idle["owner"], idle["node"], idle["gpus"]) == (
            grant["id"], grant["owner"], "node-01", grant["gpus"])
        assert grant["id"] in idle["message"] and grant["owner"] in idle["message"]
        assert idle["since"].endswith("Z") and set(idle) >= {"kind", "node", "gpus", "owner", "reservation",
                                                              "since", "message"}
        watcher.quiet_period(1.5)  # about seven more judgements: none may repeat the alert
        with gpu_load(demo, "node-01", grant["gpus"][0]):
            resolved = watcher.wait_alert(of_kind("resolved", resolves="idle_reservation"), "resolved")
        assert (resolved["reservation"], resolved["node"], resolved["gpus"]) == (grant["id"], "node-01", grant["gpus"])
        upto = watcher.alerts[: watcher.alerts.index(resolved)]
        assert [a["kind"] for a in upto] == ["idle_reservation"], upto
    finally:
        assert watcher.stop() == 0


def test_watch_demo_unreserved_use_names_user_gpu_and_pids(demo: DemoThread, tmp_path: Path) -> None:
    """A process on a GPU no reservation covers raises unreserved_use with its user and pid."""
    config = fast_config(demo, tmp_path)
    watcher = WatchProc(config, tmp_path / "state.json", *FAST)
    try:
        with gpu_load(demo, "node-02", 3) as proc:
            alert = watcher.wait_alert(of_kind("unreserved_use"), "an unreserved_use alert")
            assert (alert["node"], alert["gpus"], alert["owner"], alert["reservation"]) == (
                "node-02", [3], getpass.getuser(), None)
            assert proc.pid in alert["pids"] and str(proc.pid) in alert["message"]
        watcher.wait_alert(of_kind("resolved", resolves="unreserved_use", node="node-02"), "resolved unreserved_use")
        assert not [a for a in watcher.alerts if a["kind"] == "idle_reservation"]  # nothing was reserved
    finally:
        assert watcher.stop() == 0


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_watch_notify_json_reaches_local_http_receiver_and_dead_receiver_blocks_nothing(
        demo: DemoThread, tmp_path: Path) -> None:
    """--notify json://… delivers to a real HTTP server; a second URL on a closed port fails (logged in
    one line, its secret path never printed) without holding up the receiver or stdout."""
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    live = f"json://127.0.0.1:{server.server_address[1]}/hooks/gpu"
    dead = f"json://127.0.0.1:{_closed_port()}/secret-token"
    config = fast_config(demo, tmp_path)
    grant = cli_json("reserve", "--gpus", "1", "--node", "node-02", config=config)
    watcher = WatchProc(config, tmp_path / "state.json", *FAST, "--notify", dead, "--notify", live)
    try:
        watcher.wait_alert(of_kind("idle_reservation", reservation=grant["id"]), "idle alert on stdout")
        posted = wait_for(lambda: [b for p, b in handler.received if p == "/hooks/gpu"], timeout_s=10,
                          message="a POST at the live receiver")
        assert grant["id"] in posted[0]["message"] and "idle reservation" in posted[0]["title"]
        with gpu_load(demo, "node-02", grant["gpus"][0]):
            watcher.wait_alert(of_kind("resolved", reservation=grant["id"]), "resolved on stdout")
            wait_for(lambda: any("resolved" in b["title"] for _, b in handler.received), timeout_s=10,
                     message="the resolved alert at the live receiver")
        failure = watcher.wait_stderr("not delivered")
        assert failure.startswith("gpuconsole: watch: notify[1] json://") and "after 3 attempts" in failure
    finally:
        assert watcher.stop() == 0
        server.shutdown()
    text = "\n".join(watcher.stderr)
    assert "secret-token" not in text and "Traceback" not in text


def test_watch_release_idle_releases_only_the_idle_reservation(demo: DemoThread, tmp_path: Path) -> None:
    """--release-idle: the idle reservation is announced (will_release, release_at), then released after
    the grace; a busy reservation is never touched."""
    config = fast_config(demo, tmp_path)
    idle = cli_json("reserve", "--gpus", "2", "--node", "node-01", config=config)
    busy = cli_json("reserve", "--gpus", "1", "--node", "node-02", config=config)
    with gpu_load(demo, "node-02", busy["gpus"][0]):
        wait_for(lambda: cli_json("status", "--node", "node-02", config=config)["nodes"][0]["gpus"][
            busy["gpus"][0]]["util_pct"] > 10, timeout_s=20, message="the busy reservation's GPU in use")
        watcher = WatchProc(config, tmp_path / "state.json", *FAST, "--release-idle", "--grace-minutes", "0.02")
        try:
            warning = watcher.wait_alert(of_kind("idle_reservation", reservation=idle["id"]), "idle alert")
            assert warning["action"] == "will_release" and warning["release_at"].endswith("Z")
            assert warning["owner"] == idle["owner"] and "will release" in warning["message"]
            released = watcher.wait_alert(of_kind("resolved", reservation=idle["id"], action="released"),
                                          "released")
            assert released["resolves"] == "idle_reservation" and released["gpus"] == idle["gpus"]
            listed = {r["id"] for r in cli_json("reservations", config=config)["reservations"]}
            assert idle["id"] not in listed and busy["id"] in listed
            assert not [a for a in watcher.alerts if a.get("reservation") == busy["id"]]
        finally:
            assert watcher.stop() == 0


def test_watch_node_down_alerts_once_and_resolves_when_node_returns(demo: DemoThread, tmp_path: Path) -> None:
    """Killing a node's SSH server gives one node_down (the poller's retries add none), and
    `resolved` when it is back."""
    config = fast_config(demo, tmp_path)
    watcher = WatchProc(config, tmp_path / "state.json", *FAST)
    try:
        demo.stop_node("node-02")
        down = watcher.wait_alert(of_kind("node_down", node="node-02"), "node_down for node-02")
        assert down["since"].endswith("Z") and "node-02" in down["message"]
        watcher.quiet_period(2.0)  # the poller fails and retries meanwhile
        demo.start_node("node-02")
        back = watcher.wait_alert(of_kind("resolved", resolves="node_down", node="node-02"), "node back",
                                  timeout_s=40)
        upto = watcher.alerts[: watcher.alerts.index(back)]
        assert [a["kind"] for a in upto] == ["node_down"], upto
    finally:
        assert watcher.stop() == 0


def test_watch_once_judges_idle_across_runs_and_exec_gets_alert_json(demo: DemoThread, tmp_path: Path) -> None:
    """--once (cron): the first run only starts the window (kept in the state file), a later run
    alerts once; --exec gets the alert JSON on stdin; a run within the cooldown stays quiet."""
    grant = cli_json("reserve", "--gpus", "1", "--node", "node-01", config=demo.config_path)
    received = tmp_path / "exec.jsonl"
    flags = ("watch", "--once", "--json", "--idle-minutes", "0.01", "--state-file", str(tmp_path / "s.json"),
             "--exec", f"cat >> {received}")

    def once() -> list[Alert]:
        result = run_cli(*flags, config=demo.config_path)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert once() == []  # a GPU needs a full window before it can be idle
    alerts = wait_for(once, timeout_s=20, interval_s=0.1, message="an idle alert from a later --once run")
    assert [(a["kind"], a["reservation"]) for a in alerts] == [("idle_reservation", grant["id"])]
    assert once() == []
    lines = received.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["reservation"] == grant["id"]
