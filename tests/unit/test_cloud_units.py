"""Cloud pieces that need no server: prices, error mapping, config validation, the idle judge."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from gpuconsole.cloud.ec2 import classify_aws_error, is_loopback_endpoint
from gpuconsole.cloud.idle import IdleCloudJudge
from gpuconsole.cloud.monitor import CloudView
from gpuconsole.cloud.prices import PRICES_AS_OF, known_types, price_per_hour
from gpuconsole.config import parse_config
from gpuconsole.errors import ConfigError, ExitCode
from gpuconsole.model.cloud import Instance
from gpuconsole.model.detect import Detector
from gpuconsole.model.events import NodeFailed, NodeUpdated
from gpuconsole.model.telemetry import NodeSnapshot


def _client_error(code: str, message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize(("code", "exit_code"), [
    ("InsufficientInstanceCapacity", ExitCode.NO_CAPACITY),
    ("InstanceLimitExceeded", ExitCode.NO_CAPACITY),
    ("VcpuLimitExceeded", ExitCode.NO_CAPACITY),
    ("MaxSpotInstanceCountExceeded", ExitCode.NO_CAPACITY),
    ("InvalidAMIID.NotFound", ExitCode.USAGE),
    ("InvalidInstanceType", ExitCode.USAGE),
    ("InvalidInstanceID.NotFound", ExitCode.NOT_FOUND),
    ("UnauthorizedOperation", ExitCode.PERMISSION),
    ("AuthFailure", ExitCode.UNREACHABLE),
    ("InvalidSubnetID.NotFound", ExitCode.USAGE),
    ("SomethingNew", ExitCode.INTERNAL),
])
def test_aws_errors_map_to_contract_exit_codes(code: str, exit_code: ExitCode) -> None:
    error = classify_aws_error(_client_error(code), "run_instances")
    assert error.exit_code == exit_code
    assert code in str(error) and "\n" not in str(error)


def test_unreachable_endpoint_and_missing_credentials_are_clear() -> None:
    from botocore.exceptions import NoCredentialsError

    assert classify_aws_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "x").exit_code == 5
    error = classify_aws_error(NoCredentialsError(), "x")
    assert error.exit_code == ExitCode.USAGE and "no credentials" in str(error)


def test_price_table_is_dated_and_overridable() -> None:
    assert PRICES_AS_OF.startswith("2026-")
    assert price_per_hour("p5.48xlarge", False, {}) == pytest.approx(55.04)
    assert price_per_hour("p5.48xlarge", True, {}) < 55.04
    assert price_per_hour("p5.48xlarge", False, {"p5.48xlarge": 40.0}) == 40.0
    assert price_per_hour("x9.unknown", False, {}) is None
    prices = [price_per_hour(t, False, {}) or 0 for t in known_types()]
    assert prices == sorted(prices)


def test_loopback_endpoints_are_recognised() -> None:
    assert is_loopback_endpoint("http://127.0.0.1:5000")
    assert is_loopback_endpoint("http://localhost:4566")
    assert is_loopback_endpoint("http://[::1]:4566")
    assert not is_loopback_endpoint("https://ec2.us-east-1.amazonaws.com")
    assert not is_loopback_endpoint(None)


@pytest.mark.parametrize(("text", "key"), [
    ('[cloud.aws]\nami = "ami-1"\n', "region"),
    ('[cloud.aws]\nregion = "us-east-1"\nidle_action = "explode"\n', "idle_action"),
    ('[cloud.aws]\nregion = "us-east-1"\nspot = "yes"\n', "spot"),
    ('[cloud.aws]\nregion = "us-east-1"\nmax_instances = -1\n', "max_instances"),
    ('[cloud.aws]\nregion = "us-east-1"\nprices = { "g5.xlarge" = "cheap" }\n', "prices"),
    ('[cloud.aws]\nregion = "us-east-1"\ninstance_types = ["g5.xlarge; rm"]\n', "instance_types"),
    ('[cloud.aws]\nregion = "us-east-1"\nendpoint_url = "ftp://x"\n', "endpoint_url"),
])
def test_bad_cloud_config_names_file_line_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.toml"
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and f": {key}:" in message


def test_cloud_config_defaults() -> None:
    config = parse_config('[cloud.aws]\nregion = "eu-west-1"\nprices = { "g5.xlarge" = 0.9 }\n', Path("c.toml"))
    assert config.aws is not None
    assert (config.aws.max_instances, config.aws.idle_action, config.aws.spot) == (4, "stop", False)
    assert dict(config.aws.prices) == {"g5.xlarge": 0.9}


def _instance(instance_id: str) -> Instance:
    return Instance(instance_id, "g5.xlarge", "running", False, 1, 1.006, 0.0, True, "alice")


def _snapshot(name: str, *, util: float = 0.0, reservation: bool = False, mem_mib: int = 0) -> NodeSnapshot:
    gpu = {"index": 0, "uuid": "GPU-0", "name": "A10G", "util_pct": util, "mem_used_mib": mem_mib,
           "mem_total_mib": 22888, "temperature_c": 30, "power_w": 20, "processes": []}
    reservations = [{"id": "r-1", "gpus": [0], "owner": "alice", "priority": "normal", "state": "active",
                     "created_at": "2026-11-23T00:00:00Z", "expires_at": "2026-11-23T04:00:00Z"}]
    data = {"reachable": True, "gpus": [gpu], "reservations": reservations if reservation else [],
            "queue": [], "jobs": []}
    return NodeSnapshot.from_agent(name, data, "cloud")


def _judge(idle_stop_s: float = 60) -> tuple[IdleCloudJudge, Detector]:
    """The judge over a detector with the watcher's rule ([watch] util_below_pct = 5)."""
    detector = Detector(idle_s=1800, util_below_pct=5)
    return IdleCloudJudge(idle_stop_s, detector), detector


