"""Simulated nodes: one asyncssh server per node on 127.0.0.1, running commands through /bin/sh.

Each node has its own host key (written to the demo's known_hosts), its own state dir and a
GPUCONSOLE_SIM_NODE environment marker, so the real agent and the real protocol run unchanged and
simulated GPU load follows the processes started on that node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from gpuconsole.demo.ptysession import run_on_pty

LOOPBACK = "127.0.0.1"


@dataclass
class DemoNode:
    """One simulated node and its running server."""

    name: str
    gpus: int
    state_dir: Path
    host_key: asyncssh.SSHKey
    sim_key: str = ""  # GPUCONSOLE_SIM_NODE of this node: its name plus the cluster's tag
    port: int = 0
    cloud: bool = False  # an emulated EC2 instance: found by discovery, not listed in [[nodes]]
    server: asyncssh.SSHAcceptor | None = None
    children: set[asyncio.subprocess.Process] = field(default_factory=set)


# A command's output pipe that stays open and silent this long after the command exited (a
# background child holds it) is given up; output still on its way to a slow client never is.
PIPE_IDLE_S = 5.0


@dataclass
class _Progress:
    read_at: float = field(default_factory=time.monotonic)  # when a pump last got output
    writing: int = 0  # pumps waiting for the client to take what they wrote


async def _pump(source: asyncio.StreamReader, target: asyncssh.SSHWriter[bytes], progress: _Progress) -> None:
    """Copy a child's output stream to the SSH channel until EOF."""
    while chunk := await source.read(65536):
        progress.read_at = time.monotonic()
        target.write(chunk)
        progress.writing += 1
        try:
            await target.drain()
        finally:
            progress.writing -= 1


async def _forwarded(pumps: asyncio.Future[Any], progress: _Progress) -> None:
    """Wait until the pumps reach EOF, however slowly the client reads; stop only when every pump
    has waited PIPE_IDLE_S on a pipe with nothing in it."""
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(pumps), 0.25)
            return
        except TimeoutError:
            if progress.writing == 0 and time.monotonic() - progress.read_at > PIPE_IDLE_S:
                return


