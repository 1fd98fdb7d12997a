"""Process facts from /proc: owner, command line, start time, and liveness by identity."""

from __future__ import annotations

import os
import pwd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .typedefs import Ident

_USER_CACHE: dict[int, str] = {}


_BOOT_ID: list[str] = []


def boot_id() -> str:
    """The kernel's boot id; changes on every reboot (so never within one process's life: read once,
    not once per liveness check of every queued job)."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as handle:
                _BOOT_ID.append(handle.read().strip())
        except OSError:
            return "unknown"
    return _BOOT_ID[0]


def user_name(uid: int) -> str:
    """Login name for ``uid`` (cached), or the number as a string."""
    if uid not in _USER_CACHE:
        try:
            _USER_CACHE[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _USER_CACHE[uid] = str(uid)
    return _USER_CACHE[uid]


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid` (from /proc, this namespace)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        try:
            if fields and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
                members.append(int(name))
        except (IndexError, ValueError):
            continue
    return members


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process in clock ticks, or None when it is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[11]) + int(fields[12]) if fields else None
    except (IndexError, ValueError):
        return None


def proc_uid(pid: int) -> int | None:
    """Real uid of a process, or None."""
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def command_line(pid: int, limit: int = 200) -> str | None:
    """The process's command line, space-joined and cut to ``limit`` characters."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    if not text:
        try:
            with open("/proc/%d/comm" % pid) as handle:
                text = "[" + handle.read().strip() + "]"
        except OSError:
            return None
    return text[:limit]


def identity(pid: int | None = None) -> Ident:
    """(pid, start ticks, boot id) — what liveness checks compare, so PID reuse is harmless."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "start": start_ticks(pid), "boot_id": boot_id()}


def is_alive(ident: Ident | None) -> bool:
    """True when the process named by an identity() record still runs (same boot, same start).

    A zombie (exited, not yet reaped) is dead: it holds no GPU and will never renew.
    """
    if not ident or ident.get("boot_id") != boot_id():
        return False
    fields = _stat_fields(int(ident.get("pid", -1)))
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    try:
        return int(fields[19]) == ident.get("start")
    except (IndexError, ValueError):
        return False


def environ(pid: int) -> dict[str, str]:
    """The initial environment of a process (own processes only; others raise OSError)."""
    with open("/proc/%d/environ" % pid, "rb") as handle:
        raw = handle.read()
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env
