"""The program text that installs the node modules in a fresh interpreter and runs the agent.

Used by the client to start agents and by agents to start job supervisors, so both build the
same program. The bootstrap on the command line is constant; the program follows on stdin.
"""

from __future__ import annotations

import io
import sys

try:  # the interpreter's own sha256: importing hashlib (OpenSSL) costs the agent ~5 ms of its start
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found, unused-ignore]  # Python 3.8-3.11
except ImportError:  # by interpreter version
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found, no-redef, unused-ignore]  # 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment, no-redef, unused-ignore]  # no builtin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Mapping, Sequence

PACKAGE = "gcnode"
# The shipped modules in dependency order: each imports only modules listed before it.
# typedefs.py is not shipped: only the type checker imports it.
MODULES = ("loader", "faults", "procs", "hostio", "health", "gpus", "policy", "fairshare", "state", "occupancy",
           "records", "private", "fileio", "canon", "store", "pending", "ledger", "reservations", "jobs", "service",
           "txn", "jobfiles", "waiter", "jobops", "arrays", "telemetry", "doctor", "slurmread", "slurm", "slurmjobs",
           "agent", "supervisor", "ptyshell")
# The bootstrap run by the constant command line (`python -S -c BOOTSTRAP`). Its first stdin line
# is either the program's length (the program follows: job supervisors, the shell) or
# `sha256:<hex digest of the program>`: then the program is taken from the user's private cache
# when a copy there has that digest, and otherwise asked for with NEED_PROGRAM, followed by
# " zlib" when the node can inflate (then the program comes deflated, `z<length>`: a quarter of
# the bytes). What the client sent before the program, its first request lines, is kept for the
# agent in _gc_early. Cached
# files are read only from a dir and as a file the user owns that no one else can write, opened
# without following links; a copy is run only when its bytes hash to the digest.
# Kept free of "!" (csh history) and of newlines in the command line (exec of a one-line repr).
NEED_PROGRAM = b"gpuconsole-need-program-1"
_BOOT_SOURCE = """
import os, sys
def _gc_dir(create=False):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "gpuconsole")
    try:
        if create:
            os.makedirs(path, 0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and info.st_mode & 0o022 and create:
        os.fchmod(fd, 0o700)
        info = os.fstat(fd)
    if info.st_uid == os.geteuid() and not info.st_mode & 0o022:
        return fd
    os.close(fd)
    return None
def _gc_load(name):
    fd = _gc_dir()
    if fd is None:
        return None
    try:
        handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        info = os.fstat(handle)
        if (info.st_mode & 0o170022) == 0o100000 and info.st_uid == os.geteuid():
            chunks = []
            while True:
                chunk = os.read(handle, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        return None
    finally:
        os.close(handle)
def _gc_store(name, data):
    fd = _gc_dir(True)
    if fd is None:
        return
    tmp = "%s.%d.tmp" % (name, os.getpid())
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view):]
        finally:
            os.close(handle)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=fd)
        except OSError:
            pass
    finally:
        os.close(fd)
_gc_in = sys.stdin.buffer
_gc_head = _gc_in.readline()
_gc_early = b""
if _gc_head.startswith(b"sha256:"):
    try:
        from _sha256 import sha256 as _gc_sha256
    except ImportError:
        try:
            from _sha2 import sha256 as _gc_sha256
        except ImportError:
            from hashlib import sha256 as _gc_sha256
    _gc_digest = _gc_head[7:].strip().decode("ascii")
    if not len(_gc_digest) == 64 or set(_gc_digest) - set("0123456789abcdef"):
        raise SystemExit("gpuconsole: bad program digest line")
    _gc_name = "agent-%s.py" % _gc_digest
    _gc_prog = _gc_load(_gc_name)
    if _gc_prog is None or not _gc_sha256(_gc_prog).hexdigest() == _gc_digest:
        try:
            import zlib
            os.write(1, b"\\nNEED_PROGRAM zlib\\n")
        except ImportError:
            os.write(1, b"\\nNEED_PROGRAM\\n")
        _gc_line = _gc_in.readline()
        while _gc_line.startswith(b"{"):
            _gc_early += _gc_line
            _gc_line = _gc_in.readline()
        if _gc_line.startswith(b"z"):
            _gc_prog = zlib.decompress(_gc_in.read(int(_gc_line[1:])))
        else:
            _gc_prog = _gc_in.read(int(_gc_line))
        if _gc_sha256(_gc_prog).hexdigest() == _gc_digest:
            _gc_store(_gc_name, _gc_prog)
else:
    _gc_prog = _gc_in.read(int(_gc_head))
exec(compile(_gc_prog, "<gpuconsole-agent>", "exec"))
""".replace("NEED_PROGRAM", NEED_PROGRAM.decode())
# One-space indents: the command line is sent with every connection.
BOOTSTRAP = "exec(%r)" % "\n".join(line.replace("    ", " ") for line in _BOOT_SOURCE.splitlines())

