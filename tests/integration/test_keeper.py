"""The per-user connection keeper (core/keeper.py): a command's output is the same through it, only
the same local user can reach it, a dead keeper or a changed config or host key never changes what
a command says, and no keeper outlives its test.

The suite runs with GPUCONSOLE_KEEPER=0 (conftest); these tests turn it on, in the private
XDG_RUNTIME_DIR conftest gives every test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpuconsole.core import keeper_client as kc
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import run_cli, wait_for
from tests.integration.keeper_fixtures import (  # noqa: F401  (keeper_on: the fixture)
    _alive,
    _keeper,
    _pids,
    _runtime,
    _warm,
    keeper_on,
    other_user,
)

pytestmark = pytest.mark.usefixtures("keeper_on")
# Live readings of the demo host itself (the demo nodes report this machine's CPU, memory and I/O):
# they differ between any two calls, keeper or not, so they are compared by presence. (A single
# `status --json` does not wait for a rate window: over a fresh connection the rates are null, over
# the keeper's warm one they are numbers; both are what the contract allows.)
LIVE = frozenset({"cpu_pct", "load1", "mem_used_bytes", "disk_read_bps", "disk_write_bps", "net_rx_bps",
                  "net_tx_bps"})
LIVE_GPU = frozenset({"power_w", "temperature_c"})  # the simulated GPUs drift between samples


def _stable(stdout: str) -> dict[str, Any]:
    """`status --json` without generated_at and with the host's live readings reduced to their type."""
    doc: dict[str, Any] = json.loads(stdout)
    doc.pop("generated_at")
    for node in doc["nodes"]:
        for key in LIVE & node.keys():
            assert node[key] is None or isinstance(node[key], int | float), (key, node[key])
            node[key] = "live"
        for gpu in node["gpus"]:
            for key in LIVE_GPU:
                assert isinstance(gpu[key], int | float), (key, gpu[key])
                gpu[key] = "live"
    return doc


def _table(stdout: str) -> list[list[str]]:
    """The status tables without the live readings (whose widths also move the borders): the
    headers, each node row's first seven cells (node … holders), the GPU rows without util, mem, temp and
    power, and the summary line."""
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if cells and cells[0] == "node":
            rows.append(cells)
        elif cells and cells[0].startswith("node-"):
            rows.append(cells[:7] if not cells[1].isdigit() else cells[:3] + cells[7:])
        elif not cells and line.strip() and not set(line.strip()) & set("┏┡└━─"):
            rows.append([line.strip()])
    return rows


def _diff(a: str, b: str) -> str:
    import difflib
    return "\n".join(difflib.unified_diff(json.dumps(_stable(a), indent=1, sort_keys=True).splitlines(),
                                          json.dumps(_stable(b), indent=1, sort_keys=True).splitlines(), lineterm=""))


def test_status_is_the_same_with_and_without_the_keeper(demo: DemoThread) -> None:
    config = demo.config_path
    direct = run_cli("--no-keeper", "status", "--json", config=config)
    assert direct.returncode == 0, direct.stderr
    assert not _keeper(config)["running"]  # --no-keeper neither uses nor starts one
    assert _warm(config)["requests"] == 0
    warm = run_cli("status", "--json", config=config)
    assert warm.returncode == 0, warm.stderr
    state = _keeper(config)
    assert state["requests"] == 1 and state["connected"] == ["node-01", "node-02"]  # it answered this one
    assert _stable(warm.stdout) == _stable(direct.stdout)
    assert all(n["reachable"] and len(n["gpus"]) == 4 for n in json.loads(warm.stdout)["nodes"])
    # The table too, and `--node`; a second call reuses the same connections (still one per node).
    for args in (("status", "--node", "node-02", "--sort", "name"), ("status", "--json", "--node", "node-01")):
        through = run_cli(*args, config=config)
        plain = run_cli("--no-keeper", *args, config=config)
        assert (through.returncode, through.stderr) == (plain.returncode, plain.stderr) == (0, "")
        if "--json" in args:
            assert _stable(through.stdout) == _stable(plain.stdout), _diff(through.stdout, plain.stdout)
        else:
            assert _table(through.stdout) == _table(plain.stdout) and "node-02" in through.stdout
    assert _keeper(config)["requests"] == 3
    # Private: the dir is 0700 and the socket 0600, both ours.
    (sock,) = _runtime().glob("*.sock")
    assert stat.S_IMODE(_runtime().stat().st_mode) == 0o700
    assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600
    stop = run_cli("keeper", "stop", config=config)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not sock.exists() and not _keeper(config)["running"]


