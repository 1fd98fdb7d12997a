"""Faults on a node never make an answer untrue, hang the agent, or cost other users the node.

Issue 11, items 6, 7, 9 and 10: the commit point under ENOSPC, a job whose supervisor cannot
renew, hostile files in the state dir, and the smaller truths (oversized requests, `logs` on
multi-byte text, `cancel` of an ended job, the demo's leftovers). Every test runs the real agent
on the demo's loopback SSH nodes; faults are injected with the agent's test-only hook.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread, marked_processes
from gpuconsole.node import state as st
from tests.helpers import cli_json, edit_state, jobs_by_name, run_cli, submit_job, wait_for

NODE = "node-01"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _state_dir(demo: DemoThread) -> Path:
    return demo.cluster.nodes[NODE].state_dir


def _reservations(demo: DemoThread) -> list[dict[str, Any]]:
    return list(cli_json("reservations", config=demo.config_path)["reservations"])



# -- item 6: the commit point -----------------------------------------------------------------


@pytest.mark.parametrize("step", ["tmp", "rename"])
def test_enospc_before_the_commit_point_fails_and_changes_nothing(faulty: DemoThread, step: str) -> None:
    faulty.faults.write_text(f"enospc:{step}")  # type: ignore[attr-defined]
    result = run_cli("reserve", "--gpus", "1", "--json", config=faulty.config_path)
    line = _one_line(result.stderr)
    assert result.returncode == 5, result.stderr
    assert "No space left" in line and "not changed" in line
    faulty.faults.write_text("")  # type: ignore[attr-defined]
    assert _reservations(faulty) == []
    leftovers = [p.name for p in _state_dir(faulty).iterdir() if ".tmp." in p.name]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("step", ["prev", "mirror", "dirsync"])
def test_enospc_after_the_commit_point_is_success_with_a_warning(faulty: DemoThread, step: str) -> None:
    faulty.faults.write_text(f"enospc:{step}")  # type: ignore[attr-defined]
    result = run_cli("reserve", "--gpus", "1", "--json", config=faulty.config_path)
    assert result.returncode == 0, result.stderr
    grant = json.loads(result.stdout)
    if step != "prev":  # the previous version is a spare copy: losing it is not news
        assert "committed, but" in result.stderr and "No space left" in result.stderr, result.stderr
    faulty.faults.write_text("")  # type: ignore[attr-defined]
    assert [r["id"] for r in _reservations(faulty)] == [grant["id"]]
    release = run_cli("release", grant["id"], config=faulty.config_path)
    assert release.returncode == 0, release.stderr


def test_retried_submit_starts_one_supervisor_and_one_job_dir(demo: DemoThread) -> None:
    """The same req_id twice (a client retry after a dropped reply) commits and starts once."""
    import asyncio

    from gpuconsole.config import load_config
    from gpuconsole.core.fleet import Fleet

    config = load_config(demo.config_path)

    async def twice() -> list[dict[str, Any]]:
        async with Fleet(config) as fleet:
            args = {"argv": ["sleep", "30"], "gpus": 1, "req_id": "retry-test-1", "name": "retried"}
            first = await fleet.request(NODE, "submit", args)
            second = await fleet.request(NODE, "submit", args)
            return [first, second]

    first, second = asyncio.run(twice())
    assert second["id"] == first["id"] and second.get("replayed") is True
    jobs_dir = demo.cluster.nodes[NODE].state_dir / "jobs"
    # (waiter-<uid>: the user's one job waiter, node/waiter.py)
    assert sorted(p.name for p in jobs_dir.iterdir() if not p.name.startswith("waiter-")) == [first["id"]]
    key = demo.cluster.nodes[NODE].sim_key
    # The waiter starts the granted job's supervisor just after the submit: one, never two.
    wait_for(lambda: [pid for pid in marked_processes({key}) if _is_supervisor(pid)], timeout_s=10,
             message="the job's supervisor")
    # A supervisor's child between fork and exec still shows the supervisor's environment: not a second one.
    supervisors = [pid for pid in marked_processes({key}) if _is_supervisor(pid) and not _is_supervisor(_ppid(pid))]
    assert len(supervisors) == 1, supervisors
    assert run_cli("cancel", first["id"], config=demo.config_path).returncode == 0


def _ppid(pid: int) -> int:
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat_text[stat_text.rfind(")") + 2:].split()[1])


def _is_supervisor(pid: int) -> bool:
    """A job's supervisor (the user's waiter runs in the same role, with no job)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"GPUCONSOLE_ROLE=supervisor" in env and any(item.startswith(b"GPUCONSOLE_JOB_ID=") for item in env)


# -- item 7: a GPU is never held by two -----------------------------------------------------------


def _supervisor_of(demo: DemoThread, job_id: str) -> int:
    def find() -> int | None:
        for pid in marked_processes({demo.cluster.nodes[NODE].sim_key}):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"GPUCONSOLE_ROLE=supervisor" in env and f"GPUCONSOLE_JOB_ID={job_id}".encode() in env:
                return pid
        return None

    return int(wait_for(find, 20, message=f"supervisor of {job_id}"))


