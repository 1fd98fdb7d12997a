"""A Slurm cluster in the fleet (issue 17): a real single-host Slurm (slurm_fixture.py) whose login
node is reached over a real OpenSSH sshd as real OS users, beside a lock-file node. Slurm decides:
`reserve` is an allocation `squeue` shows, `release` its scancel, and Slurm's own refusal stops one
user from ending another's allocation. The module's tests share one cluster and its OS users (whose
setup ends their processes), so it runs on one worker: the README's `--dist loadfile`."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST, Tmux, WatchProc, of_kind, run_cli, schema_valid, wait_for
from tests.integration import sshd_fixture
from tests.integration.keeper_fixtures import _keeper, _warm, keeper_on  # noqa: F401  (the fixture)
from tests.integration.slurm_fixture import GPUS, NODE, SlurmSite, missing_slurm, running_slurm

USERS = ("gcutestslurm1", "gcutestslurm2")
GROUP = "gcutestslurm"
CLUSTER = "hpc"

pytestmark = pytest.mark.skipif(bool(missing_slurm() or sshd_fixture.missing_tools()),
                                reason=str(missing_slurm() or sshd_fixture.missing_tools()))


@pytest.fixture(autouse=True)
def _no_jobs_left(site: tuple[SlurmSite, dict[str, Path]]) -> Iterator[None]:
    """Every test starts with Slurm's queue empty of the users' jobs, whatever the last one left."""
    yield
    slurm, _configs = site
    for user in USERS:
        slurm.run("scancel", "-u", user)
    wait_for(lambda: not slurm.run("squeue", "-h", "-t", "pending,running,completing,configuring").stdout.strip(),
             timeout_s=30, message="the users' jobs to end")


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[SlurmSite, dict[str, Path]]]:
    """The Slurm cluster, its login node behind sshd, and each user's config (a node and the cluster)."""
    with running_slurm() as slurm, sshd_fixture.running_sshd(
            USERS, GROUP, sshd_fixture.cooperative_state_dir(GROUP),
            sshd_extra=f"SetEnv SLURM_CONF={slurm.conf}") as node:
        configs = {}
        for user in USERS:
            cluster = (f'\n[[clusters]]\nname = "{CLUSTER}"\nkind = "slurm"\nlogin = "127.0.0.1"\nport = {node.port}\n'
                       f'user = "{user}"\nidentity_file = "{node.keys[user]}"\n'
                       f'known_hosts = "{node.root / f"known_hosts.{user}"}"\npython = "{sshd_fixture.NODE_PYTHON}"\n')
            configs[user] = node.config(user, name=f"slurm-{user}", extra=cluster,
                                        known_hosts_text=node.host_key_line)
            # The same cluster measured by the agent on its compute node (Slurm's NodeAddr: this sshd).
            configs[f"{user}+agent"] = node.config(
                user, name=f"slurm-agent-{user}", known_hosts_text=node.host_key_line,
                extra=cluster + f'telemetry = "agent"\nsimulate_gpus = {GPUS}\n[watch]\nidle_minutes = 0.02\n')
        yield slurm, configs


def _json(config: Path, *args: str) -> Any:
    """A command's --json answer (the flag before any `-- CMD`)."""
    at = args.index("--") if "--" in args else len(args)
    done = run_cli(*args[:at], "--json", *args[at:], config=config, timeout_s=90)
    assert done.returncode == 0, f"{args}: exit {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


def _squeue(slurm: SlurmSite) -> dict[int, tuple[str, str]]:
    """{job id: (user, state)} of the jobs Slurm has now."""
    listed = slurm.run("squeue", "-h", "-t", "all", "-o", "%i|%u|%T")
    assert listed.returncode == 0, listed.stderr
    jobs = {}
    for line in listed.stdout.splitlines():
        job_id, user, state = line.split("|")
        jobs[int(job_id)] = (user, state)
    return jobs


