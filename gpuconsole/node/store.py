"""Durable state files under one flock: the file format, atomic replace, a mirror, recovery.

Layout of a state dir: `lock` (flock target; never deleted or renamed), `state.json` (the truth),
`state.json.mirror` (a second copy of the same version, so one corrupted file loses nothing),
`state.json.prev` (the version before), `corrupt/` (quarantined unreadable files). The format of
state.json (checksum first, then the canonical body) is defined here and nowhere else.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time

from . import faults, records
from . import state as st
from .canon import RecordEncoder
from .fileio import (
    DIR_MODE,
    describe,
    filesystem_type,
    flock_with_timeout,
    is_network_fs,
    make_shared_dir,
    open_regular,
    read_regular,
    sync_dir,
    unlink_quietly,
    write_temp,
)
from .loader import sha256_hex

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Tuple

    from .typedefs import State

    Loaded = Tuple[State, List[str], str]

LOCK_TIMEOUT_S = 10.0
FILE_MODE = 0o664
# Service mode: the service account alone writes; everyone may read the state, nobody else may
# hold the lock; job dirs live in a sticky world-writable jobs/ (each user's own 0700 dir).
SERVICE_FILE_MODE = 0o644
SERVICE_LOCK_MODE = 0o600
SERVICE_DIR_MODE = 0o755
SERVICE_JOBS_MODE = 0o1777

# ---- the file format ---------------------------------------------------------------------

CHECKSUM_PREFIX = b'{"checksum":"sha256:'
_HEADER_LEN = len(CHECKSUM_PREFIX) + 64 + 2  # prefix, hex digest, '",'


def canonical(state: State | dict[str, Any]) -> str:
    """The canonical JSON body that the checksum covers (everything but the checksum)."""
    body = {k: v for k, v in state.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def checksum(state: State | dict[str, Any]) -> str:
    return "sha256:" + sha256_hex(canonical(state).encode())


def encode_file(body: str) -> bytes:
    """File bytes for a canonical body: the checksum first, then the body's own keys.

    Readers verify the digest over the bytes as stored (no re-serialization), and the file is
    still one plain JSON object whose `checksum` equals checksum(parsed).
    """
    raw = body.encode()
    digest = sha256_hex(raw).encode()
    return CHECKSUM_PREFIX + digest + b'",' + raw[1:] if len(raw) > 2 else CHECKSUM_PREFIX + digest + b'"}'


def decode_file(raw: bytes) -> tuple[dict[str, Any], str]:
    """(parsed state, canonical body) from file bytes; ValueError when damaged or not ours.

    The state's records are still unchecked: records.sanitize() runs next (see StateStore).
    """
    if raw.startswith(CHECKSUM_PREFIX) and len(raw) > _HEADER_LEN:
        digest = raw[len(CHECKSUM_PREFIX):len(CHECKSUM_PREFIX) + 64].decode("ascii", "replace")
        body = b"{" + raw[_HEADER_LEN:]
        if sha256_hex(body) != digest:
            raise ValueError("checksum mismatch")
        state = json.loads(body.decode("utf-8"))
        state["checksum"] = "sha256:" + digest
        validate_state(state, checked=True)
        return state, body.decode("utf-8")
    state = json.loads(raw.decode("utf-8"))
    validate_state(state)
    return state, canonical(state)


def validate_state(state: object, checked: bool = False) -> None:
    """Raise ValueError when a parsed file is not a usable state of our schema."""
    if not isinstance(state, dict) or state.get("schema") != st.SCHEMA:
        raise ValueError("unknown schema %r" % (state.get("schema") if isinstance(state, dict) else None))
    if not checked and state.get("checksum") != checksum(state):
        raise ValueError("checksum mismatch")
    for key in ("leases", "queue", "applied"):
        if not isinstance(state.get(key), dict):
            raise ValueError("missing %s" % key)
    if not isinstance(state.get("next_token"), int) or not isinstance(state.get("gen"), int):
        raise ValueError("bad counters")


def _checked_state(raw: dict[str, Any]) -> State:
    """A parsed state once validate_state() and records.sanitize() have passed it: typed from here."""
    return raw  # type: ignore[return-value]


def no_dir_note(state_dir: str, service_user: str | None) -> tuple[str, str]:
    """(what, fix) for a node that has no state dir yet: a cooperative one gets it with its first
    change; a service-mode one only from an admin (node-install's setup)."""
    what = "no state dir %s" % state_dir
    if service_user is not None:
        return what, "sudo install -d -m 0755 -o %s -g %s %s (`gpuconsole node-install` prints every step)" \
            % (service_user, service_user, state_dir)
    return what, "the first reserve or submit creates it, owned by its user; for a node shared by a group an " \
        "admin creates it once: sudo install -d -m 2775 -g gpu %s" % state_dir


def no_dir_error(exc: OSError, state_dir: str, service_user: str | None) -> st.OpError:
    """OpError("io") for a state dir a change could not create or use: names the path and the fix."""
    if exc.errno == errno.EREMOTE:  # ensure_dir's own message names the path and the filesystem
        return st.OpError("io", "%s (fix: put state_dir on a local disk)" % exc.strerror)
    fix = no_dir_note(state_dir, service_user)[1] if service_user is not None else \
        "sudo install -d -m 2775 -g gpu %s and add the user to group gpu" % state_dir
    return st.OpError("io", "cannot %s the state dir %s: %s (fix: %s)"
                      % ("create" if service_user is None else "use", state_dir, exc.strerror or exc, fix))


class CorruptState(Exception):
    """Every copy of the state is unreadable: the node refuses grants (fail closed)."""


class StateStore:
    """Reads without the lock; changes only inside `locked()`, each committed durably."""

    def __init__(self, state_dir: str, service: bool = False) -> None:
        """`service`: this process is the service account of a hardened node (see service.py)."""
        self.service = service
        self.file_mode = SERVICE_FILE_MODE if service else FILE_MODE
        self.lock_mode = SERVICE_LOCK_MODE if service else FILE_MODE
        self.dir = os.path.abspath(os.path.expanduser(state_dir))
        self.path = os.path.join(self.dir, "state.json")
        self.mirror = self.path + ".mirror"
        self.prev = self.path + ".prev"
        self.lock_path = os.path.join(self.dir, "lock")
        self._lock_fd: int | None = None
        self.ready = False  # ensure_dir() passed: the dir exists and may hold the state
        self._read_cache: tuple[tuple[int, int, int], Loaded] | None = None
        # The bytes this process last committed, or last found with no malformed record: the same
        # bytes again need no records.sanitize() (its per-record checks cost most of a load).
        self._clean: bytes | None = None
        self._encoder = RecordEncoder()
        # What this process last committed (file bytes, the state object, its body): while
        # state.json still holds those bytes the next locked load takes the object as it is, once.
        self._committed: tuple[bytes, State, str] | None = None

    # -- setup ------------------------------------------------------------------------------

    def ensure_dir(self, create: bool = True) -> None:
        """Create the state dir when missing (demo, single user) and refuse network filesystems.

        Only a change creates it (`create`): reads of a node without one see an empty state and
        leave it missing. The service account never creates it (an admin does, owned by it and
        closed to others); it checks that, and makes the sticky jobs/ where each user keeps
        private job dirs.
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
        self.ready = True

    def _check_service_dir(self) -> None:
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

    def acquire(self, timeout_s: float = LOCK_TIMEOUT_S) -> None:
        fd = open_regular(self.lock_path, os.O_RDWR | os.O_CREAT, self.lock_mode)
        try:
            info = os.fstat(fd)
            if info.st_uid == os.geteuid() and info.st_mode & 0o777 != self.lock_mode:
                os.fchmod(fd, self.lock_mode)  # umask would otherwise lock other group members out
        except OSError:
            pass
        if faults.active("no_lock"):  # negative control for the history checker only
            self._lock_fd = fd
            return
        try:
            flock_with_timeout(fd, timeout_s)
        except st.OpError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def await_writer(self, timeout_s: float) -> int | None:
        """A shared flock on the lock file (so no change is in flight while it is held), or None
        when that cannot be had within timeout_s or at all (no lock file yet, not ours to open).
        The caller closes the fd it gets."""
        try:
            fd = open_regular(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            flock_with_timeout(fd, timeout_s, fcntl.LOCK_SH)
        except (st.OpError, OSError):
            os.close(fd)
            return None
        return fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only fd drops the flock
            self._lock_fd = None

    # -- reading ----------------------------------------------------------------------------

    def _parse(self, path: str) -> tuple[State, str | None, list[str]]:
        """(state, canonical body or None when records were quarantined, warnings)."""
        data = read_regular(path)
        raw, body = decode_file(data)
        if data == self._clean:
            return _checked_state(raw), body, []
        warnings = records.sanitize(raw)
        if not warnings:
            self._clean = data
        return _checked_state(raw), (None if warnings else body), warnings

    def mentions(self, text: str) -> bool:
        """Whether `text`, JSON-encoded, occurs in state.json's bytes (or the file is unreadable): a
        cheap test that a request id is in no committed answer, before paying for a full load."""
        try:
            return json.dumps(text).encode() in read_regular(self.path)
        except (OSError, ValueError):
            return True

    def load(self, boot_id: str) -> Loaded:
        """(state, warnings, source). Fresh state only when no copy exists at all."""
        state, warnings, source, _ = self.load_with_body(boot_id)
        return state, warnings, source

    def load_with_body(self, boot_id: str) -> tuple[State, list[str], str, str | None]:
        """Like load(), plus the canonical body it was read from (None when not state.json)."""
        try:
            state, body, warnings = self._parse(self.path)
            return state, warnings, "state.json", body
        except (FileNotFoundError, NotADirectoryError):  # no file, or no state dir at all
            primary_error = "missing"
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            primary_error = describe(exc)
        candidates: list[tuple[State, str, list[str]]] = []
        errors: list[str] = []
        for path in (self.mirror, self.prev):
            try:
                parsed = self._parse(path)
                candidates.append((parsed[0], os.path.basename(path), parsed[2]))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                errors.append("%s: %s" % (os.path.basename(path), describe(exc)))
        if not candidates:
            if primary_error == "missing" and not errors:
                return st.new_state(boot_id), [], "new", None
            raise CorruptState("state.json: %s; %s" % (primary_error, "; ".join(errors) or "no backup"))
        state, source, quarantined = max(candidates, key=lambda c: c[0]["gen"])
        warning = "state.json %s; recovered generation %d from %s" % (primary_error, state["gen"], source)
        return state, [warning, *quarantined], source, None

    def read_cached(self, boot_id: str) -> Loaded:
        """Lock-free read for telemetry, re-parsed only when the file changed (inode, mtime, size)."""
        try:
            info = os.stat(self.path)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            key = None
        cached = self._read_cache
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        result = self.load(boot_id)
        if key is not None and result[2] == "state.json":
            self._read_cache = (key, result)
        return result

    def load_locked(self, boot_id: str) -> tuple[State, list[str], bool]:
        """Load under the lock; a recovery quarantines the bad file and fences old tokens."""
        state, warnings, recovered, _ = self.load_locked_with_body(boot_id)
        return state, warnings, recovered

    def load_locked_with_body(self, boot_id: str) -> tuple[State, list[str], bool, str | None]:
        """load_locked() plus the canonical body read (None after a recovery or on a new node)."""
        committed, self._committed = self._committed, None  # handed out once: the caller changes it
        if committed is not None and self._unchanged_since(committed[0]):
            self._remove_stale_temps()
            return committed[1], [], False, committed[2]
        state, warnings, source, body = self.load_with_body(boot_id)
        recovered = source not in ("state.json", "new")
        if recovered:
            self._quarantine()
            state["next_token"] += st.TOKEN_JUMP_ON_RECOVERY
            state.setdefault("recoveries", 0)
            state["recoveries"] += 1
        self._remove_stale_temps()
        return state, warnings, recovered, body

    def _unchanged_since(self, data: bytes) -> bool:
        """Whether state.json still holds exactly these bytes (nobody committed since)."""
        try:
            return read_regular(self.path) == data
        except (OSError, ValueError):
            return False

    def _quarantine(self) -> None:
        if not os.path.lexists(self.path):
            return
        corrupt_dir = os.path.join(self.dir, "corrupt")
        make_shared_dir(corrupt_dir, SERVICE_DIR_MODE if self.service else DIR_MODE)
        if not stat.S_ISDIR(os.lstat(corrupt_dir).st_mode):
            os.unlink(self.path)  # a planted symlink must not choose where our files go
            return
        target = os.path.join(corrupt_dir, "state.json.%d.%d" % (int(time.time()), os.getpid()))
        os.replace(self.path, target)

    def _remove_stale_temps(self) -> None:
        # Only the lock holder writes temp files, so any found now were left by a killed writer.
        for name in os.listdir(self.dir):
            if ".tmp." in name and name.startswith("state.json"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass

    # -- writing ----------------------------------------------------------------------------

    def _write_temp(self, body: bytes) -> str:
        faults.commit_step("tmp")
        return write_temp(self.path, body, self.file_mode)

    def commit(self, state: State) -> list[str]:
        """tmp+fsync → previous version kept → rename over state.json → mirror → fsync dir.

        The rename is the commit point. A failure before it raises OSError and nothing changed; a
        failure after it cannot un-commit, so it comes back as a warning (returned) for the reply.
        """
        if self._lock_fd is None:
            raise RuntimeError("commit without the lock")
        state["gen"] += 1
        state.pop("checksum", None)
        self._committed = None
        body = self._encoder.body(state)
        data = encode_file(body)
        state["checksum"] = "sha256:" + data[len(CHECKSUM_PREFIX):len(CHECKSUM_PREFIX) + 64].decode()
        primary_tmp = self._write_temp(data)
        try:
            if os.path.lexists(self.path):
                prev_tmp = "%s.tmp.prev.%s" % (self.path, os.urandom(4).hex())
                try:
                    faults.commit_step("prev")
                    os.link(self.path, prev_tmp)
                    os.replace(prev_tmp, self.prev)
                except OSError:
                    unlink_quietly(prev_tmp)  # protected_hardlinks, or no space: the mirror still covers us
            faults.commit_step("rename")
            os.replace(primary_tmp, self.path)
        except BaseException:
            unlink_quietly(primary_tmp)
            raise
        self._clean = data
        self._committed = (data, state, body)
        warnings: list[str] = []
        try:
            mirror_tmp = self._write_temp(data)
            faults.commit_step("mirror")
            try:
                os.replace(mirror_tmp, self.mirror)
            except BaseException:
                unlink_quietly(mirror_tmp)
                raise
        except OSError as exc:
            warnings.append("committed, but the mirror copy %s was not updated: %s"
                            % (self.mirror, exc.strerror or exc))
        try:
            faults.commit_step("dirsync")
            sync_dir(self.dir)
        except OSError as exc:
            warnings.append("committed, but %s could not be synced to disk: %s" % (self.dir, exc.strerror or exc))
        return warnings

