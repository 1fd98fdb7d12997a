"""The connection keeper's test fixtures: the keeper switched on for one test (and every keeper it
started gone at the end), its `keeper status`, and a keeper warmed up for a config."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
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


def _pids() -> list[int]:
    """The keepers started under this test's runtime dir (by /proc: one just spawned may not hold its
    lock yet)."""
    mark = f"XDG_RUNTIME_DIR={os.environ['XDG_RUNTIME_DIR']}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[-3:] == [b"keeper", b"run", b""] and mark in environ:
            pids.append(int(entry))
    return pids


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


def _warm(config: Path) -> dict[str, Any]:
    """Start the config's keeper (the first command does, and goes direct) and wait until it answers."""
    first = run_cli("status", "--json", config=config)
    assert first.returncode == 0, first.stderr
    state: dict[str, Any] = wait_for(lambda: (s := _keeper(config))["running"] and s, message="the keeper to answer")
    return state
