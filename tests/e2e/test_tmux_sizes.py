"""The console in real terminals of 80×24, 100×30 and 160×48 (issue 13, Must show): one `gpuconsole
demo` per size, read off the screen: the startup message (from the raw output, so a fast first answer
cannot hide it), the holder column with the time left, whole reservation ids and lease ends as people
read them, the keys on a confirmation, and the filter's indicator and its clearing."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run_cli

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


class SizedTmux:
    """A tmux server of our own (never the user's) with one session of the given size, whose raw
    output is recorded from before the command starts."""

    def __init__(self, root: Path, width: int, height: int) -> None:
        self.socket = f"gcsize-{uuid.uuid4().hex[:8]}"
        self.root = root
        self.size = (width, height)
        self.raw = root / "raw"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10, check=False).stdout

    def start(self, command: str) -> None:
        go = self.root / "go"
        waiting = f"while [ ! -e {go} ]; do sleep 0.05; done; {command}"
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", "gc", "-x", str(self.size[0]),
                        "-y", str(self.size[1]), waiting], check=True, timeout=10)
        self.run("pipe-pane", "-o", "-t", "gc", f"cat >> {self.raw}")
        go.touch()

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "gc")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", "gc", key)

    def wait_for(self, text: str, timeout_s: float = 30, gone: bool = False) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if (text in screen) != gone:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} {'still' if gone else 'not'} on screen after {timeout_s}s:\n{screen}")
            time.sleep(0.1)

    def wait_re(self, pattern: str, timeout_s: float = 30) -> str:
        """The screen once ``pattern`` matches it (a toast may cover a row for a few seconds)."""
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, screen := self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen after {timeout_s}s:\n{screen}")
            time.sleep(0.1)
        return screen

    def wait_raw(self, text: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in (self.raw.read_bytes().decode("utf-8", "replace") if self.raw.exists() else ""):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never written to the terminal in {timeout_s}s")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)


@pytest.fixture(params=[(80, 24), (100, 30), (160, 48)], ids=lambda size: f"{size[0]}x{size[1]}")
def sized(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SizedTmux]:
    session = SizedTmux(tmp_path, *request.param)
    yield session
    session.kill()


def test_console_reads_well_at_this_size(sized: SizedTmux) -> None:
    width, _ = sized.size
    demo_dir = sized.root / "demo"
    sized.start(f"TERM=xterm-256color exec {sys.executable} -m gpuconsole demo --nodes 4 --gpus 2 --no-cloud "
                f"--dir {demo_dir}")
    sized.wait_raw("connecting to 4 nodes…", timeout_s=40)  # the first frames, before any node answered
    sized.wait_for("4/4 up", timeout_s=30)
    screen = sized.screen()
    assert "reservation" in screen  # the GPU panel's holder column
    assert ("net rx/tx" in screen) == (width >= 100)

    # Reserve on the highlighted node (the dialog pre-selects it): the holder shows who and how long.
    sized.keys("r")
    sized.wait_for("Reserve GPUs")
    sized.keys("Enter")
    user = getpass.getuser()
    screen = sized.wait_for("m left", timeout_s=30)
    assert re.search(rf"{re.escape(user)} · 3h5\dm left", screen), screen
    listed = json.loads(run_cli("reservations", "--json", config=demo_dir / "config.toml").stdout)
    rid = listed["reservations"][0]["id"]

    # The Reservations tab: the whole id and when the lease ends, as people read it.
    sized.keys("Tab", "Tab", "Right")
    ends = r"until \d\d:\d\d UTC \(in 3h5\dm\)" if width >= 100 else r"3h5\dm left"
    sized.wait_re(rf" {rid}  node-01 .*{user} .* {ends}")

    # A confirmation names its keys; n keeps the reservation.
    sized.keys("x")
    screen = sized.wait_for("(n/esc)")
    assert "Release (y)" in screen and "Keep it (n/esc)" in screen
    sized.keys("n")
    sized.wait_for("(n/esc)", gone=True)

    # The filter shows that it is active; esc clears it.
    sized.keys("/")
    sized.wait_for("filter nodes by name")
    sized.keys("0", "2", "Enter")
    screen = sized.wait_for("filter: 02")
    assert "1 of 4" in screen
    sized.keys("Escape")
    sized.wait_for("filter: 02", gone=True)

    sized.keys("q")
    sized.wait_for("4/4 up", gone=True, timeout_s=20)
