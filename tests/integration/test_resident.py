"""The keeper's resident CLI (cli/resident.py) and the stub that forwards to it (cli/forward.py): a
forwarded command answers exactly as the process itself would (output, errors, exit code, its
environment and working dir), signals reach it, it never outlives its caller or its keeper, and
another user cannot reach it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.core import keeper_client as kc
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import run_cli, wait_for
from tests.integration.keeper_fixtures import (  # noqa: F401  (keeper_on: the fixture below)
    _alive,
    _keeper,
    _pids,
    _residents,
    _warm,
    keeper_on,
    other_user,
)

pytestmark = pytest.mark.usefixtures("keeper_on")



def _resident(config: Path) -> int:
    """The pid of the config's resident CLI (the one whose parent is not itself a resident)."""
    def find() -> int | None:
        procs = _residents()
        own = {pid for pid, _ in procs}
        top = [pid for pid, ppid in procs if ppid not in own and _alive(pid)]
        return top[0] if len(top) == 1 else None

    pid: int = wait_for(find, message="the resident CLI")
    wait_for(lambda: kc.keeper_paths(config).resident.exists(), message="the resident's socket")
    return pid


def _children(resident: int) -> list[int]:
    return [pid for pid, ppid in _residents() if ppid == resident and _alive(pid)]


