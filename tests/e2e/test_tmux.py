"""The console in a real terminal: tmux on a private socket, keys sent one at a time, screen polled."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import Tmux

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    yield session
    session.kill()


def test_demo_in_a_real_terminal_reserve_and_quit(tmux: Tmux) -> None:
    """`gpuconsole demo` paints node names, reserves a GPU with keys, quits with the terminal restored."""
    tmux.start(
        f"TERM=xterm-256color {sys.executable} -m gpuconsole demo --nodes 2 --gpus 2; "
        "echo EXITED=$?; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(echo|icanon)'; echo STTY-DONE; sleep 120"
    )
    tmux.wait_for("node-02", timeout_s=40)
    tmux.wait_for("4 free", timeout_s=30)
    tmux.keys("r")
    tmux.wait_for("Reserve GPUs")
    tmux.keys("Enter")  # the GPU count field has focus with 1; Enter submits the dialog
    tmux.wait_for("1 reserved", timeout_s=30)
    tmux.keys("q")
    screen = tmux.wait_for("STTY-DONE", timeout_s=30)  # stty's lines are printed after EXITED=
    assert "EXITED=0" in screen
    lines = screen.split()
    assert "echo" in lines and "icanon" in lines  # not "-echo"/"-icanon": the tty is back to cooked mode
    assert "node-01" not in screen  # the alternate screen is gone
