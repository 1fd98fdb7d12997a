"""The agent program is sent only to a node that lacks a verified copy (issue 14, item 2).

The constant bootstrap reads the program's sha256 first and runs the user's cached copy only when it
hashes to it and sits, as a file of the user that no one else can write, in a private dir that is
no link; otherwise it asks, and the client sends the program. Real agents on the demo's loopback
SSH nodes; the bytes counted are those the client wrote to the agent's stdin.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.node import loader
from gpuconsole.ssh import bundle
from gpuconsole.ssh.connection import NodeConnection
from tests.helpers import hostile_command

NODE_PYTHON = os.environ.get("GPUCONSOLE_TEST_NODE_PYTHON") or sys.executable


def _cache_dir() -> Path:
    return Path(os.environ["HOME"]) / ".cache" / "gpuconsole"


def _program_file() -> Path:
    digest = bundle.agent_digest_line().decode().strip().removeprefix("sha256:")
    return _cache_dir() / f"agent-{digest}.py"


async def _connect(demo: DemoThread) -> tuple[int, dict[str, object]]:
    """Bytes the client wrote to start the agent and say hello, and the agent's hello."""
    conn = await NodeConnection.open(load_config(str(demo.config_path)).node("node-01"))
    try:
        return conn.sent_bytes, conn.hello
    finally:
        await conn.close()


def _plant_marshal(directory: Path, marker: Path) -> Path:
    """A compiled-code cache whose every module writes `marker`: what the agent must never load
    from a file it does not trust. Written by the node's own interpreter, so it could load it."""
    module = f"open({str(marker)!r}, 'a').write(__name__)\n"
    name = f"{directory}/agent-{loader.digest(bundle._sources())}-"
    script = (
        "import marshal, sys\n"
        f"codes = dict((n, compile({module!r}, n, 'exec')) for n in {loader.MODULES!r})\n"
        f"path = {name!r} + sys.implementation.cache_tag + '.marshal'\n"
        "open(path, 'wb').write(marshal.dumps(codes))\n"
        "print(path)\n"
    )
    return Path(subprocess.run([NODE_PYTHON, "-c", script], check=True, capture_output=True,
                               text=True).stdout.strip())


async def test_second_connection_does_not_send_the_program(demo: DemoThread) -> None:
    """The first start stores the program (0600 in a 0700 dir); the second sends its digest and hello only."""
    first_bytes, hello = await _connect(demo)
    again_bytes, again = await _connect(demo)
    assert len(bundle.agent_program()) > first_bytes > len(bundle.agent_program_deflated()) > 20_000  # sent deflated
    assert again_bytes < 2_000, again_bytes
    assert again["agent_digest"] == hello["agent_digest"]
    program = _program_file()
    assert program.read_bytes() == bundle.agent_program()
    assert stat.S_IMODE(program.stat().st_mode) == 0o600
    assert stat.S_IMODE(_cache_dir().stat().st_mode) == 0o700


async def test_a_cached_copy_that_does_not_hash_to_the_digest_is_never_run(demo: DemoThread, tmp_path: Path) -> None:
    await _connect(demo)
    marker = tmp_path / "ran"
    program = _program_file()
    program.write_text(f"open({str(marker)!r}, 'w').write('planted')\n")  # still ours, still 0600
    sent, hello = await _connect(demo)
    assert hello["state_dir_error"] is None
    assert not marker.exists()
    assert sent > len(bundle.agent_program_deflated())  # asked for the program, and stored it again
    assert program.read_bytes() == bundle.agent_program()


async def test_files_others_can_write_are_neither_run_nor_loaded(demo: DemoThread, tmp_path: Path) -> None:
    """A right-hash program copy others can write is not used; nor is a compiled-code cache that
    others can write (its code would run unchecked: there is no hash to check it against)."""
    await _connect(demo)
    program = _program_file()
    program.chmod(0o666)
    marker = tmp_path / "ran"
    planted = _plant_marshal(_cache_dir(), marker)
    planted.chmod(0o646)
    sent, hello = await _connect(demo)
    assert hello["state_dir_error"] is None
    assert not marker.exists()
    assert sent > len(bundle.agent_program_deflated())
    assert stat.S_IMODE(program.stat().st_mode) == 0o600  # stored again, private


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
async def test_a_copy_owned_by_another_user_is_not_run(demo: DemoThread) -> None:
    await _connect(demo)
    program = _program_file()
    os.chown(program, 65534, 65534)
    sent, _ = await _connect(demo)
    assert sent > len(bundle.agent_program_deflated())
    assert program.stat().st_uid == os.geteuid()


async def test_a_cache_dir_that_is_a_link_is_refused(demo: DemoThread, tmp_path: Path) -> None:
    """Through a link, nothing is read (a right-hash copy or a compiled-code cache) or written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / _program_file().name).write_bytes(bundle.agent_program())
    (elsewhere / _program_file().name).chmod(0o600)
    marker = tmp_path / "ran"
    _plant_marshal(elsewhere, marker)
    _cache_dir().parent.mkdir(parents=True, exist_ok=True)
    _cache_dir().symlink_to(elsewhere)
    before = sorted(os.listdir(elsewhere))
    for _ in range(2):
        sent, hello = await _connect(demo)
        assert hello["state_dir_error"] is None
        assert sent > len(bundle.agent_program_deflated())
    assert not marker.exists()
    assert sorted(os.listdir(elsewhere)) == before


async def test_a_node_that_keeps_asking_gets_the_program_once(tmp_path: Path) -> None:
    """The program goes out at most once per connection, and only before hello's answer."""
    with DemoThread(tmp_path / "demo", nodes=1, gpus=1,
                    command_overrides={"node-01": hostile_command("need-again")}) as demo:
        conn = await NodeConnection.open(load_config(str(demo.config_path)).node("node-01"))
        try:
            await conn.request("capacity")  # after hello the node asked once more: no answer to that
            sent = conn.sent_bytes
        finally:
            await conn.close()
    assert len(bundle.agent_program()) < sent < 2 * len(bundle.agent_program())


def test_the_command_line_stays_one_csh_safe_line() -> None:
    """No newline and no `!` (csh's history) in the bootstrap, for any login shell."""
    for text in (bundle.remote_command("/usr/bin/python3"), loader.BOOTSTRAP):
        assert "\n" not in text and "!" not in text
