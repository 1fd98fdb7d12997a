"""Durable state files under one flock: atomic replace, a mirror, a previous version, recovery.

Layout of a state dir: `lock` (flock target; never deleted or renamed), `state.json` (the truth),
`state.json.mirror` (a second copy of the same version, so one corrupted file loses nothing),
`state.json.prev` (the version before), `corrupt/` (quarantined unreadable files).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import threading
import time

from . import faults, private, records
from . import state as st

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre")
LOCK_TIMEOUT_S = 10.0
FILE_MODE = 0o664
DIR_MODE = 0o2775  # cooperative mode: group members of a setgid state dir share the files
# Service mode: the service account alone writes; everyone may read the state, nobody else may
# hold the lock; job dirs live in a sticky world-writable jobs/ (each user's own 0700 dir).
SERVICE_FILE_MODE = 0o644
SERVICE_LOCK_MODE = 0o600
SERVICE_DIR_MODE = 0o755
SERVICE_JOBS_MODE = 0o1777


class _LockTimeout(Exception):
    pass


def _raise_lock_timeout(signum, frame):
    raise _LockTimeout()


def _flock_with_timeout(fd, timeout_s):
    """flock(LOCK_EX) that gives up after timeout_s with OpError("busy").

    On the main thread the wait is a blocking flock bounded by a timer signal, so the kernel wakes
    us the instant the holder unlocks; other threads fall back to short polling.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGALRM, _raise_lock_timeout)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
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
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.001)
    raise st.OpError("busy", "state lock held for more than %gs" % timeout_s)


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFile(OSError):
    """A state or lock path that is a FIFO, device, directory or symlink: refused, never opened."""


def open_regular(path, flags, mode=0o600):
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


def read_regular(path, limit=64 << 20):
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


def _describe(exc):
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if isinstance(exc, NotRegularFile) else "%s: %s" % (exc.filename or "", exc.strerror)
    return str(exc) or exc.__class__.__name__


def io_error(what, exc, state_dir, service_user=None):
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
           errno.EROFS: "put state_dir on a writable disk"}.get(exc.errno, "check %s" % state_dir)
    return st.OpError("io", "%s: %s: %s (fix: %s)" % (what, path, reason, fix))


def make_shared_dir(path, mode=DIR_MODE):
    """mkdir -p with mode 2775 (or `mode`) regardless of umask, so other group members can write too."""
    if os.path.isdir(path):
        return
    os.makedirs(path, exist_ok=True)
    try:
        os.chmod(path, mode)
    except OSError:
        pass


def service_setup_fix(state_dir, service_user):
    """The admin's one-line fix for a service-mode state dir."""
    return "sudo install -d -m 0755 -o %s -g %s %s" % (service_user, service_user, state_dir)


class CorruptState(Exception):
    """Every copy of the state is unreadable: the node refuses grants (fail closed)."""


def filesystem_type(path):
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


def is_network_fs(fstype):
    return bool(fstype) and (fstype in NETWORK_FS or fstype.startswith("fuse"))


