"""Every config key: its default, its type and its one-line error for a bad value (file, line, key).

The expected messages were taken from the parser before its keys were declared once (one table per
section in gpuconsole/config/__init__.py); they are the contract and must not drift.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuconsole.config import SECTIONS, parse_config
from gpuconsole.errors import ConfigError, ExitCode
from tests.helpers import REPO

PREAMBLE = {"[[nodes]]": "[[nodes]]\nname = 'n1'\n", "[cloud.aws]": "[cloud.aws]\nregion = 'us-east-1'\n"}

DEFAULT_KEYS = ("connect_timeout, identity_file, keeper, keeper_idle, known_hosts, max_parallel, mode, "
                "poll_seconds, reserve_for, service_agent, service_user, ssh_config, state_dir, theme, user")
NODE_KEYS = ("connect_timeout, host, identity_file, known_hosts, mode, name, port, python, service_agent, "
             "service_user, simulate_gpus, state_dir, user")
AWS_KEYS = ("address, ami, endpoint_url, host_map, idle_action, idle_stop_minutes, instance_types, key_name, "
            "max_instances, prices, region, security_group_ids, spot, ssh_user, subnet_id")
WATCH_KEYS = "cooldown_minutes, exec, idle_minutes, notify, util_below_pct"

BAD = [
    ('[defaults]', 'user = "a b"',
     "2: user: 'a b' contains characters that are not allowed"),
    ('[defaults]', 'user = 3',
     '2: user: must be a non-empty string'),
    ('[defaults]', 'user = ""',
     '2: user: must be a non-empty string'),
    ('[defaults]', 'identity_file = 5',
     '2: identity_file: must be a non-empty path string'),
    ('[defaults]', 'identity_file = ""',
     '2: identity_file: must be a non-empty path string'),
    ('[defaults]', 'known_hosts = []',
     '2: known_hosts: must be a non-empty path string'),
    ('[defaults]', 'ssh_config = 1',
     '2: ssh_config: must be a non-empty path string'),
    ('[defaults]', 'state_dir = "/a b"',
     "2: state_dir: '/a b' contains characters that are not allowed"),
    ('[defaults]', 'poll_seconds = 0',
     '2: poll_seconds: 0 is out of range [0.1, 3600]'),
    ('[defaults]', "poll_seconds = 'x'",
     "2: poll_seconds: must be a number, not 'x'"),
    ('[defaults]', 'poll_seconds = true',
     '2: poll_seconds: must be a number, not True'),
    ('[defaults]', 'poll_seconds = 9999',
     '2: poll_seconds: 9999 is out of range [0.1, 3600]'),
    ('[defaults]', 'reserve_for = "soon"',
     "2: reserve_for: 'soon' is not a duration (use 90s, 30m, 4h, 1d or seconds)"),
    ('[defaults]', 'reserve_for = 0',
     "2: reserve_for: '0' must be greater than zero"),
    ('[defaults]', 'reserve_for = "400d"',
     "2: reserve_for: '400d' is longer than 366 days"),
    ('[defaults]', 'connect_timeout = 0.01',
     '2: connect_timeout: 0.01 is out of range [0.1, 600]'),
    ('[defaults]', 'connect_timeout = 601',
     '2: connect_timeout: 601 is out of range [0.1, 600]'),
    ('[defaults]', 'max_parallel = 1.5',
     '2: max_parallel: must be an integer, not 1.5'),
    ('[defaults]', 'max_parallel = 0',
     '2: max_parallel: 0 is out of range [1, 4096]'),
    ('[defaults]', 'max_parallel = 5000',
     '2: max_parallel: 5000 is out of range [1, 4096]'),
    ('[defaults]', 'theme = "a b"',
     "2: theme: 'a b' contains characters that are not allowed"),
    ('[defaults]', 'mode = "x"',
     '2: mode: must be "cooperative" or "service", not \'x\''),
    ('[defaults]', 'service_user = "-x"',
     "2: service_user: '-x' contains characters that are not allowed"),
    ('[defaults]', 'service_agent = "/a/../b"',
     "2: service_agent: '/a/../b' must be an absolute path without '..'"),
    ('[defaults]', 'service_agent = "rel"',
     "2: service_agent: 'rel' contains characters that are not allowed"),
    ('[defaults]', 'typo = 1',
     f'2: typo: unknown key (allowed: {DEFAULT_KEYS})'),
    ('[[nodes]]', 'name = "a b"',
     "2: name: 'a b' is not a valid node name (letters, digits, '.', '_', '-'; at most 63)"),
    ('[[nodes]]', 'name = 1',
     '2: name: must be a non-empty string'),
    ('[[nodes]]', 'host = "a b"',
     "3: host: 'a b' contains characters that are not allowed"),
    ('[[nodes]]', 'port = 0',
     '3: port: 0 is out of range [1, 65535]'),
    ('[[nodes]]', 'port = 70000',
     '3: port: 70000 is out of range [1, 65535]'),
    ('[[nodes]]', 'port = 22.5',
     '3: port: must be an integer, not 22.5'),
    ('[[nodes]]', 'port = "22"',
     "3: port: must be an integer, not '22'"),
    ('[[nodes]]', 'user = "a b"',
     "3: user: 'a b' contains characters that are not allowed"),
    ('[[nodes]]', 'identity_file = 1',
     '3: identity_file: must be a non-empty path string'),
    ('[[nodes]]', "known_hosts = ''",
     '3: known_hosts: must be a non-empty path string'),
    ('[[nodes]]', 'state_dir = "a b"',
     "3: state_dir: 'a b' contains characters that are not allowed"),
    ('[[nodes]]', 'python = "py thon"',
     "3: python: 'py thon' contains characters that are not allowed"),
    ('[[nodes]]', 'simulate_gpus = 65',
     '3: simulate_gpus: 65 is out of range [0, 64]'),
    ('[[nodes]]', 'simulate_gpus = -1',
     '3: simulate_gpus: -1 is out of range [0, 64]'),
    ('[[nodes]]', 'connect_timeout = 0',
     '3: connect_timeout: 0 is out of range [0.1, 600]'),
    ('[[nodes]]', 'mode = "x"',
     '3: mode: must be "cooperative" or "service", not \'x\''),
    ('[[nodes]]', 'typo = 1',
     f'3: typo: unknown key (allowed: {NODE_KEYS})'),
    ('[[nodes]]', "ssh_config = 'x'",
     f'3: ssh_config: unknown key (allowed: {NODE_KEYS})'),
    ('[cloud.aws]', 'region = "mars"',
     "2: region: 'mars' contains characters that are not allowed"),
    ('[cloud.aws]', 'region = 1',
     '2: region: must be a non-empty string'),
    ('[cloud.aws]', 'endpoint_url = "ftp://x"',
     "3: endpoint_url: 'ftp://x' contains characters that are not allowed"),
    ('[cloud.aws]', 'instance_types = ["G5"]',
     "3: instance_types: must be a list of names (letters, digits, '.', '-')"),
    ('[cloud.aws]', 'instance_types = 5',
     "3: instance_types: must be a list of names (letters, digits, '.', '-')"),
    ('[cloud.aws]', 'ami = "a b"',
     "3: ami: 'a b' contains characters that are not allowed"),
    ('[cloud.aws]', 'key_name = ""',
     '3: key_name: must be a non-empty string'),
    ('[cloud.aws]', 'subnet_id = "s b"',
     "3: subnet_id: 's b' contains characters that are not allowed"),
    ('[cloud.aws]', 'security_group_ids = ["a b"]',
     "3: security_group_ids: must be a list of names (letters, digits, '.', '-')"),
    ('[cloud.aws]', 'ssh_user = "a b"',
     "3: ssh_user: 'a b' contains characters that are not allowed"),
    ('[cloud.aws]', 'spot = "yes"',
     "3: spot: must be true or false, not 'yes'"),
    ('[cloud.aws]', 'max_instances = -1',
     '3: max_instances: -1 is out of range [0, 1000]'),
    ('[cloud.aws]', 'max_instances = 1001',
     '3: max_instances: 1001 is out of range [0, 1000]'),
    ('[cloud.aws]', 'idle_stop_minutes = 0',
     '3: idle_stop_minutes: 0 is out of range [0.001, 100000]'),
    ('[cloud.aws]', 'idle_action = "kill"',
     '3: idle_action: must be "stop" or "terminate", not \'kill\''),
    ('[cloud.aws]', 'idle_action = 1',
     '3: idle_action: must be a non-empty string'),
    ('[cloud.aws]', 'address = "both"',
     '3: address: must be "public" or "private", not \'both\''),
    ('[cloud.aws]', 'prices = 3',
     '3: prices: must be a table of instance type = dollars per hour'),
    ('[cloud.aws]', 'prices = { "G5" = 1 }',
     '3: prices: G5 = 1: want an instance type = dollars per hour'),
    ('[cloud.aws]', 'prices = { "g5.xlarge" = -1 }',
     '3: prices: g5.xlarge = -1: want an instance type = dollars per hour'),
    ('[cloud.aws]', 'prices = { "g5.xlarge" = true }',
     '3: prices: g5.xlarge = True: want an instance type = dollars per hour'),
    ('[cloud.aws]', 'host_map = 1',
     '3: host_map: must be a non-empty path string'),
    ('[cloud.aws]', 'typo = 1',
     f'3: typo: unknown key (allowed: {AWS_KEYS})'),
    ('[watch]', 'idle_minutes = 0',
     '2: idle_minutes: 0 is out of range [0.001, 100000]'),
    ('[watch]', 'util_below_pct = 101',
     '2: util_below_pct: 101 is out of range [0, 100]'),
    ('[watch]', 'notify = 3',
     '2: notify: must be a URL string or a list of them'),
    ('[watch]', 'notify = [1]',
     '2: notify: must be a URL string or a list of them'),
    ('[watch]', "exec = ''",
     '2: exec: must be a non-empty string'),
    ('[watch]', 'cooldown_minutes = -1',
     '2: cooldown_minutes: -1 is out of range [0, 100000]'),
    ('[exporter]', 'listen = "0.0.0.0"',
     "2: listen: '0.0.0.0' is not HOST:PORT (e.g. 127.0.0.1:9400)"),
    ('[exporter]', 'web_config = ""',
     "2: web_config: must be a non-empty path string"),
    ('[watch]', 'typo = 1',
     f'2: typo: unknown key (allowed: {WATCH_KEYS})'),
]


def _text(header: str, line: str) -> str:
    pre = PREAMBLE.get(header, header + "\n")
    if line.startswith(("name ", "region ")):
        pre = header + "\n"  # the required key itself is the bad one
    return pre + line + "\n"


@pytest.mark.parametrize(("header", "line", "message"), BAD)
def test_a_bad_value_is_one_line_naming_file_line_and_key(header: str, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_text(header, line), Path("/cfg/c.toml"))
    assert str(caught.value) == f"/cfg/c.toml:{message}"
    assert caught.value.exit_code == ExitCode.USAGE


FULL = """
[defaults]
user = "alice"
identity_file = "keys/id"
known_hosts = "/etc/kh"
ssh_config = "/etc/ssh/cfg"
state_dir = "/srv/gc"
poll_seconds = 2
reserve_for = "90m"
connect_timeout = 7
max_parallel = 8
theme = "gpuconsole-light"
mode = "service"
service_user = "gcsvc"
service_agent = "/opt/gc/agent.py"
keeper = false
keeper_idle = "5m"

