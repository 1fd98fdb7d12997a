"""`gpuconsole exporter` against the demo: its output passes `promtool check metrics`, and a real
Prometheus server (the Debian package) scraping it answers a PromQL query with the number of
reserved GPUs `status --json` shows; metric names, units and labels as the README lists them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, wait_for

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")


class Exporter:
    """The exporter in a subprocess on a free port; its URL from its `serving URL` line."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(config), "exporter",
                                      "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert line.startswith("gpuconsole: serving http://"), line
        self.url = line.split()[-1]

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            body: str = response.read().decode()
        return body

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=30) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


def test_the_exporter_shows_the_fleet_and_passes_promtool(demo: DemoThread, tmp_path: Path) -> None:
    grant = cli_json("reserve", "--gpus", "2", "--node", "node-01", config=demo.config_path)
    exporter = Exporter(demo.config_path)
    try:
        text = wait_for(lambda: t if len(_samples(t := exporter.scrape(), "gpuconsole_node_up")) == 2 else None,
                        timeout_s=30, message="both nodes in a scrape")  # a node not yet heard from is absent
        reserved = _samples(text, "gpuconsole_gpu_reserved")
        assert len(reserved) == 2 and all(f'reservation="{grant["id"]}"' in line for line in reserved)
        assert 'gpuconsole_node_up{node="node-02"} 1.0' in text
        assert len(_samples(text, "gpuconsole_gpu_utilization_ratio")) == 8
        assert "pid" not in text and "command" not in text  # bounded labels only
        if PROMTOOL:
            check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
            assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
    finally:
        exporter.stop()


@pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus package (apt-get install prometheus)")
def test_a_real_prometheus_counts_the_reserved_gpus_status_shows(demo: DemoThread, tmp_path: Path) -> None:
    for node, gpus in (("node-01", "3"), ("node-02", "1")):
        cli_json("reserve", "--gpus", gpus, "--node", node, config=demo.config_path)
    status = cli_json("status", "--json", config=demo.config_path)
    expected = sum(1 for n in status["nodes"] for g in n["gpus"] if g["reservation"] is not None)
    exporter = Exporter(demo.config_path)
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: gpuconsole\n    static_configs:\n"
        f"      - targets: ['{urllib.parse.urlsplit(exporter.url).netloc}']\n")
    assert PROMETHEUS is not None
    server = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(promql: str) -> Any:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.loads(response.read())
        except OSError:
            return None  # not listening yet
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        counted = wait_for(lambda: query("count(gpuconsole_gpu_reserved == 1)"), timeout_s=60, interval_s=0.5,
                           message="Prometheus to scrape the exporter")
        assert expected == 4 and counted == expected
        assert query('sum(gpuconsole_node_up{job="gpuconsole"})') == 2
        # Every expression of the dashboard and the alert rules is one this Prometheus runs.
        for expr in _dashboard_exprs() + _rule_exprs():
            assert _valid(port, expr), expr
    finally:
        server.terminate()
        server.wait(timeout=30)
        exporter.stop()


CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((CONTRIB / "grafana" / "gpuconsole-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _rule_exprs() -> list[str]:
    text = (CONTRIB / "prometheus" / "gpuconsole-alerts.yml").read_text()
    exprs, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("expr:"):
            value = line.split("expr:", 1)[1].strip()
            if value == "|":  # a block: its indented lines
                block = []
                for follow in lines[index + 1:]:
                    if not follow.startswith(" " * 10):
                        break
                    block.append(follow.strip())
                value = " ".join(block)
            exprs.append(value)
    return exprs


def _valid(port: int, expr: str) -> bool:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(json.loads(response.read())["status"] == "success")
    except urllib.error.HTTPError:  # 400: the expression does not parse
        return False


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (apt-get install prometheus)")
def test_the_alert_rules_check_and_pass_their_unit_tests() -> None:
    assert PROMTOOL is not None
    rules = CONTRIB / "prometheus"
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules / "gpuconsole-alerts.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check
    tested = subprocess.run([PROMTOOL, "test", "rules", "gpuconsole-alerts.test.yml"], cwd=rules,
                            capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested
    dashboard = json.loads((CONTRIB / "grafana" / "gpuconsole-dashboard.json").read_text())
    assert dashboard["uid"] == "gpuconsole-fleet" and all(p["targets"] for p in dashboard["panels"])
    assert len(_rule_exprs()) == 5 and len(_dashboard_exprs()) >= 8


def test_the_watcher_serves_the_same_metrics_from_its_own_poll(demo: DemoThread, tmp_path: Path) -> None:
    """`watch --metrics HOST:PORT`: one process judges and exports; --metrics with --once is refused."""
    cli_json("reserve", "--gpus", "1", "--node", "node-02", config=demo.config_path)
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path), "watch", "--json",
            "--state-file", str(tmp_path / "watch.json"), "--metrics", "127.0.0.1:0"]
    watcher = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stderr is not None
        url = next(line.split()[-1] for line in watcher.stderr if "serving http://" in line)

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: str = response.read().decode()
            return body

        text = wait_for(lambda: t if _samples(t := scrape(), "gpuconsole_gpu_reserved") else None, timeout_s=30,
                        message="the reservation in the watcher's metrics")
        assert 'node="node-02"' in _samples(text, "gpuconsole_gpu_reserved")[0]
    finally:
        watcher.terminate()
        assert watcher.wait(timeout=30) == 0
    once = subprocess.run([*argv, "--once"], capture_output=True, text=True, timeout=60)
    assert once.returncode == 2 and "drop --once" in once.stderr
