"""Where a user's keeper and resident CLI listen, and who is at the other end of their sockets.
Stdlib only and free of `pathlib`: the forwarding stub (cli/forward.py) runs before anything else."""

from __future__ import annotations

import hashlib
import os
import socket
import struct


def base_dir() -> str:
    """`$XDG_RUNTIME_DIR/gpuconsole`, else `/tmp/gpuconsole-UID` (checked private where created)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(base, "gpuconsole") if base else os.path.join("/tmp", f"gpuconsole-{os.getuid()}")


def config_tag(config_abs: str) -> str:
    """One keeper per config file, named by its absolute path, so two configs never share one."""
    return hashlib.sha256(config_abs.encode()).hexdigest()[:16]


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (None where the OS cannot say)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)
