"""The processes a benchmark drives: a demo cluster in its own process, a private tmux server."""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import bench_env, cli_argv


class DemoProcess:
    """A demo cluster (`gpuconsole demo --serve`) in its own process.

    The SSH servers then never share the benchmark client's GIL, as with a real remote node; the
    nodes and their agents still share this machine's cores, which the report states. On-prem
    only unless ``cloud``: the demo's local EC2 would add a [cloud.aws] table to the config, and
    with it cloud discovery (boto3 import, DescribeInstances) to every CLI call measured on it.
    """

    def __init__(self, root: Path, nodes: int, gpus: int = 8, *, start_timeout_s: float = 120.0,
                 cloud: bool = False) -> None:
        self.root = Path(root)
        self.nodes = nodes
        self.gpus = gpus
        self.cloud = cloud
        self.start_timeout_s = start_timeout_s
        self.config_path = self.root / "config.toml"
        self.proc: subprocess.Popen[str] | None = None
        self.start_s = math.nan

    def __enter__(self) -> DemoProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = cli_argv("demo", "--serve", "--dir", str(self.root / "demo"),
                        "--write-config", str(self.config_path),
                        "--nodes", str(self.nodes), "--gpus", str(self.gpus),
                        *(() if self.cloud else ("--no-cloud",)))
        started = time.perf_counter()
        with open(self.root / "demo.stderr", "w") as stderr:
            # GPUCONSOLE_BENCH_STATE_ROOT reaches every command on the nodes (the demo passes its
            # environment on): where the peers' probe finds the node's state file.
            env = {**bench_env(), "GPUCONSOLE_BENCH_STATE_ROOT": str(self.root / "demo" / "state")}
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or self.proc.poll() is not None:
                self.close()
                tail = (self.root / "demo.stderr").read_text()[-800:]
                raise RuntimeError(f"demo with {self.nodes} nodes did not start: {tail}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining_s, 1.0))
            if ready and self.proc.stdout.readline().startswith("ready "):
                break
        self.start_s = time.perf_counter() - started
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """The server processes (one here; several in a DemoFleet)."""
        return [self.pid]

    def close(self) -> None:
        """SIGTERM (the demo stops its nodes and their agents), SIGKILL its group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
            self.proc.wait(10)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class DemoFleet:
    """N demo nodes spread over several `DemoProcess`es, so the client is not measured against one
    server process (one event loop, one GIL for every node's SSH); one merged config.

    The nodes are renamed node-01… across the processes; each keeps its own demo's client key and
    known_hosts (per-node `identity_file` and `known_hosts` keys), so host keys are verified as in
    one demo. `pids` are the server processes (CPU and reaping are summed over them).
    """

    def __init__(self, root: Path, nodes: int, gpus: int = 8, processes: int = 1) -> None:
        self.root = Path(root)
        self.nodes = nodes
        self.gpus = gpus
        count = max(1, min(processes, nodes))
        sizes = [nodes // count + (1 if i < nodes % count else 0) for i in range(count)]
        self.demos = [DemoProcess(self.root / f"proc-{i}", size, gpus) for i, size in enumerate(sizes)]
        self.config_path = self.root / "config.toml"
        self.start_s = math.nan

    def __enter__(self) -> DemoFleet:
        from gpuconsole.config import load_config

        started = time.perf_counter()
        try:
            for demo in self.demos:
                demo.__enter__()
            parts = ["# bench: the nodes of several demo processes\n[defaults]\npoll_seconds = 1.0\n"
                     'reserve_for = "4h"\n']
            index = 0
            for demo in self.demos:
                for node in load_config(str(demo.config_path)).nodes:
                    index += 1
                    parts.append(f'\n[[nodes]]\nname = "node-{index:02d}"\nhost = "{node.host}"\n'
                                 f'port = {node.port}\nstate_dir = "{node.state_dir}"\n'
                                 f"simulate_gpus = {self.gpus}\n"
                                 f'identity_file = "{node.identity_file}"\nknown_hosts = "{node.known_hosts}"\n')
            self.config_path.write_text("".join(parts))
        except BaseException:
            self.close()
            raise
        self.start_s = time.perf_counter() - started
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.demos[0].pid

    @property
    def pids(self) -> list[int]:
        return [demo.pid for demo in self.demos if demo.proc is not None]

    def close(self) -> None:
        for demo in self.demos:
            demo.close()


class Tmux:
    """A private tmux server (its own socket, no user config) to run the console in a real terminal.

    A placeholder session keeps the server up between app sessions, so launching the app does
    not include the server's own start. Leaving the context kills the server and its panes.
    """

    def __init__(self, width: int = 120, height: int = 40) -> None:
        self.binary = shutil.which("tmux")
        self.socket = f"gpuconsole-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.width = width
        self.height = height

    def __enter__(self) -> Tmux:
        if self.binary is None:
            raise RuntimeError("tmux not found")
        self.new_session("idle", "exec cat")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.cmd("kill-server", check=False)

    def cmd(self, *args: str, check: bool = True) -> str:
        """One tmux client command against the private server; its stdout."""
        assert self.binary is not None
        out = subprocess.run([self.binary, "-L", self.socket, "-f", "/dev/null", *args],
                             capture_output=True, text=True, timeout=30, env=bench_env(),
                             stdin=subprocess.DEVNULL, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"tmux {args[0]}: exit {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def new_session(self, name: str, shell_command: str) -> None:
        """A detached session of the configured size running ``shell_command`` (via sh -c)."""
        self.cmd("new-session", "-d", "-s", name, "-x", str(self.width), "-y", str(self.height),
                 shell_command)

    def capture(self, name: str) -> str:
        """The visible text of a session's pane ("" once the session is gone)."""
        return self.cmd("capture-pane", "-p", "-t", name, check=False)

    def pane_pid(self, name: str) -> int:
        """The pid of the process the pane runs (the app itself when started with `exec`)."""
        return int(self.cmd("list-panes", "-t", name, "-F", "#{pane_pid}").split()[0])

    def server_pid(self) -> int:
        """The tmux server's pid (it draws the pane: the terminal emulator's share of the work)."""
        return int(self.cmd("display-message", "-p", "-t", "idle", "#{pid}").strip())

    def send_keys(self, name: str, *keys: str) -> None:
        """Send key names (tmux syntax: Down, Up, q) to a session's pane."""
        self.cmd("send-keys", "-t", name, *keys)

    def wait_for(self, name: str, predicate: Any, timeout_s: float,
                 interval_s: float = 0.01) -> tuple[float, str]:
        """Poll capture-pane until predicate(text) holds: (monotonic time seen, text)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.capture(name)
            seen = time.monotonic()
            if predicate(text):
                return seen, text
            if seen > deadline:
                raise RuntimeError(f"tmux pane {name}: condition not met in {timeout_s:g} s; "
                                   f"screen: {text[-600:]!r}")
            time.sleep(interval_s)
