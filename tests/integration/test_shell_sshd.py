"""`gpuconsole shell` through a real OpenSSH sshd with real OS users: the constant command under the
user's login shell, a real sshd pty, and ownership from the node-side login (exit 4 for another
user's reservation). Needs root (the module skips itself elsewhere, like test_sshd_multiuser)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import NODE, SshdNode

if (_why := sshd_fixture.missing_tools()) is not None:
    pytest.skip(_why, allow_module_level=True)

pytestmark = pytest.mark.sshd


def _ids(config: Path) -> set[str]:
    return {r["id"] for r in sshd_fixture.ok_json(config, "reservations")["reservations"]}


def test_another_users_reservation_is_refused_by_the_node(sshd_node: SshdNode) -> None:
    """gcutest2 asks for a shell in gcutest1's reservation: the node refuses (exit 4), one line."""
    cfg1, cfg2 = sshd_node.configs["gcutest1"], sshd_node.configs["gcutest2"]
    granted = sshd_fixture.ok_json(cfg1, "reserve", "--gpus", "1", "--node", NODE)
    try:
        denied = sshd_fixture.cli(cfg2, "shell", "--reservation", granted["id"], "--", "id")
        assert denied.returncode == 4, denied.stderr
        assert "belongs to gcutest1" in sshd_fixture.one_line_error(denied)
        assert denied.stdout == ""  # `id` never ran
        own = sshd_fixture.cli(cfg1, "shell", "--reservation", granted["id"], "--", "sh", "-c",
                               "echo $CUDA_VISIBLE_DEVICES $(id -un)")
        assert own.returncode == 0, own.stderr
        assert own.stdout.split() == [granted["cuda_visible_devices"], "gcutest1"]
    finally:
        sshd_fixture.cli(cfg1, "release", granted["id"])


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not in the output: {bytes(seen)!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            assert chunk, f"EOF before {needle!r}: {bytes(seen)!r}"
            seen += chunk


def test_a_shell_on_a_real_sshd_pty(sshd_node: SshdNode) -> None:
    """With a terminal, through OpenSSH's own pty: the login shell has the GPUs and a tty, its exit
    status comes back, and the reservation is released."""
    config = sshd_node.configs["gcutest1"]
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(config), "shell", "--for", "30s"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env=dict(os.environ, TERM="xterm"))
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"renewed while attached", seen)
        os.write(master, b"echo MARK-$CUDA_VISIBLE_DEVICES-$(tty)-$(id -un)\r")
        _read_until(master, b"-gcutest1", seen)
        assert b"MARK-" in seen and b"-/dev/pts/" in seen
        os.write(master, b"exit 5\r")
        _read_until(master, b"released", seen)
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert _ids(config) == set()
