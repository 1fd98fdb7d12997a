"""This machine's side of reaching a node: the `Host` entries of an OpenSSH client config (what
`init` offers as nodes) and the local files a node's connection needs (what `doctor` checks first).

What a Host alias resolves to (HostName, Port, User, IdentityFile) is asyncssh's reading of the
config, the same one every connection uses. Only the list of `Host` names is read here: asyncssh
resolves one host at a time and has no call that lists them, and paramiko's SSHConfig (which has
one) would bring paramiko and its crypto stack in for a dozen lines of `Host`/`Include` reading.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from gpuconsole.config import NodeConfig
from gpuconsole.errors import ExitCode
from gpuconsole.ssh.hostkeys import DEFAULT_SSH_PORT, trust_set

USER_SSH_CONFIG = "~/.ssh/config"
_KEYWORD = re.compile(r"^\s*(\w+)\s*(?:=\s*|\s+)(.*)$")
_MAX_INCLUDE_DEPTH = 16  # OpenSSH's own limit
_MAX_CONFIG_BYTES = 1 << 20  # read of each ssh config file; the rest is ignored


@dataclass(frozen=True, slots=True)
class SshHost:
    """One `Host` alias and what it resolves to."""

    alias: str
    hostname: str
    port: int
    user: str | None
    identity_files: tuple[str, ...]

    def target(self) -> str:
        """`user@host:port` as a person reads it."""
        return f"{self.user + '@' if self.user else ''}{self.hostname}:{self.port}"


def host_aliases(path: str = USER_SSH_CONFIG) -> list[str]:
    """The concrete `Host` names of an OpenSSH client config, in file order, `Include`s followed.

    Patterns (`*`, `?`) and negations (`!`) name no one host, so they are skipped; a missing file
    has none."""
    found: list[str] = []
    _read_hosts(Path(path).expanduser(), found, 0, set())
    return list(dict.fromkeys(found))


def _read_text(path: Path) -> str | None:
    """A config file's text, or None for anything but a readable regular file: O_NONBLOCK and the
    fstat keep an included FIFO or device from hanging `init`, the limit a huge file from filling memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _MAX_CONFIG_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_hosts(path: Path, found: list[str], depth: int, seen: set[tuple[int, int]]) -> None:
    """Each file once (an Include loop, or the same file included twice, adds nothing new: the
    aliases are deduplicated in file order anyway), so a self-including config is not 3^16 reads."""
    try:
        info = path.stat()
    except OSError:
        return
    if (info.st_dev, info.st_ino) in seen:
        return
    seen.add((info.st_dev, info.st_ino))
    text = _read_text(path)
    if text is None:
        return
    for line in text.splitlines():
        match = _KEYWORD.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        keyword, value = match.group(1).lower(), match.group(2).split("#", 1)[0]
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        if keyword == "host":
            found.extend(w for w in words if not set(w) & set("*?!"))
        elif keyword == "include" and depth < _MAX_INCLUDE_DEPTH:
            for word in words:
                pattern = os.path.expanduser(word)
                if not os.path.isabs(pattern):  # relative to ~/.ssh, as OpenSSH reads a user config
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for included in sorted(glob.glob(pattern)):
                    _read_hosts(Path(included), found, depth + 1, seen)


def resolve(alias: str, config_path: str | None = None) -> SshHost:
    """What `alias` resolves to in the ssh config (asyncssh's reading, as a connection does)."""
    options = asyncssh.SSHClientConnectionOptions(
        host=alias, config=[config_path] if config_path else (), client_keys=None)
    hostname = options.config.get("Hostname") or alias
    port = options.config.get("Port") or DEFAULT_SSH_PORT
    user = options.config.get("User")
    identities = options.config.get("IdentityFile")
    return SshHost(alias, str(hostname), int(str(port)), str(user) if user else None,
                   tuple(str(i) for i in identities) if isinstance(identities, list) else ())