@pytest.fixture
def short_lease(tmp_path: Path) -> Any:
    """A 1-node × 1-GPU demo whose job leases last 2 s (renewed every 0.7 s)."""
    with DemoThread(tmp_path / "demo", nodes=1, gpus=1, agent_env={"GPUCONSOLE_JOB_TTL_S": "2"}) as demo:
        yield demo


def test_stopped_supervisor_keeps_its_gpu_and_no_one_else_gets_it(short_lease: DemoThread) -> None:
    config = short_lease.config_path
    job = submit_job(config, "held", "--gpus", "1", argv=["sleep", "60"])
    wait_for(lambda: jobs_by_name(config)["held"]["state"] == "running", 20, message="job running")
    supervisor = _supervisor_of(short_lease, job["id"])
    os.kill(supervisor, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5.0  # more than two lease lengths without a renewal
        while time.monotonic() < deadline:
            result = run_cli("reserve", "--gpus", "1", "--json", config=config)
            assert result.returncode == 3, f"GPU granted to a second holder: {result.stdout}"
        assert jobs_by_name(config)["held"]["state"] == "running"
        held = [r for r in _reservations(short_lease) if r["id"] == job["id"]]
        assert held and held[0]["gpus"] == [0]
    finally:
        os.kill(supervisor, signal.SIGCONT)
    assert run_cli("cancel", job["id"], config=config).returncode == 0
    wait_for(lambda: jobs_by_name(config)["held"]["state"] == "cancelled", 30, message="cancelled")


def test_job_whose_grant_vanishes_is_stopped_at_once(demo: DemoThread, tmp_path: Path) -> None:
    """An admin (or a forged edit) removes a running job's lease: the job stops before reuse."""
    config = demo.config_path
    marker = tmp_path / "alive"
    loop = f"while :; do date +%s%N > {marker}; sleep 0.1; done"
    job = submit_job(config, "vanish", "--gpus", "1", argv=["sh", "-c", loop])
    wait_for(marker.exists, 20, message="job running")
    store_dir = demo.cluster.nodes[NODE].state_dir
    edit_state(store_dir, lambda state: state["leases"].pop(job["id"]))
    wait_for(lambda: jobs_by_name(config)["vanish"]["state"] == "lost", 20, message="job marked lost")
    before = marker.read_text()
    time.sleep(0.5)  # the job wrote every 0.1 s while it lived; none may write now
    assert marker.read_text() == before


# -- item 9: hostile files never hang or crash the agent --------------------------------------------


def _plant(path: Path, kind: str, elsewhere: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "symlink":
        elsewhere.write_text("{}")
        path.symlink_to(elsewhere)
    elif kind == "device":
        os.symlink("/dev/zero", path)  # no mknod without CAP_MKNOD in every container; a symlink to one


@pytest.mark.parametrize("name", ["state.json", "lock"])
@pytest.mark.parametrize("kind", ["fifo", "dir", "symlink"])
def test_state_or_lock_that_is_not_a_file_is_refused_at_once(
        demo_factory: Any, tmp_path: Path, name: str, kind: str) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    state_dir = demo.cluster.nodes[NODE].state_dir
    _plant(state_dir / name, kind, tmp_path / "elsewhere.json")
    started = time.monotonic()
    result = run_cli("reserve", "--gpus", "1", config=demo.config_path, timeout_s=30)
    assert time.monotonic() - started < 20
    line = _one_line(result.stderr)
    assert result.returncode == 5, result.stderr
    assert str(state_dir / name) in line or (name == "state.json" and "state.json" in line), line
    # Reads never hang either, and say what is wrong.
    listing = run_cli("reservations", config=demo.config_path, timeout_s=30)
    assert listing.returncode in (0, 5), listing.stderr
    assert "Traceback" not in listing.stderr


def test_malformed_records_are_quarantined_and_the_owner_keeps_working(demo: DemoThread) -> None:
    config = demo.config_path
    good = cli_json("reserve", "--gpus", "1", "--node", NODE, config=config)

    def plant(state: dict[str, Any]) -> None:
        state["leases"]["r-bad111"] = {"id": "r-bad111", "gpus": "abc", "uid": 0}
        state["queue"]["r-bad222"] = ["not", "an", "object"]
        state["jobs"]["j-bad333"] = {"id": "j-bad333", "state": "running", "uid": os.getuid()}
        state["applied"]["x"] = {"bt": "soon"}

    edit_state(demo.cluster.nodes[NODE].state_dir, plant)
    for command in (["reservations"], ["jobs"], ["status"]):
        result = run_cli(*command, "--json", config=config)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    listing = run_cli("reservations", "--json", config=config)
    assert [r["id"] for r in json.loads(listing.stdout)["reservations"]] == [good["id"]]
    assert "quarantined leases/r-bad111" in listing.stderr, listing.stderr
    second = cli_json("reserve", "--gpus", "1", "--node", NODE, config=config)
    assert second["gpus"] != good["gpus"]
    assert run_cli("release", "--mine", config=config).returncode == 0
    state = json.loads((demo.cluster.nodes[NODE].state_dir / "state.json").read_text())
    assert {q["where"] for q in state["quarantine"]} >= {"leases/r-bad111", "queue/r-bad222", "jobs/j-bad333"}


# -- item 10: smaller truths --------------------------------------------------------------------------


def test_oversized_request_is_refused_at_once_with_exit_2(demo: DemoThread, tmp_path: Path) -> None:
    """A 2 MiB command line for `submit` gets the agent's answer at once, not a 60 s timeout."""
    big = ["x" * (100 << 10)] * 12  # 1.2 MiB in all (one argument may not pass 128 KiB)
    started = time.monotonic()
    result = run_cli("submit", "--gpus", "1", "--node", NODE, "--", "echo", *big, config=demo.config_path,
                     timeout_s=40)
    assert time.monotonic() - started < 20
    line = _one_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert "larger than" in line
    assert cli_json("jobs", config=demo.config_path)["jobs"] == []


def test_logs_never_split_a_multibyte_character(demo: DemoThread, tmp_path: Path) -> None:
    # 256 KiB chunks: put a 4-byte character across the first boundary.
    text = "a" * (256 * 1024 - 2) + "😀" * 3 + "end"
    source = tmp_path / "text.txt"
    source.write_text(text, encoding="utf-8")
    script = f"import sys; sys.stdout.buffer.write(open({str(source)!r}, 'rb').read())"
    job = submit_job(demo.config_path, "utf8", "--gpus", "1", argv=["python3", "-c", script])
    wait_for(lambda: jobs_by_name(demo.config_path)["utf8"]["state"] == "succeeded", 30, message="job done")
    result = run_cli("logs", job["id"], config=demo.config_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text
    assert "\ufffd" not in result.stdout


def test_cancel_of_an_ended_job_exits_0_saying_so(demo: DemoThread) -> None:
    job = submit_job(demo.config_path, "quick", "--gpus", "1", argv=["true"])
    wait_for(lambda: jobs_by_name(demo.config_path)["quick"]["state"] == "succeeded", 30, message="job done")
    result = run_cli("cancel", job["id"], config=demo.config_path)
    assert result.returncode == 0, result.stderr
    assert "already ended (succeeded)" in result.stdout
    assert jobs_by_name(demo.config_path)["quick"]["state"] == "succeeded"


def test_demo_stop_ends_its_supervisors_and_jobs(tmp_path: Path) -> None:
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2) as demo:
        submit_job(demo.config_path, "long", "--gpus", "1", argv=["sleep", "300"])
        submit_job(demo.config_path, "waiting", "--gpus", "2", argv=["sleep", "300"])
        wait_for(lambda: jobs_by_name(demo.config_path)["long"]["state"] == "running", 20, message="running")
        keys = {demo.cluster.nodes[NODE].sim_key}
        assert len(marked_processes(keys)) >= 3  # two supervisors and a job
    wait_for(lambda: not marked_processes(keys), 10, message="no process of the demo left")


def test_state_validates_after_a_quarantine_round_trip() -> None:
    """The quarantine list is part of the schema that validate_state and the checksum accept."""
    state = st.new_state("boot")
    state["leases"]["r-x"] = {"id": "r-y"}
    from gpuconsole.node import records
    from gpuconsole.node.store import checksum, validate_state

    warnings = records.sanitize(state)
    assert warnings == ["quarantined leases/r-x: id does not match its key"]
    body = dict(state, checksum=checksum(state))
    validate_state(json.loads(json.dumps(body)))


@pytest.mark.parametrize(("what", "needles"), [
    ("identity", ["identity file /nonexistent/id_test", "ssh-keygen -t ed25519 -f /nonexistent/id_test"]),
    ("python", ["/nonexistent/python3 not found on the node", "set python"]),
])
def test_missing_identity_file_or_node_interpreter_is_one_line_with_the_fix(
        demo: DemoThread, tmp_path: Path, what: str, needles: list[str]) -> None:
    text = demo.config_path.read_text()
    if what == "identity":
        text = text.replace(str(demo.cluster.client_key_path), "/nonexistent/id_test")
    else:  # (a python line the demo wrote for GPUCONSOLE_TEST_NODE_PYTHON gives way)
        text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("python = "))
        text = text.replace("simulate_gpus = 4", 'simulate_gpus = 4\npython = "/nonexistent/python3"')
    config = tmp_path / "broken.toml"
    config.write_text(text)
    for command in (["reserve", "--gpus", "1"], ["status"]):
        result = run_cli(*command, config=config)
        line = _one_line(result.stderr) if command[0] == "reserve" else result.stderr.splitlines()[0]
        assert result.returncode == 5, result.stderr
        for needle in needles:
            assert needle in line, line