def _forwarded(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether a command traced with PYTHONPROFILEIMPORTTIME ran in a resident (its own process
    imported the stub and nothing of the CLI)."""
    return "gpuconsole.cli.forward" in result.stderr and "gpuconsole.cli.options" not in result.stderr


def _untraced(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith("import time:"))


def test_a_forwarded_command_answers_as_the_process_itself(demo: DemoThread, tmp_path: Path) -> None:
    config = demo.config_path
    _warm(config)
    _resident(config)
    trace = {"PYTHONPROFILEIMPORTTIME": "1"}
    # Errors and exit codes: a usage error (2), an unknown reservation; byte for byte.
    for args in (("reserve", "--bogus"), ("release", "r-nosuch"), ("reservations", "--node", "nosuch")):
        through = run_cli(*args, config=config, env=trace)
        direct = run_cli(*args, config=config, env={"GPUCONSOLE_KEEPER": "0"})
        assert _forwarded(through), args
        assert (through.returncode, through.stdout, _untraced(through.stderr)) == \
            (direct.returncode, direct.stdout, direct.stderr), args
        assert direct.returncode not in (0, 1) and direct.stderr
    # A change and its text answer; the environment is the caller's (COLUMNS sets the table width).
    granted = run_cli("reserve", "--gpus", "1", "--node", "node-01", "--json", config=config, env=trace)
    assert granted.returncode == 0 and _forwarded(granted), granted.stderr
    reservation = json.loads(granted.stdout)
    narrow = run_cli("reservations", config=config, env={**trace, "COLUMNS": "64"})
    wide = run_cli("reservations", config=config, env={"GPUCONSOLE_KEEPER": "0", "COLUMNS": "64"})
    assert narrow.returncode == wide.returncode == 0 and _forwarded(narrow)
    assert max(map(len, narrow.stdout.splitlines())) == max(map(len, wide.stdout.splitlines())) <= 64
    assert reservation["id"] in narrow.stdout.replace("…", "") or reservation["id"][:6] in narrow.stdout
    # The working dir is the caller's: a relative --config resolves there (and reaches the same keeper).
    relative = subprocess.run([sys.executable, "-m", "gpuconsole", "--config", config.name, "release",
                               reservation["id"], "--json"], capture_output=True, text=True, timeout=60,
                              cwd=config.parent, env={**os.environ, **trace}, stdin=subprocess.DEVNULL)
    assert relative.returncode == 0 and _forwarded(relative), relative.stderr
    assert [r["id"] for r in json.loads(relative.stdout)["released"]] == [reservation["id"]]
    # Run elsewhere, the same relative path names another (absent) config: not this keeper's.
    elsewhere = subprocess.run([sys.executable, "-m", "gpuconsole", "--config", config.name, "jobs"],
                               capture_output=True, text=True, timeout=60, cwd=tmp_path, env=dict(os.environ))
    assert elsewhere.returncode == 2 and "no config file" in elsewhere.stderr


def test_signals_reach_the_forwarded_command_and_it_ends_with_its_caller(demo: DemoThread) -> None:
    """The node's state lock is held, so a reserve waits; Ctrl-C (SIGINT) on the caller interrupts
    the command as it would the process itself, and a caller killed outright takes its command along."""
    config = demo.config_path
    _warm(config)
    resident = _resident(config)
    lock_fd = os.open(demo.cluster.nodes["node-01"].state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    callers: list[subprocess.Popen[str]] = []
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        callers.extend(subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", "1", "--node",
             "node-01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
            for _ in range(2))
        paths = kc.keeper_paths(config)
        wait_for(lambda: kc.ask(paths, {"op": "keeper.status"}, 5.0)["active"] == 2, timeout_s=30,
                 message="both commands waiting in the keeper")
        assert len(_children(resident)) == 2  # run by the resident, not by the callers
        callers[0].send_signal(signal.SIGINT)
        out, err = callers[0].communicate(timeout=30)
        assert callers[0].returncode == 130 and "interrupted" in err and out == ""
        callers[1].kill()
        callers[1].wait(timeout=30)
        wait_for(lambda: not _children(resident), message="the killed caller's command to end")
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
        for caller in callers:
            if caller.poll() is None:
                caller.kill()
                caller.wait()
    assert _alive(resident)


def test_the_resident_ends_with_its_keeper_and_a_dead_one_is_gone_around(demo: DemoThread) -> None:
    config = demo.config_path
    state = _warm(config)
    resident = _resident(config)
    socket_path = kc.keeper_paths(config).resident
    os.kill(resident, signal.SIGKILL)  # its socket stays behind: nobody listens there
    wait_for(lambda: not _alive(resident), message="the resident to die")
    after = run_cli("reservations", "--json", config=config, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert after.returncode == 0 and not _forwarded(after) and "gpuconsole.cli.options" in after.stderr
    assert json.loads(after.stdout)["reservations"] == []
    # A new keeper brings a new resident; stopping the keeper ends it and removes its socket.
    assert run_cli("keeper", "stop", config=config).returncode == 0
    wait_for(lambda: not _alive(state["pid"]), message="the keeper to stop")
    fresh = _warm(config)
    second = _resident(config)
    assert second != resident and fresh["pid"] != state["pid"]
    assert run_cli("keeper", "stop", config=config).returncode == 0
    wait_for(lambda: not _alive(second), message="the resident to end with its keeper")
    assert not socket_path.exists()


_PROBE = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": type(exc).__name__}))
    raise SystemExit(0)
try:
    s.sendall(b'{"argv": ["gpuconsole", "status"]}\n')
    answer = s.makefile("rb").read().decode()
except ConnectionError:
    answer = ""  # hung up on before or while reading
print(json.dumps({"answer": answer}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a second OS user")
def test_another_local_user_cannot_reach_the_resident(demo: DemoThread, monkeypatch: pytest.MonkeyPatch) -> None:
    other = other_user()
    base = Path(tempfile.mkdtemp(prefix="gc-resident-"))
    try:
        base.chmod(0o711)  # reachable by the other user (pytest's tmp dirs are 0700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
        _warm(demo.config_path)
        resident = _resident(demo.config_path)
        sock = kc.keeper_paths(demo.config_path).resident

        def probe(*user: str) -> dict[str, Any]:
            runner = ["runuser", "-u", user[0], "--"] if user else []
            result = subprocess.run([*runner, "/usr/bin/python3", "-c", _PROBE, str(sock)], capture_output=True,
                                    text=True, timeout=30, cwd="/")
            assert result.returncode == 0, result.stderr
            answer: dict[str, Any] = json.loads(result.stdout)
            return answer

        assert probe(other) == {"connect": "PermissionError"}  # 0700 dir, 0600 socket
        assert probe() == {"answer": "decline\n"}  # our own uid is heard (and a bad request turned down)
        sock.parent.chmod(0o711)
        sock.chmod(0o666)  # as if the modes were lost: the peer-credential check still refuses
        assert probe(other) == {"answer": ""}  # hung up on, unheard
        assert _alive(resident) and not _children(resident)
    finally:
        for pid in _pids():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(_alive(p) for p, _ in _residents()), message="the resident to end")
        subprocess.run(["rm", "-rf", str(base)], check=False)
