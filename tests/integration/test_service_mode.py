"""Service mode on a real node: state owned by a service account, changed only through sudo.

Issue 11, item 2. A real OpenSSH sshd, real OS users (an owner, another user, an admin-group
member), a real service account, the service agent installed root-owned from `node-install
--print`, and a real sudoers rule for exactly that command. Users reach the state only through
`sudo -n -u SERVICE /usr/bin/python3 -I -S AGENT` with JSON on stdin; their identity is sudo's
SUDO_UID; nobody but the service account can write the state dir; jobs still run as their owner.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli, wait_for
from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import NODE, NODE_PYTHON, SshdNode, cli, ok_json, one_line_error, run

SUDO = "/usr/bin/sudo"
if (_why := sshd_fixture.missing_tools(SUDO, "/usr/sbin/visudo")) is not None:
    pytest.skip(_why, allow_module_level=True)

pytestmark = pytest.mark.sshd

# Names of their own: test modules run side by side, and each kills its users' leftovers.
OWNER, OTHER, ADMIN = "gcutestsvc1", "gcutestsvc2", "gcutestsadm"
SERVICE = "gcutestsvcd"
GROUP = "gcutestsgpu"
ADMINS = "gcutestsadmins"
POLICY = Path("/etc/gpuconsole/policy.json")


def _service_account() -> None:
    """The admin's first step, as `doctor` prints it (reused between runs, its leftovers ended)."""
    try:
        pwd.getpwnam(SERVICE)
    except KeyError:
        run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE)
    subprocess.run(["pkill", "-KILL", "-u", SERVICE], check=False)


def _service_state_dir(path: Path) -> None:
    run("install", "-d", "-m", "0755", "-o", SERVICE, "-g", SERVICE, str(path))


class _Policy:
    """/etc/gpuconsole/policy.json naming the admin group, and the previous file put back after."""

    def __init__(self) -> None:
        self.previous = POLICY.read_bytes() if POLICY.exists() else None
        self.made_dir = not POLICY.parent.exists()

    def write(self) -> None:
        POLICY.parent.mkdir(mode=0o755, exist_ok=True)
        POLICY.write_text(json.dumps({"admin_group": ADMINS}))
        os.chmod(POLICY, 0o644)

    def restore(self) -> None:
        if self.previous is not None:
            POLICY.write_bytes(self.previous)
            return
        POLICY.unlink(missing_ok=True)
        if self.made_dir:
            POLICY.parent.rmdir()


@pytest.fixture(scope="module")
def node() -> Iterator[SshdNode]:
    """sshd, three users in the gpu group (one an admin), the service account and its sudo rule."""
    _service_account()
    agent_dir = Path(tempfile.mkdtemp(prefix="gcu-svc-agent-", dir="/tmp"))
    sudoers = Path(f"/etc/sudoers.d/gcutest_svc_{uuid.uuid4().hex[:8]}")  # no '.': sudo skips such names
    policy = _Policy()
    try:
        os.chmod(agent_dir, 0o755)
        with sshd_fixture.running_sshd((OWNER, OTHER, ADMIN), GROUP, _service_state_dir,
                                       kill_users=(SERVICE,)) as sshd:
            run("groupadd", "-f", ADMINS)
            run("usermod", "-a", "-G", ADMINS, ADMIN)
            policy.write()
            # The installed agent: what `node-install --print` writes, root-owned, 0755.
            agent = agent_dir / "gcagent.py"
            printed = run_cli("node-install", "--print", "--state-dir", str(sshd.state_dir),
                              "--service-user", SERVICE, "--simulate-gpus", str(sshd_fixture.GPUS))
            assert printed.returncode == 0, printed.stderr
            agent.write_text(printed.stdout)
            os.chmod(agent, 0o755)
            line = f"%{GROUP} ALL=({SERVICE}) NOPASSWD: {NODE_PYTHON} -I -S {agent}\n"
            draft = agent_dir / "sudoers"
            draft.write_text(line)
            run("visudo", "-cf", str(draft))
            run("install", "-m", "0440", "-o", "root", "-g", "root", str(draft), str(sudoers))
            sshd.extra_config = (f'mode = "service"\nservice_user = "{SERVICE}"\n'
                                 f'service_agent = "{agent}"\n')
            for user in (OWNER, OTHER, ADMIN):
                sshd.configs[user] = sshd.config(user, extra=sshd.extra_config, name=f"{user}-service")
            yield sshd
    finally:
        sudoers.unlink(missing_ok=True)
        policy.restore()
        subprocess.run(["pkill", "-KILL", "-u", SERVICE], check=False)
        shutil.rmtree(agent_dir, ignore_errors=True)


