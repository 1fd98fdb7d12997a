"""The console in real terminals of 80×24, 100×30 and 160×48 (issue 13, Must show): one `gpuconsole
demo` per size, read off the screen: the startup message (from the raw output, so a fast first answer
cannot hide it), the holder column with the time left, whole reservation ids and lease ends as people
read them, the keys on a confirmation, and the filter's indicator and its clearing."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Tmux, run_cli

pytestmark = [pytest.mark.tmux, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")]


@pytest.fixture(params=[(80, 24), (100, 30), (160, 48)], ids=lambda size: f"{size[0]}x{size[1]}")
def sized(request: pytest.FixtureRequest) -> tuple[int, int]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(raw=tmp_path / "raw")
    yield session
    session.kill()


def test_console_reads_well_at_this_size(sized: tuple[int, int], tmux: Tmux, tmp_path: Path) -> None:
    width, height = sized
    demo_dir = tmp_path / "demo"
    tmux.start(f"TERM=xterm-256color exec {sys.executable} -m gpuconsole demo --nodes 4 --gpus 2 --no-cloud "
               f"--dir {demo_dir}", cols=width, rows=height)
    tmux.wait_raw("starting the demo: 4 nodes × 2 GPUs…", timeout_s=20)  # before the cluster is up
    tmux.wait_raw("connecting to 4 nodes…", timeout_s=40)  # the first frames, before any node answered
    tmux.wait_for("4/4 up", timeout_s=30)
    screen = tmux.screen()
    assert "reservation" in screen  # the GPU panel's holder column
    assert ("net rx/tx" in screen) == (width >= 100)

    # Reserve on the highlighted node (the dialog pre-selects it): the holder shows who and how long.
    tmux.keys("r")
    tmux.wait_for("Reserve GPUs")
    tmux.keys("Enter")
    user = getpass.getuser()
    screen = tmux.wait_for("m left", timeout_s=30)
    assert re.search(rf"{re.escape(user)} · 3h5\dm left", screen), screen
    listed = json.loads(run_cli("reservations", "--json", config=demo_dir / "config.toml").stdout)
    rid = listed["reservations"][0]["id"]

    # The Reservations tab: the whole id and when the lease ends, as people read it.
    tmux.keys("Tab", "Tab", "Right")
    ends = r"until \d\d:\d\d UTC \(in 3h5\dm\)" if width >= 100 else r"3h5\dm left"
    tmux.wait_re(rf" {rid}  node-01 .*{user} .* {ends}")

    # A confirmation names its keys; n keeps the reservation.
    tmux.keys("x")
    screen = tmux.wait_for("(n/esc)")
    assert "Release (y)" in screen and "Keep it (n/esc)" in screen
    tmux.keys("n")
    tmux.wait_for("(n/esc)", gone=True)

    # The filter shows that it is active; esc clears it.
    tmux.keys("/")
    tmux.wait_for("filter nodes by name")
    tmux.keys("0", "2", "Enter")
    screen = tmux.wait_for("filter: 02")
    assert "1 of 4" in screen
    tmux.keys("Escape")
    tmux.wait_for("filter: 02", gone=True)

    tmux.keys("q")
    tmux.wait_for("4/4 up", gone=True, timeout_s=20)
