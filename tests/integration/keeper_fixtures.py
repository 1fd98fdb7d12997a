"""The connection keeper's test fixtures: the keeper switched on for one test (and every keeper it
started gone at the end), its `keeper status`, and a keeper warmed up for a config."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, run_cli, wait_for

SCHEMAS = REPO / "gpuconsole" / "schemas"
jsonschema: Any = pytest.importorskip("jsonschema")  # a dev dependency (its stubs may not be installed)


def _runtime() -> Path:
    return Path(os.environ["XDG_RUNTIME_DIR"]) / "gpuconsole"


def _keeper(config: Path) -> dict[str, Any]:
    """`keeper status --json`, checked against its JSON Schema."""
    result = run_cli("keeper", "status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    schema = json.loads((SCHEMAS / "keeper.schema.json").read_text())
    jsonschema.Draft202012Validator(schema["allOf"][1]).validate(answer)
    assert isinstance(answer["generated_at"], str)
    return answer


def _procs(match: Callable[[list[bytes]], bool]) -> list[tuple[int, int]]:
    """(pid, ppid) of the processes under this test's runtime dir whose command line (its arguments)
    matches (by /proc: a keeper just spawned may not hold its lock yet)."""
    mark = f"XDG_RUNTIME_DIR={os.environ['XDG_RUNTIME_DIR']}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            stat_text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if match(cmdline) and mark in environ:
            found.append((int(entry), int(stat_text[stat_text.rfind(")") + 2:].split()[1])))
    return found


def _pids() -> list[int]:
    """The keepers started under this test's runtime dir."""
    return [pid for pid, _ppid in _procs(lambda argv: argv[-3:] == [b"keeper", b"run", b""])]


def _residents() -> list[tuple[int, int]]:
    """(pid, ppid) of the keepers' resident CLIs and of the commands they forked."""
    return _procs(lambda argv: b"gpuconsole.cli.resident" in argv)


def _alive(pid: int) -> bool:
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_text[stat_text.rfind(")") + 2] not in "ZX"


@pytest.fixture
def keeper_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The keeper switched on for this test; every keeper it started is gone at the end."""
    monkeypatch.setenv("GPUCONSOLE_KEEPER", "1")
    yield
    for pid in _pids():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(p) for p in _pids()), message="keepers gone")
    # A resident ends with its keeper (the lifeline); what it forked ends with its command.
    wait_for(lambda: not any(_alive(p) for p, _ in _residents()), message="resident CLIs gone")


def _warm(config: Path) -> dict[str, Any]:
    """Start the config's keeper (the first command does, and goes direct) and wait until it answers."""
    first = run_cli("status", "--json", config=config)
    assert first.returncode == 0, first.stderr
    state: dict[str, Any] = wait_for(lambda: (s := _keeper(config))["running"] and s, message="the keeper to answer")
    return state


OTHER_USER = "gcutestkeeper"  # a second local OS user (tests that need root make it)


def other_user() -> str:
    """The second local OS user, created once (no home, no password: it only runs probes)."""
    from tests.integration.sshd_fixture import run as admin

    try:
        admin("id", OTHER_USER)
    except AssertionError:
        admin("useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", OTHER_USER)
    return OTHER_USER
