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


def test_doctor_checks_local_files_first_and_exits_2_for_them(demo: DemoThread, tmp_path: Path) -> None:
    key = tmp_path / "id_open"
    key.write_bytes(demo.cluster.client_key_path.read_bytes())
    key.chmod(0o644)  # readable by others: ssh itself would refuse it
    missing_ssh_config = tmp_path / "no-such-ssh-config"
    config = tmp_path / "local.toml"
    config.write_text(demo.config_path.read_text().replace(
        "[defaults]\n", f'[defaults]\nssh_config = "{missing_ssh_config}"\n', 1).replace(
        f'identity_file = "{demo.cluster.client_key_path}"', f'identity_file = "{key}"'))
    code, report = _doctor(config)
    rows = _checks(report, "node-01")
    assert not rows["identity"]["ok"] and "mode 644" in rows["identity"]["detail"]
    assert rows["identity"]["fix"] == f"chmod 600 {key}"
    assert not rows["ssh_config"]["ok"] and str(missing_ssh_config) in rows["ssh_config"]["detail"]
    assert rows["known_hosts"]["ok"], rows["known_hosts"]
    assert code == 2, "a local file problem is a config problem: exit 2, never 1"


def test_doctor_checks_the_cloud_credentials(tmp_path: Path) -> None:
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True) as demo:
        code, report = _doctor(demo.config_path)
        assert code == 0, report
        assert [(r["check"], r["ok"]) for r in report["cloud"]] == [("aws", True)], report["cloud"]
        text = demo.config_path.read_text()
        endpoint = next(ln for ln in text.splitlines() if ln.startswith("endpoint_url"))
        closed = tmp_path / "closed.toml"
        closed.write_text(text.replace(endpoint, 'endpoint_url = "http://127.0.0.1:9"'))
        code, report = _doctor(closed)
        assert not report["cloud"][0]["ok"] and "endpoint" in report["cloud"][0]["detail"], report["cloud"]
        assert code == 5
    no_credentials = tmp_path / "aws.toml"
    no_credentials.write_text('[cloud.aws]\nregion = "us-east-1"\n')
    env = (("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", ""), ("AWS_CONFIG_FILE", str(tmp_path / "none")),
           ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none")), ("AWS_EC2_METADATA_DISABLED", "true"))
    code, report = _doctor(no_credentials, *env)
    assert not report["cloud"][0]["ok"] and "no credentials" in report["cloud"][0]["detail"]
    assert code == 2
