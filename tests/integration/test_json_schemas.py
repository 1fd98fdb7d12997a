"""Every `--json` document of the CLI validates against its JSON Schema in gpuconsole/schemas/
(one per command), run against the demo's real nodes and moto EC2. The schemas pin the fields a
script may rely on; fields are only ever added, so objects stay open to more."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from gpuconsole.cli.parser import build_parser
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import REPO, cli_json, run_cli, wait_for

pytestmark = pytest.mark.timeout(180)
SCHEMAS = REPO / "gpuconsole" / "schemas"


def _registry() -> Registry[Any]:
    resources = [Resource.from_contents(json.loads(p.read_text())) for p in SCHEMAS.glob("*.schema.json")]
    return Registry().with_resources((r.id(), r) for r in resources if r.id() is not None)  # type: ignore[misc]


def check(name: str, document: Any) -> None:
    """Validate `document` against `<name>.schema.json` (raises with the failing path)."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, registry=_registry(),
                                    format_checker=jsonschema.FormatChecker()).validate(document)


def _json_commands() -> set[str]:
    """Every command with a --json flag, as schema names (`cloud up` → `cloud-up`)."""
    found: set[str] = set()

    def walk(parser: Any, prefix: str) -> None:
        for action in parser._actions:  # argparse has no public walk of its tree
            if action.dest == "json" and prefix:
                found.add(prefix)
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix}-{name}" if prefix else name)

    walk(build_parser(), "")
    return found


def test_every_json_command_has_a_schema() -> None:
    missing = _json_commands() - {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert not missing, f"commands with --json but no schema in gpuconsole/schemas: {sorted(missing)}"


@pytest.fixture
def cloud_demo(tmp_path: Path) -> Iterator[DemoThread]:
    with DemoThread(tmp_path / "demo", nodes=1, gpus=2, cloud=True, boot_s=0.3) as demo:
        yield demo


def test_every_json_document_validates_against_its_schema(cloud_demo: DemoThread, tmp_path: Path) -> None:
    config = cloud_demo.config_path
    grant = cli_json("reserve", "--gpus", "1", config=config)
    check("reserve", grant)
    check("renew", cli_json("renew", grant["id"], "--for", "1h", config=config))
    submitted = run_cli("submit", "--gpus", "1", "--name", "schema", "--json", "--", "sleep", "60", config=config)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    check("submit", job)
    listing = cli_json("reservations", config=config)
    check("reservations", listing)
    assert {r["kind"] for r in listing["reservations"]} <= {"reservation", "job"}
    # the same fields for a grant in reserve, renew and reservations
    listed = next(r for r in listing["reservations"] if r["id"] == grant["id"])
    assert set(grant) - {"generated_at"} <= set(listed)
    status = cli_json("status", config=config)
    check("status", status)
    check("jobs", cli_json("jobs", config=config))
    check("cancel", cli_json("cancel", job["id"], config=config))
    check("doctor", cli_json("doctor", config=config))
    up = run_cli("cloud", "up", "--gpus", "1", "--yes", "--json", config=config)
    if up.returncode == 2 and "--yes" in up.stderr:  # before `cloud up` took --yes
        up = run_cli("cloud", "up", "--gpus", "1", "--json", config=config)
    assert up.returncode == 0, up.stderr
    check("cloud-up", json.loads(up.stdout))
    check("cloud-ls", cli_json("cloud", "ls", "--all", config=config))
    instance = json.loads(up.stdout)["instances"][0]["id"]
    down = run_cli("cloud", "down", instance, "--force", "--json", config=config)
    if down.returncode == 2 and "--force" in down.stderr:
        down = run_cli("cloud", "down", instance, "--json", config=config)
    assert down.returncode == 0, down.stderr
    check("cloud-down", json.loads(down.stdout))
    released = run_cli("release", grant["id"], "r-nosuch", "--json", config=config)
    assert released.returncode == 6
    document = json.loads(released.stdout)
    check("release", document)
    assert [(r["id"], r["ok"]) for r in document["results"]] == [(grant["id"], True), ("r-nosuch", False)]


def test_status_watch_json_lines_and_watch_alerts_validate(demo: DemoThread, tmp_path: Path) -> None:
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "1", "--node", "node-01", config=config)
    watch = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(config), "status", "--json",
                              "--watch", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert watch.stdout is not None
        lines = [watch.stdout.readline() for _ in range(2)]
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    for line in lines:
        check("status", json.loads(line))
    flags = ("watch", "--once", "--json", "--idle-minutes", "0.01", "--state-file", str(tmp_path / "s.json"))

    def alerts() -> list[Any]:
        result = run_cli(*flags, config=config)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    found = wait_for(alerts, timeout_s=20, interval_s=0.1, message="an idle alert")
    assert found[0]["reservation"] == grant["id"]
    for alert in found:
        check("watch", alert)


@pytest.mark.parametrize("broken", [
    lambda d: d.pop("generated_at"),
    lambda d: d.update(generated_at="yesterday"),
    lambda d: d["reservations"][0].pop("cuda_visible_devices"),
    lambda d: d["reservations"][0].update(gpus="0,1"),
    lambda d: d.update(errors=[{"node": "n"}]),
])
def test_a_schema_rejects_a_missing_or_mistyped_field(broken: Any) -> None:
    document = {
        "generated_at": "2026-12-01T04:52:31Z", "queue": [], "errors": [],
        "reservations": [{"id": "r-1", "node": "n", "gpus": [0], "owner": "u", "priority": "normal",
                          "state": "active", "created_at": "2026-12-01T04:52:29Z", "expires_at": "2026-12-01T08:52:29Z",
                          "preemptible": False, "cuda_visible_devices": "0", "kind": "reservation", "token": 1}],
    }
    check("reservations", document)
    broken(document)
    with pytest.raises(jsonschema.ValidationError):
        check("reservations", document)
