"""End-to-end reservations through the real CLI, real SSH (asyncssh servers) and real agents."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpuconsole.cli.reservations import export_lines
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.answers import Grant
from tests.helpers import cli_json, run_cli, wait_for


def _free_gpus(config: Path) -> int:
    status = cli_json("status", config=config)
    return sum(1 for node in status["nodes"] for gpu in node["gpus"] if gpu["reservation"] is None)


def test_twenty_concurrent_reserves_get_disjoint_gpus(demo_factory: Callable[..., DemoThread]) -> None:
    """20 × `reserve --gpus 2` against 4 × 8 GPUs: 16 grants, all disjoint; 4 exit 3 in one line."""
    demo = demo_factory(nodes=4, gpus=8)
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path),
            "reserve", "--gpus", "2", "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(20)]
    outcomes = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    granted = [json.loads(out) for code, out, _ in outcomes if code == 0]
    refused = [(code, err) for code, _, err in outcomes if code != 0]
    assert len(granted) == 16, outcomes
    assert len(refused) == 4
    for code, err in refused:
        assert code == 3
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "free" in err
    pairs = [(g["node"], gpu) for g in granted for gpu in g["gpus"]]
    assert len(pairs) == 32 and len(set(pairs)) == 32
    assert {len(g["gpus"]) for g in granted} == {2}
    listed = cli_json("reservations", config=demo.config_path)
    assert sorted(r["id"] for r in listed["reservations"]) == sorted(g["id"] for g in granted)
    release = run_cli("release", *[g["id"] for g in granted], config=demo.config_path)
    assert release.returncode == 0, release.stderr
    assert _free_gpus(demo.config_path) == 32
    assert cli_json("reservations", config=demo.config_path)["reservations"] == []


def test_lease_for_2s_is_reclaimed_after_expiry(demo: DemoThread) -> None:
    """A `--for 2s` lease disappears on its own; its GPUs are grantable again."""
    grant = cli_json("reserve", "--gpus", "4", "--node", "node-01", "--for", "2s", config=demo.config_path)
    assert len(grant["gpus"]) == 4
    blocked = run_cli("reserve", "--gpus", "1", "--node", "node-01", config=demo.config_path)
    assert blocked.returncode == 3
    wait_for(lambda: cli_json("reservations", config=demo.config_path)["reservations"] == [],
             timeout_s=10, interval_s=0.3, message="lease expiry")
    again = cli_json("reserve", "--gpus", "4", "--node", "node-01", config=demo.config_path)
    assert sorted(again["gpus"]) == [0, 1, 2, 3]


def test_renew_with_stale_token_is_refused(demo: DemoThread) -> None:
    """Fencing: renewing with a token from an older grant fails with exit 6; the right one works."""
    grant = cli_json("reserve", "--gpus", "1", "--node", "node-02", "--for", "1h", config=demo.config_path)
    stale = run_cli("renew", grant["id"], "--token", str(grant["token"] - 1), "--for", "2h",
                    config=demo.config_path)
    assert stale.returncode == 6, stale.stderr
    assert "stale" in stale.stderr and "Traceback" not in stale.stderr
    good = cli_json("renew", grant["id"], "--token", str(grant["token"]), "--for", "2h",
                    config=demo.config_path)
    assert good["expires_at"] > grant["expires_at"]


def test_renew_after_expiry_is_refused(demo: DemoThread) -> None:
    """An expired grant cannot be revived by renew (exit 6)."""
    grant = cli_json("reserve", "--gpus", "1", "--for", "1s", config=demo.config_path)
    wait_for(lambda: cli_json("reservations", config=demo.config_path)["reservations"] == [],
             timeout_s=10, interval_s=0.2, message="lease expiry")
    late = run_cli("renew", grant["id"], "--token", str(grant["token"]), config=demo.config_path)
    assert late.returncode == 6, late.stderr


def test_reserve_wait_queues_and_is_granted_on_release(demo: DemoThread) -> None:
    """`--wait` shows the queue position and is granted as soon as the holder releases."""
    holder = cli_json("reserve", "--gpus", "4", "--node", "node-01", config=demo.config_path)
    other = cli_json("reserve", "--gpus", "4", "--node", "node-02", config=demo.config_path)
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path),
            "reserve", "--gpus", "2", "--wait", "--timeout", "60s", "--json"]
    waiter = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    wait_for(lambda: cli_json("reservations", config=demo.config_path)["queue"],
             timeout_s=20, message="the request to be queued")
    queue = cli_json("reservations", config=demo.config_path)["queue"]
    assert queue[0]["position"] == 1 and queue[0]["gpus_requested"] == 2
    assert run_cli("release", holder["id"], config=demo.config_path).returncode == 0
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    granted = json.loads(out)
    assert granted["node"] == queue[0]["node"] and len(granted["gpus"]) == 2
    # With --json its progress is JSON lines on stderr (stdout keeps the one grant): where it stood and why.
    progress = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert progress and progress[0]["event"] == "queued" and progress[0]["position"] == 1
    assert {b["id"] for b in progress[0]["blockers"]} <= {holder["id"], other["id"]}
    run_cli("release", granted["id"], other["id"], config=demo.config_path)


def test_reserve_wait_times_out_with_exit_3(demo: DemoThread) -> None:
    """A wait that is never served ends at --timeout with exit 3 and leaves no queued ticket."""
    full = [cli_json("reserve", "--gpus", "4", "--node", n, config=demo.config_path)
            for n in ("node-01", "node-02")]
    started = time.monotonic()
    result = run_cli("reserve", "--gpus", "1", "--wait", "--timeout", "2s", config=demo.config_path)
    assert result.returncode == 3, result.stderr
    assert "timed out" in result.stderr
    assert time.monotonic() - started < 15
    assert cli_json("reservations", config=demo.config_path)["queue"] == []
    run_cli("release", *[f["id"] for f in full], config=demo.config_path)


def test_release_mine_releases_only_own(demo: DemoThread) -> None:
    """`release --mine` ends the caller's reservations everywhere."""
    ids = [cli_json("reserve", "--gpus", "1", config=demo.config_path)["id"] for _ in range(3)]
    result = cli_json("release", "--mine", config=demo.config_path)
    assert sorted(r["id"] for r in result["released"]) == sorted(ids)
    assert cli_json("reservations", config=demo.config_path)["reservations"] == []


