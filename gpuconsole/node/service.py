"""Service mode: a hardened node whose state only the `gpuconsole` service account can write.

Two processes cooperate on such a node. The user's own agent (the program shipped over SSH, run
as the user) reads the world-readable state directly, runs jobs as the user, and sends every
change through a `ServiceLink`: `sudo -n -u gpuconsole /usr/bin/python3 -I -S <installed agent>`,
a constant command with no user-controlled arguments, JSON requests on its stdin. The installed
agent (written by an admin, root-owned) runs as the service account, takes the caller from sudo's
SUDO_UID and serves state operations only: it never runs, signals or opens anything of a user's.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import sys
import threading

from . import procs
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import IO, Any, Mapping

    from .state import Ctx
    from .txn import Critical
    from .typedefs import Args, Result, Warnings

SERVICE_PYTHON = "/usr/bin/python3"
DEFAULT_USER = "gpuconsole"
DEFAULT_AGENT = "/usr/local/lib/gpuconsole/gcagent.py"
# What the service agent answers; everything a user's process does (jobs, logs, telemetry) is not here.
SERVED = frozenset({"hello", "ping", "reservations", "capacity", "jobs", "doctor", "cancel", "ledger"})
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./+-]+$")


class NotService(Exception):
    """The installed agent was not started the one way it trusts (sudo, as the service account)."""


def command(user: str, agent_path: str) -> list[str]:
    """The argv the user's agent runs: exactly what the sudoers line allows, nothing from the caller."""
    return ["sudo", "-n", "-u", user, SERVICE_PYTHON, "-I", "-S", agent_path]


def sudoers_line(user: str, agent_path: str, group: str = "gpu") -> str:
    return "%%%s ALL=(%s) NOPASSWD: %s -I -S %s" % (group, user, SERVICE_PYTHON, agent_path)


