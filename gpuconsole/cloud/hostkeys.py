"""Host keys of new instances, learnt from EC2 itself: cloud-init prints them to the serial console
between BEGIN/END SSH HOST KEY KEYS markers, and GetConsoleOutput is an authenticated AWS API call.
So a fresh instance is verified like any node (no trust-on-first-use), from a known_hosts file that
gpuconsole keeps for cloud instances alone."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from gpuconsole.config import local_state_dir

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


def known_addresses(path: Path) -> set[str]:
    try:
        return {line.split(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


def remember_host_keys(path: Path, address: str, keys: list[str]) -> None:
    """Replace any old lines for ``address`` (EC2 reuses addresses) with the instance's keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.split(" ", 1)[0] != address]
    except FileNotFoundError:
        old = []
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("".join(f"{ln}\n" for ln in old + [f"{address} {key}" for key in keys]), encoding="utf-8")
    os.replace(tmp, path)
