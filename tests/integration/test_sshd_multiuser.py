"""Two real OS users reach one node through a real OpenSSH sshd on 127.0.0.1.

Why: the demo cluster runs every session as the test process's own user, so it cannot show
that ownership comes from the node-side login, that a setgid group-writable state dir really
works for two users, or that OpenSSH (which runs the constant remote command through the
user's login shell) accepts what the client sends. These tests need root (useradd, sshd), so
the module skips itself elsewhere; CI runs as root with openssh-server installed.
"""

from __future__ import annotations

import contextlib
import grp
import json
import pwd
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.helpers import wait_for
from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import (  # shared with test_service_mode; names kept for importers
    GPUS,
    GROUP,
    NODE,
    NODE_PYTHON,
    SSHD,
    USERADD,
    USERS,
    SshdNode,
)
from tests.integration.sshd_fixture import write_key as _write_key

__all__ = ["GPUS", "NODE", "NODE_PYTHON", "SSHD", "USERADD", "SshdNode"]

if (_why := sshd_fixture.missing_tools()) is not None:
    pytest.skip(_why, allow_module_level=True)

pytestmark = pytest.mark.sshd


_cli = sshd_fixture.cli
_ok_json = sshd_fixture.ok_json
_one_line_error = sshd_fixture.one_line_error


def _listed_ids(config: Path) -> set[str]:
    listing = _ok_json(config, "reservations")
    return {r["id"] for r in listing["reservations"]}


def test_second_user_cannot_release_first_users_reservation(sshd_node: SshdNode) -> None:
    """Ownership is the node-side login: gcutest2 gets exit 4 on gcutest1's reservation."""
    cfg1, cfg2 = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    granted = _ok_json(cfg1, "reserve", "--gpus", "1", "--node", NODE)
    rid = granted["id"]
    assert granted["owner"] == "gcutest1"
    assert granted["node"] == NODE
    assert len(granted["gpus"]) == 1

    denied = _cli(cfg2, "release", rid)
    assert denied.returncode == 4, denied.stderr
    message = _one_line_error(denied)
    assert message.startswith("gpuconsole:")

    listing = _ok_json(cfg2, "reservations")
    mine = [r for r in listing["reservations"] if r["id"] == rid]
    assert len(mine) == 1, listing
    assert mine[0]["owner"] == "gcutest1"

    released = _cli(cfg1, "release", rid)
    assert released.returncode == 0, released.stderr
    wait_for(lambda: rid not in _listed_ids(cfg1), timeout_s=10,
             message=f"reservation {rid} to disappear")


def test_state_files_shared_by_group(sshd_node: SshdNode) -> None:
    """Both users write the same state dir: files stay group-writable, the lock is never removed."""
    cfg1, cfg2 = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    first = _ok_json(cfg1, "reserve", "--gpus", "1", "--node", NODE)
    second = _ok_json(cfg2, "reserve", "--gpus", "1", "--node", NODE)
    assert (first["owner"], second["owner"]) == ("gcutest1", "gcutest2")
    assert not set(first["gpus"]) & set(second["gpus"])
    for cfg, rid in ((cfg2, second["id"]), (cfg1, first["id"])):
        result = _cli(cfg, "release", rid)
        assert result.returncode == 0, result.stderr

    gid = grp.getgrnam(GROUP).gr_gid
    state_json = sshd_node.state_dir / "state.json"
    lock = sshd_node.state_dir / "lock"
    assert lock.is_file(), "the lock file must never be deleted"
    for path in (state_json, lock):
        info = path.stat()
        assert info.st_mode & stat.S_IWGRP, f"{path.name} mode {stat.filemode(info.st_mode)}"
        assert info.st_gid == gid, f"{path.name} group {info.st_gid}, want {GROUP}"
    owners = {pwd.getpwuid(p.stat().st_uid).pw_name for p in sshd_node.state_dir.iterdir()}
    assert owners <= set(USERS), owners
    data = json.loads(state_json.read_text())
    assert not [r for r in data.get("leases", {}) if r in (first["id"], second["id"])]


def test_status_json_over_openssh(sshd_node: SshdNode) -> None:
    """OpenSSH runs the constant command through the login shell; the agent still answers."""
    status = _ok_json(sshd_node.configs["gcutest2"], "status")
    nodes = {n["name"]: n for n in status["nodes"]}
    node = nodes[NODE]
    assert node["reachable"] is True, node.get("error")
    assert [g["index"] for g in node["gpus"]] == list(range(GPUS))


def test_wrong_host_key_is_refused(sshd_node: SshdNode) -> None:
    """A known_hosts entry with another key for [127.0.0.1]:PORT fails with exit 5."""
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    cfg = sshd_node.config("gcutest1", known_hosts_text=f"[127.0.0.1]:{sshd_node.port} {other}\n")
    result = _cli(cfg, "status", "--json")
    assert result.returncode == 5, result.stderr
    assert "host key" in _one_line_error(result)


def test_unknown_host_key_is_refused(sshd_node: SshdNode) -> None:
    """An empty known_hosts refuses the node every time: no trust on first use."""
    cfg = sshd_node.config("gcutest1", known_hosts_text="", name="empty")
    known_hosts = sshd_node.root / "known_hosts.empty"
    for _ in range(2):
        result = _cli(cfg, "reserve", "--gpus", "1", "--node", NODE, "--json")
        assert result.returncode == 5, result.stderr
        assert "host key" in _one_line_error(result)
        assert result.stdout == ""
    assert known_hosts.read_text() == ""
    assert not (Path.home() / ".ssh" / "known_hosts").exists()