async def _closed(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Close the session and await asyncssh's redirect cleanup (queue joins), so no coroutine is
    left unawaited."""
    if not process.is_closing():
        process.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait_closed(), 5)


def marked_processes(sim_keys: set[str]) -> list[int]:
    """Pids of our processes whose environment carries one of these nodes' GPUCONSOLE_SIM_NODE
    marker: agents, supervisors (they run detached, in their own session) and their jobs."""
    wanted = {f"GPUCONSOLE_SIM_NODE={key}".encode() for key in sim_keys}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                items = set(handle.read().split(b"\0"))
        except OSError:
            continue
        if items & wanted:
            found.append(int(entry))
    return found


def kill_marked(sim_keys: set[str]) -> None:
    """SIGKILL every process marked for these nodes (what a stopped node leaves behind)."""
    for pid in marked_processes(sim_keys):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class DemoCluster:
    """N simulated SSH nodes with G GPUs each, plus the client key, known_hosts and config."""

    def __init__(self, root: Path, nodes: int = 4, gpus: int = 8, *, prefix: str = "node",
                 seed: int | None = None) -> None:
        self.root = Path(root)
        # `demo --seed`: the simulated GPUs (model, UUIDs, temperature and power jitter) derive from
        # the node's name and this seed instead of from the demo directory, so runs are reproducible.
        self.seed = seed
        self.node_count = nodes
        self.gpus = gpus
        self.prefix = prefix
        self.nodes: dict[str, DemoNode] = {}
        self.client_key_path = self.root / "id_ed25519"
        self.known_hosts_path = self.root / "known_hosts"
        self.authorized_keys_path = self.root / "authorized_keys"
        self.config_path = self.root / "config.toml"
        self.host_map_path = self.root / "cloud-hosts.json"
        self.cloud_section = ""  # the [cloud.aws] table when an EC2 emulator is attached
        # Test-only: node name -> shell command run instead of the one the client sent (a fake agent
        # that answers with wrong types plays a broken or hostile node; see tests/fixtures/).
        self.command_overrides: dict[str, str] = {}
        # Test-only: extra environment for every agent (e.g. GPUCONSOLE_FAULTS for the nemesis).
        self.agent_env: dict[str, str] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    def _node_name(self, index: int) -> str:
        width = max(2, len(str(self.node_count)))
        return f"{self.prefix}-{index + 1:0{width}d}"

    async def start(self) -> Path:
        """Create keys, start every node, write known_hosts and config; return the config path."""
        self.root.mkdir(parents=True, exist_ok=True)
        client_key = asyncssh.generate_private_key("ssh-ed25519", comment="gpuconsole-demo")
        client_key.write_private_key(str(self.client_key_path))
        os.chmod(self.client_key_path, 0o600)
        client_key.write_public_key(str(self.authorized_keys_path))
        previous = self._previous_ports()
        for index in range(self.node_count):
            name = self._node_name(index)
            await self.add_node(name, self.gpus, port=previous.get(name), write=False)
        # Written once, with every node: a client must never read a config that lacks some of them.
        self.write_files()
        return self.config_path

    def _previous_ports(self) -> dict[str, int]:
        """Ports of a demo that ran on this dir before: a restarted node keeps its address, as a
        rebooted server would, so a client's known address never leads to another node."""
        import tomllib

        try:
            nodes = tomllib.loads(self.config_path.read_text()).get("nodes", [])
        except (OSError, ValueError):
            return {}
        return {n["name"]: n["port"] for n in nodes if isinstance(n, dict) and isinstance(n.get("port"), int)}

    async def add_node(self, name: str, gpus: int, *, cloud: bool = False, port: int | None = None,
                       write: bool = True) -> DemoNode:
        """Start one more simulated node (cloud instances in the demo arrive this way)."""
        state_dir = self.root / "state" / name
        state_dir.mkdir(parents=True, exist_ok=True)
        # Unique per cluster, so processes left over from another demo never bind to our GPUs.
        tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        node = DemoNode(name, gpus, state_dir, asyncssh.generate_private_key("ssh-ed25519"), f"{name}.{tag}",
                        cloud=cloud)
        self.nodes[name] = node
        if port is not None:
            node.port = port
        try:
            await self.start_node(name)
        except OSError:
            node.port = 0  # the old port is taken now: any free one
            await self.start_node(name)
        if write:
            self.write_files()
        return node

    async def start_node(self, name: str) -> None:
        """(Re)start a node's server on its previous port (or a free one the first time)."""
        node = self.nodes[name]

        async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await self._run_command(node, process)

        node.server = await asyncssh.listen(
            LOOPBACK,
            node.port,
            server_host_keys=[node.host_key],
            authorized_client_keys=str(self.authorized_keys_path),
            process_factory=handle,
            encoding=None,
            line_editor=False,  # a pty session gets a real pty (ptysession.py), not asyncssh's editor
            reuse_address=True,
        )
        node.port = node.server.sockets[0].getsockname()[1]

    async def stop_node(self, name: str) -> None:
        """Kill a node: close its server, drop its connections, kill its processes."""
        node = self.nodes[name]
        if node.server is not None:
            node.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.server.wait_closed(), 5)
            node.server = None
        for child in list(node.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)

    async def _run_command(self, node: DemoNode, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        env = dict(os.environ, **self.agent_env)
        env["GPUCONSOLE_SIM_NODE"] = node.sim_key
        if self.seed is not None:
            env["GPUCONSOLE_SIM_SEED"] = str(self.seed)
        command = self.command_overrides.get(node.name) or process.command or "exec ${SHELL:-/bin/sh} -i"
        if process.get_terminal_type() is not None:  # the client asked for a pty (`gpuconsole shell`)
            try:
                await run_on_pty(process, command, env, node.children)
            except (asyncssh.Error, OSError, BrokenPipeError):
                pass
            finally:
                await _closed(process)
            return
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )
        node.children.add(child)
        pumps: asyncio.Future[Any] | None = None
        try:
            await process.redirect(stdin=child.stdin)
            # Output is pumped by hand, so all of it is forwarded before the exit status: with
            # redirect() the channel could close first and a command's last lines were lost.
            assert child.stdout is not None
            assert child.stderr is not None
            progress = _Progress()
            pumps = asyncio.gather(_pump(child.stdout, process.stdout, progress),
                                   _pump(child.stderr, process.stderr, progress), return_exceptions=True)
            returncode = await child.wait()
            await _forwarded(pumps, progress)
            # The exit status goes after the output has left, not merely been queued: a client that
            # reads slowly gets every line, then the status (as from sshd).
            process.channel.set_write_buffer_limits(0)
            await process.stdout.drain()
            process.exit(returncode if returncode >= 0 else 128 - returncode)
        except (asyncssh.Error, OSError, BrokenPipeError):
            pass
        finally:
            if pumps is not None:
                pumps.cancel()
            node.children.discard(child)
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
            await _closed(process)

    def write_files(self) -> None:
        """known_hosts (one line per node, [127.0.0.1]:port form) and the client config."""
        lines = []
        for node in self.nodes.values():
            public = node.host_key.export_public_key("openssh").decode().strip()
            lines.append(f"[{LOOPBACK}]:{node.port} {public}\n")
        tmp = self.known_hosts_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.known_hosts_path)
        hosts = {
            n.name: {"host": LOOPBACK, "port": n.port, "state_dir": str(n.state_dir), "simulate_gpus": n.gpus}
            for n in self.nodes.values() if n.cloud and n.server is not None
        }
        tmp = self.host_map_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(hosts, indent=1))
        tmp.replace(self.host_map_path)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.config_text())
        tmp.replace(self.config_path)

    def config_text(self) -> str:
        parts = [
            "# Written by `gpuconsole demo`: simulated nodes on loopback.\n",
            "[defaults]\n",
            f'identity_file = "{self.client_key_path}"\n',
            f'known_hosts = "{self.known_hosts_path}"\n',
            "poll_seconds = 1.0\n",
            'reserve_for = "4h"\n',
        ]
        for node in self.nodes.values():
            if node.cloud:
                continue
            parts += [
                "\n[[nodes]]\n",
                f'name = "{node.name}"\n',
                f'host = "{LOOPBACK}"\n',
                f"port = {node.port}\n",
                f'state_dir = "{node.state_dir}"\n',
                f"simulate_gpus = {node.gpus}\n",
            ]
            # Test-only: run the agents under another interpreter (the node code's 3.8 floor in .ci/run).
            if os.environ.get("GPUCONSOLE_TEST_NODE_PYTHON"):
                parts.append(f'python = "{os.environ["GPUCONSOLE_TEST_NODE_PYTHON"]}"\n')
        return "".join(parts) + self.cloud_section

    async def stop(self) -> None:
        """Stop every node and kill what they started, detached job supervisors and jobs included."""
        for name in list(self.nodes):
            await self.stop_node(name)
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)
        kill_marked({node.sim_key for node in self.nodes.values()})
