"""The model holds every field of the agent's views, and only those: each reply a real agent sends
(status, reservations, queue, jobs, capacity, hello, and the answers to reserve, poll, renew and
release) is parsed into the model, and the model's `to_wire()` must equal what the agent said. A
field renamed, added or dropped on the node side fails here, not in a user's `--json` output.

The replies are taken at the one place they enter the client (`check_reply`, wrapped to keep a copy
of the raw JSON before it is checked); everything else is the real CLI, SSH and agent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gpuconsole.model.replies as replies
from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.jobs import list_jobs
from gpuconsole.core.reservations import ReserveRequest, capacities, list_all, release, renew, reserve
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.answers import Grant, Ticket, grant_or_ticket
from tests.helpers import cli_json, jobs_by_name, run_cli, submit_job, wait_for


def _busy_cluster(config: Path) -> subprocess.Popen[str]:
    """node-01: a reservation, a running job, an ended job, a queued job and a queued reservation
    (whose waiter is the returned process); node-02 stays idle."""
    cli_json("reserve", "--gpus", "1", "--node", "node-01", "--for", "10m", config=config)
    submit_job(config, "done", "--gpus", "1", "--node", "node-01", argv=["true"])
    wait_for(lambda: jobs_by_name(config)["done"]["state"] == "succeeded", timeout_s=20, message="done ended")
    submit_job(config, "runs", "--gpus", "2", "--node", "node-01", argv=["sleep", "60"])
    wait_for(lambda: jobs_by_name(config)["runs"]["state"] == "running", timeout_s=20, message="runs running")
    submit_job(config, "waits", "--gpus", "4", "--node", "node-01", argv=["true"])
    waiter = subprocess.Popen(
        [sys.executable, "-m", "gpuconsole", "--config", str(config), "reserve", "--gpus", "3", "--node",
         "node-01", "--wait", "--timeout", "2m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    wait_for(lambda: any(q["id"].startswith("r-") for q in cli_json("reservations", config=config)["queue"]),
             timeout_s=20, message="the reservation queued")
    return waiter


def _views(config: Path, raw: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """The model of each view, read over one fleet while `raw` collects the agent's replies."""

    async def read() -> dict[str, Any]:
        async with Fleet(load_config(str(config))) as fleet:
            views = {
                "snapshot": await fleet_snapshot(fleet),
                "reservations": await list_all(fleet),
                "jobs": await list_jobs(fleet),
                "capacity": await capacities(fleet),
                "hello": {name: fleet.hello(name) for name in ("node-01", "node-02")},
            }
            # The answers to the changes: a grant on idle node-02, renewed and released; on node-01,
            # whose queue head is blocked, a reserve that queues, polled, then withdrawn.
            views["reserve"] = grant = await reserve(fleet, ReserveRequest(gpus=1, ttl_s=600, node="node-02"))
            views["renew"] = await renew(fleet, grant.id, 900)
            views["release"] = await release(fleet, grant.id)
            queued = await fleet.request("node-01", "reserve", {"gpus": 1, "ttl_s": 60, "wait": True,
                                                                 "req_id": "views-ticket"})
            views["queued"] = grant_or_ticket("node-01", queued)
            views["poll"] = grant_or_ticket("node-01", await fleet.request("node-01", "poll", {"id": queued["id"]}))
            views["withdrawn"] = await release(fleet, queued["id"])
            return views

    return asyncio.run(read())


def _result(raw: dict[tuple[str, str], Any], node: str, op: str) -> Any:
    reply = raw[(node, op)]
    assert reply["ok"] is True, reply
    return reply["result"]


