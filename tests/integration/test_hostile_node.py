"""One bad node never breaks the fleet: node-02 runs a fake agent (tests/fixtures/hostile_agent.py)
whose replies have wrong types; every command shows node-01 and treats node-02 as unreachable, with
one line naming the node and the bad field, and JSON output stays strict JSON (null, never NaN)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import hostile_command, run_cli, wait_for

# Modes whose snapshot is refused; in mode "nan" only measurements are bad, and they become null.
REFUSED = ["index-str", "list-for-object", "bad-iso", "missing", "huge", "non-object", "ok-type"]


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"{name} in JSON output (not valid JSON)")


def strict_json(text: str) -> Any:
    """Parse as a strict JSON consumer would: NaN and Infinity are errors."""
    return json.loads(text, parse_constant=_reject_constant)


@pytest.fixture
def hostile_demo(tmp_path: Path) -> Iterator[Callable[..., DemoThread]]:
    """Start a demo whose node `bad` (default node-02) runs the hostile agent in `mode`."""
    started: list[DemoThread] = []

    def make(mode: str, nodes: int = 2, bad: str = "node-02") -> DemoThread:
        cluster = DemoThread(tmp_path / f"demo-{len(started)}", nodes=nodes, gpus=2,
                             command_overrides={bad: hostile_command(mode)})
        cluster.__enter__()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.close()


def assert_bad_node_error(error: str | None, node: str = "node-02") -> None:
    assert error is not None
    assert "\n" not in error and "Traceback" not in error, error
    assert error.startswith(f"{node}: bad reply from agent"), error


def assert_clean_stderr(stderr: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr


@pytest.mark.parametrize("mode", REFUSED)
def test_status_json_shows_good_node_and_bad_node_as_unreachable(
        hostile_demo: Callable[..., DemoThread], mode: str) -> None:
    demo = hostile_demo(mode)
    result = run_cli("status", "--json", config=demo.config_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result.stderr)
    nodes = {n["name"]: n for n in strict_json(result.stdout)["nodes"]}
    assert nodes["node-01"]["reachable"] is True
    assert [g["index"] for g in nodes["node-01"]["gpus"]] == [0, 1]
    assert nodes["node-02"]["reachable"] is False
    assert nodes["node-02"]["gpus"] == []
    assert_bad_node_error(nodes["node-02"]["error"])


def test_nan_and_infinity_measurements_become_null(hostile_demo: Callable[..., DemoThread]) -> None:
    demo = hostile_demo("nan")
    result = run_cli("status", "--json", config=demo.config_path)
    assert result.returncode == 0, result.stderr
    bad = {n["name"]: n for n in strict_json(result.stdout)["nodes"]}["node-02"]
    assert bad["reachable"] is True and bad["error"] is None
    assert (bad["cpu_pct"], bad["load1"], bad["cpu_count"]) == (None, None, 2)
    first, second = bad["gpus"]
    assert (first["util_pct"], first["power_w"], first["temperature_c"]) == (None, None, None)
    assert (second["util_pct"], second["power_w"], second["temperature_c"]) == (3.0, 50.0, 40.0)


def test_bad_field_is_named_in_the_error(hostile_demo: Callable[..., DemoThread]) -> None:
    demo = hostile_demo("index-str")
    result = run_cli("status", "--json", config=demo.config_path)
    assert result.returncode == 0, result.stderr
    error = {n["name"]: n for n in strict_json(result.stdout)["nodes"]}["node-02"]["error"]
    assert "gpus[0].index" in error and "'abc'" in error, error


@pytest.mark.parametrize(("mode", "refused"), [("index-str", True), ("non-object", True), ("nan", False)])
def test_status_table_shows_good_node(hostile_demo: Callable[..., DemoThread], mode: str, refused: bool) -> None:
    demo = hostile_demo(mode)
    result = run_cli("status", config=demo.config_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result.stderr)
    node_part, gpu_part = result.stdout.split("\nGPUs", 1)
    first, second = [line for line in node_part.splitlines() if line.startswith("│")]
    assert " up " in first, result.stdout
    if refused:
        # The reason, whole, on its own line under the node table (issue 13: cells are never cut).
        assert "unreachable" in second and "\nnode-02: bad reply" in node_part, result.stdout
    else:
        assert " up " in second, result.stdout
        assert not re.search(r"\b(nan|inf)", result.stdout, re.IGNORECASE), result.stdout
    gpu_rows = [line.split()[1] for line in gpu_part.splitlines() if line.startswith("│")]
    assert gpu_rows == ["node-01"] * 2 + ([] if refused else ["node-02"] * 2), result.stdout


@pytest.mark.parametrize("mode", ["index-str", "nan"])
def test_status_watch_json_keeps_streaming_strict_json(hostile_demo: Callable[..., DemoThread], mode: str) -> None:
    demo = hostile_demo(mode)
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path), "status", "--watch", "0.2",
            "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        rounds = [strict_json(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert_clean_stderr(stderr)
    for document in rounds:
        nodes = {n["name"]: n for n in document["nodes"]}
        assert nodes["node-01"]["reachable"] is True and len(nodes["node-01"]["gpus"]) == 2
        if mode == "nan":
            assert nodes["node-02"]["reachable"] is True and nodes["node-02"]["cpu_pct"] is None
        else:
            assert nodes["node-02"]["reachable"] is False
            assert_bad_node_error(nodes["node-02"]["error"])


@pytest.mark.parametrize("mode", ["index-str", "list-for-object", "bad-iso", "nan", "missing", "huge", "ok-type"])
def test_reservations_and_jobs_list_the_good_node(hostile_demo: Callable[..., DemoThread], mode: str) -> None:
    demo = hostile_demo(mode)
    grant = run_cli("reserve", "--gpus", "1", "--node", "node-01", "--json", config=demo.config_path)
    assert grant.returncode == 0, grant.stderr
    rid = strict_json(grant.stdout)["id"]
    listed = run_cli("reservations", "--json", config=demo.config_path)
    assert listed.returncode == 0, listed.stderr
    document = strict_json(listed.stdout)
    assert [(r["id"], r["node"]) for r in document["reservations"]] == [(rid, "node-01")]
    assert [e["node"] for e in document["errors"]] == ["node-02"]
    assert_bad_node_error(document["errors"][0]["error"])
    jobs = run_cli("jobs", "--json", config=demo.config_path)
    assert jobs.returncode == 0, jobs.stderr
    document = strict_json(jobs.stdout)
    assert document["jobs"] == []
    assert [e["node"] for e in document["errors"]] == ["node-02"]
    assert_bad_node_error(document["errors"][0]["error"])
    for result in (listed, jobs):
        assert_clean_stderr(result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "node-02" in result.stderr


@pytest.mark.parametrize("mode", ["index-str", "list-for-object", "nan", "missing", "huge", "non-object"])
def test_reserve_picks_the_good_node_when_capacity_reply_is_bad(
        hostile_demo: Callable[..., DemoThread], mode: str) -> None:
    demo = hostile_demo(mode)
    result = run_cli("reserve", "--gpus", "1", "--json", config=demo.config_path)
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["node"] == "node-01"


def test_watch_once_judges_the_good_node_and_reports_the_bad_one(
        hostile_demo: Callable[..., DemoThread], tmp_path: Path) -> None:
    demo = hostile_demo("index-str")
    grant = run_cli("reserve", "--gpus", "1", "--node", "node-01", "--json", config=demo.config_path)
    assert grant.returncode == 0, grant.stderr
    rid = strict_json(grant.stdout)["id"]
    flags = ("watch", "--once", "--json", "--idle-minutes", "0.01", "--state-file", str(tmp_path / "s.json"))
    seen: list[dict[str, Any]] = []

    def once() -> list[dict[str, Any]]:
        result = run_cli(*flags, config=demo.config_path)
        assert result.returncode == 0, result.stderr
        assert_clean_stderr(result.stderr)
        alerts = [strict_json(line) for line in result.stdout.splitlines()]
        seen.extend(alerts)
        return alerts

    once()
    wait_for(lambda: once() and any(a["kind"] == "idle_reservation" for a in seen), timeout_s=20, interval_s=0.1,
             message="an idle_reservation alert for node-01")
    idle = [a for a in seen if a["kind"] == "idle_reservation"]
    assert [(a["node"], a["reservation"]) for a in idle] == [("node-01", rid)]
    down = [a for a in seen if a["kind"] == "node_down"]
    assert [a["node"] for a in down] == ["node-02"]
    assert "bad reply" in down[0]["message"], down


@pytest.mark.parametrize("mode", ["index-str", "huge", "non-object"])
def test_only_the_bad_node_is_exit_5(hostile_demo: Callable[..., DemoThread], mode: str) -> None:
    demo = hostile_demo(mode, nodes=1, bad="node-01")
    for command in (["status"], ["status", "--json"], ["reservations"], ["reserve", "--gpus", "1"]):
        result = run_cli(*command, config=demo.config_path)
        assert result.returncode == 5, (command, result.stderr)
        assert_clean_stderr(result.stderr)
        assert "node-01: bad reply from agent" in result.stderr, (command, result.stderr)


def test_a_shell_answer_nested_too_deep_is_the_nodes_error(hostile_demo: Callable[..., DemoThread]) -> None:
    """`gpuconsole shell` reads the node's answer with the agent's own decoder: 100000 nested
    brackets are a bad reply (exit 5, one line), not a RecursionError (exit 1)."""
    demo = hostile_demo("shell-nested")
    result = run_cli("shell", "--reservation", "r-good", "--", "true", config=demo.config_path, timeout_s=30)
    assert result.returncode == 5, result.stderr
    assert_clean_stderr(result.stderr)
    assert "node-02: bad reply from the shell agent" in result.stderr


def test_a_shell_answer_without_an_end_of_line_is_cut_off_at_the_limit(hostile_demo: Callable[..., DemoThread]) -> None:
    """A node that answers a shell request with megabytes and no newline: the client stops reading
    at its limit (bounded memory, a bad reply, exit 5), instead of buffering until the handshake's
    timeout."""
    demo = hostile_demo("shell-endless")
    result = run_cli("shell", "--reservation", "r-good", "--", "true", config=demo.config_path, timeout_s=30)
    assert result.returncode == 5, result.stderr
    assert_clean_stderr(result.stderr)
    assert "node-02: bad reply from the shell agent: an answer longer than 65536 bytes" in result.stderr
