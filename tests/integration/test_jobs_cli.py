"""Jobs as people use them from the CLI (issue 13 item 6): submit says how to follow the job, `jobs`
reads like a person's and keeps whole ids at 80 columns, running jobs first, with --mine/--user/--state;
`logs -f` exits with the job's exit code, `logs --tail N`, and the runs of a requeued job are
separated in its output. Real CLI, real SSH, real agents and detached supervisors."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, jobs_by_name, run_cli, submit_job, wait_for


def _states(config: Path) -> dict[str, str]:
    return {name: job["state"] for name, job in jobs_by_name(config).items()}


def test_submit_says_how_to_follow_and_jobs_reads_like_a_person(demo_factory: Callable[..., DemoThread]) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    done = submit_job(config, "done", "--gpus", "1", argv=["true"])
    wait_for(lambda: _states(config)["done"] == "succeeded", timeout_s=20, message="done succeeded")
    shown = run_cli("submit", "--gpus", "1", "--name", "a", "--", "sleep", "300", config=config)
    assert shown.returncode == 0, shown.stderr
    a_id = re.search(r"submitted (j-\w+)", shown.stdout)[1]  # type: ignore[index]
    assert f"gpuconsole logs {a_id} -f" in shown.stdout and "gpuconsole jobs" in shown.stdout
    b = submit_job(config, "b", "--gpus", "1", argv=["sleep", "300"])
    wait_for(lambda: _states(config)["a"] == _states(config)["b"] == "running", timeout_s=20,
             message="a and b running")
    c = submit_job(config, "c", "--gpus", "2", argv=["true"])

    table = run_cli("jobs", config=config, env={"COLUMNS": "80"})
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), table.stdout
    ids = [a_id, b["id"], c["id"], done["id"]]
    rows = [next(i for i, line in enumerate(lines) if job_id in line) for job_id in ids]
    # Running first (a and b: the user's waiter may start them in either order), then queued, then ended.
    assert max(rows[:2]) < rows[2] < rows[3], table.stdout
    assert re.search(rf"{a_id} .*running \d+s on node-01 GPUs [01]\b", table.stdout), table.stdout
    assert re.search(rf"{c['id']} .*queued #1 on node-01", table.stdout), table.stdout
    assert re.search(rf"{done['id']} .*succeeded \d+s ago on node-01", table.stdout), table.stdout

    queued = cli_json("jobs", "--state", "queued", config=config)["jobs"]
    assert [j["id"] for j in queued] == [c["id"]]
    assert {j["id"] for j in cli_json("jobs", "--mine", config=config)["jobs"]} == set(ids)
    assert cli_json("jobs", "--user", "nobody-here", config=config)["jobs"] == []
    nothing = run_cli("jobs", "--user", "nobody-here", config=config)
    assert nothing.returncode == 0 and nothing.stdout.strip() == "no jobs match"
    bad = run_cli("jobs", "--state", "sleeping", config=config)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1

    cancelled = run_cli("cancel", c["id"], config=config)  # cancelled before it ran
    assert cancelled.returncode == 0, cancelled.stderr
    assert run_cli("logs", "-f", c["id"], config=config).returncode == 143
    for job_id in (a_id, b["id"]):
        assert run_cli("cancel", job_id, config=config).returncode == 0


def test_logs_follow_exits_with_the_jobs_exit_code_and_tail_shows_the_last_lines(demo: DemoThread,
                                                                                tmp_path: Path) -> None:
    config = demo.config_path
    fails = submit_job(config, "fails", "--gpus", "1", argv=["sh", "-c", "echo half; exit 7"])
    followed = run_cli("logs", "--follow", fails["id"], config=config)
    assert followed.returncode == 7 and followed.stdout == "half\n", followed.stderr
    assert run_cli("logs", fails["id"], config=config).returncode == 0  # without -f: the output only

    gate = tmp_path / "go-on"
    script = f"seq 1 50; while [ ! -e {gate} ]; do sleep 0.05; done; echo after"
    job = submit_job(config, "counts", "--gpus", "1", argv=["sh", "-c", script])
    wait_for(lambda: "50" in run_cli("logs", job["id"], config=config).stdout.split(), timeout_s=20,
             message="the first 50 lines")
    tail = run_cli("logs", "--tail", "3", job["id"], config=config)
    assert tail.returncode == 0 and tail.stdout == "48\n49\n50\n", tail.stdout
    assert run_cli("logs", "-n", "0", job["id"], config=config).stdout == ""

    argv = [sys.executable, "-m", "gpuconsole", "--config", str(config), "logs", "--tail", "2", "-f", job["id"]]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # the tail is there before the job goes on
        gate.touch()
        out = first + proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=30)
    assert proc.returncode == 0, err
    assert out == "49\n50\nafter\n"


def test_runs_of_a_requeued_job_are_separated_in_its_output(demo_factory: Callable[..., DemoThread]) -> None:
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    job = submit_job(config, "again", "--gpus", "1", "--requeue", "--grace", "0",
                     argv=["sh", "-c", "echo start; echo oops >&2; sleep 300"])
    wait_for(lambda: run_cli("logs", job["id"], config=config).stdout == "start\n", timeout_s=20,
             message="the first run's output")
    preempted = run_cli("preempt", job["id"], config=config)
    assert preempted.returncode == 0, preempted.stderr
    marker = "── run 2 (requeued after preemption) ──"

    def second_run() -> Any:
        shown = run_cli("logs", job["id"], config=config)
        return shown if shown.stdout == f"start\n{marker}\nstart\n" else None

    shown = wait_for(second_run, timeout_s=30, message="the second run's output after its marker")
    assert shown.stderr == f"oops\n{marker}\noops\n"
    assert jobs_by_name(config)["again"]["state"] == "running"
    assert run_cli("cancel", job["id"], config=config).returncode == 0


def test_a_bad_runs_file_never_costs_the_job_its_next_run(demo_factory: Callable[..., DemoThread]) -> None:
    """runs.json is only a counter: one that holds Infinity (json reads it; int() overflows) is
    taken as no earlier run, and the requeued job still starts again."""
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    job = submit_job(config, "again", "--gpus", "1", "--requeue", "--grace", "0",
                     argv=["sh", "-c", "echo start; sleep 300"])
    wait_for(lambda: run_cli("logs", job["id"], config=config).stdout == "start\n", timeout_s=20,
             message="the first run's output")
    (demo.cluster.nodes["node-01"].state_dir / "jobs" / job["id"] / "runs.json").write_text('{"runs": Infinity}')
    assert run_cli("preempt", job["id"], config=config).returncode == 0
    wait_for(lambda: run_cli("logs", job["id"], config=config).stdout == "start\nstart\n", timeout_s=30,
             message="the second run's output")
    assert jobs_by_name(config)["again"]["state"] == "running"
    assert run_cli("cancel", job["id"], config=config).returncode == 0
