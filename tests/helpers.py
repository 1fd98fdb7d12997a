"""Helpers the tests share: run the real CLI, read its JSON, poll with a deadline (also inside a
Textual Pilot), submit jobs, run a watcher, and the hostile texts and agent the trust tests feed in.

Test modules import these from here (never from conftest.py or from one another); conftest.py holds
only fixtures and the session's leftover-process check.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.pilot import Pilot

REPO = Path(__file__).resolve().parent.parent
Alert = dict[str, Any]  # one `watch --json` line

# Hostile text: what a node or another user may put in any string field.
OSC52 = "\x1b]52;c;aGVsbG8=\x07"  # sets the viewer's clipboard to "hello"
OSC2 = "\x1b]2;pwned\x07"  # retitles the window
HOSTILE = f"{OSC52}[/]{OSC2}[bold red]x\u202e\x9b31m"  # …plus markup, a bidi override and a C1 CSI
FORBIDDEN = {chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))} - {"\n"} | {
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}
HOSTILE_AGENT = REPO / "tests" / "fixtures" / "hostile_agent.py"


def hostile_command(mode: str) -> str:
    """The node command that runs the hostile agent in ``mode`` instead of the real one."""
    return f"exec {sys.executable} {HOSTILE_AGENT} {mode}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (servers under test that need a fixed one)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """SIGTERM, SIGKILL after `grace_s`, and reaped: a server a test started is gone after it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_cli(*args: str, config: Path | None = None, timeout_s: float = 60,
            env: dict[str, str] | None = None, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `gpuconsole` entry point in a fresh process."""
    argv = [sys.executable, "-m", "gpuconsole"]
    if config is not None:
        argv += ["--config", str(config)]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout_s,
                          env=full_env, input=input_text, stdin=None if input_text else subprocess.DEVNULL)


def cli_json(*args: str, config: Path) -> Any:
    """Run a `--json` command that must succeed and return its parsed stdout."""
    result = run_cli(*args, "--json", config=config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05,
             message: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


class Tmux:
    """A real terminal: a tmux server of our own (never the user's) on a private socket with one
    session of `cols`×`rows`; with `raw`, everything written to the terminal is also recorded there
    from before the command starts (a first frame a fast redraw would hide)."""

    def __init__(self, raw: Path | None = None) -> None:
        self.socket = f"gctest-{uuid.uuid4().hex[:8]}"
        self.raw = raw
        self.size = (120, 40)

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10, check=False).stdout

    def start(self, command: str, cols: int = 120, rows: int = 40) -> None:
        self.size = (cols, rows)
        if self.raw is not None:  # hold the command until the recording runs
            go = self.raw.with_name(self.raw.name + ".go")
            command = f"while [ ! -e {go} ]; do sleep 0.05; done; {command}"
        # os.environ, not the process's C-level environment: a library's curses setupterm() may have
        # putenv'd COLUMNS=80/LINES=24 there, which the console would take over the terminal's size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", "gc", "-x", str(cols), "-y", str(rows),
                        command], check=True, timeout=10, env=env)
        if self.raw is not None:
            self.run("pipe-pane", "-o", "-t", "gc", f"cat >> {self.raw}")
            go.touch()

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "gc")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", "gc", key)

    def line(self, text: str) -> None:
        """Type `text` literally, then Enter."""
        self.run("send-keys", "-t", "gc", "-l", text)
        self.run("send-keys", "-t", "gc", "Enter")

    def wait_for(self, text: str, timeout_s: float = 30, gone: bool = False) -> str:
        """The screen once `text` is on it (or, with `gone`, once it is not)."""
        return self._poll(lambda screen: (text in screen) != gone, timeout_s,
                          f"{text!r} {'gone from' if gone else 'on'} screen")

    def wait_re(self, pattern: str, timeout_s: float = 30) -> str:
        """The screen once `pattern` matches it (a toast may cover a row for a few seconds)."""
        return self._poll(lambda screen: re.search(pattern, screen) is not None, timeout_s, f"{pattern!r} on screen")

    def _poll(self, done: Callable[[str], bool], timeout_s: float, what: str) -> str:
        try:
            return str(wait_for(lambda: (lambda s: s if done(s) else None)(self.screen()),
                                timeout_s=timeout_s, interval_s=0.1, message=what))
        except AssertionError as exc:  # show what was there instead
            size = self.run("display", "-p", "-t", "gc", "#{window_width}x#{window_height}").strip()
            raise AssertionError(f"{exc}; the screen ({size}):\n{self.screen()}") from None

    def wait_raw(self, text: str, timeout_s: float = 30) -> None:
        """Until `text` was written to the terminal at some point (needs `raw`)."""
        assert self.raw is not None
        raw = self.raw
        wait_for(lambda: raw.exists() and text in raw.read_bytes().decode("utf-8", "replace"),
                 timeout_s=timeout_s, interval_s=0.1, message=f"{text!r} written to the terminal")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)


def jobs_by_name(config: Path) -> dict[str, dict[str, Any]]:
    """`jobs --json`, keyed by job name."""
    return {j["name"]: j for j in cli_json("jobs", config=config)["jobs"]}


def submit_job(config: Path, name: str, *flags: str, argv: list[str]) -> dict[str, Any]:
    """`submit --name NAME FLAGS… --json -- ARGV…`, which must succeed; returns its JSON."""
    result = run_cli("submit", "--name", name, "--json", *flags, "--", *argv, config=config)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


async def until(pilot: Pilot[Any], predicate: Callable[[], object], what: str, timeout_s: float = 20) -> None:
    """Let a Textual app run until ``predicate()`` holds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


FAST = ("--idle-minutes", "0.02", "--interval", "0.2")  # idle after 1.2 s, judged 5 times a second


class WatchProc:
    """`gpuconsole watch --json` in a subprocess; threads collect its alerts and stderr lines."""

    def __init__(self, config: Path, state_file: Path, *flags: str) -> None:
        argv = [sys.executable, "-m", "gpuconsole", "--config", str(config), "watch", "--json",
                "--state-file", str(state_file), *flags]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        self.alerts: list[Alert] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.alerts.append(json.loads(line))
            else:
                self.stderr.append(line.rstrip("\n"))

    def wait_alert(self, predicate: Callable[[Alert], bool], message: str, timeout_s: float = 20.0) -> Alert:
        found: Alert = wait_for(lambda: next((a for a in list(self.alerts) if predicate(a)), None),
                                timeout_s=timeout_s, message=f"{message}; alerts so far: {self.alerts}; "
                                f"stderr: {self.stderr}")
        return found

    def wait_stderr(self, needle: str, timeout_s: float = 20.0) -> str:
        line: str = wait_for(lambda: next((x for x in list(self.stderr) if needle in x), None),
                             timeout_s=timeout_s, message=f"{needle!r} on stderr; stderr: {self.stderr}")
        return line

    def quiet_period(self, seconds: float) -> None:
        """A negative check needs time to pass: let the watcher judge several more times."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"watcher exited early: {self.stderr}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        for thread in self._threads:
            thread.join(5)
        return code


def of_kind(kind: str, **fields: Any) -> Callable[[Alert], bool]:
    """An alert predicate: this kind, and these field values."""
    return lambda a: a["kind"] == kind and all(a.get(k) == v for k, v in fields.items())


def schema_valid(ref: str, document: Any) -> None:
    """Validate `document` against a schema of gpuconsole/schemas, or one of its $defs
    (`gpuconsole:schemas/reserve#/$defs/progress`); raises with the failing path."""
    import jsonschema
    from referencing import Registry, Resource

    resources = [Resource.from_contents(json.loads(p.read_text()))
                 for p in (REPO / "gpuconsole" / "schemas").glob("*.schema.json")]
    registry: Registry[Any] = Registry().with_resources((r.id(), r) for r in resources)  # type: ignore[misc]
    jsonschema.Draft202012Validator({"$ref": ref}, registry=registry,
                                    format_checker=jsonschema.FormatChecker()).validate(document)


def edit_state(state_dir: Path, change: Callable[[Any], None]) -> None:
    """Rewrite a node's state.json (and its mirror) with a valid checksum, as any group member can."""
    from gpuconsole.node.store import StateStore

    store = StateStore(str(state_dir))
    store.acquire()
    try:
        state, _, _ = store.load_locked("ignored")
        change(state)
        store.commit(state)
    finally:
        store.release_lock()