def test_concurrent_reserves_in_threads_never_double_allocate(demo: DemoThread) -> None:
    """Threads racing one node through separate processes: grants never overlap."""
    def one(_: int) -> subprocess.CompletedProcess[str]:
        return run_cli("reserve", "--gpus", "1", "--node", "node-01", "--json", config=demo.config_path)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    grants = [json.loads(r.stdout) for r in results if r.returncode == 0]
    assert len(grants) == 4
    assert sorted(g["gpus"][0] for g in grants) == [0, 1, 2, 3]
    assert all(r.returncode == 3 for r in results if r.returncode != 0)


def test_reserve_export_is_only_eval_lines_on_stdout(demo: DemoThread) -> None:
    # issue 13 item 2: eval "$(gpuconsole reserve --gpus 2 --export)" sets the two variables
    argv = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "gpuconsole", "--config",
                                              str(demo.config_path), "reserve", "--gpus", "2", "--export"))
    script = f'eval "$({argv})" && printf "%s|%s\\n" "$CUDA_VISIBLE_DEVICES" "$GPUCONSOLE_RESERVATION"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    devices, reservation = result.stdout.strip().split("|")
    held = cli_json("reservations", config=demo.config_path)["reservations"]
    assert [(r["id"], ",".join(map(str, r["gpus"]))) for r in held] == [(reservation, devices)]
    assert result.stderr.startswith(f"reserved {reservation} on ")  # the human line, not on stdout


def test_reserve_export_and_json_together_is_a_usage_error(demo: DemoThread) -> None:
    result = run_cli("reserve", "--gpus", "1", "--export", "--json", config=demo.config_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "--export and --json" in result.stderr


def test_export_lines_never_let_a_node_value_run_or_reach_the_screen(tmp_path: Path) -> None:
    owned = tmp_path / "owned"
    hostile = Grant(id=f"r-1'; touch {owned}; '", node="n", gpus=(0,), owner="u", expires_at="t",
                    token=1, cuda_visible_devices=f"0$(touch {owned})\x1b]0;title\x07")
    lines = export_lines(hostile)
    assert all("\x1b" not in line and "\x07" not in line for line in lines)
    probe = "; ".join(lines) + '; printf "%s\\n" "$CUDA_VISIBLE_DEVICES" "$GPUCONSOLE_RESERVATION"'
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, cwd="/")
    assert result.returncode == 0, result.stderr
    devices, reservation = result.stdout.splitlines()
    assert devices.startswith(f"0$(touch {owned})")  # taken literally, never run
    assert reservation == hostile.id
    assert not owned.exists()
