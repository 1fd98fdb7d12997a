"""A real OpenSSH sshd on 127.0.0.1 with real OS users: shared by the real-sshd test modules.

Not a test module: each user (test_sshd_multiuser, test_sshd_attacks, test_service_mode) checks
for root and the binaries, and names its own users (modules may run at the same time under
xdist, and each kills its own users' leftovers). Every test user's name starts with `gcutest`,
which the suite's leftover check knows.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from tests.helpers import free_port, run_cli, stop

SSHD = Path("/usr/sbin/sshd")
USERADD = shutil.which("useradd") or "/usr/sbin/useradd"
NODE_PYTHON = "/usr/bin/python3"  # test users cannot read root's pyenv interpreter
NODE = "sshd-node"
GPUS = 4
USERS = ("gcutest1", "gcutest2")  # the cooperative node's two users (tests/integration/conftest.py)
GROUP = "gcutestgpu"


def missing_tools(*extra: str) -> str | None:
    """Why the real-sshd tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (useradd, sshd on a loopback port)"
    for path in (str(SSHD), USERADD, NODE_PYTHON, *extra):
        if not Path(path).is_file():
            return f"needs {path} (Debian openssh-server)"
    return None


@dataclass
class SshdNode:
    """The running sshd, its users' configs and the paths a test may inspect."""

    root: Path
    port: int
    state_dir: Path
    host_key_line: str
    configs: dict[str, Path]
    keys: dict[str, Path]
    extra_config: str = ""
    users: tuple[str, ...] = field(default_factory=tuple)

    def config(self, user: str, *, identity_file: Path | None = None,
               known_hosts_text: str | None = None, name: str | None = None, extra: str | None = None) -> Path:
        """Write (or return) a config for ``user``, optionally with another key, known_hosts or node keys."""
        if identity_file is None and known_hosts_text is None and extra is None:
            return self.configs[user]
        tag = name or uuid.uuid4().hex[:8]
        known_hosts = self.root / f"known_hosts.{tag}"
        text = self.host_key_line if known_hosts_text is None else known_hosts_text
        known_hosts.write_text(text)
        return write_config(self.root / f"config.{tag}.toml", self, user, identity_file or self.keys[user],
                            known_hosts, self.extra_config if extra is None else extra)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run an admin command that must succeed; its stderr is in the failure message."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr.strip()}"
    return result


def ensure_users(homes: Path, users: Sequence[str], group: str) -> None:
    """Create the shared group and the users, or reuse them; unlock them for key logins."""
    try:
        grp.getgrnam(group)
    except KeyError:
        run("groupadd", "-f", group)
    for user in users:
        home = homes / user
        try:
            pwd.getpwnam(user)
        except KeyError:
            run(USERADD, "-M", "-d", str(home), "-s", "/bin/sh", "-G", group, user)
        # Reused users may come from an older run: end its leftovers (job supervisors run as the
        # user), then reset home, shell, group and the lock.
        subprocess.run(["pkill", "-KILL", "-u", user], check=False)
        run("usermod", "-d", str(home), "-s", "/bin/sh", "-a", "-G", group, "-p", "*", user)
        home.mkdir(mode=0o755)
        info = pwd.getpwnam(user)
        os.chown(home, info.pw_uid, info.pw_gid)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def write_key(path: Path, key: asyncssh.SSHKey) -> None:
    key.write_private_key(str(path))
    os.chmod(path, 0o600)


def write_config(path: Path, node: SshdNode, user: str, identity_file: Path, known_hosts: Path,
                 extra: str = "") -> Path:
    """A gpuconsole config with the one node, as ``user``; ``extra`` adds keys to its [[nodes]] table."""
    path.write_text(
        f"""[defaults]
connect_timeout = 5
reserve_for = "10m"

[[nodes]]
name = "{NODE}"
host = "127.0.0.1"
port = {node.port}
user = "{user}"
identity_file = "{identity_file}"
known_hosts = "{known_hosts}"
state_dir = "{node.state_dir}"
python = "{NODE_PYTHON}"
simulate_gpus = {GPUS}
{extra}"""
    )
    return path