def test_the_model_round_trips_every_agent_view(demo: DemoThread, monkeypatch: pytest.MonkeyPatch) -> None:
    config = demo.config_path
    waiter = _busy_cluster(config)
    try:
        raw: dict[tuple[str, str], Any] = {}
        check = replies.check_reply  # every reply line is checked here, whichever way it came

        def keep_raw(node: str, op: str, reply: Any) -> Any:
            # A copy, as the agent said it; the first per node and op (the one each view was built
            # from: a release looks the reservation up again).
            raw.setdefault((node, op), json.loads(json.dumps(reply)))
            return check(node, op, reply)

        monkeypatch.setattr(replies, "check_reply", keep_raw)
        views = _views(config, raw)
    finally:
        waiter.send_signal(signal.SIGTERM)  # the waiter withdraws its ticket
        waiter.wait(timeout=20)
        run_cli("release", "--mine", config=config)

    nodes = ("node-01", "node-02")
    for snap in views["snapshot"]:
        assert snap.to_wire() == _result(raw, snap.name, "snapshot"), snap.name
    reservations, queue, errors = views["reservations"]
    assert errors == {}
    for node in nodes:
        assert {"reservations": [r.to_wire() for r in reservations if r.node == node],
                "queue": [q.to_wire() for q in queue if q.node == node]} == _result(raw, node, "reservations")
    found, errors = views["jobs"]
    assert errors == {}
    for node in nodes:
        by_id = sorted(_result(raw, node, "jobs")["jobs"], key=lambda job: job["id"])
        mine = sorted((j for j in found if j.node == node), key=lambda job: job.id)
        assert [j.to_wire() for j in mine] == by_id, node
        assert all(not j.extra for j in mine), "fields the model does not know"
    for cap in views["capacity"]:
        assert cap.to_wire() == _result(raw, cap.node, "capacity"), cap.node
    for node, hello in views["hello"].items():
        assert hello is not None and hello.to_wire() == _result(raw, node, "hello"), node
        assert not hello.extra, "hello fields the model does not know"
    grant, renewed, released = views["reserve"], views["renew"], views["release"]
    assert isinstance(grant, Grant) and grant.state == "granted" and grant.node == "node-02"
    assert grant.to_wire() == _result(raw, "node-02", "reserve")
    assert renewed.state is None and renewed.to_wire() == _result(raw, "node-02", "renew")
    assert released.was == "active" and released.to_wire() == _result(raw, "node-02", "release")
    queued, polled, withdrawn = views["queued"], views["poll"], views["withdrawn"]
    assert isinstance(queued, Ticket) and queued.owner is not None and queued.gpus_requested == 1
    assert queued.to_wire() == _result(raw, "node-01", "reserve")
    assert isinstance(polled, Ticket) and polled.position >= 1 and polled.to_wire() == _result(raw, "node-01", "poll")
    assert withdrawn.was == "queued" and withdrawn.to_wire() == _result(raw, "node-01", "release")
    answers = (grant, renewed, released, queued, polled, withdrawn)
    assert all(not answer.extra for answer in answers), "fields the model does not know"

    # What was compared is not empty: every kind of record the views carry was there.
    node1 = next(s for s in views["snapshot"] if s.name == "node-01")
    assert {r.kind for r in reservations} == {"reservation", "job"}
    assert any(r.token is not None for r in reservations)
    assert {q.kind for q in queue} == {"reservation", "job"}
    assert {j.state for j in found} >= {"succeeded", "running", "queued"}
    assert any(g.reservation is not None and g.processes for g in node1.gpus)
    assert node1.jobs and node1.reservations and node1.queue


def test_jobs_json_keeps_its_fields_and_their_order(demo: DemoThread) -> None:
    """`jobs --json` and `cancel --json`: each job's fields in the agent's order, then `node` (the CLI
    contract, unchanged by the typed model)."""
    config = demo.config_path
    named = submit_job(config, "named", "--gpus", "1", argv=["sleep", "60"])
    run_cli("submit", "--gpus", "1", "--json", "--", "true", config=config)
    jobs = wait_for(lambda: (listed := cli_json("jobs", config=config)["jobs"]) and len(listed) == 2 and listed,
                    message="both jobs listed")
    fields = ["id", "name", "gpus", "gpus_requested", "owner", "priority", "state", "exit_code", "command",
              "created_at", "started_at", "ended_at", "position", "time_limit_s", "node"]
    assert [list(job) for job in jobs] == [fields, fields]  # objects inside a document: no generated_at
    unnamed = next(job for job in jobs if job["name"] != "named")
    assert unnamed["name"] == unnamed["id"]  # the node names an unnamed job by its id
    cancelled = cli_json("cancel", named["id"], config=config)
    assert list(cancelled) == ["generated_at", *fields] and cancelled["id"] == named["id"]
    again = cli_json("cancel", named["id"], config=config) if wait_for(
        lambda: jobs_by_name(config)["named"]["state"] == "cancelled", timeout_s=20, message="cancelled") else None
    assert again is not None and list(again) == ["generated_at", "already_ended", *fields]
    assert again["already_ended"] is True


def test_reservation_json_keeps_its_fields_and_their_order(demo: DemoThread) -> None:
    """`reserve`, `renew` and `release --json`: the CLI contract's fields in their order, unchanged by
    the typed answers (Grant, Released); issue 13 only added fields (generated_at first, a grant's
    shared fields, release's flat `results`), the old ones keep their relative order."""
    config = demo.config_path
    reserved = cli_json("reserve", "--gpus", "2", "--node", "node-01", "--for", "10m", config=config)
    assert list(reserved) == ["generated_at", "id", "node", "gpus", "owner", "expires_at", "cuda_visible_devices",
                              "token", "priority", "kind", "state"]
    assert (reserved["node"], len(reserved["gpus"]), reserved["priority"]) == ("node-01", 2, "normal")
    renewed = cli_json("renew", reserved["id"], "--for", "2h", config=config)
    assert [key for key in renewed if key in {"id", "node", "gpus", "owner", "expires_at", "token"}] == [
        "id", "node", "gpus", "owner", "expires_at", "token"]
    assert list(renewed) == list(reserved)  # a grant has the same fields in reserve and renew
    assert renewed["token"] == reserved["token"] and renewed["expires_at"] > reserved["expires_at"]
    released = cli_json("release", reserved["id"], config=config)
    assert list(released) == ["generated_at", "released", "errors", "results"] and released["errors"] == []
    (entry,) = released["released"]
    assert entry == {"id": reserved["id"], "released": True, "was": "active", "gpus": reserved["gpus"],
                     "node": "node-01"}
    assert list(entry) == ["id", "released", "was", "gpus", "node"]
