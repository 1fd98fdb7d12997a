"""Build the program sent to a node: the stdlib-only node modules packed into one script.

The remote command line is a constant bootstrap (node/loader.py BOOTSTRAP). The client's first stdin
line names the program by its sha256; a node that has a verified copy in the user's cache runs it,
one that has not answers NEED_PROGRAM and is sent the program, length first. Everything else
(requests, job argv) follows on stdin as JSON lines.
"""

from __future__ import annotations

import hashlib
import shlex
import zlib
from functools import lru_cache
from importlib import resources

from gpuconsole.node import loader

MODULES = loader.MODULES
BOOTSTRAP = loader.BOOTSTRAP


def _sources() -> dict[str, str]:
    return {
        name: resources.files("gpuconsole.node").joinpath(f"{name}.py").read_text(encoding="utf-8")
        for name in MODULES
    }


@lru_cache(maxsize=1)
def agent_program() -> bytes:
    """The agent as one Python program that installs the modules and runs `agent.main()`."""
    sources = _sources()
    version = loader.digest(sources)
    program = loader.build_program(sources, version, MODULES)
    return program.encode("utf-8")


def service_program(*, user: str, state_dir: str, simulate_gpus: int = 0) -> bytes:
    """The service agent an admin installs on a service-mode node (root-owned, run only via sudo).

    Its settings are part of the file, not of any request: the caller cannot choose the state dir
    or simulated GPUs of the account that writes the state.
    """
    sources = _sources()
    version = loader.digest(sources)
    settings = {"user": user, "state_dir": state_dir, "simulate_gpus": simulate_gpus}
    program = loader.build_program(sources, version, MODULES, settings)
    header = (f"# gpuconsole service agent {version} for {user}, state in {state_dir}.\n"
              "# Install root-owned, mode 0755; it runs only as the service account through sudo.\n")
    return (header + program + "\n").encode("utf-8")


def agent_digest() -> str:
    """A short hash of the agent program, shown by `doctor` to spot version drift."""
    return hashlib.sha256(agent_program()).hexdigest()[:12]


def remote_command(python: str) -> str:
    """The constant command line run on the node; `python` comes from the validated config."""
    # -S: the agent is stdlib-only; the NVML path loads `site` itself before importing pynvml.
    return f"exec {shlex.quote(python)} -S -c {shlex.quote(BOOTSTRAP)}"


def agent_preamble() -> bytes:
    """The whole program, length first: for a bootstrap that is always sent it (the shell)."""
    return loader.preamble(agent_program().decode("utf-8"))


NEED_PROGRAM_LINE = loader.NEED_PROGRAM + b"\n"
NEED_PROGRAM_ZLIB_LINE = loader.NEED_PROGRAM + b" zlib\n"


@lru_cache(maxsize=1)
def agent_program_deflated() -> bytes:
    """The program deflated, `z<length>` first: for a node that asked with NEED_PROGRAM_ZLIB_LINE
    (229 KB of program is 63 KB on the wire, fewer round trips of a fresh connection's slow start)."""
    data = zlib.compress(agent_program(), 9)
    return b"z" + str(len(data)).encode() + b"\n" + data


@lru_cache(maxsize=1)
def agent_digest_line() -> bytes:
    """The first line the client writes to a bootstrap that may have the program cached."""
    return b"sha256:" + hashlib.sha256(agent_program()).hexdigest().encode() + b"\n"
