"""Shell mode: `gpuconsole shell` opens the caller's login shell (or runs one argv) on the GPUs of
one of the caller's reservations.

The protocol (docs/design.md 2.11): the constant remote command runs BOOTSTRAP, which puts a tty
stdin in raw mode (no echo, no line limit), prints READY, then runs the agent's own bootstrap
(loader.BOOTSTRAP: the program follows on stdin, its length first); the program calls main() here.
The client then sends one JSON line, {"hello": {...}, "reservation": ID, "argv": [...] or null}.
This process checks on the node's own state that the reservation is live and belongs to the
calling OS user, takes
CUDA_VISIBLE_DEVICES from the node's record, restores the tty, answers {"ok": true} and execs the
user's login shell (the passwd entry's, argv[0] "-sh" as login(1) does) or the argv (exec'd from
the list, never through a shell). A refusal is {"ok": false, "error": {"code", "message"}}.
Nothing the client sends names a user, a uid or a GPU.
"""

from __future__ import annotations

import json
import os
import pwd
import sys

from . import loader, slurmjobs
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Protocol

    from .txn import Transactions
    from .typedefs import Args, State

    class _Agent(Protocol):
        """What the shell needs of agent.Agent (passed in: this module must not import agent)."""

        txn: Transactions | None
        slurm: Any  # a Slurm cluster's login node (slurm.Backend), else None

        def op_hello(self, args: Args) -> dict[str, Any]: ...

        def new_ctx(self) -> st.Ctx: ...

READY = b"gpuconsole-shell-ready-1"  # what the client waits for; everything before it is dropped
STDERR_READY = b"gpuconsole-shell-stderr-1"  # without a tty: where the command's own stderr starts
MAX_LINE_BYTES = 1 << 16
# Runs as `python -S -c BOOTSTRAP shell`: raw mode before READY, so the program that follows is
# neither echoed nor cut at the tty's line limit; the saved mode is restored before the exec.
BOOTSTRAP = (
    "import os,sys,termios,tty;_gc_tty=termios.tcgetattr(0) if os.isatty(0) else None;"
    "_gc_tty and tty.setraw(0);os.write(1,b'\\n" + READY.decode() + "\\n');" + loader.BOOTSTRAP
)


def _reply(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message, separators=(",", ":")) + "\n").encode())


def _restore_tty() -> None:
    """Back to the mode the tty had before BOOTSTRAP made it raw (the session's own)."""
    saved = getattr(sys.modules.get("__main__"), "_gc_tty", None)
    if saved:
        import termios

        try:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        except termios.error:
            pass


def read_request(stream: IO[bytes]) -> tuple[Args, str, list[str] | None]:
    """(hello args, reservation id, argv or None) from the client's one line, each field checked."""
    raw = stream.readline(MAX_LINE_BYTES + 1)
    if len(raw) > MAX_LINE_BYTES:
        raise st.OpError("too_large", "shell request larger than %d bytes" % MAX_LINE_BYTES)
    try:
        request = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise st.OpError("invalid", "shell request is not a JSON line") from None
    if not isinstance(request, dict):
        raise st.OpError("invalid", "shell request must be an object")
    hello, rid, argv = request.get("hello"), request.get("reservation"), request.get("argv")
    if not isinstance(hello, dict):
        raise st.OpError("invalid", "hello must be an object")
    if not isinstance(rid, str) or not rid:
        raise st.OpError("invalid", "reservation must be an id")
    if argv is not None and (not isinstance(argv, list) or not argv
                             or not all(isinstance(a, str) and "\0" not in a for a in argv)):
        raise st.OpError("invalid", "argv must be a non-empty list of strings")
    return hello, rid, argv


def check_lease(state: State, ctx: st.Ctx, rid: str) -> list[int]:
    """The GPUs of the caller's live reservation `rid` on this node, from the node's record.

    Stricter than release/renew: an admin gets no shell on another user's GPUs, and a job's grant
    belongs to its supervisor.
    """
    lease = state["leases"].get(rid)
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        if rid in state["queue"]:
            raise st.OpError("not_found", "%s is still queued: no GPUs granted yet" % rid)
        raise st.OpError("not_found", "no active reservation %s on this node (released or expired)" % rid)
    if lease["uid"] != ctx.uid:
        raise st.OpError("permission", "reservation %s belongs to %s; a shell runs only in your own "
                         "reservation" % (rid, lease["owner"]))
    if lease.get("job"):
        raise st.OpError("invalid", "%s holds the GPUs of a job; open a shell in a reservation" % rid)
    return list(lease["gpus"])


def _view(agent: _Agent) -> tuple[State, st.Ctx]:
    """The node's state as the next transaction would find it (lock-free, as `reservations` reads)."""
    txn, ctx = agent.txn, agent.new_ctx()
    if txn is None:
        raise st.OpError("invalid", "hello must come first")
    return txn.view(txn.read()[0], ctx), ctx


def _exec(argv: list[str] | None, env: dict[str, str]) -> None:
    """Replace this process with the login shell or the command; 127/126 when it cannot start."""
    entry = pwd.getpwuid(os.getuid())
    try:
        os.chdir(entry.pw_dir)  # where sshd starts a session
    except OSError:
        pass
    if argv is None:
        shell = entry.pw_shell or "/bin/sh"
        argv, path = ["-" + os.path.basename(shell)], shell
    else:
        path = argv[0]
    try:
        if argv is not None and "/" not in path:
            os.execvpe(path, argv, env)
        os.execve(path, argv, env)
    except OSError as exc:
        os.write(2, ("gpuconsole shell: %s: %s\n" % (path, exc.strerror)).encode("utf-8", "replace"))
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def main(make_agent: Callable[[IO[bytes]], _Agent]) -> None:
    """Serve one shell request, then exec (or answer the refusal and exit 2)."""
    try:
        hello, rid, argv = read_request(sys.stdin.buffer)
        with open(os.devnull, "wb") as sink:
            agent = make_agent(sink)
            agent.op_hello(hello)
            if agent.slurm is not None:  # a step of the allocation, run by Slurm on its node
                argv, gpus = slurmjobs.shell_argv(agent.slurm, rid, argv, os.isatty(0))
            else:
                gpus = check_lease(*_view(agent), rid)
    except st.OpError as exc:
        _restore_tty()
        _reply({"ok": False, "error": exc.to_dict()})
        sys.exit(2)
    except Exception as exc:  # the client shows it as one line; never a traceback on the user's tty
        _restore_tty()
        _reply({"ok": False, "error": {"code": "internal", "message": "%s: %s" % (exc.__class__.__name__, exc)}})
        sys.exit(2)
    env = dict(os.environ)
    if agent.slurm is None:  # on Slurm, srun sets the step's own
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    env["GPUCONSOLE_RESERVATION"] = rid
    _restore_tty()
    _reply({"ok": True, "gpus": gpus})
    if not os.isatty(2):  # no tty: stderr is its own stream; the command's own output starts here
        os.write(2, b"\n" + STDERR_READY + b"\n")
    sys.stdout.flush()
    _exec(argv, env)