@dataclass(frozen=True, slots=True)
class LocalCheck:
    """One `doctor` row about a local file; `code` is the exit code it stands for when it fails."""

    check: str
    ok: bool
    detail: str
    fix: str | None = None
    code: int = int(ExitCode.USAGE)

    def row(self) -> dict[str, object]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def local_checks(cfg: NodeConfig) -> list[LocalCheck]:
    """The ssh config, identity files and known_hosts entry that reaching ``cfg`` needs, checked
    on this machine before any connection (nothing is written: host keys are never added)."""
    rows: list[LocalCheck] = []
    config_path = cfg.ssh_config or os.path.expanduser(USER_SSH_CONFIG)
    host = SshHost(cfg.host, cfg.host, cfg.port or DEFAULT_SSH_PORT, cfg.user, ())
    if cfg.ssh_config or os.path.exists(config_path):
        try:
            Path(config_path).read_bytes()
            resolved = resolve(cfg.host, config_path)
            host = SshHost(cfg.host, resolved.hostname, cfg.port or resolved.port, cfg.user or resolved.user,
                           resolved.identity_files)
            rows.append(LocalCheck("ssh_config", True, f"{config_path}: {cfg.host} is {host.target()}"))
        except OSError as exc:
            rows.append(LocalCheck("ssh_config", False, f"cannot read ssh_config {config_path}: "
                                   f"{exc.strerror or exc}", f"fix the path or permissions of {config_path}"))
        except (asyncssh.Error, ValueError) as exc:  # asyncssh's ConfigParseError is a ValueError
            rows.append(LocalCheck("ssh_config", False, f"ssh_config {config_path}: {exc}",
                                   f"correct that line of {config_path}"))
    identities = [cfg.identity_file] if cfg.identity_file else list(host.identity_files)
    rows.extend(_identity(os.path.expanduser(path)) for path in identities)
    rows.append(_known_hosts(cfg, host))
    return rows


def _identity(path: str) -> LocalCheck:
    """A private key that exists, can be read, and is closed to group and others (as ssh demands)."""
    try:
        info = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        return LocalCheck("identity", False, f"identity file {path}: {exc.strerror or exc}",
                          f"set identity_file to your private key (ssh-keygen -t ed25519 -f {path} makes one)")
    if not stat.S_ISREG(info.st_mode):
        return LocalCheck("identity", False, f"identity file {path} is not a regular file",
                          "set identity_file to your private key")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return LocalCheck("identity", False, f"identity file {path} has mode {mode:o}: others may read the key "
                          "(ssh refuses such keys)", f"chmod 600 {path}")
    return LocalCheck("identity", True, f"{path} (mode {mode:o})")


def _known_hosts(cfg: NodeConfig, host: SshHost) -> LocalCheck:
    """The node's host key is in a known_hosts file that connections trust (never added here)."""
    trust = trust_set(cfg)
    pattern = host.hostname if host.port == DEFAULT_SSH_PORT else f"[{host.hostname}]:{host.port}"
    scan = f"ssh-keyscan{'' if host.port == DEFAULT_SSH_PORT else f' -p {host.port}'} {host.hostname}"
    fix = (f"{scan} >> {trust.add_to}, after checking that the fingerprint it shows (ssh-keygen -lf) is the "
           "node's own (ssh-keygen -lf on the node's host key, or its console); keys are never added on first use")
    existing = trust.existing()
    if cfg.known_hosts and not existing:
        return LocalCheck("known_hosts", False, f"known_hosts {cfg.known_hosts} does not exist", fix)
    known = asyncssh.SSHKnownHosts()
    for name in existing:
        try:
            known.load(Path(name).expanduser().read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            return LocalCheck("known_hosts", False, f"cannot read known_hosts {name}: {exc.strerror or exc}",
                              f"fix the permissions of {name}")
        except ValueError:
            return LocalCheck("known_hosts", False, f"known_hosts {name} has a malformed line",
                              f"check it with ssh-keygen -l -f {name}")
    port = None if host.port == DEFAULT_SSH_PORT else host.port
    if known.match(host.hostname, "", port)[0]:
        return LocalCheck("known_hosts", True, f"{pattern} in {', '.join(existing)}", code=int(ExitCode.UNREACHABLE))
    looked = ", ".join(existing) if existing else f"no file: looked for {', '.join(trust.files)}"
    return LocalCheck("known_hosts", False, f"no host key for {pattern} ({looked})", fix,
                      code=int(ExitCode.UNREACHABLE))
