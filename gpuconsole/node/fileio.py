"""Files in a shared state dir: opens that never block or follow, flock, mounts, I/O errors.

Any gpu-group member can plant a FIFO, device or symlink where the state or lock file belongs;
everything here refuses those at once with a message naming the path. io_error() turns an
OSError into the one-line refusal with the admin's fix that the client shows (exit 5).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import threading
import time

from . import private
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Callable

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre")
DIR_MODE = 0o2775  # cooperative mode: group members of a setgid state dir share the files


def _kind(mode: int) -> str:
    kinds: tuple[tuple[Callable[[int], bool], str], ...] = (
        (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))
    for test, name in kinds:
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFile(OSError):
    """A state or lock path that is a FIFO, device, directory or symlink: refused, never opened."""


def open_regular(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses anything but a regular file at once, without blocking or following.

    O_NONBLOCK keeps a FIFO from hanging the agent, O_NOFOLLOW refuses a planted symlink, and the
    fstat afterwards catches directories and devices; the error names the path.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "%s is a symlink; refusing to follow it" % path) from None
        if exc.errno in (errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP):
            raise NotRegularFile(exc.errno, "%s is not a regular file" % path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, "%s is %s, not a regular file; remove it" % (path, _kind(info.st_mode)))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int = 64 << 20) -> bytes:
    """The bytes of a regular file (see open_regular), at most `limit`."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ValueError("%s is larger than %d bytes" % (path, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def describe(exc: BaseException) -> str:
    """One phrase for why a copy of the state could not be read."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if isinstance(exc, NotRegularFile) else "%s: %s" % (exc.filename or "", exc.strerror)
    return str(exc) or exc.__class__.__name__


def io_error(what: str, exc: OSError, state_dir: str, service_user: str | None = None) -> st.OpError:
    """OpError("io") naming the path and a fix: the node cannot serve changes (exit 5).

    `service_user`: the node is in service mode, so the fix is that account's ownership.
    """
    reason = exc.strerror or str(exc)
    path = exc.filename or state_dir
    if isinstance(exc, (NotRegularFile, private.NotPrivate)):  # these already name the path
        return st.OpError("io", "%s: %s" % (what, reason))
    setup = "sudo install -d -m 2775 -g gpu %s and add the user to group gpu" % state_dir
    if service_user is not None:
        setup = "sudo chown -R %s:%s %s && sudo chmod 0755 %s" % (service_user, service_user, state_dir, state_dir)
    fix = {errno.ENOSPC: "free space on the node", errno.EDQUOT: "free space on the node",
           errno.EACCES: setup, errno.EPERM: setup,
           errno.EROFS: "put state_dir on a writable disk"}.get(exc.errno or 0, "check %s" % state_dir)
    return st.OpError("io", "%s: %s: %s (fix: %s)" % (what, path, reason, fix))


def make_shared_dir(path: str, mode: int = DIR_MODE) -> None:
    """mkdir -p with mode 2775 (or `mode`) regardless of umask, so other group members can write too."""
    if os.path.isdir(path):
        return
    os.makedirs(path, exist_ok=True)
    try:
        os.chmod(path, mode)
    except OSError:
        pass


def service_setup_fix(state_dir: str, service_user: str) -> str:
    """The admin's one-line fix for a service-mode state dir."""
    return "sudo install -d -m 0755 -o %s -g %s %s" % (service_user, service_user, state_dir)


def filesystem_type(path: str) -> str | None:
    """The mount type of the filesystem holding ``path`` (longest /proc/mounts prefix)."""
    best, fstype = "", None
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        return None
    return fstype


def is_network_fs(fstype: str | None) -> bool:
    return bool(fstype) and (fstype in NETWORK_FS or str(fstype).startswith("fuse"))


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_temp(target: str, body: bytes, mode: int) -> str:
    """Write ``body`` to a new temp file beside ``target`` and fsync it; return its name.

    O_EXCL|O_NOFOLLOW: never writes through a planted name. On any failure the temp is removed, so
    a full disk does not also fill up with half-written temps.
    """
    name = "%s.tmp.%d.%s" % (target, os.getpid(), os.urandom(4).hex())
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask would otherwise decide who may read it
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)  # data durable before any name points at it
    except BaseException:
        os.close(fd)
        unlink_quietly(name)
        raise
    os.close(fd)
    return name


def append_synced(path: str, size: int, body: bytes, mode: int) -> None:
    """Cut ``path`` back to ``size`` bytes (what was committed: a crashed writer may have left more)
    and append ``body`` durably (fsync) — a log whose committed length is recorded elsewhere."""
    fd = open_regular(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)  # the umask would otherwise decide who else may append
        if info.st_size < size:
            raise OSError(errno.EIO, "%s is shorter than its committed %d bytes" % (path, size))
        os.ftruncate(fd, size)
        os.lseek(fd, size, os.SEEK_SET)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str) -> None:
    """fsync a directory, so that a rename in it survives a power cut."""
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(target: str, body: bytes, mode: int = 0o600) -> None:
    """Durably replace ``target`` with ``body``: temp + fsync, rename, fsync of the directory.

    The one atomic write for the node's store, the watcher's state file and the client's journals:
    a reader sees the old file or the new one, never a torn one. Raises OSError; nothing changed
    unless the rename happened.
    """
    tmp = write_temp(target, body, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    sync_dir(os.path.dirname(os.path.abspath(target)))


class _LockTimeout(Exception):
    pass


def _raise_lock_timeout(signum: int, frame: FrameType | None) -> None:
    raise _LockTimeout()


def flock_with_timeout(fd: int, timeout_s: float, operation: int = fcntl.LOCK_EX) -> None:
    """flock(operation: LOCK_EX, or LOCK_SH) that gives up after timeout_s with OpError("busy").

    On the main thread the wait is a blocking flock bounded by a timer signal, so the kernel wakes
    us the instant the holder unlocks; other threads fall back to short polling.
    """
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGALRM, _raise_lock_timeout)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            fcntl.flock(fd, operation)
            return
        except _LockTimeout:
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    else:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.001)
    raise st.OpError("busy", "state lock held for more than %gs" % timeout_s)