def caller(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(uid, user name) of whoever ran us through sudo, or NotService.

    SUDO_UID is believed only when this process really is the service account (real and
    effective uid both its uid, never root): anyone else who sets it gains nothing, because
    they run as themselves and cannot write the state.
    """
    environ = os.environ if environ is None else environ
    try:
        account = pwd.getpwnam(settings["user"])
    except KeyError:
        raise NotService("no user %r on this node (create it: sudo useradd --system --no-create-home %s)"
                         % (settings["user"], settings["user"])) from None
    uid, euid = os.getuid(), os.geteuid()
    if euid == 0 or uid == 0:
        raise NotService("the service agent must run as %s, not root" % settings["user"])
    if euid != account.pw_uid or uid != euid:
        raise NotService("the service agent runs only as %s through sudo (sudo -n -u %s ...), not as uid %d"
                         % (settings["user"], settings["user"], uid))
    raw = environ.get("SUDO_UID")
    if raw is None:
        return euid, account.pw_name  # the service account itself (an admin's own checks)
    if not raw.isdigit():
        raise NotService("SUDO_UID %r is not a uid" % raw[:20])
    caller_uid = int(raw)
    try:
        name = pwd.getpwuid(caller_uid).pw_name
    except KeyError:
        raise NotService("SUDO_UID %d names no user" % caller_uid) from None
    if environ.get("SUDO_USER", name) != name:
        raise NotService("SUDO_USER does not match SUDO_UID %d (%s)" % (caller_uid, name))
    return caller_uid, name


def detach() -> None:
    """Leave sudo behind: fork, let sudo's child exit, start a new session.

    sudo relays the caller's signals to the command it ran (SIGUSR1 kills it; from a terminal,
    ^Z stops it), and a service agent stopped while it holds the state lock would stall every
    user. The grandchild keeps stdin and stdout, has no terminal, and no process of the caller's
    may signal it (another uid).
    """
    import signal

    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)


def in_group(user: str, gid: int) -> bool:
    """Group membership of `user` from the group database (not of this process, which is sudo's)."""
    try:
        primary = pwd.getpwnam(user).pw_gid
        return gid in os.getgrouplist(user, primary)
    except (KeyError, OSError):
        return False


def check_supervisor(args: Args, ctx: Ctx) -> None:
    """A job's supervisor must be a live process of the caller (the service agent trusts no claim)."""
    ident = args.get("supervisor")
    if not isinstance(ident, dict):
        raise st.OpError("invalid", "a job needs its supervisor's identity")
    raw_pid: Any = ident.get("pid")
    try:
        pid = int(raw_pid)
    except (TypeError, ValueError):
        raise st.OpError("invalid", "supervisor pid must be an integer") from None
    if ident.get("uid") != ctx.uid or procs.proc_uid(pid) != ctx.uid:
        raise st.OpError("permission", "the supervisor of a job must be a process of %s" % ctx.user)


def link_settings(args: Args) -> tuple[str, str]:
    """(user, agent path) from the hello of a service-mode node; the client's config, checked."""
    user = args.get("service_user") or DEFAULT_USER
    path = args.get("service_agent") or DEFAULT_AGENT
    if not isinstance(user, str) or not _NAME.match(user):
        raise st.OpError("invalid", "service_user must be a user name")
    if not isinstance(path, str) or not _PATH.match(path) or "/../" in path:
        raise st.OpError("invalid", "service_agent must be an absolute path")
    return user, path


class ServiceLink:
    """The user's side of service mode: one service agent child, requests in order, replies back."""

    def __init__(self, user: str, agent_path: str) -> None:
        self.user = user
        self.agent_path = agent_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.ids = 0
        self.stderr_tail = b""
        self.hello: Result = {}

    def fix(self) -> str:
        return ("ask an admin to set up service mode on this node (`gpuconsole doctor` prints the steps; "
                "sudoers: %s)" % sudoers_line(self.user, self.agent_path))

    def start(self, hello_args: Args) -> Result:
        """Spawn the service agent and say hello; OpError("io") naming the cause when it is not set up."""
        try:
            import subprocess  # only a service node's forwarder needs it: not every agent's start

            self.proc = subprocess.Popen(command(self.user, self.agent_path), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                                         close_fds=True)
        except OSError as exc:
            raise st.OpError("io", "service mode: cannot run sudo: %s (fix: install sudo; %s)"
                             % (exc.strerror or exc, self.fix())) from None
        self.drainer = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self.drainer.start()
        self.hello, _ = self.request("hello", hello_args)
        return self.hello

    def _drain(self, stream: IO[bytes]) -> None:
        try:
            while True:
                chunk = stream.read1(4096)  # type: ignore[attr-defined]  # a BufferedReader
                if not chunk:
                    return
                self.stderr_tail = (self.stderr_tail + chunk)[-2000:]
        except (OSError, ValueError):
            return

    def _died(self) -> st.OpError:
        """OpError for a service agent that is gone: sudo's or the agent's last words, and the fix."""
        self.drainer.join(2.0)  # stderr ends when sudo and the agent are gone: read all they said
        lines = [x.strip() for x in self.stderr_tail.decode("utf-8", "replace").splitlines() if x.strip()]
        reason = "; ".join(lines[-3:]) if lines else "the service agent stopped"
        self.close()
        return st.OpError("io", "service agent (sudo -u %s %s): %s (fix: %s)"
                          % (self.user, self.agent_path, reason[:300], self.fix()))

    def request(self, op: str, args: Args) -> tuple[Result, Warnings]:
        """One request to the service agent: (result, warnings), or its error as an OpError."""
        with self.lock:
            proc = self.proc
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise st.OpError("io", "service agent not running (fix: %s)" % self.fix())
            self.ids += 1
            line = json.dumps({"id": self.ids, "op": op, "args": args}) + "\n"
            try:
                proc.stdin.write(line.encode())
                proc.stdin.flush()
                while True:
                    raw = proc.stdout.readline()
                    if not raw:
                        raise self._died()
                    try:
                        reply = json.loads(raw.decode("utf-8"))
                    except ValueError:
                        continue  # not a reply: nothing else is written there, but it is harmless
                    if isinstance(reply, dict) and reply.get("id") == self.ids:
                        break
            except OSError:
                raise self._died() from None
        warnings = reply.get("warnings")
        warnings = [str(w) for w in warnings] if isinstance(warnings, list) else []
        if reply.get("ok"):
            result = reply.get("result")
            return (result if isinstance(result, dict) else {}), warnings
        error: Any = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        raise st.OpError(str(error.get("code") or "internal"), str(error.get("message") or "service agent error"))

    def close(self) -> None:
        """End the link: EOF tells the service agent to finish and exit."""
        if self.proc is not None:
            try:
                for pipe in (self.proc.stdin, self.proc.stdout):
                    if pipe is not None:
                        pipe.close()
                self.proc.wait(timeout=5)
            except Exception:
                pass
            self.proc = None


class Forwarder:
    """A user's agent's side of a service-mode node: every change goes to the service agent.

    Built by the agent at hello with only what the link is checked against (the node's name, the
    caller's uid, the state dir) and the flag that defers signals. The link starts with the first
    change (read-only commands never pay for sudo) and again after it died or sudo was set up; a
    failure to start is kept in `error`, not raised, so that `doctor` can report it.
    """

    def __init__(self, settings: tuple[str, str], node: str, uid: int, state_dir: str,
                 critical: Critical) -> None:
        self.user, self.agent_path = settings
        self.node = node
        self.uid = uid
        self.state_dir = state_dir
        self.critical = critical
        self.link: ServiceLink | None = None
        self.error: str | None = None

    def open(self) -> None:
        """Start (or restart) the link; a failure lands in `error`."""
        from .fileio import service_setup_fix

        if self.link is not None:
            self.link.close()
        link = ServiceLink(self.user, self.agent_path)
        self.link, self.error = link, None
        try:
            hello = link.start({"node": self.node})
            if hello.get("uid") != self.uid:
                raise st.OpError("io", "the service agent serves uid %s, not %d" % (hello.get("uid"), self.uid))
            theirs = str(hello.get("state_dir"))
            if os.path.realpath(theirs) != os.path.realpath(self.state_dir):
                raise st.OpError("io", "the service agent on this node keeps its state in %s, not %s (fix: set "
                                 "state_dir = \"%s\" for this node)" % (theirs, self.state_dir, theirs))
            if hello.get("state_dir_error"):
                raise st.OpError("io", "service agent: %s (fix: %s)"
                                 % (hello["state_dir_error"], service_setup_fix(theirs, self.user)))
        except st.OpError as exc:
            link.close()
            self.link, self.error = None, exc.message

    def ready(self) -> ServiceLink:
        """The link, started when needed (it may have died, or sudo may have been set up since);
        OpError("io") naming the cause and the fix when there is none."""
        if self.link is None or self.link.proc is None:
            self.open()
        if self.link is None:
            raise st.OpError("io", str(self.error))
        return self.link

    def forward(self, op: str, args: Args) -> tuple[Result, Warnings]:
        """A change: the service agent does it, as the caller (its SUDO_UID)."""
        link = self.ready()
        self.critical.active = True  # a signal waits for the answer: the change is made either way
        try:
            return link.request(op, args)
        finally:
            self.critical.active = False

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


def looks_like_service(info: os.stat_result) -> bool:
    """A state dir someone else (not root) owns and keeps closed: set up for service mode."""
    return info.st_uid not in (0, os.geteuid()) and not info.st_mode & 0o022


def doctor_checks(user: str, state_dir: str, forwarder: Forwarder | None,
                  info: os.stat_result) -> list[list[Any]]:
    """`doctor` rows of a service-mode node: the link (sudo rule, installed agent; a user's agent,
    which has a `forwarder`) and the state dir, which the service account `user` must own."""
    from .fileio import service_setup_fix

    rows: list[list[Any]] = []
    if forwarder is not None:
        if forwarder.link is None:
            forwarder.open()  # sudo may have been set up since hello
        if forwarder.link is None:
            rows.append(["mode", False, "service: %s" % forwarder.error, "the service-mode setup below"])
        else:
            rows.append(["mode", True, "service: changes through sudo -u %s %s" % (user, forwarder.agent_path),
                         None])
            theirs = forwarder.link.hello.get("agent_digest")
            ours = getattr(sys.modules.get(__package__ or ""), "DIGEST", None)
            if ours and theirs != ours:
                rows.append(["service_agent", False, "installed agent %s is version %s, this client's is %s"
                             % (forwarder.agent_path, theirs, ours),
                             "reinstall it (gpuconsole node-install; see the setup below)"])
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    closed = owner == user and not info.st_mode & 0o022
    rows.append(["state_dir", closed, "%s owned by %s, mode %o%s" % (
        state_dir, owner, info.st_mode & 0o7777, "" if closed else "; want owner %s, mode 755" % user),
        None if closed else service_setup_fix(state_dir, user)])
    return rows


def admin_group_gid(policy_path: str) -> int | None:
    """The gid of the admin group named in the root-owned policy file, or None."""
    try:
        info = os.stat(policy_path)
        if info.st_uid != 0 or info.st_mode & 0o022:
            return None
        with open(policy_path) as handle:
            group = json.load(handle).get("admin_group")
        return grp.getgrnam(group).gr_gid if group else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
