"""Host keys are always verified: no ssh_config setting and no missing file turns checking off
(issue 11, item 3). A refusal is one line, exit 5, naming the offered key's SHA256 fingerprint and
the command that adds it after an out-of-band check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncssh

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli


def _config_without_known_hosts(demo: DemoThread, tmp_path: Path, ssh_config: str | None = None,
                                name: str = "config") -> Path:
    """The demo's config with its known_hosts line removed (and optionally an ssh_config)."""
    lines = [ln for ln in demo.config_path.read_text().splitlines(keepends=True)
             if not ln.startswith("known_hosts")]
    text = "".join(lines)
    if ssh_config is not None:
        path = tmp_path / f"{name}.ssh_config"
        path.write_text(ssh_config)
        text = text.replace("[defaults]\n", f'[defaults]\nssh_config = "{path}"\n', 1)
    config = tmp_path / f"{name}.toml"
    config.write_text(text)
    return config


def _assert_refused(demo: DemoThread, config: Path, *needles: str) -> str:
    """`status --node node-01` exits 5 with one line that shows node-01's real fingerprint."""
    result = run_cli("status", "--node", "node-01", config=config)
    fingerprint = demo.cluster.nodes["node-01"].host_key.get_fingerprint("sha256")
    assert result.returncode == 5, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    line = lines[0]
    assert f"ssh-ed25519 {fingerprint}" in line, line
    port = demo.cluster.nodes["node-01"].port
    assert f"[127.0.0.1]:{port}" in line, line
    assert f"ssh-keyscan -p {port} 127.0.0.1" in line, line
    for needle in needles:
        assert needle in line, line
    return line


def test_user_known_hosts_none_does_not_turn_verification_off(demo: DemoThread, tmp_path: Path) -> None:
    config = _config_without_known_hosts(
        demo, tmp_path, "Host *\n    UserKnownHostsFile none\n    StrictHostKeyChecking no\n")
    line = _assert_refused(demo, config, "UserKnownHostsFile none")
    assert "no known_hosts entry" in line


def test_strict_host_key_checking_no_with_a_file_lacking_the_key(demo: DemoThread, tmp_path: Path) -> None:
    # node-02's key only: the file exists, is read, and has nothing for node-01.
    lacking = tmp_path / "lacking_known_hosts"
    node2 = demo.cluster.nodes["node-02"]
    lacking.write_text(f"[127.0.0.1]:{node2.port} {node2.host_key.export_public_key().decode().strip()}\n")
    config = _config_without_known_hosts(
        demo, tmp_path, f"Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile {lacking}\n")
    line = _assert_refused(demo, config, str(lacking))
    assert "no known_hosts entry" in line
    # ...while node-02, whose key that same file holds, is verified and answers.
    status = cli_json("status", "--node", "node-02", config=config)
    assert status["nodes"][0]["reachable"] is True


def test_no_known_hosts_anywhere_is_refused_with_the_fingerprint(demo: DemoThread, tmp_path: Path) -> None:
    assert not (Path.home() / ".ssh").exists()  # the autouse fixture isolates HOME
    config = _config_without_known_hosts(demo, tmp_path)
    line = _assert_refused(demo, config, "no known_hosts entry", "~/.ssh/known_hosts")
    assert not (Path.home() / ".ssh" / "known_hosts").exists()  # nothing was trusted on first use
    assert "ssh-keygen" in line


def test_changed_key_shows_the_offered_fingerprint(demo: DemoThread, tmp_path: Path) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known = tmp_path / "known_hosts"
    port = demo.cluster.nodes["node-01"].port
    known.write_text(f"[127.0.0.1]:{port} {impostor}\n")
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace(str(demo.cluster.known_hosts_path), str(known)))
    line = _assert_refused(demo, config, "ssh-keygen -R", str(known))
    assert "another key" in line
    assert re.search(r"ssh-keygen -F '\[127\.0\.0\.1\]:\d+' -f ", line), line


def test_known_hosts_from_ssh_config_and_home_are_used(demo: DemoThread, tmp_path: Path) -> None:
    # UserKnownHostsFile from the ssh config is honoured when the config names no known_hosts...
    config = _config_without_known_hosts(
        demo, tmp_path, f"Host *\n    UserKnownHostsFile {demo.cluster.known_hosts_path}\n")
    status = cli_json("status", config=config)
    assert all(n["reachable"] for n in status["nodes"]), status
    # ...and so is ~/.ssh/known_hosts when nothing else names a file.
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "known_hosts").write_text(demo.cluster.known_hosts_path.read_text())
    status = cli_json("status", config=_config_without_known_hosts(demo, tmp_path, name="plain"))
    assert all(n["reachable"] for n in status["nodes"]), status


def test_normal_config_still_verifies_and_works(demo: DemoThread) -> None:
    status = cli_json("status", config=demo.config_path)
    assert [n["reachable"] for n in status["nodes"]] == [True, True]


def test_doctor_reports_the_unverified_key_and_the_fix(demo: DemoThread, tmp_path: Path) -> None:
    config = _config_without_known_hosts(demo, tmp_path, "Host *\n    UserKnownHostsFile none\n")
    result = run_cli("doctor", "--json", config=config)
    assert result.returncode == 5, result.stderr
    report = json.loads(result.stdout)
    fingerprint = demo.cluster.nodes["node-01"].host_key.get_fingerprint("sha256")
    node1 = next(n for n in report["nodes"] if n["node"] == "node-01")
    ssh = next(c for c in node1["checks"] if c["check"] == "ssh")  # after the local-file rows
    assert ssh["check"] == "ssh" and ssh["ok"] is False
    assert fingerprint in ssh["detail"]
    assert ssh["fix"].startswith("ssh-keyscan -p"), ssh
