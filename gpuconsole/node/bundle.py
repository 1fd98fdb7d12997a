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


@lru_cache(maxsize=1)
def agent_program() -> bytes:
    """The agent as one Python program that installs the modules and runs `agent.main()`."""
    sources = {
        name: resources.files("gpuconsole.node").joinpath(f"{name}.py").read_text(encoding="utf-8")
        for name in MODULES
    }
    lines = [
        "import sys, types",
        f"_pkg = types.ModuleType({PACKAGE!r}); _pkg.__path__ = []; sys.modules[{PACKAGE!r}] = _pkg",
        f"_SOURCES = {sources!r}",
        f"for _name in {MODULES!r}:",
        f"    _mod = types.ModuleType({PACKAGE!r} + '.' + _name)",
        f"    _mod.__package__ = {PACKAGE!r}",
        "    sys.modules[_mod.__name__] = _mod",
        "    setattr(_pkg, _name, _mod)",
        "    exec(compile(_SOURCES[_name], '<gcnode/' + _name + '.py>', 'exec'), _mod.__dict__)",
        f"sys.modules[{PACKAGE!r} + '.agent'].main()",
    ]
    return "\n".join(lines).encode("utf-8")


def agent_digest() -> str:
    """A short hash of the agent program, shown by `doctor` to spot version drift."""
    return hashlib.sha256(agent_program()).hexdigest()[:12]


def remote_command(python: str) -> str:
    """The constant command line run on the node; `python` comes from the validated config."""
    return f"exec {shlex.quote(python)} -c {shlex.quote(BOOTSTRAP)}"


def agent_preamble() -> bytes:
    """What the client writes to the remote stdin before its first request."""
    program = agent_program()
    return str(len(program)).encode() + b"\n" + program
