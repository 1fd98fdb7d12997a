"""Slurm's output as the login node's agent reads it (node/slurm.py) and as the client checks and
expands it (model/slurm.py): JSON of 22.05 and 23.02+, the text fallback, and what a job's owner or
a site could put in the free-text fields. The real Slurm runs in tests/integration/test_slurm.py."""

from __future__ import annotations

import json

import pytest

from gpuconsole.model.replies import BadReplyError, check_snapshot
from gpuconsole.model.slurm import node_snapshots
from gpuconsole.node import slurm, slurmjobs, slurmread


def test_gpu_counts_from_every_gres_spelling() -> None:
    assert slurmread.gpu_count("gpu:4") == 4
    assert slurmread.gpu_count("gpu:a100:2(S:0-1),shard:8") == 2
    assert slurmread.gpu_count("gres:gpu:1") == 1 and slurmread.gpu_count("gres/gpu=3") == 3
    assert slurmread.gpu_count(slurmread._without_detail("gpu:(null):3(IDX:0-2)")) == 3
    assert slurmread.gpu_count("shard:8") == 0 and slurmread.gpu_count("") == 0
    assert slurmread.expand_indices("0-1,3") == [0, 1, 3] and slurmread.expand_indices("x,2") == [2]


def test_the_text_fallback_takes_the_first_of_a_key_and_the_name_last() -> None:
    line = ("NodeName=gpu1 Arch=x86_64 CPUTot=8 Gres=gpu:4 NodeAddr=10.0.0.5 State=DRAIN "
            "Reason=bad fan [root@2026] Partitions=debug,long GresUsed=gpu:1(IDX:2) Reason=spoof")
    [node] = slurmread.parse_nodes_text(line)
    assert (node["name"], node["address"], node["state"], node["gpus"], node["gpus_used"]) == (
        "gpu1", "10.0.0.5", "drain", 4, 1)
    assert node["reason"] == "bad fan [root@2026]" and node["partitions"] == ["debug", "long"]
    # A job name is free text: with `|` and a fake field in it, it stays the name and nothing else moves.
    [job] = slurmread.parse_jobs_text("7|alice|RUNNING|None|gres:gpu:2|10:00|gpu1|x|root|RUNNING|y\n")
    assert (job["job_id"], job["user"], job["name"], job["gpus"]) == (7, "alice", "x|root|RUNNING|y", 2)


def test_squeue_json_of_22_05_and_23_02_gives_the_same_job() -> None:
    old = {"jobs": [{"job_id": 9, "name": "n", "user_name": "bob", "job_state": "RUNNING", "state_reason": "None",
                     "tres_per_node": "gres:gpu:2", "time_limit": 10, "start_time": 100, "end_time": 700,
                     "submit_time": 90, "exit_code": 0, "nodes": "gpu1", "batch_flag": True,
                     "gres_detail": ["gpu:2(IDX:1-2)"], "job_resources": {"allocated_nodes": [{"nodename": "gpu1"}]}}]}
    new = json.loads(json.dumps(old))
    job = new["jobs"][0]
    job.update(job_state=["RUNNING"], time_limit={"set": True, "infinite": False, "number": 10},
               start_time={"set": True, "number": 100}, end_time={"set": True, "number": 700},
               submit_time={"set": True, "number": 90}, exit_code={"return_code": {"set": True, "number": 0}})
    parsed = [slurmread.parse_jobs_json(json.dumps(doc)) for doc in (old, new)]
    assert parsed[0] == parsed[1]
    assert parsed[0] is not None and parsed[0][0]["gpus_by_node"] == {"gpu1": [1, 2]}
    assert slurmread.parse_jobs_json("not json") is None and slurmread.parse_jobs_json('{"jobs": 3}') is None


def _snapshot(nodes: list[dict[str, object]], jobs: list[dict[str, object]]) -> dict[str, object]:
    return {"t_wall": 1.0, "gpu_source": "slurm", "gpus": [], "reservations": [], "queue": [], "jobs": [],
            "slurm": {"cluster": "hpc", "source": "json", "nodes": nodes, "jobs": jobs}}


