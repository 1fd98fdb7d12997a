"""Build the program sent to a node: the stdlib-only node modules packed into one script.

The remote command line is a constant bootstrap that reads a length-prefixed program from stdin;
everything else (requests, job argv) follows on stdin as JSON lines.
"""

from __future__ import annotations

import hashlib
import shlex
from functools import lru_cache
from importlib import resources

# Dependency order: each module only imports modules listed before it.
MODULES = ("procs", "hostio", "gpus", "state", "store", "agent")
PACKAGE = "gcnode"

BOOTSTRAP = (
    "import sys;r=sys.stdin.buffer;n=int(r.readline());"
    "exec(compile(r.read(n),'<gpuconsole-agent>','exec'))"
)


# Runs on the node: compiled module code is cached per agent version and interpreter in the
# user's cache dir (a cache, not an install: deleting it costs one compile), because compiling
# the sources is most of an agent's start-up time.
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


@lru_cache(maxsize=1)
def agent_program() -> bytes:
    """The agent as one Python program that installs the modules and runs `agent.main()`."""
    sources = {
        name: resources.files("gpuconsole.node").joinpath(f"{name}.py").read_text(encoding="utf-8")
        for name in MODULES
    }
    digest = hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:16]
    package = repr(PACKAGE)
    lines = [
        _LOADER,
        f"_pkg = types.ModuleType({package}); _pkg.__path__ = []; sys.modules[{package}] = _pkg",
        f"_CODES = _codes({sources!r}, {digest!r})",
        f"for _name in {MODULES!r}:",
        f"    _mod = types.ModuleType({package} + '.' + _name)",
        f"    _mod.__package__ = {package}",
        "    sys.modules[_mod.__name__] = _mod",
        "    setattr(_pkg, _name, _mod)",
        "    exec(_CODES[_name], _mod.__dict__)",
        f"sys.modules[{package} + '.agent'].main()",
    ]
    return "\n".join(lines).encode("utf-8")


def agent_digest() -> str:
    """A short hash of the agent program, shown by `doctor` to spot version drift."""
    return hashlib.sha256(agent_program()).hexdigest()[:12]


def remote_command(python: str) -> str:
    """The constant command line run on the node; `python` comes from the validated config."""
    # -S: the agent is stdlib-only; the NVML path loads `site` itself before importing pynvml.
    return f"exec {shlex.quote(python)} -S -c {shlex.quote(BOOTSTRAP)}"


def agent_preamble() -> bytes:
    """What the client writes to the remote stdin before its first request."""
    program = agent_program()
    return str(len(program)).encode() + b"\n" + program
