"""Service mode without root: `node-install`, the installed agent's refusal outside sudo, and a node
configured for service mode whose setup is missing (one line, exit 5; reads and doctor still work).

The full service mode, with a real service account, sudo rule and several users, is in
test_service_mode.py (root only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import run_cli

MISSING_ACCOUNT = "gcnosuchsvc"


def test_node_install_prints_the_setup_and_the_agent(tmp_path: Path) -> None:
    steps = run_cli("node-install")
    assert steps.returncode == 0, steps.stderr
    assert "sudo useradd --system --no-create-home --shell /usr/sbin/nologin gpuconsole" in steps.stdout
    assert "sudo install -d -m 0755 -o gpuconsole -g gpuconsole /var/lib/gpuconsole" in steps.stdout
    assert "sudo install -D -m 0755 -o root -g root gcagent.py /usr/local/lib/gpuconsole/gcagent.py" in steps.stdout
    assert ("%gpu ALL=(gpuconsole) NOPASSWD: /usr/bin/python3 -I -S /usr/local/lib/gpuconsole/gcagent.py"
            in steps.stdout)
    assert "visudo -cf" in steps.stdout

    printed = run_cli("node-install", "--print", "--state-dir", "/srv/gc", "--service-user", "svc")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("# gpuconsole service agent ")
    assert "service={'user': 'svc', 'state_dir': '/srv/gc', 'simulate_gpus': 0}" in printed.stdout
    compile(printed.stdout, "gcagent.py", "exec")  # one self-contained program

    for flags in (("--state-dir", "relative/dir"), ("--service-user", "a;b"), ("--simulate-gpus", "99")):
        bad = run_cli("node-install", "--print", *flags)
        assert bad.returncode == 2, (flags, bad.stderr)
        assert bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_installed_agent_refuses_to_run_outside_sudo(tmp_path: Path) -> None:
    """Run directly (not as the service account through sudo), with SUDO_UID forged: one line, exit 2,
    no reply, nothing written."""
    printed = run_cli("node-install", "--print", "--state-dir", str(tmp_path / "state"),
                      "--service-user", MISSING_ACCOUNT)
    agent = tmp_path / "gcagent.py"
    agent.write_text(printed.stdout)
    hello = json.dumps({"id": 1, "op": "hello", "args": {}}) + "\n"
    result = subprocess.run([sys.executable, "-I", "-S", str(agent)], input=hello, capture_output=True, text=True,
                            timeout=30, env={"SUDO_UID": "0", "SUDO_USER": "root", "PATH": "/usr/bin:/bin"},
                            check=False)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.startswith("gpuconsole service agent: ") and len(result.stderr.splitlines()) == 1
    assert MISSING_ACCOUNT in result.stderr
    assert not (tmp_path / "state").exists()


def _service_config(demo: DemoThread, tmp_path: Path) -> Path:
    text = demo.config_path.read_text().replace(
        "[defaults]\n", f'[defaults]\nmode = "service"\nservice_user = "{MISSING_ACCOUNT}"\n', 1)
    path = tmp_path / "service.toml"
    path.write_text(text)
    return path


def test_service_node_without_setup(demo: DemoThread, tmp_path: Path) -> None:
    """Changes exit 5 with one line naming the sudoers fix; status and listings still read the node;
    doctor fails the mode check and lists the exact setup."""
    config = _service_config(demo, tmp_path)
    refused = run_cli("reserve", "--gpus", "1", "--node", "node-01", config=config)
    assert refused.returncode == 5, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in refused.stderr
    assert "node-01" in line and "sudoers" in line

    status = run_cli("status", "--json", config=config)
    assert status.returncode == 0, status.stderr
    assert all(n["reachable"] for n in json.loads(status.stdout)["nodes"])
    assert run_cli("reservations", "--json", config=config).returncode == 0

    report = run_cli("doctor", "--json", config=config)
    assert report.returncode == 5, report.stderr  # a node that cannot take a change (never 1: a bug)
    for entry in json.loads(report.stdout)["nodes"]:
        checks = {c["check"]: c for c in entry["checks"]}
        assert entry["mode"] == "service" and not checks["mode"]["ok"]
        assert f"%gpu ALL=({MISSING_ACCOUNT}) NOPASSWD: /usr/bin/python3 -I -S " in "\n".join(entry["setup"])
