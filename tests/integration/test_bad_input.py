"""Bad input: a clear one-line error with the contract's exit code, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncssh
import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli


def _assert_one_line(stderr: str, code: int, expected_code: int, *needles: str) -> None:
    assert code == expected_code, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in stderr, stderr


@pytest.mark.parametrize(
    ("gpus", "needle"),
    [("0", "at least 1"), ("-1", "at least 1"), ("abc", "not a whole number"), ("2.5", "not a whole number")],
)
def test_bad_gpu_counts_are_usage_errors(demo: DemoThread, gpus: str, needle: str) -> None:
    result = run_cli("reserve", "--gpus", gpus, config=demo.config_path)
    _assert_one_line(result.stderr, result.returncode, 2, "--gpus", needle)


def test_more_gpus_than_any_node_names_the_largest(demo: DemoThread) -> None:
    result = run_cli("reserve", "--gpus", "9", config=demo.config_path)
    _assert_one_line(result.stderr, result.returncode, 3, "largest", "4")


@pytest.mark.parametrize("name", ["nope", "x;touch /tmp/gc-pwned", "a'b\"c", "$(touch /tmp/gc-pwned)"])
def test_unknown_or_hostile_node_name_is_not_found(demo: DemoThread, name: str) -> None:
    result = run_cli("reserve", "--gpus", "1", "--node", name, config=demo.config_path)
    _assert_one_line(result.stderr, result.returncode, 6, "unknown node")
    assert not Path("/tmp/gc-pwned").exists()


@pytest.mark.parametrize("rid", ["r-zzzzzz", "$(touch /tmp/gc-pwned2)", "a;b", "'\""])
def test_unknown_or_hostile_reservation_id_is_not_found(demo: DemoThread, rid: str) -> None:
    for command in (["release", rid], ["renew", rid]):
        result = run_cli(*command, config=demo.config_path)
        _assert_one_line(result.stderr, result.returncode, 6, "no reservation")
    assert not Path("/tmp/gc-pwned2").exists()


def test_bad_durations_are_usage_errors(demo: DemoThread) -> None:
    for value in ("abc", "0", "-5m", "10y", ""):
        result = run_cli("reserve", "--gpus", "1", "--for", value, config=demo.config_path)
        _assert_one_line(result.stderr, result.returncode, 2, "--for")


def test_missing_config_is_exit_2(tmp_path: Path) -> None:
    result = run_cli("status", config=tmp_path / "absent.toml")
    _assert_one_line(result.stderr, result.returncode, 2, "absent.toml", "no config file")


def test_no_config_anywhere_is_exit_2() -> None:
    result = run_cli("status")
    _assert_one_line(result.stderr, result.returncode, 2, "--config")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[[nodes]]\nname = 'a'\nport = 'x'\n", [":3:", "port"]),
        ("[[nodes]]\nname = 'ok'\n\n[[nodes]]\nname = 'bad;name'\n", [":5:", "name", "not a valid node name"]),
        ("[defaults]\npoll_seconds = -1\n", [":2:", "poll_seconds", "out of range"]),
        ("[defaults]\ncolour = 'red'\n", [":2:", "colour", "unknown key"]),
        ("[[nodes]]\nname = 'a'\nhost = '$(id)'\n", [":3:", "host"]),
        ("[[nodes]\nname='a'\n", [":1:", "syntax"]),
        ("[defaults]\nreserve_for = 'soon'\n", [":2:", "reserve_for"]),
        ("[[nodes]]\nname = 'a'\n[[nodes]]\nname = 'a'\n", [":4:", "duplicate"]),
    ],
)
def test_malformed_config_names_file_line_and_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli("status", config=path)
    _assert_one_line(result.stderr, result.returncode, 2, str(path), *needles)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_node_is_exit_5(demo: DemoThread, tmp_path: Path) -> None:
    text = demo.config_path.read_text().replace(f"port = {demo.cluster.nodes['node-01'].port}",
                                                f"port = {_closed_port()}")
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = run_cli("reserve", "--gpus", "1", "--node", "node-01", config=config)
    _assert_one_line(result.stderr, result.returncode, 5, "node-01", "refused")
    # The other node still answers: one dead node does not fail the fleet.
    status = cli_json("status", config=config)
    reach = {n["name"]: n["reachable"] for n in status["nodes"]}
    assert reach == {"node-01": False, "node-02": True}


def test_wrong_host_key_is_exit_5(demo: DemoThread, tmp_path: Path) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{n.port} {impostor}\n" for n in demo.cluster.nodes.values()))
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace(str(demo.cluster.known_hosts_path), str(known)))
    result = run_cli("reserve", "--gpus", "1", "--node", "node-02", config=config)
    _assert_one_line(result.stderr, result.returncode, 5, "host key")


def test_unknown_host_is_refused_not_trusted_on_first_use(demo: DemoThread, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace(str(demo.cluster.known_hosts_path), str(known)))
    result = run_cli("status", "--node", "node-01", config=config)
    _assert_one_line(result.stderr, result.returncode, 5, "host key")
    assert known.read_text() == ""


def test_refused_auth_is_exit_5(demo: DemoThread, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    stranger.chmod(0o600)
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace(str(demo.cluster.client_key_path), str(stranger)))
    result = run_cli("reserve", "--gpus", "1", "--node", "node-01", config=config)
    _assert_one_line(result.stderr, result.returncode, 5, "authentication")


def test_release_without_ids_is_usage_error(demo: DemoThread) -> None:
    result = run_cli("release", config=demo.config_path)
    _assert_one_line(result.stderr, result.returncode, 2, "--mine")


def test_unknown_command_is_usage_error(demo: DemoThread) -> None:
    result = run_cli("frobnicate", config=demo.config_path)
    _assert_one_line(result.stderr, result.returncode, 2, "invalid choice")