class StateStore:
    """Reads without the lock; changes only inside `locked()`, each committed durably."""

    def __init__(self, state_dir, service=False):
        """`service`: this process is the service account of a hardened node (see service.py)."""
        self.service = service
        self.file_mode = SERVICE_FILE_MODE if service else FILE_MODE
        self.lock_mode = SERVICE_LOCK_MODE if service else FILE_MODE
        self.dir = os.path.abspath(os.path.expanduser(state_dir))
        self.path = os.path.join(self.dir, "state.json")
        self.mirror = self.path + ".mirror"
        self.prev = self.path + ".prev"
        self.lock_path = os.path.join(self.dir, "lock")
        self._lock_fd = None
        self.lock_held_s = 0.0

    # -- setup ------------------------------------------------------------------------------

    def ensure_dir(self, create=True):
        """Create the state dir when missing (demo, single user) and refuse network filesystems.

        The service account never creates it (an admin does, owned by it and closed to others);
        it checks that, and makes the sticky jobs/ where each user keeps private job dirs.
        """
        if self.service:
            self._check_service_dir()
        elif create and not os.path.isdir(self.dir):
            make_shared_dir(self.dir)
        elif not os.path.isdir(self.dir):
            raise OSError(errno.ENOENT, "state dir %s does not exist" % self.dir)
        fstype = filesystem_type(self.dir)
        if is_network_fs(fstype) and os.environ.get("GPUCONSOLE_ALLOW_NETFS") != "1":
            raise OSError(errno.EREMOTE, "state dir %s is on %s; flock is unreliable there" % (self.dir, fstype))

    def _check_service_dir(self):
        """A service state dir is a real directory owned by us and writable by nobody else."""
        try:
            info = os.lstat(self.dir)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "state dir %s does not exist" % self.dir) from None
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, "state dir %s is not a directory" % self.dir)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise OSError(errno.EPERM, "state dir %s (uid %d, mode %o) must be owned by the service account and "
                          "writable by it alone" % (self.dir, info.st_uid, info.st_mode & 0o7777))
        jobs_dir = os.path.join(self.dir, "jobs")
        try:
            os.mkdir(jobs_dir, 0o700)
        except FileExistsError:
            pass
        jobs_info = os.lstat(jobs_dir)
        if stat.S_ISDIR(jobs_info.st_mode) and jobs_info.st_uid == os.geteuid() \
                and jobs_info.st_mode & 0o7777 != SERVICE_JOBS_MODE:
            os.chmod(jobs_dir, SERVICE_JOBS_MODE)

    # -- locking ----------------------------------------------------------------------------

    def acquire(self, timeout_s=LOCK_TIMEOUT_S):
        fd = open_regular(self.lock_path, os.O_RDWR | os.O_CREAT, self.lock_mode)
        try:
            info = os.fstat(fd)
            if info.st_uid == os.geteuid() and info.st_mode & 0o777 != self.lock_mode:
                os.fchmod(fd, self.lock_mode)  # umask would otherwise lock other group members out
        except OSError:
            pass
        if faults.active("no_lock"):  # negative control for the history checker only
            self._lock_fd, self._locked_at = fd, time.monotonic()
            return
        try:
            _flock_with_timeout(fd, timeout_s)
        except st.OpError:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._locked_at = time.monotonic()

    def release_lock(self):
        if self._lock_fd is not None:
            self.lock_held_s = time.monotonic() - self._locked_at
            os.close(self._lock_fd)  # closing the only fd drops the flock
            self._lock_fd = None

    # -- reading ----------------------------------------------------------------------------

    def _parse(self, path):
        """(state, canonical body or None when records were quarantined, warnings)."""
        state, body = st.decode_file(read_regular(path))
        warnings = records.sanitize(state)
        return state, (None if warnings else body), warnings

    def load(self, boot_id):
        """(state, warnings, source). Fresh state only when no copy exists at all."""
        state, warnings, source, _ = self.load_with_body(boot_id)
        return state, warnings, source

    def load_with_body(self, boot_id):
        """Like load(), plus the canonical body it was read from (None when not state.json)."""
        try:
            state, body, warnings = self._parse(self.path)
            return state, warnings, "state.json", body
        except FileNotFoundError:
            primary_error = "missing"
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            primary_error = _describe(exc)
        candidates, errors = [], []
        for path in (self.mirror, self.prev):
            try:
                parsed = self._parse(path)
                candidates.append((parsed[0], os.path.basename(path), parsed[2]))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                errors.append("%s: %s" % (os.path.basename(path), _describe(exc)))
        if not candidates:
            if primary_error == "missing" and not errors:
                return st.new_state(boot_id), [], "new", None
            raise CorruptState("state.json: %s; %s" % (primary_error, "; ".join(errors) or "no backup"))
        state, source, quarantined = max(candidates, key=lambda c: c[0]["gen"])
        warning = "state.json %s; recovered generation %d from %s" % (primary_error, state["gen"], source)
        return state, [warning, *quarantined], source, None

    def read_cached(self, boot_id):
        """Lock-free read for telemetry, re-parsed only when the file changed (inode, mtime, size)."""
        try:
            info = os.stat(self.path)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            key = None
        cached = getattr(self, "_read_cache", None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        result = self.load(boot_id)
        if key is not None and result[2] == "state.json":
            self._read_cache = (key, result)
        return result

    def load_locked(self, boot_id):
        """Load under the lock; a recovery quarantines the bad file and fences old tokens."""
        state, warnings, recovered, _ = self.load_locked_with_body(boot_id)
        return state, warnings, recovered

    def load_locked_with_body(self, boot_id):
        """load_locked() plus the canonical body read (None after a recovery or on a new node)."""
        state, warnings, source, body = self.load_with_body(boot_id)
        recovered = source not in ("state.json", "new")
        if recovered:
            self._quarantine()
            state["next_token"] += st.TOKEN_JUMP_ON_RECOVERY
            state.setdefault("recoveries", 0)
            state["recoveries"] += 1
        self._remove_stale_temps()
        return state, warnings, recovered, body

    def _quarantine(self):
        if not os.path.lexists(self.path):
            return
        corrupt_dir = os.path.join(self.dir, "corrupt")
        make_shared_dir(corrupt_dir, SERVICE_DIR_MODE if self.service else DIR_MODE)
        if not stat.S_ISDIR(os.lstat(corrupt_dir).st_mode):
            os.unlink(self.path)  # a planted symlink must not choose where our files go
            return
        target = os.path.join(corrupt_dir, "state.json.%d.%d" % (int(time.time()), os.getpid()))
        os.replace(self.path, target)

    def _remove_stale_temps(self):
        # Only the lock holder writes temp files, so any found now were left by a killed writer.
        for name in os.listdir(self.dir):
            if ".tmp." in name and name.startswith("state.json"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass

    # -- writing ----------------------------------------------------------------------------

    def _write_temp(self, body):
        faults.commit_step("tmp")
        name = "%s.tmp.%d.%s" % (self.path, os.getpid(), os.urandom(4).hex())
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode)
        try:
            os.fchmod(fd, self.file_mode)  # umask would otherwise lock other group members out
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # data durable before any name points at it
        except BaseException:
            os.close(fd)
            _unlink_quietly(name)  # a full disk must not also fill up with our half-written temps
            raise
        os.close(fd)
        return name

    def commit(self, state):
        """tmp+fsync → previous version kept → rename over state.json → mirror → fsync dir.

        The rename is the commit point. A failure before it raises OSError and nothing changed; a
        failure after it cannot un-commit, so it comes back as a warning (returned) for the reply.
        """
        if self._lock_fd is None:
            raise RuntimeError("commit without the lock")
        state["gen"] += 1
        state.pop("checksum", None)
        data = st.encode_file(st.canonical(state))
        state["checksum"] = "sha256:" + data[len(st.CHECKSUM_PREFIX):len(st.CHECKSUM_PREFIX) + 64].decode()
        primary_tmp = self._write_temp(data)
        try:
            if os.path.lexists(self.path):
                prev_tmp = "%s.tmp.prev.%s" % (self.path, os.urandom(4).hex())
                try:
                    faults.commit_step("prev")
                    os.link(self.path, prev_tmp)
                    os.replace(prev_tmp, self.prev)
                except OSError:
                    _unlink_quietly(prev_tmp)  # protected_hardlinks, or no space: the mirror still covers us
            faults.commit_step("rename")
            os.replace(primary_tmp, self.path)
        except BaseException:
            _unlink_quietly(primary_tmp)
            raise
        warnings = []
        try:
            mirror_tmp = self._write_temp(data)
            faults.commit_step("mirror")
            try:
                os.replace(mirror_tmp, self.mirror)
            except BaseException:
                _unlink_quietly(mirror_tmp)
                raise
        except OSError as exc:
            warnings.append("committed, but the mirror copy %s was not updated: %s"
                            % (self.mirror, exc.strerror or exc))
        try:
            faults.commit_step("dirsync")
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            warnings.append("committed, but %s could not be synced to disk: %s" % (self.dir, exc.strerror or exc))
        return warnings


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
