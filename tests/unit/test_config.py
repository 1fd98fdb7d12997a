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
