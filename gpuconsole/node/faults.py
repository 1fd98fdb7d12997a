"""Test-only fault injection for the node agent (the history checker's nemesis and its controls).

Off unless GPUCONSOLE_FAULTS or GPUCONSOLE_FAULTS_FILE is set in the agent's environment. The
syntax is comma-separated names: `no_lock`, `ack_before_commit`, `job_lease_expires`, and
`enospc:STEP[@P]` (STEP in tmp, prev, rename, mirror, dirsync; P a probability, default 1). The
file, when named, is re-read on every check so a nemesis can switch faults during a run.
"""

from __future__ import annotations

import errno
import os

COMMIT_STEPS = ("tmp", "prev", "rename", "mirror", "dirsync")


def _spec() -> list[str]:
    text = os.environ.get("GPUCONSOLE_FAULTS") or ""
    path = os.environ.get("GPUCONSOLE_FAULTS_FILE")
    if path:
        try:
            with open(path) as handle:
                text = text + "," + handle.read(4096)
        except OSError:
            pass
    return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]


def active(name: str) -> bool:
    """True when the named fault (without arguments) is switched on."""
    if "GPUCONSOLE_FAULTS" not in os.environ and "GPUCONSOLE_FAULTS_FILE" not in os.environ:
        return False
    return name in _spec()


def commit_step(step: str) -> None:
    """Raise ENOSPC at this step of the commit path when `enospc:STEP` is on."""
    if "GPUCONSOLE_FAULTS" not in os.environ and "GPUCONSOLE_FAULTS_FILE" not in os.environ:
        return
    for item in _spec():
        if not item.startswith("enospc:"):
            continue
        target, _, chance = item[len("enospc:"):].partition("@")
        if target != step:
            continue
        try:
            probability = float(chance) if chance else 1.0
        except ValueError:
            probability = 1.0
        import random  # only an injected fault needs it

        if random.random() < probability:
            raise OSError(errno.ENOSPC, "No space left on device (injected at %s)" % step)
