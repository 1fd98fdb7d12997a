"""Hypothesis fuzzing of what parses outside input (issue 11): agent requests, state files, config
and durations. Each either works or is refused with its one documented error, never another
exception (which the agent would report as "internal" and the CLI as exit 1, a bug)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from gpuconsole.config import parse_config
from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import ConfigError, UsageError
from gpuconsole.node import records
from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st
from gpuconsole.node.agent import Agent
from gpuconsole.node.store import CorruptState, StateStore, checksum

SCALARS = hs.one_of(hs.none(), hs.booleans(), hs.integers(-2, 8), hs.integers(-(2**70), 2**70),
                    hs.floats(allow_nan=True), hs.sampled_from([0.5, 60, 3600.0]),
                    hs.text(max_size=12), hs.sampled_from(["r-abcdef", "j-abcdef", "normal", "high", "", "\x1b]2;x"]))
JSONISH = hs.recursive(SCALARS, lambda inner: hs.one_of(hs.lists(inner, max_size=4),
                                                        hs.dictionaries(hs.text(max_size=8), inner, max_size=4)),
                       max_leaves=12)
KEYS = ["id", "gpus", "ttl_s", "priority", "token", "wait", "req_id", "offset", "stream", "interval_s",
        "grace_s", "preemptible", "exit_code", "reason", "supervisor", "name", "requeue", "preempt"]
# submit starts a supervisor process and hello re-opens the store; both are fuzzed by their own tests.
OPS = ["reserve", "release", "renew", "poll", "reattach", "gc", "reservations", "capacity", "jobs", "logs",
       "cancel", "preempt", "claim_job", "finish_job", "cancel_job", "adopt_job", "abandon_job", "stream",
       "snapshot", "ping", "doctor", "nope", ""]
# Mostly a valid request with one or two fields replaced, so the fuzz reaches past the first check.
BASE = {"gpus": 1, "ttl_s": 60.0, "priority": "normal", "id": "r-abcdef", "token": 1,
        "offset": 0, "stream": "stdout", "grace_s": 1.0, "exit_code": 0}
# A wrong value for a field: as often a list or object (what breaks dict lookups) as a scalar.
WRONG = hs.one_of(SCALARS, hs.lists(SCALARS, max_size=3), hs.dictionaries(hs.text(max_size=4), SCALARS, max_size=3),
                  JSONISH)
MUTATED = hs.lists(hs.tuples(hs.sampled_from(KEYS), WRONG), min_size=1, max_size=2).map(
    lambda changes: dict(BASE, **dict(changes)))
ARGS = hs.one_of(MUTATED, MUTATED, MUTATED, hs.dictionaries(hs.sampled_from(KEYS), JSONISH, max_size=6), JSONISH)
# Refusals the contract knows; "internal" means an unhandled exception in the agent: a bug.
KNOWN_CODES = {"invalid", "insufficient", "permission", "not_found", "stale_token", "busy", "corrupt", "io",
               "too_large"}
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def agent() -> Any:
    with tempfile.TemporaryDirectory() as state_dir:
        node = Agent(io.BytesIO())
        node.op_hello({"state_dir": state_dir, "simulate_gpus": 4, "node": "fuzz"})
        node.transaction("reserve", {"gpus": 1, "ttl_s": 3600})  # something to aim at
        yield node
        node.stop_requested = True
        node.stream_wake.set()


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=ARGS)
def test_agent_requests_are_answered_or_refused_never_internal(agent: Any, op: str, args: Any) -> None:
    out = io.BytesIO()
    agent.out = out
    line = json.dumps({"id": 7, "op": op, "args": args}, allow_nan=True).encode() + b"\n"
    agent.serve(io.BytesIO(line))
    replies = [json.loads(raw) for raw in out.getvalue().splitlines() if b'"id"' in raw]
    assert len(replies) == 1 and replies[0]["id"] == 7, out.getvalue()
    reply = replies[0]
    if not reply["ok"]:
        assert reply["error"]["code"] in KNOWN_CODES, reply
    agent.set_stream(None)


BAD_VALUES = [[], {"a": 1}, "x", -1, 2**70, float("nan"), True, None]


@pytest.mark.parametrize("op", OPS)
def test_every_field_of_every_op_with_every_wrong_type(agent: Any, op: str) -> None:
    """Systematic: each shared field of each op replaced by each wrong kind of value."""
    lines = []
    for key in KEYS:
        for value in BAD_VALUES:
            lines.append(json.dumps({"id": len(lines), "op": op, "args": dict(BASE, **{key: value})}).encode())
    out = io.BytesIO()
    agent.out = out
    agent.serve(io.BytesIO(b"\n".join(lines) + b"\n"))
    agent.set_stream(None)
    replies = [json.loads(raw) for raw in out.getvalue().splitlines() if raw.startswith(b'{"id"')]
    assert len(replies) == len(lines)
    bad = [(json.loads(lines[r["id"]])["args"], r["error"]) for r in replies
           if not r["ok"] and r["error"]["code"] not in KNOWN_CODES]
    assert not bad, bad[:5]


@FUZZ
@given(raw=hs.binary(max_size=200))
def test_agent_request_lines_of_any_bytes_are_refused_cleanly(agent: Any, raw: bytes) -> None:
    out = io.BytesIO()
    agent.out = out
    agent.serve(io.BytesIO(raw.replace(b"\n", b" ") + b"\n"))
    for reply in (json.loads(line) for line in out.getvalue().splitlines()):
        assert reply["ok"] or reply["error"]["code"] in KNOWN_CODES, reply


def _valid_state() -> dict[str, Any]:
    state = st.new_state("boot")
    ctx = st.Ctx(1000, "alice", 100.0, 1.7e9, 4)
    rs.reserve(state, ctx, {"gpus": 2, "ttl_s": 600})
    rs.reserve(state, ctx, {"gpus": 4, "ttl_s": 600, "wait": True})
    return json.loads(json.dumps(state))


@FUZZ
@given(path=hs.lists(hs.sampled_from(["leases", "queue", "jobs", "applied", "dropped", "seq", "gpus", "uid",
                                      "exp_bt", "n", "owner", "priority", "agent", "token"]), min_size=1,
                     max_size=3), value=JSONISH)
def test_state_files_with_any_mutation_load_or_are_refused(path: list[str], value: Any) -> None:
    """A state file edited by a group member: it loads (malformed records quarantined) and every
    transition and view works on it, or the whole file is refused as corrupt."""
    state = _valid_state()
    target: Any = state
    for key in path[:-1]:
        if not isinstance(target, dict):
            break
        target = target.setdefault(key, {}) if key not in target or isinstance(target[key], dict) else target[key]
        if isinstance(target, dict) and target and key in ("leases", "queue"):
            target = next(iter(target.values()))
    if isinstance(target, dict):
        target[path[-1]] = value
    body = dict(state)
    body.pop("checksum", None)
    text = json.dumps(dict(body, checksum=checksum(body)), allow_nan=True)
    with tempfile.TemporaryDirectory() as state_dir:
        Path(state_dir, "state.json").write_text(text)
        store = StateStore(state_dir)
        try:
            loaded, _, _ = store.load("boot")
        except CorruptState:
            return
        ctx = st.Ctx(1000, "alice", 200.0, 1.7e9 + 100, 4, alive=lambda ident: bool(ident))
        for table, schema in records.TABLES:
            for key, record in loaded.get(table, {}).items():
                assert records.problem(record, schema, None if table == "applied" else key) is None
        st.listing(loaded, ctx)
        st.gc(loaded, ctx)
        st.dispatch(loaded, ctx)
        try:
            rs.reserve(loaded, ctx, {"gpus": 1, "ttl_s": 60})
        except st.OpError:
            pass
        json.dumps(loaded, allow_nan=False) if _finite(loaded) else None


def _finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except ValueError:
        return False


@FUZZ
@given(text=hs.text(max_size=20))
def test_durations_parse_or_are_usage_errors(text: str) -> None:
    problem = ""
    try:
        seconds = parse_duration_s(text)
    except UsageError as exc:
        problem = str(exc)
    if problem:
        assert "\n" not in problem
    else:
        assert 0 < seconds <= 366 * 86400


KEY_LINES = hs.sampled_from([
    '[defaults]', '[[nodes]]', '[cloud.aws]', '[watch]', 'name = "n1"', 'host = "h"', 'port = 22',
    'port = "x"', 'port = 99999', 'simulate_gpus = 4', 'simulate_gpus = -1', 'state_dir = "/tmp/x"',
    'poll_seconds = 0', 'reserve_for = "4h"', 'reserve_for = "soon"', 'mode = "service"', 'mode = 3',
    'known_hosts = ""', 'python = "python3; rm -rf /"', 'max_parallel = 0', 'unknown = 1', 'name = "n1"',
    '= broken', '[[nodes]', 'identity_file = 5',
])


@FUZZ
@given(lines=hs.lists(hs.one_of(KEY_LINES, hs.text(max_size=15)), max_size=12))
def test_config_text_loads_or_names_the_problem(lines: list[str]) -> None:
    text = "\n".join(lines)
    problem = None
    try:
        parse_config(text, Path(os.devnull))
    except ConfigError as exc:
        problem = str(exc)
    assert problem is None or (problem and "\n" not in problem.strip())
