"""Cost safety: nothing paid starts or stops silently. boto3 against the demo's real moto server, the
instances as real SSH nodes; the questions asked on a real pseudo-terminal.

A burst asks on a terminal and is refused in a script without --yes; once started it says what it
keeps costing. `cloud down` names the reservations and jobs it would end; `cloud ls --all` keeps an
ended instance's final cost; `cloud up --count K` starts K or says nothing about launching;
`cloud down --mine / --idle`; `cloud ls` keeps whole ids at 80 columns.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli, submit_job, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cloud_demo(tmp_path: Path) -> Iterator[DemoThread]:
    """1 on-prem node × 2 GPUs plus the moto EC2 (max_instances 4, 0.3 s simulated boot)."""
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        yield demo


def _live(demo: DemoThread) -> list[str]:
    return [i.id for i in demo.cloud.emulator.instances() if i.managed and i.live]


def _up(config: Path, *flags: str) -> list[str]:
    result = run_cli("cloud", "up", "--json", *flags, config=config)
    assert result.returncode == 0, result.stderr
    return [i["id"] for i in json.loads(result.stdout)["instances"]]


def _with_aws(config: Path, name: str, line: str) -> Path:
    """A copy of the demo config with one more `[cloud.aws]` line."""
    copy = config.with_name(f"{name}.toml")
    copy.write_text(config.read_text().replace("[cloud.aws]\n", f"[cloud.aws]\n{line}\n", 1))
    return copy


def on_terminal(*args: str, config: Path, answer: str | None = None, env: dict[str, str] | None = None,
                timeout_s: float = 60) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr (80 columns); when it asks
    (`[y/N]`), type ``answer``. Returns the exit code and everything it wrote."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(config), *args]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "COLUMNS": "80", **(env or {})})
    os.close(slave)
    seen = b""
    answered = answer is None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen += data
            if not answered and b"[y/N]" in seen:
                os.write(master, (answer or "").encode("utf-8", "surrogateescape") + b"\n")  # "\udcff": byte 0xff
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


def test_burst_in_a_script_without_yes_is_refused_and_starts_nothing(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    cli_json("reserve", "--gpus", "2", config=config)  # on-prem full
    for argv in (["reserve", "--burst", "--gpus", "1"], ["submit", "--burst", "--gpus", "1", "--", "true"]):
        refused = run_cli(*argv, config=config)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "--yes" in refused.stderr and "paid" in refused.stderr
    assert _live(cloud_demo) == []

    burst = run_cli("reserve", "--burst", "--yes", "--gpus", "1", "--json", config=config)
    assert burst.returncode == 0, burst.stderr
    node = json.loads(burst.stdout)["node"]
    assert _live(cloud_demo) == [node]
    assert (f"{node} keeps costing $0.80/h until `gpuconsole cloud down {node}` or the idle stop" in burst.stderr
            and "idle_stop_minutes = 30" in burst.stderr)


def test_burst_on_a_terminal_shows_the_quote_and_asks(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    cli_json("reserve", "--gpus", "2", config=config)  # on-prem full
    code, seen = on_terminal("reserve", "--burst", "--gpus", "1", config=config, answer="n")
    assert code == 3, seen
    assert "start g6.xlarge (1 GPU, on-demand, $0.80/h)? [y/N]" in seen and "no instance started" in seen
    assert _live(cloud_demo) == []

    code, seen = on_terminal("reserve", "--burst", "--gpus", "1", config=config, answer="y")
    assert code == 0, seen
    [node] = _live(cloud_demo)
    assert "reserved r-" in seen and f"on {node}" in seen
    assert f"{node} keeps costing $0.80/h until `gpuconsole cloud down {node}`" in seen


def test_cloud_down_of_a_busy_instance_names_its_work_and_needs_force(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    [instance] = _up(config, "--type", "g6e.12xlarge")  # 4 GPUs
    held = cli_json("reserve", "--gpus", "1", "--node", instance, config=config)
    job = submit_job(config, "train", "--gpus", "1", "--node", instance, argv=["sleep", "300"])

    refused = run_cli("cloud", "down", instance, config=config)
    assert refused.returncode == 2, refused.stderr
    assert held["id"] in refused.stderr and job["id"] in refused.stderr and "--force" in refused.stderr
    code, seen = on_terminal("cloud", "down", instance, config=config, answer="n")
    assert code == 0 and "terminate anyway?" in seen and "nothing done" in seen, seen
    utf8 = {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}  # a strict decoder, as in a UTF-8 locale
    code, seen = on_terminal("cloud", "down", instance, config=config, answer="\udcff", env=utf8)  # not UTF-8: no
    assert code == 0 and "nothing done" in seen, seen
    assert _live(cloud_demo) == [instance]

    forced = run_cli("cloud", "down", "--force", instance, config=config)
    assert forced.returncode == 0, forced.stderr
    assert f"terminating {instance}" in forced.stdout
    assert _live(cloud_demo) == []


def test_cloud_ls_all_keeps_the_final_cost_of_ended_instances(cloud_demo: DemoThread) -> None:
    config = _with_aws(cloud_demo.config_path, "dear", 'prices = { "g6.xlarge" = 36000.0 }')  # $10 a second
    [instance] = _up(config, "--type", "g6.xlarge")
    time.sleep(1.5)  # EC2 bills per second: let it run a few of them
    down = run_cli("cloud", "down", instance, config=config)
    assert down.returncode == 0, down.stderr
    wait_for(lambda: _listed(config, instance)["state"] == "terminated", timeout_s=20, message="terminated")
    ended = _listed(config, instance)
    assert ended["uptime_s"] >= 1.0 and ended["cost_so_far"] >= 10.0
    time.sleep(1.1)
    assert _listed(config, instance)["cost_so_far"] == ended["cost_so_far"]  # final: it no longer grows
    table = run_cli("cloud", "ls", "--all", config=config)
    row = next(line for line in table.stdout.splitlines() if instance in line)
    assert "$0.00" not in row and f"${ended['cost_so_far']:.2f}" in row


def _listed(config: Path, instance: str) -> dict[str, Any]:
    instances: list[dict[str, Any]] = cli_json("cloud", "ls", "--all", config=config)["instances"]
    listed = {i["id"]: i for i in instances}
    return listed[instance]


def test_cloud_up_count_starts_all_or_refuses_before_saying_launching(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    first = _up(config)
    refused = run_cli("cloud", "up", "--count", "4", config=config)  # max_instances = 4, one is live
    assert refused.returncode == 3, refused.stderr
    assert "max_instances = 4 reached" in refused.stderr and "launch" not in refused.stderr
    assert _live(cloud_demo) == first
    more = run_cli("cloud", "up", "--count", "3", "--no-wait", config=config)
    assert more.returncode == 0, more.stderr
    assert "launched 3 × g6.xlarge" in more.stderr and len(_live(cloud_demo)) == 4


def test_cloud_down_mine_and_idle(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    busy, idle = _up(config, "--count", "2")
    others = cloud_demo.cloud.emulator.raw.run_instances(  # a colleague's managed instance
        ImageId=cloud_demo.cloud.emulator.ubuntu_ami(), InstanceType="g6.xlarge", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "gpuconsole:managed", "Value": "true"}, {"Key": "gpuconsole:owner", "Value": "someone-else"}]}],
    )["Instances"][0]["InstanceId"]
    for node in (busy, others):  # the demo boots every managed instance as a node, a colleague's too
        wait_for(partial(_reserved_on, config, node), timeout_s=20, message=f"a reservation on {node}")

    result = run_cli("cloud", "down", "--idle", "--json", config=config)
    assert result.returncode == 0, result.stderr
    assert [i["id"] for i in json.loads(result.stdout)["instances"]] == [idle]
    assert sorted(_live(cloud_demo)) == sorted([busy, others])

    refused = run_cli("cloud", "down", "--mine", config=config)
    assert refused.returncode == 2 and busy in refused.stderr, refused.stderr
    forced = run_cli("cloud", "down", "--mine", "--force", config=config)
    assert forced.returncode == 0, forced.stderr
    assert f"terminating {busy}" in forced.stdout and others not in forced.stdout
    assert _live(cloud_demo) == [others]
    assert cli_json("cloud", "down", "--idle", config=config)["instances"] == []  # it holds a reservation
    both = run_cli("cloud", "down", "--mine", others, config=config)
    assert both.returncode == 2 and "not both" in both.stderr


def _reserved_on(config: Path, node: str) -> bool:
    return run_cli("reserve", "--gpus", "1", "--node", node, config=config).returncode == 0


def test_cloud_ls_keeps_whole_ids_at_80_columns(cloud_demo: DemoThread) -> None:
    config = cloud_demo.config_path
    launched = _up(config, "--count", "2", "--type", "g6e.12xlarge")
    code, seen = on_terminal("cloud", "ls", config=config)
    assert code == 0, seen
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in seen.splitlines()]  # styles are not columns
    assert all(len(line) <= 80 for line in lines), seen
    for instance in launched:
        assert any(instance in line and "running" in line for line in lines), seen
    assert "…" not in seen
