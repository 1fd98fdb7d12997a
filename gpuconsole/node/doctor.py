"""The agent's `doctor` rows: state dir, filesystem, state file, interpreter, GPU source.

Each row is [check, ok, detail, fix]; a failed check names the one command that fixes it.
A service-mode node's rows about its link and state dir come from service.py.
"""

from __future__ import annotations

import errno
import os
import sys

from . import policy, procs, service
from .fileio import filesystem_type, is_network_fs, service_setup_fix
from .store import CorruptState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List

    from .gpus import GpuSource
    from .store import StateStore

    ServiceRows = Callable[[os.stat_result], List[List[Any]]]


def checks(store: StateStore, boot_id: str, user: str, gpus: GpuSource | None,
           service_rows: ServiceRows | None, service_user: str | None) -> list[dict[str, Any]]:
    """The rows for this node; `service_rows` is given on a service-mode node (with its account)."""
    rows: list[list[Any]] = []
    info = None
    try:
        info = os.stat(store.dir)
    except OSError as exc:
        # Never created here: a read-only look leaves a missing dir missing (only changes make it).
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)
        detail = "no state dir %s%s" % (store.dir, " (the first reserve or submit would create it, owned by "
                                        "%s)" % user if service_rows is None else "") if missing \
            else "%s: %s" % (store.dir, exc.strerror)
        rows.append(["state_dir", False, detail,
                     "sudo install -d -m 2775 -g gpu %s" % store.dir if service_rows is None
                     else service_setup_fix(store.dir, str(service_user))])
    if info is not None and service_rows is not None:
        rows.extend(service_rows(info))
    elif info is not None:
        writable = os.access(store.dir, os.W_OK | os.X_OK)
        detail = "%s mode %o" % (store.dir, info.st_mode & 0o7777)
        if not writable and service.looks_like_service(info):
            detail += ", owned by %s and closed to others: a service-mode node (set mode = \"service\")" \
                % procs.user_name(info.st_uid)
        rows.append(["state_dir", writable, detail,
                     None if writable else "sudo install -d -m 2775 -g gpu %s && add %s to group gpu"
                     % (store.dir, user)])
    if info is not None:
        fstype = filesystem_type(store.dir)
        rows.append(["filesystem", not is_network_fs(fstype), "%s is on %s" % (store.dir, fstype),
                     None if not is_network_fs(fstype) else "use a local disk for state_dir"])
        try:
            store.load(boot_id)
            rows.append(["state_file", True, "readable", None])
        except CorruptState as exc:
            rows.append(["state_file", False, str(exc), "inspect %s/corrupt and restore" % store.dir])
    rows.append(["python", sys.version_info >= (3, 8), "%d.%d.%d" % sys.version_info[:3], None])
    where = policy.path(service_rows is not None)
    loaded, problems = policy.load(service_rows is not None)
    if problems or os.path.exists(where):
        caps = ", ".join("%s=%s" % (k, loaded[k]) for k in sorted(loaded) if loaded[k] is not None)
        rows.append(["policy", not problems, "; ".join(problems) or "%s: %s" % (where, caps),
                     None if not problems else "fix %s (root-owned, writable by root alone; keys in "
                     "README \"Fair share and per-user caps\")" % where])
    gpu_ok = gpus is not None and gpus.source != "none"
    rows.append(["gpus", gpu_ok, "%s, %d GPUs" % (gpus.source, gpus.count()) if gpus else "no source",
                 None if gpu_ok else "install the NVIDIA driver and `pip install nvidia-ml-py`"])
    return [dict(zip(("check", "ok", "detail", "fix"), row)) for row in rows]