def _agent_path(node: SshdNode) -> str:
    for line in node.extra_config.splitlines():
        if line.startswith("service_agent"):
            return line.split('"')[1]
    raise AssertionError("no service_agent in the config")


def _as(user: str, argv: list[str], *, stdin: str = "", env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run argv as ``user`` with the gpu group, from / (what a logged-in member can do)."""
    info = pwd.getpwnam(user)
    base = {"PATH": "/usr/bin:/bin", "HOME": info.pw_dir, "USER": user, "LOGNAME": user}
    return subprocess.run(argv, user=info.pw_uid, group=info.pw_gid, extra_groups=[grp.getgrnam(GROUP).gr_gid],
                          input=stdin, capture_output=True, text=True, timeout=30, cwd="/",
                          env={**base, **(env or {})}, check=False)


def _replies(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _raw_state(node: SshdNode) -> dict[str, Any]:
    return dict(json.loads((node.state_dir / "state.json").read_text()))


def test_owner_reserves_renews_and_releases(node: SshdNode) -> None:
    """The whole lifecycle through sudo; the owner is the caller's login, never the service account;
    the files are the service account's (state 0644, lock 0600, dir 0755)."""
    cfg = node.configs[OWNER]
    granted = ok_json(cfg, "reserve", "--gpus", "1", "--node", NODE)
    rid = granted["id"]
    assert granted["owner"] == OWNER
    lease = _raw_state(node)["leases"][rid]
    assert (lease["owner"], lease["uid"]) == (OWNER, pwd.getpwnam(OWNER).pw_uid)

    renewed = cli(cfg, "renew", rid, "--for", "20m")
    assert renewed.returncode == 0, renewed.stderr
    listed = {r["id"]: r for r in ok_json(cfg, "reservations")["reservations"]}
    assert listed[rid]["owner"] == OWNER

    released = cli(cfg, "release", rid)
    assert released.returncode == 0, released.stderr
    assert rid not in _raw_state(node)["leases"]

    service_uid = pwd.getpwnam(SERVICE).pw_uid
    for path, mode in ((node.state_dir, 0o755), (node.state_dir / "state.json", 0o644),
                       (node.state_dir / "state.json.mirror", 0o644), (node.state_dir / "lock", 0o600)):
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (service_uid, mode), path


def test_another_user_cannot_release_but_an_admin_can(node: SshdNode) -> None:
    """OTHER gets exit 4 on OWNER's reservation; a member of the policy's admin group (known from the
    group database, since the service agent runs with the service account's groups) may release it."""
    rid = ok_json(node.configs[OWNER], "reserve", "--gpus", "1", "--node", NODE)["id"]
    denied = cli(node.configs[OTHER], "release", rid)
    assert denied.returncode == 4, denied.stderr
    assert "belongs to" in one_line_error(denied)
    assert rid in _raw_state(node)["leases"]

    by_admin = cli(node.configs[ADMIN], "release", rid)
    assert by_admin.returncode == 0, by_admin.stderr
    assert rid not in _raw_state(node)["leases"]


WRITE_ATTEMPTS = textwrap.dedent('''
    import errno, json, os, sys
    d = sys.argv[1]
    tries = {
        "create": lambda: os.open(os.path.join(d, "planted"), os.O_WRONLY | os.O_CREAT, 0o644),
        "state": lambda: os.open(os.path.join(d, "state.json"), os.O_WRONLY),
        "mirror": lambda: os.open(os.path.join(d, "state.json.mirror"), os.O_WRONLY),
        "lock": lambda: os.open(os.path.join(d, "lock"), os.O_RDONLY),
        "rename": lambda: os.rename(os.path.join(d, "state.json"), os.path.join(d, "moved")),
        "unlink": lambda: os.unlink(os.path.join(d, "lock")),
        "chmod": lambda: os.chmod(d, 0o777),
    }
    out = {}
    for name, attempt in tries.items():
        try:
            attempt()
            out[name] = "done"
        except OSError as exc:
            out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    with open(os.path.join(d, "state.json")) as handle:
        out["read"] = "gen" in json.load(handle)
    print(json.dumps(out))
''')


@pytest.mark.parametrize("user", [OTHER, OWNER])
def test_no_user_can_write_the_state(node: SshdNode, user: str) -> None:
    """Members of the gpu group, owners included, cannot write, lock, rename or delete anything in the
    state dir (EACCES, or EPERM for chmod); they can read the state."""
    ok_json(node.configs[OWNER], "reservations")  # the files exist
    before = (node.state_dir / "state.json").read_bytes()
    result = _as(user, [NODE_PYTHON, "-c", WRITE_ATTEMPTS, str(node.state_dir)])
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome == {"create": "EACCES", "state": "EACCES", "mirror": "EACCES", "lock": "EACCES",
                       "rename": "EACCES", "unlink": "EACCES", "chmod": "EPERM", "read": True}
    assert (node.state_dir / "state.json").read_bytes() == before
    assert not (node.state_dir / "planted").exists()


def test_identity_comes_from_sudo_and_cannot_be_chosen(node: SshdNode) -> None:
    """A user who sets SUDO_UID/SUDO_USER, passes variables or arguments through sudo, or runs the
    agent without sudo, is either refused or served as themselves."""
    agent = _agent_path(node)
    owner_uid = pwd.getpwnam(OWNER).pw_uid
    forged = {"SUDO_UID": str(owner_uid), "SUDO_USER": OWNER, "GPUCONSOLE_FAULTS": "no_lock",
              "PYTHONPATH": "/tmp", "PYTHONSTARTUP": "/tmp/x.py"}
    requests = "".join(json.dumps(r) + "\n" for r in (
        {"id": 1, "op": "hello", "args": {"node": NODE, "state_dir": "/tmp", "simulate_gpus": 64}},
        {"id": 2, "op": "reserve", "args": {"gpus": 1, "ttl_s": 60}},
    ))
    served = _as(OTHER, [SUDO, "-n", "-u", SERVICE, NODE_PYTHON, "-I", "-S", agent], stdin=requests, env=forged)
    assert served.returncode == 0, served.stderr
    hello, grant = _replies(served.stdout)
    other_uid = pwd.getpwnam(OTHER).pw_uid
    assert (hello["result"]["user"], hello["result"]["uid"]) == (OTHER, other_uid)
    assert hello["result"]["state_dir"] == str(node.state_dir)  # the caller cannot choose it
    assert hello["result"]["gpu_count"] == sshd_fixture.GPUS
    assert grant["ok"] and grant["result"]["owner"] == OTHER
    lease = _raw_state(node)["leases"][grant["result"]["id"]]
    assert (lease["owner"], lease["uid"]) == (OTHER, other_uid)
    assert cli(node.configs[OTHER], "release", grant["result"]["id"]).returncode == 0

    python = [NODE_PYTHON, "-I", "-S", agent]
    refused_by_sudo = {
        "variables": [SUDO, "-n", "-u", SERVICE, f"SUDO_UID={owner_uid}", *python],
        "preserved env": [SUDO, "-n", "-E", "-u", SERVICE, *python],
        "extra argument": [SUDO, "-n", "-u", SERVICE, *python, "--x"],
        "other program": [SUDO, "-n", "-u", SERVICE, NODE_PYTHON, "-c", "print(1)"],
        "other target": [SUDO, "-n", "-u", "root", *python],
    }
    for what, argv in refused_by_sudo.items():
        result = _as(OTHER, argv, stdin=requests, env=forged)
        assert result.returncode != 0 and not _replies(result.stdout), (what, result.stdout, result.stderr)

    direct = _as(OTHER, python, stdin=requests, env=forged)
    assert direct.returncode == 2 and not _replies(direct.stdout), direct
    assert f"runs only as {SERVICE} through sudo" in direct.stderr


def test_status_and_doctor_in_service_mode(node: SshdNode) -> None:
    """status reads the world-readable state; doctor says service mode and that it is set up."""
    status = ok_json(node.configs[OTHER], "status")
    assert status["nodes"][0]["reachable"] is True, status["nodes"][0].get("error")
    assert len(status["nodes"][0]["gpus"]) == sshd_fixture.GPUS

    report = run_cli("doctor", "--json", config=node.configs[OWNER])
    assert report.returncode == 0, report.stdout + report.stderr
    entry = json.loads(report.stdout)["nodes"][0]
    checks = {c["check"]: c for c in entry["checks"]}
    assert entry["mode"] == "service" and "setup" not in entry
    assert checks["mode"]["ok"] and SERVICE in checks["mode"]["detail"]
    assert checks["state_dir"]["ok"], checks["state_dir"]


def test_missing_setup_is_one_line_and_doctor_prints_it(node: SshdNode) -> None:
    """A node whose sudo rule does not allow the configured agent: a change exits 5 with one line
    naming the fix; reads still work; doctor fails the mode check and prints the exact setup."""
    missing = "/usr/local/lib/gpuconsole-missing/gcagent.py"
    cfg = node.config(OWNER, extra=f'mode = "service"\nservice_user = "{SERVICE}"\nservice_agent = "{missing}"\n')
    refused = cli(cfg, "reserve", "--gpus", "1", "--node", NODE)
    assert refused.returncode == 5, refused.stderr
    assert "sudoers" in one_line_error(refused)
    assert ok_json(cfg, "reservations") is not None

    report = run_cli("doctor", "--json", config=cfg)
    assert report.returncode == 5, report.stderr  # a node that cannot take a change (never 1: a bug)
    entry = json.loads(report.stdout)["nodes"][0]
    assert not {c["check"]: c for c in entry["checks"]}["mode"]["ok"]
    setup = "\n".join(entry["setup"])
    assert f"useradd --system --no-create-home --shell /usr/sbin/nologin {SERVICE}" in setup
    assert f"install -d -m 0755 -o {SERVICE} -g {SERVICE} {node.state_dir}" in setup
    assert f"install -D -m 0755 -o root -g root gcagent.py {missing}" in setup
    assert f"%gpu ALL=({SERVICE}) NOPASSWD: /usr/bin/python3 -I -S {missing}" in setup
    assert "visudo -cf" in setup
    human = run_cli("doctor", config=cfg)
    assert f"NOPASSWD: /usr/bin/python3 -I -S {missing}" in human.stdout


def test_cooperative_config_on_a_service_node_is_named(node: SshdNode) -> None:
    """A config that forgot `mode = "service"`: the change fails (exit 5, one line) and doctor's
    state_dir check says the node is set up for service mode."""
    cfg = node.config(OWNER, extra="")
    refused = cli(cfg, "reserve", "--gpus", "1", "--node", NODE)
    assert refused.returncode == 5, refused.stderr
    one_line_error(refused)
    report = run_cli("doctor", "--json", config=cfg)
    checks = {c["check"]: c for c in json.loads(report.stdout)["nodes"][0]["checks"]}
    assert not checks["state_dir"]["ok"]
    assert 'service-mode node (set mode = "service")' in checks["state_dir"]["detail"]


def test_a_waiting_reserve_is_granted_and_a_dead_waiter_dropped(node: SshdNode) -> None:
    """`reserve --wait` queues through the service agent, which holds the ticket for its caller and
    ends with it: granted when GPUs free up; a waiter killed while queued leaves no ticket behind."""
    cfg1, cfg2 = node.configs[OWNER], node.configs[OTHER]
    held = [ok_json(cfg1, "reserve", "--gpus", "1", "--node", NODE)["id"] for _ in range(sshd_fixture.GPUS)]
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(cfg2), "reserve", "--gpus", "1", "--node", NODE,
            "--wait", "--timeout", "40s", "--json"]
    dead = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiter = None
    try:
        wait_for(lambda: len(_raw_state(node)["queue"]) == 1, timeout_s=20, message="the first waiter queued")
        dead.kill()
        dead.communicate(timeout=10)
        wait_for(lambda: not ok_json(cfg1, "reservations")["queue"], timeout_s=20,
                 message="the dead waiter's ticket gone from the listing")
        waiter = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: ok_json(cfg1, "reservations")["queue"], timeout_s=20,
                 message="the second waiter queued")  # listings show live waiters only
        assert cli(cfg1, "release", held.pop()).returncode == 0
        out, err = waiter.communicate(timeout=40)
        assert waiter.returncode == 0, err
        granted = json.loads(out)
        assert granted["owner"] == OTHER
        assert cli(cfg2, "release", granted["id"]).returncode == 0
    finally:
        for proc in (dead, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        for rid in held:
            cli(cfg1, "release", rid)


def test_a_submit_can_be_the_first_change_on_a_node(node: SshdNode) -> None:
    """jobs/ (sticky, 1777) is made by the service agent: a submit on a node where nothing has
    changed yet starts the link first, then makes the owner's private job dir."""
    jobs_dir = node.state_dir / "jobs"
    if jobs_dir.exists():  # a running supervisor keeps its job dir through its fd
        jobs_dir.rename(node.state_dir / f"jobs.old-{uuid.uuid4().hex[:8]}")
    cfg = node.configs[OWNER]
    submitted = cli(cfg, "submit", "--gpus", "1", "--node", NODE, "--json", "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    wait_for(lambda: {j["id"]: j["state"] for j in ok_json(cfg, "jobs")["jobs"]}[job_id] == "succeeded",
             timeout_s=30, message="the job to succeed")
    assert stat.S_IMODE(jobs_dir.stat().st_mode) == 0o1777


def test_jobs_run_as_their_owner(node: SshdNode) -> None:
    """A job submitted in service mode runs as its owner (the owner's own agent starts the
    supervisor; its claims and renewals go through its own sudo link); another user cannot cancel it."""
    cfg1, cfg2 = node.configs[OWNER], node.configs[OTHER]
    submitted = cli(cfg1, "submit", "--gpus", "1", "--node", NODE, "--json", "--", "sh", "-c", "id -un; sleep 30")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["owner"] == OWNER

    def state_of(job_id: str) -> str:
        return str({j["id"]: j["state"] for j in ok_json(cfg1, "jobs")["jobs"]}[job_id])

    wait_for(lambda: state_of(job["id"]) == "running", timeout_s=30, message="job running")
    wait_for(lambda: OWNER in cli(cfg1, "logs", job["id"]).stdout, timeout_s=15, message="job output")
    job_dir = node.state_dir / "jobs" / job["id"]
    assert job_dir.stat().st_uid == pwd.getpwnam(OWNER).pw_uid
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((node.state_dir / "jobs").stat().st_mode) == 0o1777

    denied = cli(cfg2, "cancel", job["id"])
    assert denied.returncode == 4, denied.stderr
    one_line_error(denied)
    assert cli(cfg1, "cancel", job["id"]).returncode == 0
    wait_for(lambda: state_of(job["id"]) == "cancelled", timeout_s=40, message="job cancelled")


def test_service_agent_serves_state_operations_only(node: SshdNode) -> None:
    """Through sudo, a user reaches state operations, never anything that would run, read or stream
    as the service account; a job's supervisor must be a process of the caller."""
    agent = _agent_path(node)
    other_uid = pwd.getpwnam(OTHER).pw_uid
    marker = Path(f"/tmp/gcu-svc-ran-{uuid.uuid4().hex}")
    requests = [
        {"id": 1, "op": "hello", "args": {"node": NODE}},
        {"id": 2, "op": "submit", "args": {"argv": ["touch", str(marker)], "gpus": 1}},
        {"id": 3, "op": "logs", "args": {"id": "j-abc"}},
        {"id": 4, "op": "snapshot", "args": {}},
        {"id": 5, "op": "stream", "args": {"interval_s": 1}},
        {"id": 6, "op": "submit_job", "args": {"job_id": "j-forged1", "gpus": 1, "supervisor": {
            "pid": 1, "start": 0, "boot_id": "x", "uid": other_uid}}},
        {"id": 7, "op": "ping", "args": {}},
        {"id": 8, "op": "adopt_job", "args": {"id": "j-abc", "supervisor": "not an identity"}},
    ]
    result = _as(OTHER, [SUDO, "-n", "-u", SERVICE, NODE_PYTHON, "-I", "-S", agent],
                 stdin="".join(json.dumps(r) + "\n" for r in requests))
    replies = {r["id"]: r for r in _replies(result.stdout)}
    assert replies[1]["ok"] and replies[7]["ok"], result
    for refused in (2, 3, 4, 5):
        assert replies[refused]["error"]["code"] == "invalid", replies[refused]
        assert "does not serve" in replies[refused]["error"]["message"]
    assert replies[6]["error"]["code"] == "permission", replies[6]
    assert replies[8]["error"]["code"] == "invalid", replies[8]
    assert "j-forged1" not in _raw_state(node).get("jobs", {})
    assert not marker.exists()


def test_the_caller_cannot_stop_or_kill_its_service_agent(node: SshdNode) -> None:
    """sudo relays its caller's signals to the command (SIGUSR1 kills it, ^Z stops it), and a stopped
    agent holding the state lock would stall everyone: the agent leaves sudo behind (sudo exits at
    once), runs in its own session, and the caller's signals cannot reach it."""
    agent = _agent_path(node)
    info = pwd.getpwnam(OTHER)
    proc = subprocess.Popen([SUDO, "-n", "-u", SERVICE, NODE_PYTHON, "-I", "-S", agent], user=info.pw_uid,
                            group=info.pw_gid, extra_groups=[grp.getgrnam(GROUP).gr_gid], cwd="/",
                            env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps({"id": 1, "op": "hello", "args": {"node": NODE}}).encode() + b"\n")
        proc.stdin.flush()
        hello = json.loads(proc.stdout.readline())
        agent_pid = hello["result"]["pid"]
        assert proc.wait(10) == 0  # sudo is gone; the agent still serves the pipes
        assert pwd.getpwuid(Path(f"/proc/{agent_pid}").stat().st_uid).pw_name == SERVICE
        assert os.getsid(agent_pid) == agent_pid
        for sig in ("STOP", "USR1", "KILL"):
            attempt = _as(OTHER, ["/bin/kill", f"-{sig}", str(agent_pid)])
            assert attempt.returncode != 0, (sig, attempt)
        proc.stdin.write(json.dumps({"id": 2, "op": "ping", "args": {}}).encode() + b"\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["result"] == {"pong": True}
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    wait_for(lambda: _ended(agent_pid), timeout_s=10, message="the agent to exit on EOF")


def _ended(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] in "ZX"
