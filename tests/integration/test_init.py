"""`gpuconsole init` (issue 13 item 4): a commented config from the Host entries of ~/.ssh/config,
checked with doctor, never overwritten without asking, and no host key trusted on first use."""

from __future__ import annotations

import getpass
import json
import os
import re
from pathlib import Path

from gpuconsole.config import SECTIONS, default_config_path, parse_config
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import run_cli


def _ssh_home(demo: DemoThread, known: tuple[str, ...] = ("node-01", "node-02")) -> Path:
    """~/.ssh/config with a Host entry per demo node (plus wildcard entries init must skip), and
    ~/.ssh/known_hosts holding the keys of the nodes in ``known``. Returns the known_hosts path."""
    ssh = Path.home() / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    entries = ["Host *\n    ServerAliveInterval 30\n", "Host dev-? !prod\n    User nobody\n"]
    known_lines = []
    for name, node in demo.cluster.nodes.items():
        entries.append(f"Host {name}\n    HostName 127.0.0.1\n    Port {node.port}\n    User {getpass.getuser()}\n"
                       f"    IdentityFile {demo.cluster.client_key_path}\n")
        if name in known:
            public = node.host_key.export_public_key("openssh").decode().strip()
            known_lines.append(f"[127.0.0.1]:{node.port} {public}\n")
    (ssh / "config").write_text("".join(entries))
    (ssh / "known_hosts").write_text("".join(known_lines))
    return ssh / "known_hosts"


def test_init_writes_a_config_on_which_status_works(demo: DemoThread) -> None:
    _ssh_home(demo)
    result = run_cli("init", "--yes")
    assert result.returncode == 0, result.stderr
    path = default_config_path()
    config = parse_config(path.read_text(), path)
    assert [(n.name, n.host) for n in config.nodes] == [("node-01", "node-01"), ("node-02", "node-02")]
    for node in ("node-01", "node-02"):  # checked with doctor: reached over the ssh config's alias
        assert re.search(rf"^ok +{node} +ssh ", result.stdout, re.M), result.stdout
        assert re.search(rf"^ok +{node} +known_hosts ", result.stdout, re.M), result.stdout
    status = run_cli("status", "--json")  # the default path: no --config
    assert status.returncode == 0, status.stderr
    nodes = json.loads(status.stdout)["nodes"]
    assert [(n["name"], n["reachable"]) for n in nodes] == [("node-01", True), ("node-02", True)]


def test_init_explains_every_key_and_its_examples_load(demo: DemoThread, tmp_path: Path) -> None:
    _ssh_home(demo)
    path = tmp_path / "c.toml"
    assert run_cli("init", "--host", "node-01", config=path).returncode == 0
    text = path.read_text()
    for section in SECTIONS:
        for key in section.keys:
            assert re.search(rf"^# {key.name} = .+ # {re.escape(key.doc)}", text, re.M), (section.header, key.name)
    # Every commented key and table, uncommented, is a valid config too.
    uncommented = re.sub(r"^# (\[|[a-z_]+ = )", r"\1", text, flags=re.M)
    config = parse_config(uncommented, path)
    assert config.aws is not None and [n.name for n in config.nodes] == ["node-01", "dgx-01"]


def test_init_never_overwrites_without_asking(demo: DemoThread, tmp_path: Path) -> None:
    _ssh_home(demo)
    path = tmp_path / "c.toml"
    path.write_text("# mine\n")
    refused = run_cli("init", "--host", "node-01", config=path)
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    assert path.read_text() == "# mine\n"
    chooser = run_cli("init", config=tmp_path / "new.toml")  # no terminal, no --host/--yes: nothing chosen
    assert chooser.returncode == 2 and "node-01, node-02" in chooser.stderr, chooser.stderr
    assert "dev-" not in chooser.stderr and "*" not in chooser.stderr  # wildcard entries are no nodes
    assert not (tmp_path / "new.toml").exists()
    forced = run_cli("init", "--host", "node-02", "--force", config=path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "c.toml.bak").read_text() == "# mine\n"
    assert [n.name for n in parse_config(path.read_text(), path).nodes] == ["node-02"]


def test_init_adds_no_host_key_on_first_use(demo: DemoThread, tmp_path: Path) -> None:
    known_hosts = _ssh_home(demo, known=("node-01",))
    before = known_hosts.read_bytes()
    result = run_cli("init", "--yes", config=tmp_path / "c.toml")
    assert result.returncode == 0, result.stderr
    port = demo.cluster.nodes["node-02"].port
    fingerprint = demo.cluster.nodes["node-02"].host_key.get_fingerprint("sha256")
    assert re.search(rf"^FAIL +node-02 +known_hosts +no host key for \[127\.0\.0\.1\]:{port}\b",
                     result.stdout, re.M), result.stdout
    assert re.search(rf"^FAIL +node-02 +ssh .*{re.escape(fingerprint)}", result.stdout, re.M), result.stdout
    assert f"ssh-keyscan -p {port} 127.0.0.1 >> " in result.stdout
    assert re.search(r"^ok +node-01 +ssh ", result.stdout, re.M)
    assert known_hosts.read_bytes() == before  # nothing trusted on first use
    status = run_cli("status", "--node", "node-02", config=tmp_path / "c.toml")
    assert status.returncode == 5 and fingerprint in status.stderr


def test_the_no_config_hint_offers_init_not_a_demo_config() -> None:
    result = run_cli("status")
    assert result.returncode == 2
    assert "gpuconsole init" in result.stderr and "--write-config" not in result.stderr, result.stderr


def test_init_reads_each_ssh_config_file_once_and_never_hangs_on_one(tmp_path: Path) -> None:
    """A config that includes itself three times over would be 3^16 reads at OpenSSH's depth limit;
    an included FIFO would block the read forever. Each file is read once, only regular files."""
    ssh = Path.home() / ".ssh"
    ssh.mkdir(mode=0o700)
    os.mkfifo(ssh / "pipe")
    (ssh / "extra").write_text("Host gpu-extra\n    HostName 127.0.0.1\n")
    (ssh / "config").write_text("Include config config config\nInclude pipe\nInclude extra extra\nHost gpu-a\n")
    result = run_cli("init", config=tmp_path / "c.toml", timeout_s=15)  # no terminal: lists the hosts
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(": gpu-extra, gpu-a"), result.stderr


def test_init_refuses_a_host_name_with_a_line_break_in_one_line() -> None:
    result = run_cli("init", "--host", "node-01\n")
    assert result.returncode == 2 and "not a valid node name" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not default_config_path().exists()
