"""`gpuconsole exporter` against the demo: its output passes `promtool check metrics`, and a real
Prometheus server (the Debian package) scraping it answers a PromQL query with the number of
reserved GPUs `status --json` shows; metric names, units and labels as the README lists them."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, free_port, run_cli, wait_for

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")


class Exporter:
    """The exporter in a subprocess on a free port; its URL from its `serving URL` line."""

    def __init__(self, config: Path, *extra: str, scheme: str = "http") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(config), "exporter",
                                      "--listen", "127.0.0.1:0", *extra], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert line.startswith(f"gpuconsole: serving {scheme}://"), line
        self.url = line.split()[-1]

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            body: str = response.read().decode()
        return body

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=30) == 0


class Prometheus:
    """A real Prometheus server (the Debian package) on a free port, scraping one target every second."""

    def __init__(self, tmp_path: Path, target: str, scrape_extra: str = "") -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: gpuconsole\n{scrape_extra}    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                      f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, promql: str) -> float | None:
        """The first sample's value, or None (no result, or not listening yet)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.loads(response.read())
        except OSError:
            return None
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


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
    server = Prometheus(tmp_path, urllib.parse.urlsplit(exporter.url).netloc)
    try:
        counted = wait_for(lambda: server.query("count(gpuconsole_gpu_reserved == 1)"), timeout_s=60,
                           interval_s=0.5, message="Prometheus to scrape the exporter")
        assert expected == 4 and counted == expected
        assert server.query('sum(gpuconsole_node_up{job="gpuconsole"})') == 2
        # Every expression of the dashboard and the alert rules is one this Prometheus runs.
        for expr in _dashboard_exprs() + _rule_exprs():
            assert _valid(server.port, expr), expr
    finally:
        server.stop()
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
    alone = run_cli("watch", "--once", "--web-config", str(tmp_path / "web.yml"), config=demo.config_path)
    assert alone.returncode == 2 and "give --metrics" in alone.stderr


def _tls_files(directory: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 signed by it (ca.pem, server.pem, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpuconsole test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(2)
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _fetch(url: str, context: ssl.SSLContext | None, auth: tuple[str, str] | None) -> int:
    """The HTTP status of a GET (an error status included)."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus package (apt-get install prometheus)")
def test_tls_and_basic_auth_from_a_web_config_and_prometheus_scrapes_through_them(
        demo: DemoThread, tmp_path: Path) -> None:
    """`--web-config` in the format every Prometheus exporter reads: HTTPS with the operator's
    certificate, bcrypt basic auth; a real Prometheus scrapes with `scheme: https`, `tls_config`
    and `basic_auth`, and counts the reservation; no or wrong credentials get 401, plain HTTP nothing."""
    import bcrypt

    _tls_files(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                                      f"basic_auth_users:\n  prom: '{hashed}'\n")
    cli_json("reserve", "--gpus", "2", "--node", "node-02", config=demo.config_path)
    exporter = Exporter(demo.config_path, "--web-config", str(tmp_path / "web.yml"), scheme="https")
    server = Prometheus(tmp_path, urllib.parse.urlsplit(exporter.url).netloc,
                        "    scheme: https\n"
                        f"    tls_config:\n      ca_file: {tmp_path / 'ca.pem'}\n"
                        "    basic_auth:\n      username: prom\n      password: s3cret\n")
    try:
        trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        netloc = urllib.parse.urlsplit(exporter.url)
        with socket.create_connection((netloc.hostname, netloc.port)):  # a client that never handshakes
            assert _fetch(exporter.url, trusted, ("prom", "s3cret")) == 200  # holds no one else up
        assert _fetch(exporter.url, trusted, None) == 401
        assert _fetch(exporter.url, trusted, ("prom", "wrong")) == 401
        assert _fetch(exporter.url, trusted, ("nobody", "s3cret")) == 401
        with pytest.raises(urllib.error.URLError):  # an untrusted certificate is refused by the client
            _fetch(exporter.url, ssl.create_default_context(), ("prom", "s3cret"))
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            _fetch(exporter.url.replace("https://", "http://"), None, ("prom", "s3cret"))
        counted = wait_for(lambda: server.query('count(gpuconsole_gpu_reserved{node="node-02"} == 1)'),
                           timeout_s=60, interval_s=0.5, message="Prometheus to scrape through TLS and auth")
        assert counted == 2
    finally:
        server.stop()
        exporter.stop()


BAD_WEB_CONFIGS = [
    ("basic_auth_users:\n  prom: plaintext\n", "not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n", "cannot load"),
    ("http_server_config:\n  http2: false\n", "not supported"),
    ("tls_server_config: [\n", "not valid YAML"),
]


def test_a_bad_web_config_is_one_line_and_exit_2_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"  # its node is never contacted: the web config is checked first
    config.write_text('[[nodes]]\nname = "n1"\nhost = "127.0.0.1"\nport = 1\n')
    for web_yml, problem in BAD_WEB_CONFIGS:
        (tmp_path / "web.yml").write_text(web_yml)
        done = run_cli("exporter", "--listen", "127.0.0.1:0", "--web-config", str(tmp_path / "web.yml"),
                       config=config)
        assert done.returncode == 2, done
        assert problem in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