# Compiled module code is cached per agent version and interpreter in the user's cache dir (a
# cache, not an install: deleting it costs one compile); compiling is most of a start-up.
_LOADER = """
import marshal, os, sys, types
def _codes(sources, digest):
    name = "agent-%s-%s.marshal" % (digest, sys.implementation.cache_tag)
    load, store = globals().get("_gc_load"), globals().get("_gc_store")
    try:
        codes = marshal.loads(load(name) or b"")
        if sorted(codes) == sorted(sources):
            return codes
    except Exception:
        pass
    codes = dict((name, compile(src, "<gcnode/%s.py>" % name, "exec")) for name, src in sources.items())
    try:
        store(name, marshal.dumps(codes))
    except Exception:
        pass
    return codes
"""


# The installed service agent (service.py) compiles afresh each start (tens of milliseconds) and
# drops the environment's test hooks before any module reads them: nothing outside its own
# root-owned file may change what it runs.
_SERVICE_LOADER = """
import os, sys, types
for _key in list(os.environ):
    if _key.startswith("GPUCONSOLE_"):
        del os.environ[_key]
def _codes(sources, digest):
    return dict((name, compile(src, "<gcnode/%s.py>" % name, "exec")) for name, src in sources.items())
"""


def build_program(sources: Mapping[str, str], digest: str, modules: Sequence[str],
                  service: dict[str, Any] | None = None) -> str:
    """Program text: install `modules` (in order) from `sources` as package gcnode, run agent.main().

    `service`: the settings of an installed service agent (user, state_dir, simulate_gpus), passed
    to main(); such a program keeps no code cache and ignores GPUCONSOLE_* variables.
    """
    package = repr(PACKAGE)
    lines = [
        _LOADER if service is None else _SERVICE_LOADER,
        "_pkg = types.ModuleType(%s); _pkg.__path__ = []; sys.modules[%s] = _pkg" % (package, package),
        "_pkg.SOURCES = %r; _pkg.DIGEST = %r; _pkg.MODULES = %r" % (sources, digest, tuple(modules)),
        "_CODES = _codes(_pkg.SOURCES, _pkg.DIGEST)",
        "for _name in _pkg.MODULES:",
        "    _mod = types.ModuleType(%s + '.' + _name)" % package,
        "    _mod.__package__ = %s" % package,
        "    sys.modules[_mod.__name__] = _mod",
        "    setattr(_pkg, _name, _mod)",
        "    exec(_CODES[_name], _mod.__dict__)",
        "sys.modules[%s + '.agent'].main(%s)" % (package, "" if service is None else "service=%r" % (service,)),
    ]
    return "\n".join(lines)


def digest(sources: Mapping[str, str]) -> str:
    """Version of a set of module sources (names the compiled-code cache)."""
    import hashlib

    return hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:16]


def preamble(program: str) -> bytes:
    """Bytes written to the bootstrap's stdin: the length line, then the program."""
    data = program.encode("utf-8")
    return str(len(data)).encode() + b"\n" + data


class PrefixedLines:
    """Line reader: `early` first, then `rest`."""

    def __init__(self, early: bytes, rest: IO[bytes]) -> None:
        self._early = io.BytesIO(early)
        self._rest = rest

    def readline(self, size: int = -1) -> bytes:
        return self._early.readline(size) or self._rest.readline(size)


def request_lines(stdin: IO[bytes]) -> IO[bytes] | PrefixedLines:
    """The agent's requests: stdin, after the lines the bootstrap read before the program came."""
    early = getattr(sys.modules.get("__main__"), "_gc_early", b"")
    return PrefixedLines(early, stdin) if isinstance(early, bytes) and early else stdin


BIG_HASH_BYTES = 64 * 1024


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of `data`: the builtin for small inputs (no hashlib import at start), OpenSSL's
    for a large state file (several times faster: 0.7 against 4.9 ms for 860 KB)."""
    if len(data) > BIG_HASH_BYTES:
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return str(_sha256(data).hexdigest())
