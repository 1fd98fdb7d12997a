"""Host-key verification that no setting turns off.

asyncssh trusts any key when it is handed a None `known_hosts`, which is what an OpenSSH client
config's `UserKnownHostsFile none` becomes; `StrictHostKeyChecking` it never reads. So gpuconsole
always passes its own trust set: the config's `known_hosts`, else the ssh_config's known-hosts
files, else OpenSSH's defaults. A key that is missing or changed is refused with its fingerprint
and the command that adds it after an out-of-band check.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from gpuconsole.config import NodeConfig
from gpuconsole.errors import UnreachableError

# OpenSSH's defaults for UserKnownHostsFile and GlobalKnownHostsFile.
DEFAULT_USER_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_SSH_PORT = 22

# Parsed trust sets, shared by every connection of this process (a 64-node fleet parsed its file 64
# times): keyed by the files' names, kept with their contents' digests, so a changed file is parsed
# again and the answer is always that of the files as they are now. One entry per distinct set.
_parsed: dict[tuple[str, ...], tuple[tuple[bytes, ...], asyncssh.SSHKnownHosts]] = {}
_parsed_lock = threading.Lock()
_parses = 0


def parse_count() -> int:
    """How many times this process has parsed a trust set's known_hosts text (tests and bench)."""
    return _parses


class HostKeyError(UnreachableError):
    """The node's host key is unknown or changed: final until known_hosts is fixed.

    `fix` is the one command (or short recipe) that `doctor` prints as the fix.
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass
class TrustSet:
    """The known_hosts files a connection is verified against, and what the refusal should say."""

    files: list[str]  # as named (with ~), in lookup order
    add_to: str  # where a new key belongs
    ignored_none: bool = False  # the ssh_config said `UserKnownHostsFile none`
    offered: list[tuple[str, str, int, asyncssh.SSHKey]] = field(default_factory=list)

    def existing(self) -> list[str]:
        return [f for f in self.files if os.path.isfile(os.path.expanduser(f))]

    def load(self, node: str) -> asyncssh.SSHKnownHosts:
        """Every readable file in one trust set (an empty one trusts nothing, never everything).

        The files are read on every call; they are parsed only when their bytes differ from the
        last parse of this set in this process (asyncssh only reads a parsed set: safe to share)."""
        global _parses
        names = tuple(self.existing())
        texts: list[bytes] = []
        for name in names:
            try:
                texts.append(Path(name).expanduser().read_bytes())
            except OSError as exc:
                raise HostKeyError(f"{node}: cannot read known_hosts {name}: {exc.strerror or exc}") from None
        digests = tuple(hashlib.sha256(text).digest() for text in texts)
        with _parsed_lock:
            cached = _parsed.get(names)
        if cached is not None and cached[0] == digests:
            return cached[1]
        known = asyncssh.SSHKnownHosts()
        for name, text in zip(names, texts, strict=True):
            try:
                # Newlines as read_text gives them (universal), as before.
                known.load(text.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n"))
            except ValueError:
                raise HostKeyError(
                    f"{node}: known_hosts {name} has a malformed line; check it with ssh-keygen -l -f {name}"
                ) from None
        with _parsed_lock:
            _parses += 1
            _parsed[names] = (digests, known)
        return known


def _config_files(cfg: NodeConfig) -> tuple[list[str] | None, list[str] | None]:
    """UserKnownHostsFile and GlobalKnownHostsFile that the ssh_config sets for this host
    (None: not set; []: set to `none`)."""
    options = asyncssh.SSHClientConnectionOptions(
        host=cfg.host, port=cfg.port if cfg.port is not None else (),
        username=cfg.user if cfg.user else (),
        config=[cfg.ssh_config] if cfg.ssh_config else (), client_keys=None,
    )
    user = options.config.get("UserKnownHostsFile")
    global_ = options.config.get("GlobalKnownHostsFile")
    return (list(user) if isinstance(user, list) else None,
            list(global_) if isinstance(global_, list) else None)


def trust_set(cfg: NodeConfig) -> TrustSet:
    """The files to verify ``cfg``'s host key against: config, else ssh_config, else defaults."""
    if cfg.known_hosts:
        return TrustSet([cfg.known_hosts], cfg.known_hosts)
    user, global_ = _config_files(cfg)
    ignored_none = user == []
    user_files = user or list(DEFAULT_USER_FILES)
    global_files = global_ if global_ else list(DEFAULT_GLOBAL_FILES)
    return TrustSet(user_files + global_files, user_files[0], ignored_none=ignored_none)


def witness_factory(trust: TrustSet) -> Callable[[], asyncssh.SSHClient]:
    """A client whose host-key hook records the key the node offered (asyncssh calls it only for
    a key its trust set lacks) and still refuses it."""

    class Witness(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            trust.offered.append((host, addr, port, key))
            return False

    return Witness


def _pattern(host: str, port: int) -> str:
    return host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"


def _files_holding(trust: TrustSet, host: str, addr: str, port: int) -> list[str]:
    """The known_hosts files that hold some (other) key for this host."""
    lookup_port = None if port == DEFAULT_SSH_PORT else port
    holding = []
    for name in trust.existing():
        known = asyncssh.SSHKnownHosts()
        try:
            known.load(Path(name).expanduser().read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            continue
        if known.match(host, addr, lookup_port)[0]:
            holding.append(name)
    return holding


def refusal(node: str, trust: TrustSet, reason: str) -> HostKeyError:
    """The one-line refusal for a key asyncssh did not verify, with fingerprint and fix."""
    if not trust.offered:
        return HostKeyError(f"{node}: host key not trusted ({reason}); check known_hosts ({', '.join(trust.files)})")
    host, addr, port, key = trust.offered[-1]
    offered = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
    pattern = _pattern(host, port)
    scan = f"ssh-keyscan{'' if port == DEFAULT_SSH_PORT else f' -p {port}'} {host}"
    holding = _files_holding(trust, host, addr, port)
    if holding:
        where = holding[0]
        fix = f"ssh-keygen -R '{pattern}' -f {where} && {scan} >> {where}"
        return HostKeyError(
            f"{node}: host key not verified: the node offered {offered}, but known_hosts holds another "
            f"key for {pattern} (ssh-keygen -F '{pattern}' -f {where} shows it): the node was "
            f"reinstalled, or someone is in the middle. Check the new key out of band (ssh-keygen -lf "
            f"on the node's host key); only if it matches: {fix}",
            fix,
        )
    existing = trust.existing()
    looked = ", ".join(existing) if existing else f"no file: looked for {', '.join(trust.files)}"
    note = "; UserKnownHostsFile none in the ssh config is ignored: host keys are always verified" \
        if trust.ignored_none else ""
    fix = f"{scan} >> {trust.add_to}"
    return HostKeyError(
        f"{node}: host key not verified: the node offered {offered}; no known_hosts entry for {pattern} "
        f"({looked}){note}. Check it out of band (ssh-keygen -lf on the node's host key), then add it: "
        f"{fix} (ssh-keygen -F '{pattern}' shows it afterwards)",
        fix,
    )
