"""Why a queued job waits, through the CLI against the demo's nodes: `jobs --json` carries the reason,
the reservation it waits for and an ETA at that reservation's end (schema-checked), `jobs` prints it
in a line under the table, and a running job it waits for makes the ETA unknown."""

from __future__ import annotations

import json
from typing import Any

from gpuconsole.demo.cluster import DemoThread
from gpuconsole.format import epoch_s
from tests.helpers import cli_json, run_cli, schema_valid, wait_for


def _job(config: Any, job_id: str) -> dict[str, Any]:
    listing = cli_json("jobs", config=config)
    schema_valid("gpuconsole:schemas/jobs", listing)
    job: dict[str, Any] = next(j for j in listing["jobs"] if j["id"] == job_id)
    return job


def _submit(config: Any, gpus: int) -> dict[str, Any]:
    result = run_cli("submit", "--gpus", str(gpus), "--node", "node-01", "--json", "--", "sleep", "60", config=config)
    assert result.returncode == 0, result.stderr
    submitted: dict[str, Any] = json.loads(result.stdout)
    return submitted


def test_a_queued_job_says_what_it_waits_for(demo: DemoThread) -> None:
    config = demo.config_path
    held = cli_json("reserve", "--gpus", "4", "--node", "node-01", "--for", "20m", config=config)
    queued = _submit(config, 2)
    job = _job(config, queued["id"])
    assert job["state"] == "queued" and job["pending_reason"] == "resources" and job["ahead"] == []
    assert [(b["id"], b["kind"], b["gpus"]) for b in job["blockers"]] == [(held["id"], "reservation", [0, 1, 2, 3])]
    assert abs(epoch_s(job["eta"]) - epoch_s(held["expires_at"])) <= 2  # type: ignore[operator]
    table = run_cli("jobs", config=config)
    assert table.returncode == 0
    assert f"{queued['id']} on node-01: GPUs 0-3 held by " in table.stdout and "starts by " in table.stdout
    # Let the first job run: a second one waits on a running job, whose end nobody can promise.
    assert run_cli("release", held["id"], config=config).returncode == 0
    second = _submit(config, 4)
    why = _job(config, second["id"])
    assert why["eta"] is None and any(b["kind"] == "job" and b["ends_at"] is None for b in why["blockers"])
    assert "start time unknown" in run_cli("jobs", config=config).stdout
    for job_id in (queued["id"], second["id"]):
        run_cli("cancel", job_id, config=config)


def test_a_job_that_overruns_its_time_is_stopped(demo: DemoThread) -> None:
    """`submit --time 2s` of a command that would run a minute: TERM at the limit (the command ends
    on it), state timed_out, its GPUs free again; the limit is in its record."""
    config = demo.config_path
    result = run_cli("submit", "--gpus", "1", "--node", "node-02", "--time", "2s", "--grace", "5", "--json", "--",
                     "sleep", "60", config=config)
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["id"]
    ended = wait_for(lambda: (j := _job(config, job_id))["state"] not in ("queued", "running") and j,
                     timeout_s=45, message="the job to be stopped at its limit")
    assert ended["state"] == "timed_out" and ended["exit_code"] == 128 + 15 and ended["time_limit_s"] == 2.0
    ran_s = epoch_s(ended["ended_at"]) - epoch_s(ended["started_at"])  # type: ignore[operator]
    assert 1.0 <= ran_s < 30.0
    assert "timed_out" in run_cli("jobs", "--state", "timed_out", config=config).stdout
    status = cli_json("status", "--node", "node-02", config=config)
    assert all(g["reservation"] is None for g in status["nodes"][0]["gpus"])
    bad = run_cli("submit", "--gpus", "1", "--time", "soon", "--", "true", config=config)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
