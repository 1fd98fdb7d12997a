"""`doctor` and the first run (issue 13 item 4): read-only commands never create a node's state dir;
a node without one says so, with the fix, in `status`, `doctor` and a `reserve` that cannot make it;
`doctor` checks the local files and `[cloud.aws]` too and exits with the contract's codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import run_cli


def _doctor(config: Path, *env_pairs: tuple[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_cli("doctor", "--json", config=config, env=dict(env_pairs))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _checks(report: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for n in report["nodes"] if n["node"] == node for c in n["checks"]}


def test_read_only_commands_leave_a_missing_state_dir_missing(demo: DemoThread) -> None:
    state_dir = demo.cluster.nodes["node-01"].state_dir
    shutil.rmtree(state_dir)
    config = demo.config_path

    status = run_cli("status", "--json", config=config)
    assert status.returncode == 0, status.stderr
    node = {n["name"]: n for n in json.loads(status.stdout)["nodes"]}["node-01"]
    assert node["reachable"]
    note = " ".join(node["warnings"])
    assert f"no state dir {state_dir}" in note and "the first reserve" in note, node["warnings"]
    assert not state_dir.exists(), "status created the state dir"
    human = run_cli("status", config=config)
    assert human.returncode == 0 and f"no state dir {state_dir}" in human.stderr, human.stderr

    for argv in (("reservations", "--json"), ("jobs", "--json")):
        assert run_cli(*argv, config=config).returncode == 0
        assert not state_dir.exists(), f"{argv[0]} created the state dir"

    code, report = _doctor(config)
    row = _checks(report, "node-01")["state_dir"]
    assert not row["ok"] and f"no state dir {state_dir}" in row["detail"], row
    assert f"install -d -m 2775 -g gpu {state_dir}" in row["fix"], row
    assert code == 5  # a node that cannot take a change: the contract's 5, never 1
    assert not state_dir.exists(), "doctor created the state dir"

    # A change may create it (cooperative mode, as before).
    reserve = run_cli("reserve", "--gpus", "1", "--node", "node-01", "--json", config=config)
    assert reserve.returncode == 0, reserve.stderr
    assert (state_dir / "state.json").is_file()


def test_reserve_that_cannot_create_the_state_dir_names_it_and_the_fix(demo: DemoThread, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state_dir = blocker / "state"  # its parent is a file: no one can create it, root included
    text = demo.config_path.read_text().replace(
        f'state_dir = "{demo.cluster.nodes["node-01"].state_dir}"', f'state_dir = "{state_dir}"')
    config = tmp_path / "blocked.toml"
    config.write_text(text)
    for argv in (("reserve", "--gpus", "1", "--node", "node-01"),
                 ("submit", "--gpus", "1", "--node", "node-01", "--", "true")):
        result = run_cli(*argv, config=config)
        assert result.returncode == 5, (argv, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"cannot create the state dir {state_dir}" in lines[0], lines[0]
        assert f"sudo install -d -m 2775 -g gpu {state_dir}" in lines[0], lines[0]