def test_refused_auth(sshd_node: SshdNode) -> None:
    """A key that is not in the user's authorized_keys fails with exit 5 and says so."""
    stranger = sshd_node.root / "id_stranger"
    _write_key(stranger, asyncssh.generate_private_key("ssh-ed25519"))
    cfg = sshd_node.config("gcutest1", identity_file=stranger)
    result = _cli(cfg, "reserve", "--gpus", "1", "--node", NODE, "--json")
    assert result.returncode == 5, result.stderr
    assert "authentication" in _one_line_error(result).lower()


def test_hostile_arguments_travel_as_data(sshd_node: SshdNode) -> None:
    """Shell syntax in a node name or reservation id is never run, locally or on the node."""
    cfg = sshd_node.configs["gcutest1"]
    marker = Path(f"/tmp/gcu-pwned-{uuid.uuid4().hex}")  # a place the test users could write
    try:
        bad_node = _cli(cfg, "reserve", "--gpus", "1", "--node", f"x;touch {marker}", "--json")
        assert bad_node.returncode == 6, bad_node.stderr
        _one_line_error(bad_node)

        for hostile in (f"$(touch {marker})", f"`touch {marker}`", f"'; touch {marker}; '"):
            result = _cli(cfg, "release", hostile)
            assert result.returncode == 6, result.stderr
            _one_line_error(result)
        # The release lookups went over SSH to the node; the node is still healthy afterwards.
        status = _ok_json(cfg, "status")
        assert status["nodes"][0]["reachable"] is True
        assert not marker.exists()
    finally:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()


def test_jobs_run_as_their_owner_and_others_cannot_cancel(sshd_node: SshdNode) -> None:
    """A job submitted by gcutest1 runs as gcutest1; gcutest2's cancel is refused (exit 4)."""
    cfg1, cfg2 = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    def submit(config: Path, *argv: str) -> Any:
        result = _cli(config, "submit", "--gpus", "1", "--node", NODE, "--json", "--", *argv)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    job = submit(cfg1, "sh", "-c", "id -un; sleep 30")
    job_id = job["id"]
    assert job["owner"] == "gcutest1"
    other = submit(cfg2, "true")  # the shared jobs/ dir works for the second user too
    assert other["owner"] == "gcutest2"

    def state_of(jid: str) -> str:
        return {j["id"]: j["state"] for j in _ok_json(cfg1, "jobs")["jobs"]}[jid]

    wait_for(lambda: state_of(job_id) == "running", timeout_s=20, message="job running")
    wait_for(lambda: "gcutest1" in _cli(cfg1, "logs", job_id).stdout, timeout_s=10, message="job output")
    denied = _cli(cfg2, "cancel", job_id)
    assert denied.returncode == 4, denied.stderr
    _one_line_error(denied)
    assert state_of(job_id) == "running"
    assert _cli(cfg1, "cancel", job_id).returncode == 0
    wait_for(lambda: state_of(job_id) == "cancelled", timeout_s=30, message="job cancelled")
    wait_for(lambda: state_of(other["id"]) == "succeeded", timeout_s=30, message="other user's job done")


def test_watch_release_idle_never_releases_another_users_reservation(sshd_node: SshdNode, tmp_path: Path) -> None:
    """`watch --release-idle` as gcutest2 sees gcutest1's idle reservation, announces it, and at the
    end of the grace the node refuses the release (not the owner): logged once, never retried."""
    cfg1, cfg2 = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    rid = _ok_json(cfg1, "reserve", "--gpus", "1", "--node", NODE)["id"]
    flags = ("watch", "--once", "--json", "--release-idle", "--idle-minutes", "0.01", "--grace-minutes", "0.01",
             "--state-file", str(tmp_path / "watch.json"))
    runs: list[subprocess.CompletedProcess[str]] = []

    def watch_once() -> subprocess.CompletedProcess[str]:
        result = _cli(cfg2, *flags)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        runs.append(result)
        return result

    try:
        refused = wait_for(lambda: [x for x in watch_once().stderr.splitlines() if "not releasing" in x],
                           timeout_s=40, interval_s=0.1, message="the refused release")
        assert len(refused) == 1 and rid in refused[0] and "only its owner or an admin" in refused[0]
        alerts = [json.loads(line) for run in runs for line in run.stdout.splitlines()]
        warned = [a for a in alerts if a["kind"] == "idle_reservation" and a["reservation"] == rid]
        assert warned and warned[0]["owner"] == "gcutest1" and warned[0]["action"] == "will_release"
        assert not [a for a in alerts if a.get("action") == "released"]
        again = watch_once()
        assert "not releasing" not in again.stderr  # a refusal is remembered, not retried
        assert rid in _listed_ids(cfg1)
    finally:
        _cli(cfg1, "release", rid)


def test_another_users_job_output_is_never_written_raw(sshd_node: SshdNode) -> None:
    """`logs` gives a job's owner its output as written (colours, progress bars); another user gets
    it refused, or, where the node lets them read it, with every escape sequence made visible."""
    cfg1, cfg2 = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    submitted = _cli(cfg1, "submit", "--gpus", "1", "--node", NODE, "--json", "--",
                     "printf", "\\033]52;c;aGVsbG8=\\007done\\n")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    wait_for(lambda: "done" in _cli(cfg1, "logs", job_id).stdout, timeout_s=20, message="the job's output")
    assert "\x1b]52;c;aGVsbG8=\x07done" in _cli(cfg1, "logs", job_id).stdout  # the owner's own bytes
    other = _cli(cfg2, "logs", job_id)
    assert other.returncode in (0, 4), other.stderr
    assert "\x1b" not in other.stdout + other.stderr and "\x07" not in other.stdout + other.stderr
    if other.returncode == 0:
        assert "\\x1b]52;c;aGVsbG8=\\x07done" in other.stdout
    else:
        _one_line_error(other)
