"""The stub that hands a command to the keeper's resident CLI (cli/forward.py) never hangs on, or is
taken in by, a resident that does not run the command: one that never answers (stopped) or turns it
down leaves the command to this process, with its signal handlers as they were."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuconsole.cli import forward as fw
from gpuconsole.core.rundir import config_tag


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A runtime dir with a short path (a Unix socket's path is limited to 107 bytes; pytest's
    tmp_path under xdist is longer)."""
    path = Path(tempfile.mkdtemp(prefix="gcfw-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[socket.socket, Path]:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("GPUCONSOLE_KEEPER", "1")
    (tmp_path / "gpuconsole").mkdir(mode=0o700)
    config = tmp_path / "c.toml"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "gpuconsole" / f"{config_tag(str(config))}.resident"))
    server.listen(1)
    return server, config


def test_a_resident_that_never_answers_leaves_the_command_here(short_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server, config = _listener(short_dir, monkeypatch)  # listening, never accepting: a stopped resident
    monkeypatch.setattr(fw, "ANSWER_TIMEOUT_S", 0.5)
    before = signal.getsignal(signal.SIGINT)
    try:
        started = time.monotonic()
        assert fw.forward(["--config", str(config), "status"]) is None
        assert time.monotonic() - started < 10
    finally:
        server.close()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_resident_that_declines_leaves_the_command_here(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, config = _listener(short_dir, monkeypatch)

    def decline() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1 << 16)
            conn.sendall(b"decline\n")

    thread = threading.Thread(target=decline, daemon=True)
    thread.start()
    try:
        assert fw.forward(["--config", str(config), "reserve", "--gpus", "1"]) is None
        thread.join(timeout=10)
        monkeypatch.setenv("GPUCONSOLE_KEEPER", "0")  # with the keeper off it does not even ask
        assert fw.forward(["--config", str(config), "status"]) is None
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    finally:
        server.close()
