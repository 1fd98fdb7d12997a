"""Fuzzing the client boundary: whatever an agent sends, checking its reply either refuses it with the
one per-node error (BadReplyError, one line naming the node) or yields data that builds the frozen
model, folds into the console's FleetState and prints as strict JSON, without any other exception."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from gpuconsole.format import bytes_h, mib_h, num_h, pct_h
from gpuconsole.model import Job, NodeSnapshot, QueuedRequest, Reservation
from gpuconsole.model.detect import Detector
from gpuconsole.model.events import NodeUpdated
from gpuconsole.model.fleet import FleetState, bar, sparkline
from gpuconsole.model.replies import (
    RESULTS,
    BadReplyError,
    check_message,
    check_reply,
    check_snapshot,
    decode_line,
)
from tests.fixtures import hostile_agent

NODE = "dgx-03"
BASES = {"snapshot": hostile_agent.snapshot, "reservations": hostile_agent.reservations,
         "jobs": hostile_agent.jobs, "capacity": hostile_agent.capacity}

scalars = (hs.none() | hs.booleans() | hs.integers() | hs.integers(min_value=2**62, max_value=10**30)
           | hs.floats() | hs.text(max_size=12)
           | hs.sampled_from(["abc", "", "2030-13-45T99:99:99Z", "2030-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                              "granted", "queued", "index"]))
json_values = hs.recursive(scalars, lambda inner: hs.lists(inner, max_size=3)
                           | hs.dictionaries(hs.text(max_size=8), inner, max_size=3), max_leaves=12)


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON tree: the places a mutation can hit."""
    found: list[tuple[Any, Any]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((value, key))
        found += _slots(child)
    return found


@hs.composite
def mutated(draw: hs.DrawFn, base: Any) -> Any:
    """A valid payload with a few values replaced by arbitrary JSON, or keys removed."""
    root = {"r": copy.deepcopy(base)}
    for _ in range(draw(hs.integers(0, 3))):
        container, key = draw(hs.sampled_from(_slots(root)))
        if isinstance(container, dict) and key != "r" and draw(hs.booleans()):
            del container[key]
        else:
            container[key] = draw(json_values)
    return root["r"]


ops_and_payloads = hs.sampled_from(sorted(BASES)).flatmap(
    lambda op: hs.tuples(hs.just(op), mutated(BASES[op]())))


def _strict(document: Any) -> None:
    json.dumps(document, allow_nan=False)


def _use(op: str, result: dict[str, Any]) -> None:
    """What the CLI, watcher and console do with a checked result."""
    _strict(result)
    if op == "snapshot":
        snap = NodeSnapshot.from_agent(NODE, result)
        _strict(snap.to_json())
        fleet = FleetState([NODE])
        fleet.apply(NodeUpdated(snap, 0.0))
        fleet.totals()
        detector = Detector(idle_s=60.0, util_below_pct=5.0)  # the idle rule (console flags, watcher)
        detector.observe(snap, 0.0)
        detector.observe(snap, 120.0)
        detector.judge(120.0)
        for gpu in snap.gpus:
            sparkline(list(fleet.util_history[f"{NODE}/{gpu.index}"]), 16)
            bar(None if not gpu.mem_total_mib else (gpu.mem_used_mib or 0) / gpu.mem_total_mib, 10)
            pct_h(gpu.util_pct), num_h(gpu.power_w, "W"), mib_h(gpu.mem_used_mib)
            if gpu.reservation is not None:
                assert gpu.reservation.expires_at[11:16]
        bytes_h(snap.mem_used_bytes)
    elif op == "reservations":
        for raw in result["reservations"]:
            _strict(Reservation.from_agent(NODE, raw).to_json())
        for raw in result["queue"]:
            _strict(QueuedRequest.from_agent(NODE, raw).to_json())
    elif op == "jobs":
        for raw in result["jobs"]:
            Job.from_agent(NODE, raw)
    elif op == "capacity":
        assert all(isinstance(result[k], int) for k in ("gpu_count", "free", "queued"))


def _refused(exc: BadReplyError) -> None:
    message = str(exc)
    assert message.startswith(f"{NODE}: bad reply from agent") and "\n" not in message, message
    assert len(message) < 300, message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_and_payloads)
def test_checked_results_build_the_model_or_are_refused(op_payload: tuple[str, Any]) -> None:
    op, payload = op_payload
    try:
        reply = check_reply(NODE, op, {"id": 1, "ok": True, "result": payload})
    except BadReplyError as exc:
        _refused(exc)
        return
    _use(op, reply.result)


@settings(max_examples=200, deadline=None)
@given(mutated(hostile_agent.snapshot()))
def test_streamed_snapshots_build_the_model_or_are_refused(data: Any) -> None:
    try:
        checked = check_snapshot(NODE, data)
    except BadReplyError as exc:
        _refused(exc)
        return
    _use("snapshot", checked)


@settings(max_examples=300, deadline=None)
@given(hs.sampled_from(sorted(RESULTS)), json_values)
def test_any_reply_envelope_is_checked_or_refused(op: str, reply: Any) -> None:
    try:
        checked = check_reply(NODE, op, reply)
    except BadReplyError as exc:
        _refused(exc)
        return
    _strict(checked.result)
    _strict(checked.error)
    assert checked.ok or isinstance(checked.error.get("code"), str)


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_line_decodes_or_is_not_json_and_any_message_is_routed_or_refused(line: bytes) -> None:
    try:
        message = decode_line(line)
    except ValueError:
        return
    try:
        check_message(NODE, message)
    except BadReplyError as exc:
        _refused(exc)


def test_the_bad_field_and_value_are_named() -> None:
    data = hostile_agent.snapshot()
    data["gpus"][0]["index"] = "abc"
    with pytest.raises(BadReplyError) as caught:
        check_reply(NODE, "snapshot", {"id": 1, "ok": True, "result": data})
    assert str(caught.value) == (f"{NODE}: bad reply from agent to snapshot: gpus[0].index: "
                                 "expected an integer, got 'abc'")


def test_nan_and_inf_measurements_become_null_and_huge_integers_parse() -> None:
    line = json.dumps({"event": "snapshot", "data": dict(hostile_agent.snapshot(), cpu_pct=float("nan"),
                                                         load1=float("-inf"))}).encode()
    line = line.replace(b'"cpu_count": 2', b'"cpu_count": 1' + b"0" * 5000)
    message = decode_line(line)
    checked = check_snapshot(NODE, message["data"])
    assert (checked["cpu_pct"], checked["load1"], checked["cpu_count"]) == (None, None, None)
    _use("snapshot", checked)


def test_wrong_type_ok_and_error_are_refused() -> None:
    for reply in ({"id": 1, "ok": "yes", "result": {}}, {"id": 1, "ok": False, "error": "nope"}, [1, True, {}]):
        with pytest.raises(BadReplyError):
            check_reply(NODE, "capacity", reply)


@pytest.mark.parametrize(("code", "exit_code"), [
    ("not_found", 6), ("permission", 4), ("busy", 5), ("internal", 1), (None, 1),
    ("made-up", 5), ("\x1b]2;x\x07", 5), ("", 5),
])
def test_an_error_code_no_agent_of_ours_sends_is_the_nodes_fault(code: str | None, exit_code: int) -> None:
    """A node's error answer maps to the contract's code; one we never send is exit 5 (that node
    cannot serve), never 1, which means a bug of ours (our agent's own `internal`, or no code)."""
    from gpuconsole.ssh.connection import AgentError

    error = {"message": "no"} if code is None else {"code": code, "message": "no"}
    assert int(AgentError("node-01", error).exit_code) == exit_code