def test_keeper_false_in_the_config_turns_it_off(demo: DemoThread, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace("[defaults]\n", "[defaults]\nkeeper = false\n", 1))
    for _ in range(2):
        assert run_cli("status", "--json", config=config).returncode == 0
    assert not _runtime().exists() or not list(_runtime().glob("*.sock"))
    assert not _keeper(config)["running"]


def test_a_killed_keeper_falls_back_to_direct_connections(demo: DemoThread) -> None:
    config = demo.config_path
    pid = _warm(config)["pid"]
    expected = _stable(run_cli("status", "--json", config=config).stdout)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), message="the keeper to die")
    after = run_cli("status", "--json", config=config)  # a stale socket: refused, so direct
    assert after.returncode == 0, after.stderr
    assert _stable(after.stdout) == expected


def test_a_keeper_killed_mid_command_falls_back(demo: DemoThread, tmp_path: Path) -> None:
    """A node that accepts TCP but never speaks SSH holds the keeper's answer for its connect timeout;
    the keeper is killed meanwhile and the command still answers, directly, the same."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        config = tmp_path / "c.toml"
        config.write_text(demo.config_path.read_text() + (
            f'\n[[nodes]]\nname = "hole"\nhost = "127.0.0.1"\nport = {hole.getsockname()[1]}\n'
            "connect_timeout = 4\n"))
        pid = _warm(config)["pid"]
        expected = _stable(run_cli("--no-keeper", "status", "--json", config=config).stdout)
        env = {**os.environ}
        command = subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(config), "status", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            # Killed while it holds the request (waiting out the hole's 2 s connect timeout).
            # Asked in-process (a CLI call per probe could miss the window on a loaded machine).
            paths = kc.keeper_paths(config)
            wait_for(lambda: kc.ask(paths, {"op": "keeper.status"}, 5.0)["active"] == 1,
                     message="the keeper to hold the request")
            os.kill(pid, signal.SIGKILL)
            out, err = command.communicate(timeout=60)
        finally:
            if command.poll() is None:
                command.kill()
                command.communicate()
        assert command.returncode == 0, err
        assert _stable(out) == expected
        assert any(e["node"] == "hole" for e in expected["errors"])
    finally:
        hole.close()


def test_a_config_change_is_picked_up(demo: DemoThread, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text())
    _warm(config)
    assert [n["name"] for n in json.loads(run_cli("status", "--json", config=config).stdout)["nodes"]] == [
        "node-01", "node-02"]
    # node-02 renamed: the keeper re-reads the file (same keeper, one reload) and answers for it.
    config.write_text(config.read_text().replace('name = "node-02"', 'name = "renamed"'))
    result = run_cli("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    assert [n["name"] for n in json.loads(result.stdout)["nodes"]] == ["node-01", "renamed"]
    state = _keeper(config)
    assert (state["requests"], state["reloads"]) == (2, 1)


def test_a_changed_host_key_is_refused_through_the_keeper(demo: DemoThread, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(demo.cluster.known_hosts_path.read_text())
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace(str(demo.cluster.known_hosts_path), str(known)))
    _warm(config)
    assert run_cli("status", "--json", "--node", "node-01", config=config).returncode == 0  # connected, warm
    # The user's known_hosts now says node-01 has another key: the warm connection is not reused.
    port = demo.cluster.nodes["node-01"].port
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known.write_text("".join(line if f"]:{port} " not in line else f"[127.0.0.1]:{port} {impostor}\n"
                             for line in known.read_text().splitlines(keepends=True)))
    through = run_cli("status", "--json", "--node", "node-01", config=config)
    direct = run_cli("--no-keeper", "status", "--json", "--node", "node-01", config=config)
    assert through.returncode == direct.returncode == 5
    assert "another key" in through.stderr and through.stderr == direct.stderr
    assert _stable(through.stdout) == _stable(direct.stdout)
    assert _keeper(config)["requests"] == 2  # the keeper answered it (with the refusal)


_PROBE = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": exc.__class__.__name__}))
    raise SystemExit(0)
try:
    s.sendall(json.dumps({"v": 1, "op": "keeper.status"}).encode() + b"\\n")
except OSError:
    pass  # the keeper may have hung up already: its refusal is still there to read
print(json.dumps({"answer": s.makefile().readline()}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a second OS user")
def test_another_local_user_is_refused(demo: DemoThread, monkeypatch: pytest.MonkeyPatch) -> None:
    other = other_user()
    # A runtime dir that the other user can reach (pytest's tmp dirs are 0700): only the keeper's
    # own checks stand between that user and the keeper.
    base = Path(tempfile.mkdtemp(prefix="gc-keeper-"))
    try:
        base.chmod(0o711)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
        _warm(demo.config_path)
        (sock,) = _runtime().glob("*.sock")

        def probe() -> dict[str, Any]:
            result = subprocess.run(["runuser", "-u", other, "--", "/usr/bin/python3", "-c", _PROBE, str(sock)],
                                    capture_output=True, text=True, timeout=30, cwd="/")
            assert result.returncode == 0, result.stderr
            answer: dict[str, Any] = json.loads(result.stdout)
            return answer

        assert probe() == {"connect": "PermissionError"}  # 0700 dir, 0600 socket
        _runtime().chmod(0o711)
        sock.chmod(0o666)  # as if the modes were lost: the peer-credential check still refuses
        answer = json.loads(probe()["answer"])
        assert answer["ok"] is False and "refused" in answer["error"] and "pid" not in answer
        assert not _keeper(demo.config_path)["running"]  # nor does our own client trust a loosened dir
        _runtime().chmod(0o700)
        state = _keeper(demo.config_path)
        assert state["refused"] == 1 and state["running"], state
    finally:
        for pid in _pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(_alive(p) for p in _pids()), message="keepers gone")
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_the_keeper_exits_when_idle(demo: DemoThread, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(demo.config_path.read_text().replace("[defaults]\n", '[defaults]\nkeeper_idle = "1s"\n', 1))
    state = _warm(config)
    assert state["idle_s"] == 1.0
    wait_for(lambda: not _alive(state["pid"]), timeout_s=15, message="the idle keeper to exit")
    assert not list(_runtime().glob("*.sock"))  # it cleans up after itself
    assert not _keeper(config)["running"]


def test_a_runtime_dir_that_is_not_private_is_never_used(demo: DemoThread, tmp_path: Path) -> None:
    """A symlink planted where the runtime dir belongs (or a dir open to others) is refused: the
    command goes direct and nothing is created behind the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    _runtime().symlink_to(elsewhere)
    for _ in range(2):
        result = run_cli("status", "--json", config=demo.config_path)
        assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == [] and not _pids()
    _runtime().unlink()
    _runtime().mkdir(mode=0o755)
    assert run_cli("status", "--json", config=demo.config_path).returncode == 0
    assert list(_runtime().iterdir()) == [] and not _pids()


def test_sigterm_ends_the_keeper_cleanly(demo: DemoThread) -> None:
    pid = _warm(demo.config_path)["pid"]
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), message="the keeper to exit on SIGTERM")
    assert not list(_runtime().glob("*.sock"))  # removed, unlike after a kill -9
