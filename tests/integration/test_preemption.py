"""Preemption: a high-priority --preempt job takes GPUs from low-priority jobs within grace + 2 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, jobs_by_name, run_cli, submit_job, wait_for

VICTIM = """
marker={dir}/$GPUCONSOLE_JOB_ID
if [ -e "$marker.ran" ]; then echo "second run on $CUDA_VISIBLE_DEVICES"; exit 0; fi
touch "$marker.ran"
trap 'echo TERM >> "$marker.term"; cat "$GPUCONSOLE_PREEMPT_FILE" >> "$marker.notice"; exit 143' TERM
while true; do sleep 0.05; done
"""


def test_high_priority_preempts_requeue_job_which_runs_again(demo_factory: Callable[..., DemoThread],
                                                             tmp_path: Path) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    victim = ["sh", "-c", VICTIM.format(dir=tmp_path)]
    low = [submit_job(config, f"low{i}", "--gpus", "1", "--priority", "low", "--requeue", "--grace", "2",
                   argv=victim) for i in range(2)]
    wait_for(lambda: all(j["state"] == "running" for j in jobs_by_name(config).values()), timeout_s=20,
             message="low jobs running")
    started = time.monotonic()
    urgent = submit_job(config, "urgent", "--gpus", "1", "--priority", "high", "--preempt",
                     argv=["python3", "-c", "print('urgent ran')"])
    wait_for(lambda: jobs_by_name(config)["urgent"]["state"] == "succeeded", timeout_s=20, interval_s=0.1,
             message="urgent job done")
    assert time.monotonic() - started <= 2 + 2 + 2  # grace + 2 s, plus the CLI's own polling
    terms = sorted(tmp_path.glob("*.term"))
    assert len(terms) == 1  # exactly one victim: the fewest needed
    victim_id = terms[0].name.removesuffix(".term")
    assert victim_id in {j["id"] for j in low}
    notice = (tmp_path / f"{victim_id}.notice").read_text()
    assert "deadline" in notice
    by_id = {j["id"]: j for j in cli_json("jobs", config=config)["jobs"]}
    wait_for(lambda: {j["id"]: j for j in cli_json("jobs", config=config)["jobs"]}[victim_id]["state"] == "succeeded",
             timeout_s=30, message="the victim ran again and succeeded")
    assert "second run" in run_cli("logs", victim_id, config=config).stdout
    survivor = next(j for j in low if j["id"] != victim_id)
    assert by_id[survivor["id"]]["state"] == "running"  # never touched
    assert run_cli("cancel", survivor["id"], config=config).returncode == 0
    assert urgent["id"] not in {j["id"] for j in low}


def test_preemption_without_requeue_ends_as_preempted_and_by_hand(demo_factory: Callable[..., DemoThread],
                                                                 tmp_path: Path) -> None:
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    victim = submit_job(config, "victim", "--gpus", "1", "--grace", "1",
                     argv=["sh", "-c", VICTIM.format(dir=tmp_path)])
    wait_for(lambda: jobs_by_name(config)["victim"]["state"] == "running", timeout_s=20, message="running")
    result = run_cli("preempt", victim["id"], config=config)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: jobs_by_name(config)["victim"]["state"] == "preempted", timeout_s=20, message="preempted")
    assert (tmp_path / f"{victim['id']}.term").exists()


def test_preempt_does_not_touch_equal_priority_or_plain_reservations(demo_factory: Callable[..., DemoThread],
                                                                     tmp_path: Path) -> None:
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "1", "--priority", "low", config=config)
    submit_job(config, "wants", "--gpus", "1", "--priority", "high", "--preempt", argv=["true"])
    time.sleep(1.0)  # give a wrong preemption the time to happen; the assertion is that it did not
    assert [r["id"] for r in cli_json("reservations", config=config)["reservations"]] == [grant["id"]]
    assert jobs_by_name(config)["wants"]["state"] == "queued"