def test_idle_cloud_needs_the_whole_window_and_resets_on_any_use() -> None:
    judge, detector = _judge()
    view = CloudView((_instance("i-idle"), _instance("i-busy"), _instance("i-gone")))
    detector.apply(NodeUpdated(_snapshot("i-idle"), 0.0), 0.0)
    detector.apply(NodeUpdated(_snapshot("i-busy", reservation=True), 0.0), 0.0)
    assert judge.judge(0.0, view) == []
    assert judge.judge(59.0, view) == []
    alerts = judge.judge(61.0, view)
    assert [a.node for a in alerts] == ["i-idle"]  # busy has a reservation; gone never answered
    assert alerts[0].kind == "idle_cloud" and alerts[0].owner == "alice" and "$1.01/h" in alerts[0].message
    detector.apply(NodeUpdated(_snapshot("i-idle", util=40.0), 62.0), 62.0)
    assert judge.judge(62.0, view) == []
    detector.apply(NodeUpdated(_snapshot("i-idle"), 63.0), 63.0)
    assert judge.judge(100.0, view) == []  # the window starts again


def test_idle_cloud_is_the_detectors_rule_between_judgements_too() -> None:
    """The GPUs are judged by the detector's windows, fed every sample: work that came and went between
    two judgements, or memory filling up at low utilization, restarts the stretch; a down node is never idle."""
    judge, detector = _judge()
    view = CloudView((_instance("i-a"), _instance("i-b"), _instance("i-c")))
    for name in ("i-a", "i-b", "i-c"):
        detector.apply(NodeUpdated(_snapshot(name), 0.0), 0.0)
    assert judge.judge(0.0, view) == []
    detector.apply(NodeUpdated(_snapshot("i-a", util=90.0), 30.0), 30.0)  # a burst between judgements
    detector.apply(NodeUpdated(_snapshot("i-b", mem_mib=8000), 30.0), 30.0)  # loading a model at 0 %
    for name in ("i-a", "i-b", "i-c"):
        detector.apply(NodeUpdated(_snapshot(name, mem_mib=8000 if name == "i-b" else 0), 31.0), 31.0)
    assert [a.node for a in judge.judge(61.0, view)] == ["i-c"]
    detector.apply(NodeFailed("i-c", "connection lost", False, 1.0, 62.0), 62.0)
    assert judge.judge(62.0, view) == []  # its agent does not answer: never idle
    assert sorted(a.node for a in judge.judge(92.0, view)) == ["i-a", "i-b"]


def test_host_keys_come_from_the_console_block_only(tmp_path: Path) -> None:
    from gpuconsole.cloud.hostkeys import known_addresses, parse_console_host_keys, remember_host_keys

    console = (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil not in the block\n"
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= root@ip-10-0-0-1\n"
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGoo root@ip-10-0-0-1\n"
        "ssh-ed25519 not!base64\n"
        "-----END SSH HOST KEY KEYS-----\n"
    )
    keys = parse_console_host_keys(console)
    assert keys == ["ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=",
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGoo"]
    assert parse_console_host_keys("booting…") == []
    path = tmp_path / "kh"
    remember_host_keys(path, "54.1.2.3", ["ssh-ed25519 OLD"])
    remember_host_keys(path, "54.9.9.9", keys[1:])
    remember_host_keys(path, "54.1.2.3", keys)  # a reused address replaces its old key
    lines = path.read_text().splitlines()
    assert "54.1.2.3 ssh-ed25519 OLD" not in lines and len(lines) == 3
    assert known_addresses(path) == {"54.1.2.3", "54.9.9.9"}
