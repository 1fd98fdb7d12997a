"""The demo's SSH server forwards a command's whole output before its exit status (issue 14): every
peer measured against the demo (pdsh, OpenSSH, gpuconsole) gets every line."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from gpuconsole.demo.cluster import DemoThread

LINES = 22_000  # `seq` prints ~121 KB: more than the client's 64 KiB window, less than twice it


class _Collect(asyncssh.SSHClientSession[bytes]):
    """Keeps what arrives; reading is paused and resumed on its channel."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.chunks.append(data)


def test_the_exit_status_follows_all_output_for_a_slow_reader(demo: DemoThread) -> None:
    """A client that reads nothing yet (its window full) gets no exit status while output is still
    unsent; once it reads, it gets every line and then the status. (The server sent the status
    ahead of up to 64 KiB of queued output, and cut a reader that waited more than 5 s.)"""
    node = demo.cluster.nodes["node-01"]

    async def run() -> tuple[bool, bytes, int | None]:
        async with asyncssh.connect("127.0.0.1", port=node.port, client_keys=[str(demo.cluster.client_key_path)],
                                    known_hosts=str(demo.cluster.known_hosts_path), window=65536) as conn:
            chan, session = await conn.create_session(_Collect, f"seq 1 {LINES}; echo END", encoding=None)
            chan.pause_reading()  # the channel keeps what arrives and opens no more window
            deadline = time.monotonic() + 1.5  # the command itself is done in well under that
            while chan.get_exit_status() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            early = chan.get_exit_status() is not None
            chan.resume_reading()
            await chan.wait_closed()
            assert isinstance(session, _Collect)
            return early, b"".join(session.chunks), chan.get_exit_status()

    early, out, status = asyncio.run(run())
    assert not early, "exit status sent while output was still unsent"
    assert out.splitlines()[-2:] == [str(LINES).encode(), b"END"] and len(out.splitlines()) == LINES + 1
    assert status == 0


@pytest.mark.skipif(shutil.which("pdsh") is None or shutil.which("ssh") is None, reason="pdsh/ssh not installed")
def test_pdsh_over_openssh_gets_every_line_from_64_nodes(
    demo_factory: Callable[..., DemoThread], tmp_path: Path,
) -> None:
    cluster = demo_factory(nodes=64, gpus=1)
    c = cluster.cluster
    config = tmp_path / "ssh_config"
    config.write_text("".join(
        f"Host {n.name}\n  HostName 127.0.0.1\n  Port {n.port}\n  HostKeyAlias [127.0.0.1]:{n.port}\n"
        f"  IdentityFile {c.client_key_path}\n  IdentitiesOnly yes\n  UserKnownHostsFile {c.known_hosts_path}\n"
        f"  StrictHostKeyChecking yes\n  BatchMode yes\n" for n in c.nodes.values()))
    env = dict(os.environ, PDSH_SSH_ARGS=f"-F {config} %h", PDSH_RCMD_TYPE="ssh")
    result = subprocess.run(["pdsh", "-f", "64", "-w", "node-[01-64]", "seq 1 64"],
                            capture_output=True, text=True, env=env, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert sorted(lines) == sorted(f"{n.name}: {i}" for n in c.nodes.values() for i in range(1, 65))
