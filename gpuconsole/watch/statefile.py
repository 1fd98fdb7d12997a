"""The watcher's local state file: raised alerts, idle windows and pending actions across restarts.

Written atomically (temp file in the same directory, fsync, rename, fsync of the directory), so a
crash or power loss leaves the old or the new version, never a torn one. One watcher per file:
a second one is refused through `flock` on `<file>.lock` (dropped by the kernel when we die).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gpuconsole.config import local_state_dir
from gpuconsole.errors import UsageError
from gpuconsole.node.fileio import write_atomic

SCHEMA_VERSION = 1


def default_state_path(config_path: Path) -> Path:
    """`$XDG_STATE_HOME/gpuconsole/watch-<config hash>.json` (else ~/.local/state/...): one file per
    config, so a watcher on a test config never touches the state of the production one."""
    try:
        resolved = str(config_path.resolve())
    except OSError:
        resolved = str(config_path)
    tag = hashlib.sha256(resolved.encode()).hexdigest()[:10]
    return local_state_dir() / f"watch-{tag}.json"


class StateFile:
    """Load, save and lock one state file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Create the directory and take the exclusive lock, or raise UsageError (exit 2)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UsageError(f"--state-file: cannot use {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"--state-file: another watcher is using {self.path}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> tuple[dict[str, Any], str | None]:
        """(state, problem): a missing file is an empty state; an unreadable one is set aside
        as `<file>.corrupt` and reported, and the watcher starts from an empty state."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, None
        except (OSError, UnicodeDecodeError) as exc:
            return {}, f"cannot read {self.path}: {exc}"
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION:
                raise ValueError(f"not a version {SCHEMA_VERSION} watch state")
        except ValueError as exc:
            with contextlib.suppress(OSError):
                os.replace(self.path, f"{self.path}.corrupt")
            return {}, f"{self.path}: {exc}; moved to {self.path.name}.corrupt, starting afresh"
        return data, None

    def save(self, data: dict[str, Any]) -> None:
        """Atomically replace the file with `data` (raises OSError; the caller logs it)."""
        payload = json.dumps({"version": SCHEMA_VERSION, **data}, separators=(",", ":")).encode()
        write_atomic(str(self.path), payload, 0o600)
