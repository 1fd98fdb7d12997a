"""Why a queued job waits, through the CLI against the demo's nodes: `jobs --json` carries the reason,
the reservation it waits for and an ETA at that reservation's end (schema-checked), `jobs` prints it
in a line under the table, and a running job it waits for makes the ETA unknown."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from gpuconsole.demo.cluster import DemoThread
from gpuconsole.format import epoch_s
from tests.helpers import FAST, WatchProc, cli_json, run_cli, schema_valid, wait_for


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


def test_a_watcher_idle_release_shortens_the_wait_and_grants_it(demo: DemoThread, tmp_path: Path) -> None:
    """alice holds all four GPUs for ten minutes; bob queues for four: his progress names alice's
    reservation and an ETA within her lease. The watcher (--release-idle) finds it idle and
    announces the release: bob's next line says so (idle, released at …) with a shorter ETA; at the
    end of the grace the watcher releases it and bob is granted."""
    config = tmp_path / "fast.toml"
    config.write_text(demo.config_path.read_text().replace("poll_seconds = 1.0", "poll_seconds = 0.2"))
    held = cli_json("reserve", "--gpus", "4", "--node", "node-01", "--for", "10m", config=config)
    lines: list[dict[str, Any]] = []
    waiting = subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", "4", "--node", "node-01",
         "--for", "1m", "--wait", "--timeout", "2m", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in waiting.stderr  # type: ignore[union-attr]
                                                          if x.startswith("{")), daemon=True)
    reader.start()
    watcher: WatchProc | None = None
    try:
        first = wait_for(lambda: lines[0] if lines else None, timeout_s=30, message="bob's first progress line")
        schema_valid("gpuconsole:schemas/reserve#/$defs/progress", first)
        assert [b["id"] for b in first["blockers"]] == [held["id"]] and 540 < first["eta_in_s"] <= 600
        watcher = WatchProc(config, tmp_path / "watch.json", *FAST, "--release-idle", "--grace-minutes", "0.08")
        announced = wait_for(lambda: next((x for x in list(lines) if x["blockers"]
                                           and x["blockers"][0].get("idle_release_in_s") is not None), None),
                             timeout_s=30, message=f"the idle release in bob's progress; lines: {lines}")
        schema_valid("gpuconsole:schemas/reserve#/$defs/progress", announced)
        assert announced["blockers"][0]["idle_since"] and announced["eta_in_s"] <= 10 < first["eta_in_s"]
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        granted = json.loads(out)
        assert granted["gpus"] == [0, 1, 2, 3]
        listed = {r["id"] for r in cli_json("reservations", config=config)["reservations"]}
        assert held["id"] not in listed and granted["id"] in listed
        audit = cli_json("audit", config=config)
        trail = [(r["event"], r.get("reason")) for r in audit["records"] if r.get("id") == held["id"]]
        assert trail[-2:] == [("idle_start", None), ("end", "idle_release")]
    finally:
        if watcher is not None:
            assert watcher.stop() == 0
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
        run_cli("release", "--mine", config=config)
