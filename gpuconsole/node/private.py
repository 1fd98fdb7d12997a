"""Files that only this user can change: the one way an agent or supervisor opens a job's files.

In cooperative mode every gpu-group member can write the state dir, so a path there may have been
swapped, symlinked or planted by someone else. Anything this process will execute, signal on the
word of, or open for its user is reached through a directory fd that was checked to be a real
directory owned by this user and closed to group and others, then opened relative to it with
O_NOFOLLOW and checked again. A check that fails raises NotPrivate, naming the path and why.
"""

from __future__ import annotations

import errno
import json
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JOBS_DIR_MODE = 0o3775  # setgid (group shared), sticky (only an entry's owner may rename or delete it)


class NotPrivate(OSError):
    """A path that another user could have chosen or changed: refused."""


def _refuse(path: str, why: str) -> NotPrivate:
    return NotPrivate(errno.EPERM, "%s %s; refusing to trust it" % (path, why))


def _check(info: os.stat_result, path: str, uid: int, want_dir: bool, shared_mode: bool = False) -> None:
    if want_dir and not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a directory")
    if not want_dir and not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "is not a regular file")
    if info.st_uid != uid:
        raise _refuse(path, "is owned by uid %d, not %d" % (info.st_uid, uid))
    if info.st_mode & 0o022 and not shared_mode:
        raise _refuse(path, "is writable by group or others (mode %o)" % (info.st_mode & 0o7777))


def _checked(fd: int, label: str, uid: int, want_dir: bool, shared_mode: bool = False) -> int:
    """`fd` once its fstat passes _check; closed (and the refusal raised) otherwise."""
    try:
        _check(os.fstat(fd), label, uid, want_dir, shared_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: str, uid: int | None = None) -> int:
    """An O_DIRECTORY fd on `path` (not followed if a symlink) owned by `uid` and 0700-ish."""
    uid = os.geteuid() if uid is None else uid
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(path, "is a symlink or not a directory") from None
        raise
    return _checked(fd, path, uid, True)


def open_file(dir_fd: int, name: str, flags: int = os.O_RDONLY, mode: int = 0o600, uid: int | None = None,
              label: str | None = None, shared_mode: bool = False) -> int:
    """An fd on `name` inside a checked directory fd: regular, ours, not group/other-writable
    (`shared_mode`: may be, for a file another program made with the user's umask, read only from
    a directory no one else can enter)."""
    uid = os.geteuid() if uid is None else uid
    label = label or name
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(label, "is a symlink") from None
        raise
    return _checked(fd, label, uid, False, shared_mode)


def read_json(dir_fd: int, name: str, limit: int = 1 << 20, label: str | None = None) -> Any:
    """Parse a small JSON file reached through open_file()."""
    fd = open_file(dir_fd, name, label=label)
    try:
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError("%s is too large" % (label or name))
    return json.loads(data.decode("utf-8"))


def write_json(dir_fd: int, name: str, value: object) -> None:
    """Create or replace a small JSON file (0600) inside a checked directory fd."""
    fd = open_file(dir_fd, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, json.dumps(value).encode())
    finally:
        os.close(fd)


def ensure_jobs_dir(path: str) -> str | None:
    """Create `jobs/` shared by the group but sticky, or add the sticky bit if it is ours.

    Returns a warning line when it exists, is not ours and lacks the sticky bit (an admin's fix).
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a directory")
    if info.st_uid == os.geteuid() and info.st_mode & 0o7777 != JOBS_DIR_MODE:
        os.chmod(path, JOBS_DIR_MODE)  # umask, and older versions, left it without the sticky bit
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        raise NotPrivate(errno.EACCES, "%s (mode %o, uid %d) is not writable for us; fix: sudo install -d -m 3775 "
                         "-g gpu %s" % (path, info.st_mode & 0o7777, info.st_uid, path))
    if info.st_mode & stat.S_ISVTX:
        return None
    return "%s is not sticky: other users could rename job directories (fix: sudo chmod +t %s)" % (path, path)
