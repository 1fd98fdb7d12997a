"""The console in a real terminal: tmux on a private socket, keys sent one at a time, screen polled."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


class Tmux:
    """A tmux server of our own (never the user's) with one 120×40 session."""

    def __init__(self) -> None:
        self.socket = f"gctest-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10, check=False).stdout

    def start(self, command: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", "gc", "-x", "120", "-y", "40",
                        command], check=True, timeout=10)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "gc")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", "gc", key)

    def wait_for(self, text: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on screen after {timeout_s}s:\n{screen}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)


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
