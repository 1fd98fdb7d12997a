"""Host keys of new instances, learnt from EC2 itself: cloud-init prints them to the serial console
between BEGIN/END SSH HOST KEY KEYS markers, and GetConsoleOutput is an authenticated AWS API call.
So a fresh instance is verified like any node (no trust-on-first-use), from a known_hosts file that
gpuconsole keeps for cloud instances alone."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from gpuconsole.config import local_state_dir
from gpuconsole.node.fileio import write_atomic

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
KEY_RE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) ([A-Za-z0-9+/=]+)(?: .*)?$")


def cloud_known_hosts_path() -> Path:
    return local_state_dir() / "cloud_known_hosts"


def parse_console_host_keys(console_text: str) -> list[str]:
    """`type base64` lines from the console's host-key block (empty if the block is not there yet)."""
    if BEGIN not in console_text or END not in console_text:
        return []
    block = console_text.split(BEGIN, 1)[1].split(END, 1)[0]
    keys = []
    for raw in block.splitlines():
        match = KEY_RE.match(raw.strip())
        if match:
            try:
                base64.b64decode(match.group(2), validate=True)
            except ValueError:
                continue
            keys.append(f"{match.group(1)} {match.group(2)}")
    return keys


INSTANCE_MARK = "gpuconsole-instance="  # the known_hosts comment naming whose keys a line holds


def known_addresses(path: Path) -> set[str]:
    return set(known_instances(path))


def known_instances(path: Path) -> dict[str, str | None]:
    """Address → the instance whose keys the file holds for it (None: a line without the mark)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    found: dict[str, str | None] = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mark = next((f[len(INSTANCE_MARK):] for f in fields[3:] if f.startswith(INSTANCE_MARK)), None)
        found[fields[0]] = mark if found.get(fields[0]) is None else found[fields[0]]
    return found


def remember_host_keys(path: Path, address: str, keys: list[str], instance_id: str | None = None) -> None:
    """Replace any old lines for ``address`` (EC2 reuses addresses) with the instance's keys, marked
    with the instance's id so that the next instance at the same address is learnt afresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.split(" ", 1)[0] != address]
    except FileNotFoundError:
        old = []
    mark = f" {INSTANCE_MARK}{instance_id}" if instance_id else ""
    text = "".join(f"{ln}\n" for ln in old + [f"{address} {key}{mark}" for key in keys])
    write_atomic(str(path), text.encode("utf-8"), 0o644)
