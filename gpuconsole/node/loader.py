"""The program text that installs the node modules in a fresh interpreter and runs the agent.

Used by the client to start agents and by agents to start job supervisors, so both build the
same program. The bootstrap on the command line is constant; the program follows on stdin.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence

PACKAGE = "gcnode"
# The shipped modules in dependency order: each imports only modules listed before it.
# typedefs.py is not shipped: only the type checker imports it.
MODULES = ("loader", "faults", "procs", "hostio", "gpus", "state", "records", "private", "fileio", "store",
           "reservations", "jobs", "service", "txn", "jobfiles", "waiter", "jobops", "arrays", "telemetry",
           "doctor", "agent", "supervisor", "ptyshell")
BOOTSTRAP = (
    "import sys;r=sys.stdin.buffer;n=int(r.readline());"
    "exec(compile(r.read(n),'<gpuconsole-agent>','exec'))"
)

# Compiled module code is cached per agent version and interpreter in the user's cache dir (a
# cache, not an install: deleting it costs one compile); compiling is most of a start-up.
_LOADER = """
import marshal, os, sys, types
def _codes(sources, digest):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "gpuconsole", "agent-%s-%s.marshal" % (digest, sys.implementation.cache_tag))
    try:
        with open(path, "rb") as handle:
            codes = marshal.loads(handle.read())
        if sorted(codes) == sorted(sources):
            return codes
    except Exception:
        pass
    codes = dict((name, compile(src, "<gcnode/%s.py>" % name, "exec")) for name, src in sources.items())
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as handle:
            handle.write(marshal.dumps(codes))
        os.replace(tmp, path)
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