[[nodes]]
name = "a"

[[nodes]]
name = "b"
host = "10.0.0.2"
port = 2222
user = "bob"
identity_file = "/k/b"
known_hosts = "kh2"
state_dir = "/var/b"
python = "/usr/bin/python3.8"
simulate_gpus = 4
connect_timeout = 3.5
mode = "cooperative"
service_user = "svc2"
service_agent = "/opt/b.py"

[[clusters]]
name = "hpc"
kind = "slurm"
login = "login.hpc"
port = 2200
user = "carol"
identity_file = "/k/c"
known_hosts = "/k/kh"
python = "/usr/bin/python3"
connect_timeout = 4
telemetry = "agent"
simulate_gpus = 2

[cloud.aws]
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:5000"
instance_types = ["g5.xlarge", "g6.xlarge"]
ami = "ami-123"
key_name = "team"
subnet_id = "subnet-1"
security_group_ids = "sg-1"
ssh_user = "ec2-user"
spot = true
max_instances = 2
idle_stop_minutes = 12.5
idle_action = "terminate"
address = "private"
prices = { "g5.xlarge" = 1, "g6.xlarge" = 0.75 }
host_map = "hosts.json"

[watch]
idle_minutes = 10
util_below_pct = 3
notify = "ntfy://x"
exec = "/bin/page"
cooldown_minutes = 0

