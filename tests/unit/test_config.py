"""Config loading: precedence, defaults, path resolution and ~/.ssh/config aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuconsole.config import load_config, parse_config, resolve_config_path
from gpuconsole.errors import ConfigError, NotFoundError

GOOD = """
[defaults]
user = "alice"
identity_file = "keys/id"
known_hosts = "/etc/kh"
poll_seconds = 2
reserve_for = "2h"

[[nodes]]
name = "dgx-1"
host = "10.0.0.1"
port = 2222
simulate_gpus = 8

[[nodes]]
name = "dgx-2"
user = "bob"
python = "/opt/py/bin/python3"
state_dir = "/srv/gpuconsole"
"""


def test_parses_defaults_and_nodes(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path / "c.toml")
    first, second = config.nodes
    assert first.name == "dgx-1" and first.port == 2222 and first.user == "alice"
    assert first.identity_file == str(tmp_path / "keys/id")  # relative to the config file
    assert first.known_hosts == "/etc/kh" and first.simulate_gpus == 8
    assert second.host == "dgx-2" and second.user == "bob" and second.port is None
    assert second.state_dir == "/srv/gpuconsole" and second.python == "/opt/py/bin/python3"
    assert config.defaults.poll_seconds == 2.0 and config.defaults.reserve_for_s == 7200.0


def test_precedence_flag_then_env_then_platform_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert resolve_config_path(None) == tmp_path / "xdg" / "gpuconsole" / "config.toml"
    monkeypatch.setenv("GPUCONSOLE_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_config_path(None) == tmp_path / "env.toml"
    assert resolve_config_path(str(tmp_path / "flag.toml")) == tmp_path / "flag.toml"


def test_platform_dir_config_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "gpuconsole").mkdir()
    (tmp_path / "gpuconsole" / "config.toml").write_text("[[nodes]]\nname = 'n'\n")
    assert load_config().nodes[0].name == "n"


def test_unknown_node_lookup_lists_known(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path / "c.toml")
    with pytest.raises(NotFoundError, match="dgx-1, dgx-2"):
        config.node("dgx-9")


def test_error_names_table_line_for_missing_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.toml:3: name: is required"):
        parse_config("[[nodes]]\nname = 'a'\n[[nodes]]\nhost = 'b'\n", tmp_path / "c.toml")


def test_cloud_section_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":3: regoin: unknown key"):
        parse_config("[cloud.aws]\nregion = 'us-east-1'\nregoin = 'x'\n", tmp_path / "c.toml")
    config = parse_config("[cloud.aws]\nregion = 'us-east-1'\n", tmp_path / "c.toml")
    assert config.aws is not None
    assert config.aws.region == "us-east-1"
    assert config.aws.max_instances == 4


def test_mode_defaults_to_cooperative_and_is_inherited_per_node(tmp_path: Path) -> None:
    """`mode`, `service_user`, `service_agent`: [defaults] sets them for every node, a node overrides."""
    plain = parse_config(GOOD, tmp_path / "c.toml").nodes[0]
    assert (plain.mode, plain.service_user, plain.service_agent) == (
        "cooperative", "gpuconsole", "/usr/local/lib/gpuconsole/gcagent.py")
    text = """
[defaults]
mode = "service"
service_user = "gcsvc"

[[nodes]]
name = "a"

[[nodes]]
name = "b"
mode = "cooperative"

[[nodes]]
name = "c"
service_agent = "/opt/gc/agent.py"
"""
    a, b, c = parse_config(text, tmp_path / "c.toml").nodes
    assert (a.mode, a.service_user, a.service_agent) == ("service", "gcsvc", "/usr/local/lib/gpuconsole/gcagent.py")
    assert b.mode == "cooperative"
    assert (c.mode, c.service_agent) == ("service", "/opt/gc/agent.py")


@pytest.mark.parametrize(("line", "message"), [
    ('mode = "hardened"', r"c\.toml:4: mode: must be \"cooperative\" or \"service\""),
    ('service_user = "a b"', r"c\.toml:4: service_user: 'a b' contains characters that are not allowed"),
    ('service_agent = "relative/agent.py"', r"c\.toml:4: service_agent: .* not allowed"),
    ('service_agent = "/a/../etc/agent.py"', r"c\.toml:4: service_agent: .* without '\.\.'"),
    ("mode = 1", r"c\.toml:4: mode: must be a non-empty string"),
])
def test_bad_service_keys_name_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[[nodes]]\nname = 'a'\n\n{line}\n", tmp_path / "c.toml")