def test_status_shows_the_slurm_node_and_its_gpus_beside_a_node(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    _slurm, configs = site
    status = _json(configs[USERS[0]], "status")
    schema_valid("gpuconsole:schemas/status", status)
    by_name = {n["name"]: n for n in status["nodes"]}
    assert by_name[sshd_fixture.NODE]["source"] == "onprem" and by_name[sshd_fixture.NODE]["cluster"] is None
    slurm_node = by_name[f"{CLUSTER}/{NODE}"]
    assert slurm_node["source"] == "slurm" and slurm_node["cluster"] == CLUSTER and slurm_node["reachable"]
    assert slurm_node["slurm"]["state"] == "idle" and slurm_node["slurm"]["partitions"] == ["debug"]
    assert [g["index"] for g in slurm_node["gpus"]] == list(range(GPUS))
    assert all(g["util_pct"] is None and g["reservation"] is None for g in slurm_node["gpus"])  # unknown, not 0
    doctor = run_cli("doctor", "--json", config=configs[USERS[0]], timeout_s=90)
    assert doctor.returncode == 0, doctor
    rows = {c["check"]: c for n in json.loads(doctor.stdout)["nodes"] if n["node"] == CLUSTER for c in n["checks"]}
    assert rows["slurm"]["ok"] and rows["slurm"]["detail"].startswith("slurm")
    assert rows["gres_gpu"]["detail"] == f"{GPUS} GPUs on 1 nodes" and rows["job_output"]["ok"]


def test_reserve_is_a_slurm_allocation_that_release_ends(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    slurm, configs = site
    alice, bob = (configs[user] for user in USERS)
    grant = _json(alice, "reserve", "--gpus", "1", "--node", CLUSTER, "--for", "20m")
    job_id = int(grant["id"].split(".")[-1])
    assert grant["id"] == f"{CLUSTER}.{job_id}" and grant["node"] == CLUSTER and len(grant["gpus"]) == 1
    assert _squeue(slurm)[job_id] == (USERS[0], "RUNNING")  # Slurm's own queue has it
    status = _json(alice, "status")
    held = [g for n in status["nodes"] if n["name"] == f"{CLUSTER}/{NODE}" for g in n["gpus"] if g["reservation"]]
    assert [(g["index"], g["reservation"]["id"], g["reservation"]["owner"]) for g in held] == \
        [(grant["gpus"][0], grant["id"], USERS[0])]
    listed = _json(bob, "reservations")
    assert grant["id"] in [r["id"] for r in listed["reservations"]]

    refused = run_cli("release", grant["id"], config=bob, timeout_s=90)  # Slurm refuses bob's scancel
    assert refused.returncode == 4, refused
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert _squeue(slurm)[job_id] == (USERS[0], "RUNNING")

    assert "Access/permission denied" in refused.stderr  # Slurm's own words
    released = _json(alice, "release", grant["id"])
    assert [(r["id"], r["released"]) for r in released["released"]] == [(grant["id"], True)]
    assert _squeue(slurm).get(job_id, ("", "CANCELLED"))[1] in ("CANCELLED", "COMPLETING", "COMPLETED")


def _job(config: Path, job_id: str) -> Any:
    listed = _json(config, "jobs")
    found = [j for j in listed["jobs"] if j["id"] == job_id]
    return found[0] if found else None


def test_submit_runs_through_sbatch_and_logs_show_its_gpus(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    slurm, configs = site
    alice = configs[USERS[0]]
    submitted = _json(alice, "submit", "--gpus", "2", "--node", CLUSTER, "--name", "gpus-of $USER;x", "--",
                      "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES SJG=$SLURM_JOB_GPUS; echo 'quoted $HOME `id`'")
    job_id = submitted["id"]
    slurm_id = int(job_id.split(".")[-1])
    assert _squeue(slurm)[slurm_id][0] == USERS[0]  # sbatch, as alice
    done = wait_for(lambda: j if (j := _job(alice, job_id)) and j["state"] == "succeeded" else None,
                    timeout_s=60, message="the batch job to succeed")
    assert done["name"] == "gpus-of $USER;x" and done["gpus_requested"] == 2 and done["exit_code"] == 0
    out = run_cli("logs", job_id, config=alice, timeout_s=90)
    assert out.returncode == 0, out.stderr
    seen = re.search(r"CVD=(\S*) SJG=(\S*)", out.stdout)
    assert seen is not None and seen.group(1) == seen.group(2) and len(seen.group(1).split(",")) == 2, out.stdout
    assert "quoted $HOME `id`" in out.stdout  # the argv ran as given: nothing expanded but by the job's own sh


def test_cancel_pending_reason_and_preempt_are_slurms(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    slurm, configs = site
    alice, bob = (configs[user] for user in USERS)
    holder = _json(alice, "submit", "--gpus", str(GPUS), "--node", CLUSTER, "--", "sleep", "300")["id"]
    wait_for(lambda: (_job(alice, holder) or {}).get("state") == "running", timeout_s=60,
             message="the job holding every GPU to run")
    waiting = _json(bob, "submit", "--gpus", "1", "--node", CLUSTER, "--", "true")["id"]
    pending = wait_for(lambda: j if (j := _job(bob, waiting)) and j.get("pending_reason") else None, timeout_s=60,
                       message="Slurm's pending reason")
    assert pending["state"] == "queued" and pending["pending_reason"] == "Resources"

    refused = run_cli("cancel", holder, config=bob, timeout_s=90)  # not bob's: Slurm says no
    assert refused.returncode == 4 and "Access/permission denied" in refused.stderr, refused
    assert _squeue(slurm)[int(holder.split(".")[-1])] == (USERS[0], "RUNNING")
    preempt = run_cli("preempt", holder, config=alice, timeout_s=90)
    assert preempt.returncode == 4 and "PreemptMode=OFF" in preempt.stderr, preempt

    cancelled = _json(alice, "cancel", holder)
    assert cancelled["state"] == "cancelled"
    wait_for(lambda: (_job(bob, waiting) or {}).get("state") == "succeeded", timeout_s=60,
             message="the waiting job to run once the GPUs were free")


def test_reserve_wait_queues_in_slurm_and_is_granted_when_gpus_free(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    """`reserve --wait` is a pending Slurm allocation: its progress names Slurm's reason, and it is
    granted once the job holding the GPUs ends; a timed-out wait leaves nothing queued in Slurm."""
    slurm, configs = site
    alice, bob = (configs[user] for user in USERS)
    holder = _json(alice, "submit", "--gpus", str(GPUS), "--node", CLUSTER, "--", "sleep", "300")["id"]
    wait_for(lambda: (_job(alice, holder) or {}).get("state") == "running", timeout_s=60,
             message="the job holding every GPU to run")
    timed_out = run_cli("reserve", "--gpus", "1", "--node", CLUSTER, "--wait", "--timeout", "3s", config=bob,
                        timeout_s=90)
    assert timed_out.returncode == 3, timed_out
    assert not [j for j, (user, state) in _squeue(slurm).items() if user == USERS[1] and state == "PENDING"]

    waiting = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(bob), "reserve", "--gpus", "1",
                                "--node", CLUSTER, "--wait", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        def pending() -> bool:
            if waiting.poll() is not None:
                raise AssertionError(f"reserve --wait ended early: {waiting.communicate()}")
            return any(u == USERS[1] and s == "PENDING" for u, s in _squeue(slurm).values())

        wait_for(pending, timeout_s=60, message="bob's allocation pending in Slurm")
        _json(alice, "cancel", holder)
        out, err = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    progress = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert progress and progress[0]["event"] == "queued" and progress[0]["pending_reason"] == "Resources", err
    grant = json.loads(out)
    assert grant["id"] == progress[0]["id"] and grant["owner"] == USERS[1] and len(grant["gpus"]) == 1
    assert _squeue(slurm)[int(grant["id"].split(".")[-1])] == (USERS[1], "RUNNING")
    _json(bob, "release", grant["id"])


async def test_the_console_shows_the_clusters_nodes_beside_a_node(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    """The console's poller streams the cluster's view: a row for the login node's cluster and one per
    Slurm node, marked by kind, beside the lock-file node."""
    from gpuconsole.config import load_config
    from gpuconsole.tui.app import GpuConsoleApp
    from gpuconsole.tui.screens.dialogs import ReserveDialog
    from tests.helpers import until

    _slurm, configs = site
    app = GpuConsoleApp(load_config(str(configs[f"{USERS[0]}+agent"])))  # compute agents join, never as targets
    row = f"{CLUSTER}/{NODE}"
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: (v := app.fleet.nodes.get(row)) is not None and v.snapshot is not None,
                    "the Slurm node's row", timeout_s=60)
        view = app.fleet.nodes[row]
        assert view.source == "slurm" and view.snapshot is not None and len(view.snapshot.gpus) == GPUS
        assert app.fleet.nodes[sshd_fixture.NODE].source == "onprem"
        assert app.fleet.nodes[CLUSTER].snapshot is not None  # the login node: reachable
        for _ in range(5):  # select the Slurm node's row as a person does: ↓ in the node table
            if app.selected_node == row:
                break
            await pilot.press("down")
            await pilot.pause(0.1)
        assert app.selected_node == row
        await pilot.press("r")  # `r` on a Slurm node's row reserves on its cluster (Slurm picks the node)
        await until(pilot, lambda: isinstance(app.screen, ReserveDialog), "the reserve dialog")
        assert isinstance(app.screen, ReserveDialog)
        assert app.screen.default_node == CLUSTER and row not in app.screen.nodes
        await pilot.press("escape")


def test_agent_telemetry_measures_the_slurm_gpus_and_an_idle_allocation_alerts(
        site: tuple[SlurmSite, dict[str, Path]], tmp_path: Path) -> None:
    """`telemetry = "agent"`: the Slurm node's GPUs carry what the agent on the compute node measures
    (Slurm still says who holds them), and an allocation whose GPU is idle raises the watcher's
    idle_reservation with its owner and id, as a lock-file reservation does."""
    _slurm, configs = site
    alice = configs[f"{USERS[0]}+agent"]
    grant = _json(alice, "reserve", "--gpus", "1", "--node", CLUSTER, "--for", "20m")
    try:
        status = _json(alice, "status")
        schema_valid("gpuconsole:schemas/status", status)
        entry = next(n for n in status["nodes"] if n["name"] == f"{CLUSTER}/{NODE}")
        assert entry["cpu_count"] is not None and entry["mem_total_bytes"]  # the compute node's host I/O
        assert all(g["util_pct"] is not None and g["mem_total_mib"] for g in entry["gpus"])  # measured
        held = [g for g in entry["gpus"] if g["reservation"]]
        assert [(g["index"], g["reservation"]["id"]) for g in held] == [(grant["gpus"][0], grant["id"])]
        assert not [n for n in status["nodes"] if n["source"] == "slurm-node"]  # no entries of their own

        watcher = WatchProc(alice, tmp_path / "watch.json", *FAST, "--release-idle", "--grace-minutes", "0.02")
        try:
            idle = watcher.wait_alert(of_kind("idle_reservation", reservation=grant["id"]), "the idle allocation",
                                      timeout_s=60)
            assert (idle["owner"], idle["node"], idle["gpus"]) == (USERS[0], f"{CLUSTER}/{NODE}", grant["gpus"])
            # Her own watcher releases it after the grace: scancel, as her; Slurm ends the allocation.
            watcher.wait_alert(of_kind("resolved", reservation=grant["id"], action="released"), "the release",
                               timeout_s=60)
            job_id = int(grant["id"].split(".")[-1])
            wait_for(lambda: _squeue(_slurm).get(job_id, ("", "CANCELLED"))[1] != "RUNNING", timeout_s=30,
                     message="Slurm to end the released allocation")
        finally:
            assert watcher.stop() == 0
    finally:
        _slurm.run("scancel", grant["id"].split(".")[-1])


def test_shell_runs_as_a_step_of_the_allocation_and_releases_it(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    """`shell --node hpc -- CMD`: an allocation, the command as `srun --overlap` step of it (Slurm sets
    its GPUs), its exit status, and the allocation ended when the shell ends."""
    slurm, configs = site
    alice = configs[USERS[0]]
    done = run_cli("shell", "--node", CLUSTER, "--gpus", "1", "--",
                   "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES JOB=$SLURM_JOB_ID; exit 3", config=alice, timeout_s=90)
    assert done.returncode == 3, done
    seen = re.search(r"CVD=(\d+) JOB=(\d+)", done.stdout)
    assert seen is not None, done
    job_id = int(seen.group(2))
    assert _squeue(slurm).get(job_id, ("", "CANCELLED"))[1] != "RUNNING"  # released at the end


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_an_interactive_shell_is_an_srun_pty_step(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    """In a real terminal: the login shell runs as `srun --pty` step of the allocation, on a pty, with
    the GPUs Slurm gave it; `exit 7` ends the command with 7 and the allocation."""
    slurm, configs = site
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(configs[USERS[0]]), "shell", "--node", CLUSTER]
    terminal = Tmux()
    try:
        terminal.start(f"TERM=xterm-256color {shlex.join(argv)}; echo EXITED=$?; sleep 120")
        terminal.wait_for("renewed while attached")
        terminal.line("echo MARK-$CUDA_VISIBLE_DEVICES-$SLURM_JOB_ID-$SLURM_STEP_ID-$(tty)")
        screen = terminal.wait_for("-/dev/pts/")
        seen = re.search(r"MARK-(\d+)-(\d+)-(\d+)-/dev/pts/", screen)
        assert seen is not None, screen
        assert _squeue(slurm)[int(seen.group(2))] == (USERS[0], "RUNNING")
        terminal.line("exit 7")
        assert "EXITED=7" in terminal.wait_for("EXITED=")
        assert _squeue(slurm).get(int(seen.group(2)), ("", "CANCELLED"))[1] != "RUNNING"
    finally:
        terminal.kill()


@pytest.mark.usefixtures("keeper_on")
def test_through_the_keeper_a_cluster_answers_as_directly(site: tuple[SlurmSite, dict[str, Path]]) -> None:
    """Commands go through the per-user keeper by default: status, reserve and release of a cluster
    answer there as they do directly (the keeper holds the login node's connection)."""
    slurm, configs = site
    alice = configs[USERS[0]]
    _warm(alice)
    before = _keeper(alice)["requests"]
    status = _json(alice, "status")
    assert [g["index"] for n in status["nodes"] if n["name"] == f"{CLUSTER}/{NODE}" for g in n["gpus"]] == \
        list(range(GPUS))
    grant = _json(alice, "reserve", "--gpus", "1", "--node", CLUSTER)
    assert _squeue(slurm)[int(grant["id"].split(".")[-1])] == (USERS[0], "RUNNING")
    _json(alice, "release", grant["id"])
    assert _keeper(alice)["requests"] - before >= 3  # they went through it