def test_each_slurm_node_becomes_an_entry_with_its_jobs_gpus() -> None:
    node = {"name": "gpu1", "state": "mixed", "reason": "", "partitions": ["debug"], "gpus": 4, "gpus_used": 2}
    job = {"job_id": 9, "name": "n", "user": "bob", "state": "RUNNING", "gpus": 2, "end_s": 700,
           "gpus_by_node": {"gpu1": [1, 2]}, "batch": True}
    data = check_snapshot("hpc", _snapshot([node], [job]))
    [entry] = node_snapshots("hpc", data, "slurm")
    assert entry.name == "hpc/gpu1" and entry.source == "slurm" and entry.slurm is not None
    assert [(g.index, g.reservation.id if g.reservation else None) for g in entry.gpus] == [
        (0, None), (1, "hpc.9"), (2, "hpc.9"), (3, None)]
    assert all(g.util_pct is None for g in entry.gpus)  # unknown without an agent, never 0
    assert entry.to_json()["cluster"] == "hpc"


@pytest.mark.parametrize("name", ["gpu1\x1b[2J", "../x", "a b", "", "-oProxyCommand=x"])
def test_a_slurm_name_that_is_no_identifier_makes_the_reply_bad(name: str) -> None:
    node = {"name": name, "state": "idle", "gpus": 1}
    with pytest.raises(BadReplyError):
        check_snapshot("hpc", _snapshot([node], []))


def test_a_batch_script_runs_the_argv_as_given() -> None:
    script = slurmjobs.script(["sh", "-c", "echo $HOME; `id`", "it's"], "/tmp/a dir")
    assert script == "#!/bin/sh\ncd -- '/tmp/a dir' || exit 1\nexec sh -c 'echo $HOME; `id`' 'it'\"'\"'s'\n"


def test_a_newline_in_a_job_name_adds_or_shadows_no_job_in_text_mode() -> None:
    named = ("7|alice|PENDING|Resources|gres:gpu:1|10:00||x\n"
             "7|alice|RUNNING|None|gres:gpu:8|1:00|gpu1|gpuconsole-reserve\n"  # the rest of job 7's name
             "8|bob|RUNNING|None|gres:gpu:1|1:00|gpu1|x\n"
             "4242|alice|RUNNING|None|gres:gpu:8|1:00|gpu1|gpuconsole-reserve\n"  # bob's name's second line
             "\u00b2|x|RUNNING|None||1:00|gpu1|y\n")  # not an ASCII number: not a job
    plain = "7|alice|PENDING\n8|bob|RUNNING\n"
    kept = slurmread.trusted_jobs(slurmread.parse_jobs_text(named), plain)
    assert [(j["job_id"], j["user"], j["state"]) for j in kept] == [(8, "bob", "RUNNING")]


def test_a_drained_node_says_so_in_22_05_json() -> None:
    doc = {"nodes": [{"name": "gpu1", "state": "idle", "state_flags": ["DRAIN"], "gres": "gpu:4", "gres_used": "gpu:0",
                      "partitions": ["debug"], "reason": "fan"}]}
    [node] = slurmread.parse_nodes_json(json.dumps(doc)) or []
    assert node["state"] == "idle+drain" and slurm.UNUSABLE & set(node["state"].split("+"))


def test_batch_jobs_gpus_are_a_jobs_and_times_are_bounded() -> None:
    node = {"name": "gpu1", "state": "mixed", "gpus": 2}
    batch = {"job_id": 3, "name": "train", "user": "bob", "state": "RUNNING", "gpus": 1, "end_s": 700,
             "gpus_by_node": {"gpu1": [0]}, "batch": True}
    alloc = {"job_id": 4, "name": "gpuconsole-reserve", "user": "al", "state": "RUNNING", "gpus": 1,
             "gpus_by_node": {"gpu1": [1]}, "batch": False}
    [entry] = node_snapshots("hpc", check_snapshot("hpc", _snapshot([node], [batch, alloc])), "slurm")
    assert [j.id for j in entry.jobs] == ["hpc.3"]  # the watcher never releases a job's GPUs
    with pytest.raises(BadReplyError):  # a time no clock can show would crash every view
        check_snapshot("hpc", _snapshot([node], [dict(batch, end_s=10**17)]))


def test_a_schedulers_own_pending_reason_is_shown_as_its_word() -> None:
    from gpuconsole.model.pending import Pending

    pending = Pending.of({"pending_reason": "QOSMaxGRESPerUser"})
    assert pending is not None
    assert pending.describe(1, 0.0) == "the scheduler says: QOSMaxGRESPerUser"
