"""A hostile group member attacks another user through the shared state dir (cooperative mode).

Issue 11, item 1: a member of the gpu group can write the shared state dir, so they may disturb
the shared state, but they must never make another user's agent or supervisor run a command,
signal a process group or open a path of their choosing, and never make the owner's commands
fail. Each attack runs as a real second OS user against a real OpenSSH sshd (the module fixture of
test_sshd_multiuser); the owner's side is the real CLI over SSH.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import GROUP, NODE, NODE_PYTHON, SshdNode
from tests.integration.sshd_fixture import cli as _cli
from tests.integration.sshd_fixture import ok_json as _ok_json

if (_why := sshd_fixture.missing_tools()) is not None:
    pytest.skip(_why, allow_module_level=True)

pytestmark = pytest.mark.sshd
OWNER, ATTACKER = "gcutest1", "gcutest2"

# The attacker's toolkit: rewrite state.json with a valid (unkeyed) checksum, as any member can.
FORGE = textwrap.dedent('''
    import hashlib, json, os, sys
    state_dir, change = sys.argv[1], json.loads(sys.argv[2])
    path = os.path.join(state_dir, "state.json")
    with open(path) as handle:
        state = json.load(handle)
    state.pop("checksum", None)
    for table, key, record in change:
        state.setdefault(table, {})[key] = record
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    state["checksum"] = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    tmp = path + ".forged"
    with open(tmp, "w") as handle:
        json.dump(state, handle)
    os.replace(tmp, path)
''')


def _as(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv as ``user`` with the gpu group, from / (what a logged-in member can do)."""
    import grp

    info = pwd.getpwnam(user)
    return subprocess.run(list(argv), user=info.pw_uid, group=info.pw_gid,
                          extra_groups=[grp.getgrnam(GROUP).gr_gid], capture_output=True, text=True,
                          timeout=30, cwd="/", check=False)


@pytest.fixture(autouse=True)
def _used_node(sshd_node: SshdNode) -> None:
    """The state file and jobs/ exist, as on any node that has been used once."""
    cfg = sshd_node.configs[OWNER]
    if not (sshd_node.state_dir / "jobs").exists():
        submitted = _cli(cfg, "submit", "--gpus", "1", "--node", NODE, "--json", "--", "true")
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout)
        wait_for(lambda: {j["id"]: j["state"] for j in _ok_json(cfg, "jobs")["jobs"]}[job["id"]] == "succeeded",
                 timeout_s=30, message="first job done")


def _forge(node: SshdNode, *records: tuple[str, str, dict[str, Any]]) -> None:
    result = _as(ATTACKER, NODE_PYTHON, "-c", FORGE, str(node.state_dir), json.dumps(records))
    assert result.returncode == 0, result.stderr


def _plant_job_dir(node: SshdNode, job_id: str, argv: list[str], pgid: int | None = None) -> Path:
    """The attacker's own job dir under jobs/, holding a spec (and a pgid) of their choosing."""
    job_dir = node.state_dir / "jobs" / job_id
    files = {"spec.json": json.dumps({"argv": argv, "cwd": None})}
    if pgid is not None:
        files["pgid"] = str(pgid)
        files["pgid.json"] = json.dumps({"pid": pgid, "start": 0, "boot_id": "x", "uid": pwd.getpwnam(OWNER).pw_uid})
    script = textwrap.dedent('''
        import json, os, sys
        path, files = sys.argv[1], json.loads(sys.argv[2])
        os.mkdir(path)
        os.chmod(path, 0o777)
        for name, text in files.items():
            with open(os.path.join(path, name), "w") as handle:
                handle.write(text)
            os.chmod(os.path.join(path, name), 0o666)
    ''')
    result = _as(ATTACKER, NODE_PYTHON, "-c", script, str(job_dir), json.dumps(files))
    assert result.returncode == 0, result.stderr
    return job_dir


def _forged_orphan(job_id: str) -> dict[str, Any]:
    """A job record that claims to be the owner's, orphaned and requeue-able (adoptable)."""
    owner = pwd.getpwnam(OWNER)
    return {"id": job_id, "uid": owner.pw_uid, "owner": OWNER, "name": "forged", "n": 1, "priority": 1,
            "state": "queued", "exit_code": None, "command": "x", "created_wall": time.time(),
            "started_wall": None, "ended_wall": None, "supervisor": None, "gpus": [], "requeue": True,
            "cancel_requested": False, "preempt_others": False, "grace_s": 30.0, "preempt": None,
            "requeues": 1, "created_bt": 1.0, "seq": 1, "orphaned": True}