def start_sshd(root: Path, host_key: Path, auth_dir: Path, users: Sequence[str],
               sshd_extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """Start sshd on a free loopback port and wait until it greets; retry if the port was taken.
    `sshd_extra`: more sshd_config lines (`SetEnv SLURM_CONF=…` for the Slurm tests)."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log_path = root / "sshd.log"
    for _attempt in range(3):
        port = free_port()
        cfg = root / "sshd_config"
        cfg.write_text(
            f"""ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {root / "sshd.pid"}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
PermitRootLogin no
AllowUsers {" ".join(users)}
StrictModes no
AuthorizedKeysFile {auth_dir}/%u/authorized_keys
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
MaxStartups 64:30:128
LogLevel VERBOSE
{sshd_extra}"""
        )
        run(str(SSHD), "-t", "-f", str(cfg))
        with log_path.open("ab") as log:
            proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(cfg)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None:
            if _accepts(port):
                return proc, port
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    raise AssertionError(f"sshd did not start; log:\n{log_path.read_text(errors='replace')}")


def cooperative_state_dir(group: str) -> Callable[[Path], None]:
    """The admin's cooperative setup: a setgid state dir the group can write."""
    def make(path: Path) -> None:
        run("install", "-d", "-m", "2775", "-g", group, str(path))

    return make


@contextlib.contextmanager
def running_sshd(users: Sequence[str], group: str, make_state_dir: Callable[[Path], None], *,
                 extra_config: str = "", kill_users: Sequence[str] = (),
                 sshd_extra: str = "") -> Iterator[SshdNode]:
    """sshd as root on 127.0.0.1, ``users`` in ``group``, the state dir made by ``make_state_dir``.

    At the end sshd stops and every process of ``users`` and ``kill_users`` is killed (job
    supervisors and jobs outlive their SSH sessions by design).
    """
    # pytest's tmp_path lives under a mode-700 dir the test users cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="gcu-sshd-", dir="/tmp"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        os.chmod(root, 0o755)
        homes = root / "home"
        homes.mkdir(mode=0o755)
        ensure_users(homes, users, group)

        host_key_path = root / "ssh_host_ed25519_key"
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        write_key(host_key_path, host_key)

        auth_dir = root / "auth"
        keys: dict[str, Path] = {}
        for user in users:
            client_key = asyncssh.generate_private_key("ssh-ed25519", comment=user)
            keys[user] = root / f"id_{user}"
            write_key(keys[user], client_key)
            (auth_dir / user).mkdir(parents=True, mode=0o755)
            # sshd reads authorized_keys as the logging-in user, so it must be readable.
            authorized = auth_dir / user / "authorized_keys"
            authorized.write_bytes(client_key.export_public_key())
            os.chmod(authorized, 0o644)

        state_dir = root / "state"
        make_state_dir(state_dir)

        proc, port = start_sshd(root, host_key_path, auth_dir, users, sshd_extra)
        pubkey = host_key.export_public_key().decode().strip()
        node = SshdNode(root, port, state_dir, f"[127.0.0.1]:{port} {pubkey}\n", {}, keys,
                        extra_config, tuple(users))
        for user in users:
            known_hosts = root / f"known_hosts.{user}"
            known_hosts.write_text(node.host_key_line)
            node.configs[user] = write_config(root / f"config.{user}.toml", node, user, keys[user],
                                              known_hosts, extra_config)
        yield node
    finally:
        if proc is not None:
            stop(proc)
        for user in (*users, *kill_users):
            subprocess.run(["pkill", "-KILL", "-u", user], check=False)  # job supervisors and jobs
        shutil.rmtree(root, ignore_errors=True)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, config=config, timeout_s=60)


def ok_json(config: Path, *args: str) -> Any:
    import json

    result = cli(config, *args, "--json")
    assert result.returncode == 0, f"{args}: exit {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command: a single line, never a traceback."""
    text = result.stderr.strip()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(text.splitlines()) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    return text