[exporter]
listen = "[::1]:9401"
web_config = "web.yml"
"""

FULL_PARSED = (
    "Config(path=PosixPath('/cfg/c.toml'), defaults=Defaults(user='alice', identity_file='/cfg/keys/id', "
    "known_hosts='/etc/kh', state_dir='/srv/gc', poll_seconds=2.0, reserve_for_s=5400.0, ssh_config='/etc/ssh/cfg', "
    "connect_timeout_s=7.0, max_parallel=8, theme='gpuconsole-light', mode='service', service_user='gcsvc', "
    "service_agent='/opt/gc/agent.py', keeper=False, keeper_idle_s=300.0), "
    "nodes=(NodeConfig(name='a', host='a', port=None, user='alice', "
    "identity_file='/cfg/keys/id', known_hosts='/etc/kh', state_dir='/srv/gc', python='python3', simulate_gpus=0, "
    "source='onprem', ssh_config='/etc/ssh/cfg', connect_timeout_s=7.0, mode='service', service_user='gcsvc', "
    "service_agent='/opt/gc/agent.py'), NodeConfig(name='b', host='10.0.0.2', port=2222, user='bob', "
    "identity_file='/k/b', known_hosts='/cfg/kh2', state_dir='/var/b', python='/usr/bin/python3.8', "
    "simulate_gpus=4, source='onprem', ssh_config='/etc/ssh/cfg', connect_timeout_s=3.5, mode='cooperative', "
    "service_user='svc2', service_agent='/opt/b.py')), watch=WatchConfig(idle_minutes=10.0, util_below_pct=3.0, "
    "notify=('ntfy://x',), exec='/bin/page', cooldown_minutes=0.0), aws=AwsConfig(region='eu-west-1', "
    "endpoint_url='http://127.0.0.1:5000', instance_types=('g5.xlarge', 'g6.xlarge'), ami='ami-123', "
    "key_name='team', subnet_id='subnet-1', security_group_ids=('sg-1',), ssh_user='ec2-user', spot=True, "
    "max_instances=2, idle_stop_minutes=12.5, idle_action='terminate', prices=(('g5.xlarge', 1.0), "
    "('g6.xlarge', 0.75)), address='private', host_map='/cfg/hosts.json'), "
    "exporter=ExporterConfig(listen='[::1]:9401', web_config='/cfg/web.yml'), "
    "clusters=(ClusterConfig(name='hpc', kind='slurm', login='login.hpc', port=2200, user='carol', "
    "identity_file='/k/c', known_hosts='/k/kh', python='/usr/bin/python3', ssh_config='/etc/ssh/cfg', "
    "connect_timeout_s=4.0, telemetry='agent', simulate_gpus=2),))"
)

MINIMAL_PARSED = (
    "Config(path=PosixPath('/cfg/c.toml'), defaults=Defaults(user=None, identity_file=None, known_hosts=None, "
    "state_dir='/var/lib/gpuconsole', poll_seconds=1.0, reserve_for_s=14400.0, ssh_config=None, "
    "connect_timeout_s=10.0, max_parallel=64, theme=None, mode='cooperative', service_user='gpuconsole', "
    "service_agent='/usr/local/lib/gpuconsole/gcagent.py', keeper=True, keeper_idle_s=600.0), "
    "nodes=(NodeConfig(name='x', host='x', port=None, "
    "user=None, identity_file=None, known_hosts=None, state_dir='/var/lib/gpuconsole', python='python3', "
    "simulate_gpus=0, source='onprem', ssh_config=None, connect_timeout_s=10.0, mode='cooperative', "
    "service_user='gpuconsole', service_agent='/usr/local/lib/gpuconsole/gcagent.py'),), "
    "watch=WatchConfig(idle_minutes=30.0, util_below_pct=5.0, notify=(), exec=None, cooldown_minutes=60.0), "
    "aws=AwsConfig(region='us-east-1', endpoint_url=None, instance_types=(), ami=None, key_name=None, "
    "subnet_id=None, security_group_ids=(), ssh_user='ubuntu', spot=False, max_instances=4, "
    "idle_stop_minutes=30.0, idle_action='stop', prices=(), address='public', host_map=None), "
    "exporter=ExporterConfig(listen=None, web_config=None), clusters=())"
)


def test_every_key_set_parses_to_these_values() -> None:
    assert repr(parse_config(FULL, Path("/cfg/c.toml"))) == FULL_PARSED


def test_every_key_left_out_takes_its_default() -> None:
    config = parse_config("[cloud.aws]\nregion = 'us-east-1'\n[[nodes]]\nname = 'x'\n", Path("/cfg/c.toml"))
    assert repr(config) == MINIMAL_PARSED


def _section(text: str, header: str) -> str:
    """The last `header` table of ``text`` (from its header line to the next blank line)."""
    start = [m.start() for m in re.finditer(rf"^{re.escape(header)}", text, re.M)][-1]
    end = text.find("\n\n", start)
    return text[start:end if end >= 0 else None]


def test_the_full_example_sets_every_declared_key_and_nothing_else() -> None:
    """FULL above is the complete config: a key declared but not exercised here is untested."""
    for section in SECTIONS:
        body = _section(FULL, section.header)
        assert set(re.findall(r"^(\w+) =", body, re.M)) == {key.name for key in section.keys}, section.header


def test_readme_and_design_document_every_declared_key() -> None:
    """The README's config example and design.md 3.5 name every key the parser accepts, and no other."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = readme[readme.index("```toml", readme.index("## Configuration")):]
    example = example[:example.index("```", 7)]
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    keys_doc = design[design.index("### 3.5 Config keys"):]
    for section in SECTIONS:
        documented = set(re.findall(r"^#? ?(\w+) =", _section(example, section.header), re.M))
        assert documented == {key.name for key in section.keys}, section.header
        line = next(item for item in keys_doc.split("\n- ") if item.startswith(f"`{section.header}`"))
        named = set(re.findall(r"`(\w+)`", line.split(":", 1)[1]))
        assert {key.name for key in section.keys} <= named, section.header


def test_the_client_knows_how_often_a_slurm_login_node_streams() -> None:
    """The poller's patience with a Slurm login node follows the agent's floor on its stream."""
    from gpuconsole.model.slurm import SLURM_STREAM_S
    from gpuconsole.node.slurm import MIN_STREAM_S

    assert SLURM_STREAM_S == MIN_STREAM_S
