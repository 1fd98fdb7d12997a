"""Helpers the tests share: run the real CLI, read its JSON, poll with a deadline, submit jobs.

Test modules import these from here (never from conftest.py or from one another); conftest.py holds
only fixtures and the session's leftover-process check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, config: Path | None = None, timeout_s: float = 60,
            env: dict[str, str] | None = None, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `gpuconsole` entry point in a fresh process."""
    argv = [sys.executable, "-m", "gpuconsole"]
    if config is not None:
        argv += ["--config", str(config)]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout_s,
                          env=full_env, input=input_text, stdin=None if input_text else subprocess.DEVNULL)


def cli_json(*args: str, config: Path) -> Any:
    """Run a `--json` command that must succeed and return its parsed stdout."""
    result = run_cli(*args, "--json", config=config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05,
             message: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


def jobs_by_name(config: Path) -> dict[str, dict[str, Any]]:
    """`jobs --json`, keyed by job name."""
    return {j["name"]: j for j in cli_json("jobs", config=config)["jobs"]}


def submit_job(config: Path, name: str, *flags: str, argv: list[str]) -> dict[str, Any]:
    """`submit --name NAME FLAGS… --json -- ARGV…`, which must succeed; returns its JSON."""
    result = run_cli("submit", "--name", name, "--json", *flags, "--", *argv, config=config)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))