def _supervisors(job_id: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") if entry.isdigit() else []
        except OSError:
            continue
        if b"GPUCONSOLE_ROLE=supervisor" in env and f"GPUCONSOLE_JOB_ID={job_id}".encode() in env:
            found.append(int(entry))
    return found


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(f"/tmp/gcu-pwned-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process group of the owner's (their training run, say)."""
    info = pwd.getpwnam(OWNER)
    proc = subprocess.Popen(["sleep", "300"], user=info.pw_uid, group=info.pw_gid, start_new_session=True,
                            cwd="/")
    yield proc
    proc.kill()
    proc.wait(5)


def _owner_commands_still_work(node: SshdNode) -> list[str]:
    """The owner's everyday commands all exit 0 on the attacked node; returns their stderr lines."""
    cfg = node.configs[OWNER]
    lines: list[str] = []
    for command in (("reservations",), ("jobs",), ("status",)):
        result = _cli(cfg, *command, "--json")
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
        lines += result.stderr.splitlines()
    granted = _ok_json(cfg, "reserve", "--gpus", "1", "--node", NODE)
    assert _cli(cfg, "release", granted["id"]).returncode == 0
    return lines


def test_forged_orphan_job_never_runs_the_attackers_command_as_the_owner(
        sshd_node: SshdNode, marker: Path) -> None:
    job_id = "j-forged" + uuid.uuid4().hex[:4]
    _plant_job_dir(sshd_node, job_id, ["sh", "-c", f"id -un > {marker}"])
    _forge(sshd_node, ("jobs", job_id, _forged_orphan(job_id)))
    warnings = _owner_commands_still_work(sshd_node)
    time.sleep(1.0)  # a supervisor, had one started, would have run the spec by now
    assert not marker.exists(), f"the attacker's command ran as {marker.read_text().strip()}"
    assert any(job_id in line and "not restarted" in line for line in warnings), warnings
    jobs = {j["id"]: j for j in _ok_json(sshd_node.configs[OWNER], "jobs")["jobs"]}
    assert jobs[job_id]["state"] == "lost"


def test_swapped_job_dir_never_runs_the_attackers_command_as_the_owner(
        sshd_node: SshdNode, marker: Path) -> None:
    """The owner's --requeue job loses its supervisor; the attacker swaps its directory."""
    cfg = sshd_node.configs[OWNER]
    submitted = _cli(cfg, "submit", "--gpus", "1", "--node", NODE, "--requeue", "--json", "--", "sleep", "300")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    job_id = job["id"]
    jobs_dir = sshd_node.state_dir / "jobs"
    assert jobs_dir.stat().st_mode & 0o1000, "jobs/ must be sticky"

    def state_of() -> str:
        return str({j["id"]: j["state"] for j in _ok_json(cfg, "jobs")["jobs"]}[job_id])

    wait_for(lambda: state_of() == "running", timeout_s=20, message="job running")
    for pid in _supervisors(job_id):
        os.kill(pid, signal.SIGKILL)  # a crash: the job becomes an orphan for its owner to adopt
    # The attacker's own connection records the job as orphaned (their agent never adopts it).
    assert _cli(sshd_node.configs[ATTACKER], "jobs", "--json").returncode == 0

    # With the sticky bit, the attacker cannot move the owner's job dir aside.
    moved = _as(ATTACKER, "mv", str(jobs_dir / job_id), str(jobs_dir / (job_id + ".old")))
    assert moved.returncode != 0, "sticky jobs/ let another user rename the owner's job dir"
    # An old install without the sticky bit: the swap succeeds, and still nothing runs.
    subprocess.run(["chmod", "-t", str(jobs_dir)], check=True)
    try:
        moved = _as(ATTACKER, "mv", str(jobs_dir / job_id), str(jobs_dir / (job_id + ".old")))
        assert moved.returncode == 0, moved.stderr
        _plant_job_dir(sshd_node, job_id, ["sh", "-c", f"id -un > {marker}"])
        warnings = _owner_commands_still_work(sshd_node)
        time.sleep(1.0)
        assert not marker.exists(), f"the attacker's command ran as {marker.read_text().strip()}"
        assert any(job_id in line and "not restarted" in line for line in warnings), warnings
    finally:
        subprocess.run(["chmod", "+t", str(jobs_dir)], check=True)


def test_forged_pgid_never_makes_the_owners_agent_signal_it(
        sshd_node: SshdNode, victim: subprocess.Popen[bytes]) -> None:
    job_id = "j-killer" + uuid.uuid4().hex[:4]
    _plant_job_dir(sshd_node, job_id, ["true"], pgid=victim.pid)
    _forge(sshd_node, ("jobs", job_id, _forged_orphan(job_id)))
    _owner_commands_still_work(sshd_node)
    time.sleep(0.5)
    assert victim.poll() is None, "the owner's own agent killed the owner's process group"


def test_malformed_planted_records_never_stop_the_owner(sshd_node: SshdNode) -> None:
    owner_uid = pwd.getpwnam(OWNER).pw_uid
    _forge(sshd_node,
           ("leases", "r-planted", {"id": "r-planted", "uid": owner_uid, "owner": OWNER, "gpus": "all"}),
           ("queue", "r-planted2", {"id": "r-planted2", "n": "many"}),
           ("jobs", "j-planted3", {"id": "j-planted3", "uid": owner_uid, "state": "running", "orphaned": True}),
           ("applied", "x", {"bt": None}))
    warnings = _owner_commands_still_work(sshd_node)
    assert any("quarantined" in line for line in warnings), warnings


def test_unwritable_state_dir_is_one_line_with_the_fix(sshd_node: SshdNode) -> None:
    """A state dir the user cannot write (not yet set up by an admin): exit 5, the path and the fix."""
    state_dir = sshd_node.root / f"state-ro-{uuid.uuid4().hex[:6]}"
    state_dir.mkdir(mode=0o755)  # root's, not the group's
    config = sshd_node.root / f"config-ro-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(sshd_node.configs[OWNER].read_text().replace(str(sshd_node.state_dir), str(state_dir)))
    result = _cli(config, "reserve", "--gpus", "1", "--node", NODE)
    assert result.returncode == 5, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(state_dir) in lines[0] and "Permission denied" in lines[0], lines[0]
    assert f"sudo install -d -m 2775 -g gpu {state_dir}" in lines[0], lines[0]
