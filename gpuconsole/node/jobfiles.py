"""Job files and processes shared by the job ops, the waiter and arrays: a job's private dir,
starting the supervisor program, log tails, leftovers (module-level, so none of them imports another)."""
from __future__ import annotations

import os
import sys

from . import loader, private, procs
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any


MAX_LOG_CHUNK = 256 * 1024


def job_dir_of(state_dir: str, job_id: object) -> str:
    """The private dir of a job id of the right shape (`not_found` for anything else)."""
    if not isinstance(job_id, str) or not job_id.startswith("j-") or not job_id[2:].isalnum():
        raise st.OpError("not_found", "no job %r on this node" % (job_id,))
    return os.path.join(state_dir, "jobs", job_id)


def spawn_program(state_dir: str, settings: dict[str, str], role_env: dict[str, str], dir_fd: int,
                  log_name: str) -> subprocess.Popen[bytes]:
    """Start the agent program detached as a supervisor (`role_env`: its job, or the waiter's dir),
    its stderr appended to `log_name` in the checked dir `dir_fd`."""
    import subprocess  # only submit needs it

    codes: Any = sys.modules[__package__ or ""]
    program = loader.build_program(codes.SOURCES, codes.DIGEST, codes.MODULES) \
        if hasattr(codes, "SOURCES") else _local_program()
    env = dict(os.environ, GPUCONSOLE_ROLE="supervisor", GPUCONSOLE_STATE_DIR=state_dir, **settings)
    env.pop("GPUCONSOLE_WAITER_DIR", None)
    env.update(role_env)
    log_fd = private.open_file(dir_fd, log_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        child = subprocess.Popen([sys.executable, "-S", "-c", loader.BOOTSTRAP], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=log_fd, env=env, cwd="/",
                                 start_new_session=True, close_fds=True)
    finally:
        os.close(log_fd)
    assert child.stdin is not None  # stdin=PIPE
    child.stdin.write(loader.preamble(program))
    child.stdin.close()
    return child


ENDED_MARK = "ended"
TAIL_SCAN_MAX = 8 * 1024 * 1024  # `logs --tail` looks back this far at most for the lines' start


def tail_offset(fd: int, lines: int) -> int:
    """Where the last `lines` lines of the file begin (a last line without its newline counts)."""
    size = os.fstat(fd).st_size
    end = size
    if size:
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) == b"\n":
            end = size - 1  # the final newline ends the last line; it does not start another
    if lines == 0:
        return size
    found = 0
    pos = end
    while pos > 0 and size - pos < TAIL_SCAN_MAX:
        start = max(0, pos - 65536)
        os.lseek(fd, start, os.SEEK_SET)
        block = os.read(fd, pos - start)
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            found += 1
            if found == lines:
                return start + index + 1
        pos = start
    return pos


def read_chunk(fd: int, offset: int, tail_lines: int | None, ended: bool) -> tuple[bytes, int]:
    """(data, where it starts) of an output file: from `offset`, or from the start of its last
    `tail_lines` lines; cut at a whole UTF-8 character unless it is the end of an ended job's output
    (the rest of a split character comes with the next chunk)."""
    if tail_lines is not None:
        offset = tail_offset(fd, tail_lines)
    os.lseek(fd, offset, os.SEEK_SET)
    data = os.read(fd, MAX_LOG_CHUNK)
    if not (ended and len(data) < MAX_LOG_CHUNK):
        data = data[:_utf8_boundary(data)]
    return data, offset


def _utf8_boundary(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)  # ASCII: complete
        if byte >= 0xC0:  # a lead byte: complete only if its sequence fits in what follows
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)  # only continuation bytes (invalid anyway): do not hold them back


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _discard(child: subprocess.Popen[bytes] | None, job_dir: str) -> None:
    """Undo a submit that did not commit: stop its supervisor and remove its job dir."""
    import shutil

    if child is not None:
        try:
            child.kill()
            child.wait()
        except OSError:
            pass
    shutil.rmtree(job_dir, ignore_errors=True)


def _shell_quote(arg: str) -> str:
    """Display form of one argument (for `jobs`; the job itself is exec'd from the list)."""
    safe = all(c.isalnum() or c in "@%+=:,./-_" for c in arg)
    return arg if arg and safe else "'" + arg.replace("'", "'\\''") + "'"


def kill_leftovers(dir_fd: int, uid: int) -> bool:
    """End what a dead supervisor's job left running, so its GPUs are free before it runs again.

    The job's process group is read from the job's private dir and signalled only when it is
    still that group: its leader has the recorded start time on this boot, or the leader is gone
    and a process of ours is still in the group (a pgid is not reused while a member lives).
    """
    import signal

    try:
        record = private.read_json(dir_fd, PGID_FILE)
        pgid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pgid <= 1 or record.get("boot_id") != procs.boot_id() or record.get("uid") != uid:
        return False
    leader_start = procs.start_ticks(pgid)
    if leader_start is not None:
        if leader_start != record.get("start") or procs.proc_uid(pgid) != uid:
            return False  # the pid now names another process: the old group is gone
    elif not any(procs.proc_uid(pid) == uid for pid in procs.group_members(pgid)):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        return False
    return True


PGID_FILE = "pgid.json"


def _local_program() -> str:
    """The program when running from the installed package (tests), not from a shipped bundle."""
    here = os.path.dirname(os.path.abspath(__file__))
    sources: dict[str, str] = {}
    for name in loader.MODULES:
        with open(os.path.join(here, name + ".py")) as handle:
            sources[name] = handle.read()
    return loader.build_program(sources, loader.digest(sources), loader.MODULES)
