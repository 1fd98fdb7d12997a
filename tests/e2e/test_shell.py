"""`gpuconsole shell` against the demo: in a real terminal (tmux) from the CLI and from the console
(`s`), and without a terminal for scripts."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import Tmux, cli_json, run_cli, wait_for


def needs_tmux(test: Any) -> Any:
    """A real-terminal test: marked `tmux`, skipped where tmux is missing."""
    return pytest.mark.tmux(pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")(test))


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    yield session
    session.kill()


def _gc(config: Path, *args: str) -> str:
    """A shell command line that runs gpuconsole, then shows its exit status and stays."""
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(config), *args]
    return f"TERM=xterm-256color {shlex.join(argv)}; echo EXITED=$?; sleep 120"


def _reservations(config: Path) -> list[dict[str, Any]]:
    return list(cli_json("reservations", config=config)["reservations"])


@needs_tmux
def test_shell_in_a_terminal_has_the_gpus_is_renewed_and_released_on_exit(demo: DemoThread, tmux: Tmux) -> None:
    """A login shell on a pty with the reservation's CUDA_VISIBLE_DEVICES; the lease (6 s) moves on
    while attached; `exit 7` ends the command with 7 and the reservation is gone."""
    config = demo.config_path
    tmux.start(_gc(config, "shell", "--gpus", "2", "--for", "6s"))
    tmux.wait_for("renewed while attached")
    (held,) = wait_for(lambda: _reservations(config), message="the shell's reservation")
    assert len(held["gpus"]) == 2
    tmux.line("echo MARK-$CUDA_VISIBLE_DEVICES-$GPUCONSOLE_RESERVATION-$(tty)")
    tmux.wait_for(f"MARK-{held['cuda_visible_devices']}-{held['id']}-/dev/")  # on a pty, from the node's record
    first = held["expires_at"]
    wait_for(lambda: [r for r in _reservations(config) if r["id"] == held["id"] and r["expires_at"] > first],
             timeout_s=10, interval_s=0.5, message="the lease to be renewed past its first end")
    tmux.line("exit 7")
    screen = tmux.wait_for("EXITED=")
    assert "EXITED=7" in screen
    assert f"released {held['id']}" in screen
    assert _reservations(config) == []


@needs_tmux
def test_a_closed_terminal_releases_the_reservation(demo: DemoThread, tmux: Tmux) -> None:
    """The terminal goes away while attached (SIGHUP): the shell's reservation is still released."""
    config = demo.config_path
    tmux.start(_gc(config, "shell", "--for", "10m"))
    tmux.wait_for("renewed while attached")
    (held,) = wait_for(lambda: _reservations(config), message="the shell's reservation")
    tmux.kill()
    wait_for(lambda: held["id"] not in {r["id"] for r in _reservations(config)}, timeout_s=15, interval_s=0.2,
             message="the release after SIGHUP")


def test_shell_command_without_a_terminal_passes_its_status_and_keep_keeps(demo: DemoThread) -> None:
    """`shell -- CMD` in a script: no pty, plain streams, the command's exit status; --keep keeps."""
    config = demo.config_path
    done = run_cli("shell", "--for", "30s", "--", "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES; echo oops >&2; exit 3",
                   config=config)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("CVD=") and done.stdout.strip() != "CVD=", done.stdout
    assert "oops" in done.stderr and "released" in done.stderr
    assert _reservations(config) == []
    kept = run_cli("shell", "--keep", "--", "true", config=config)
    assert kept.returncode == 0, kept.stderr
    (left,) = _reservations(config)
    assert f"kept {left['id']}" in kept.stderr
    again = run_cli("shell", "--reservation", left["id"], "--", "sh", "-c", "echo $GPUCONSOLE_RESERVATION",
                    config=config)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == left["id"]
    assert [r["id"] for r in _reservations(config)] == [left["id"]]  # left as it was found


def test_shell_refuses_an_unknown_or_expired_reservation(demo: DemoThread) -> None:
    """Exit 6 for a reservation that is not (or no longer) there; nothing is started."""
    config = demo.config_path
    unknown = run_cli("shell", "--reservation", "r-zzzzzz", "--", "true", config=config)
    assert unknown.returncode == 6, unknown.stderr
    short = cli_json("reserve", "--gpus", "1", "--for", "1s", config=config)
    wait_for(lambda: _reservations(config) == [], timeout_s=10, interval_s=0.2, message="the 1 s lease to lapse")
    expired = run_cli("shell", "--reservation", short["id"], "--", "true", config=config)
    assert expired.returncode == 6, expired.stderr
    assert expired.stderr.count("\n") == 1 and expired.stderr.startswith("gpuconsole:")


@needs_tmux
def test_console_s_opens_the_shell_and_exit_comes_back(demo: DemoThread, tmux: Tmux) -> None:
    """`s` suspends the console into a shell on the selected node; `exit` returns to the console with
    the reservation released, and the console still answers keys."""
    config = demo.config_path
    tmux.start(_gc(config))
    tmux.wait_for("node-02", timeout_s=40)
    tmux.wait_for("4/4", timeout_s=30)
    tmux.keys("s")
    tmux.wait_for("renewed while attached")
    (held,) = wait_for(lambda: _reservations(config), message="the console shell's reservation")
    assert held["node"] == "node-01"
    tmux.line("echo MARK-$CUDA_VISIBLE_DEVICES-$GPUCONSOLE_RESERVATION")
    tmux.wait_for(f"MARK-{held['cuda_visible_devices']}-{held['id']}")
    tmux.line("exit")
    tmux.wait_for("GPUs free", timeout_s=20)  # the console's node table again
    wait_for(lambda: _reservations(config) == [], timeout_s=10, message="the release")
    tmux.keys("q")
    assert "EXITED=0" in tmux.wait_for("EXITED=")
