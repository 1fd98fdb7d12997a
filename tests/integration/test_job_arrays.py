"""Job arrays (`submit --array`) end to end: real CLI, real SSH, real agents and supervisors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import REPO, cli_json, run_cli, wait_for

pytestmark = pytest.mark.timeout(120)


def _validate(name: str, document: Any) -> None:
    """`document` against gpuconsole/schemas/<name>.schema.json (the contract's pinned fields)."""
    schemas = REPO / "gpuconsole" / "schemas"
    resources = [Resource.from_contents(json.loads(p.read_text())) for p in schemas.glob("*.schema.json")]
    registry: Registry[Any] = Registry().with_resources(
        (r.id(), r) for r in resources if r.id() is not None)  # type: ignore[misc]
    schema = json.loads((schemas / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(document)


def _array_jobs(config: Any, array_id: str) -> dict[int, dict[str, Any]]:
    return {j["array"]["index"]: j for j in cli_json("jobs", config=config)["jobs"]
            if (j.get("array") or {}).get("id") == array_id}


def test_array_of_five_runs_five_jobs_each_seeing_its_index_from_one_transaction(
        demo_factory: Callable[..., DemoThread]) -> None:
    demo = demo_factory(nodes=1, gpus=2)
    config = demo.config_path
    result = run_cli("submit", "--array", "0-4", "--gpus", "1", "--name", "sweep", "--json", "--",
                     "sh", "-c", 'echo "$GPUCONSOLE_ARRAY_ID $GPUCONSOLE_ARRAY_INDEX"', config=config)
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    _validate("submit", submitted)
    array_id = submitted["id"]
    assert array_id.startswith("a-") and submitted["array"] == {"id": array_id, "indices": [0, 1, 2, 3, 4]}
    assert [j["index"] for j in submitted["jobs"]] == [0, 1, 2, 3, 4]
    assert len({j["id"] for j in submitted["jobs"]}) == 5
    wait_for(lambda: [j["state"] for j in _array_jobs(config, array_id).values()] == ["succeeded"] * 5,
             timeout_s=40, message="all five array jobs succeeded")
    jobs = _array_jobs(config, array_id)
    assert sorted(jobs) == [0, 1, 2, 3, 4]
    for index, job in jobs.items():
        assert job["name"] == f"sweep[{index}]"
        assert job["id"] == submitted["jobs"][index]["id"]
        logs = run_cli("logs", job["id"], config=config)
        assert logs.returncode == 0 and logs.stdout == f"{array_id} {index}\n"
    # One request, one state transaction: the five records share the transaction's clock reading
    # to the last digit, and took consecutive places in the queue.
    state = json.loads((demo.cluster.nodes["node-01"].state_dir / "state.json").read_text())
    records = [state["jobs"][jobs[i]["id"]] for i in range(5) if jobs[i]["id"] in state["jobs"]]
    assert len(records) == 5
    assert len({r["created_wall"] for r in records}) == 1
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + 5))


def test_array_step_queues_its_indices_and_cancel_of_the_array_id_cancels_every_job(
        demo_factory: Callable[..., DemoThread]) -> None:
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    result = run_cli("submit", "--array", "0-8:4", "--gpus", "1", "--json", "--", "sleep", "60", config=config)
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    array_id = submitted["id"]
    assert submitted["array"]["indices"] == [0, 4, 8]
    assert [j["position"] for j in submitted["jobs"]][1:] == [1, 2]  # index 0 got the only GPU
    wait_for(lambda: _array_jobs(config, array_id)[0]["state"] == "running", timeout_s=20,
             message="index 0 running")
    jobs = _array_jobs(config, array_id)
    assert sorted(jobs) == [0, 4, 8] and jobs[4]["state"] == jobs[8]["state"] == "queued"
    assert jobs[4]["name"] == f"{array_id}[4]"  # no --name: the array's id
    cancelled = cli_json("cancel", array_id, config=config)
    _validate("cancel", cancelled)
    assert cancelled["id"] == array_id
    assert sorted(j["id"] for j in cancelled["jobs"]) == sorted(j["id"] for j in jobs.values())
    wait_for(lambda: {j["state"] for j in _array_jobs(config, array_id).values()} == {"cancelled"},
             timeout_s=20, message="every array job cancelled")
    again = run_cli("cancel", array_id, config=config)
    assert again.returncode == 0 and "3 had already ended" in again.stdout
    missing = run_cli("cancel", "a-zzzzzz", config=config)
    assert missing.returncode == 6 and "no job array" in missing.stderr


def test_bad_array_ranges_exit_2_with_one_line(demo_factory: Callable[..., DemoThread]) -> None:
    config = demo_factory(nodes=1, gpus=1).config_path
    for spec in ("", "5-2", "0-1000", "-1", "x", "0-4:0", "0-9%2", "1.5", "0-4:", "2000000"):
        result = run_cli("submit", "--array", spec, "--gpus", "1", "--", "true", config=config)
        assert result.returncode == 2, (spec, result.stderr)
        assert "--array" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert cli_json("jobs", config=config)["jobs"] == []  # nothing was queued
