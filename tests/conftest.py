"""Shared fixtures: an isolated environment and demo clusters of real loopback SSH servers."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from gpuconsole.demo.cluster import DemoThread

# Fuzz tests draw the same examples on every run (a red CI is a real, reproducible bug, never luck);
# GPUCONSOLE_HYPOTHESIS_PROFILE=explore draws fresh ones to hunt for new bugs.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("GPUCONSOLE_HYPOTHESIS_PROFILE", "repeatable"))

# A run started in the background of a script (`cmd &` without job control) inherits SIGINT as
# ignored, and exec passes that on: every CLI the tests interrupt with SIGINT would ignore it, as
# it should for a background job. The tests stand for a user at a terminal: SIGINT as usual.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the developer's config, ssh config or agent."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("GPUCONSOLE_CONFIG", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    # The connection keeper: never the developer's runtime dir, and off unless a test turns it on
    # (GPUCONSOLE_KEEPER=1), so no other test starts a keeper that outlives it.
    (home / "run").mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.setenv("GPUCONSOLE_KEEPER", "0")
    # A curses setupterm() in pytest's process putenv's COLUMNS=80/LINES=24, which xdist workers then
    # inherit: tables would fit 80 columns in some runs and 160 in others. A test that wants a width says so.
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoThread]:
    """A 2-node × 4-GPU demo cluster."""
    with DemoThread(tmp_path / "demo", nodes=2, gpus=4) as cluster:
        yield cluster


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[Callable[..., DemoThread]]:
    """Start demo clusters of any size; all are stopped at the end of the test."""
    started: list[DemoThread] = []

    def make(nodes: int = 2, gpus: int = 4, name: str = "demo") -> DemoThread:
        cluster = DemoThread(tmp_path / f"{name}-{len(started)}", nodes=nodes, gpus=gpus)
        cluster.__enter__()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.close()


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[DemoThread]:
    """A 1-node × 4-GPU demo whose agents read their faults from the file at `.faults` (the test
    writes GPUCONSOLE_FAULTS lines there)."""
    faults = tmp_path / "faults"
    faults.write_text("")
    with DemoThread(tmp_path / "demo", nodes=1, gpus=4,
                    agent_env={"GPUCONSOLE_FAULTS_FILE": str(faults)}) as cluster:
        cluster.faults = faults  # type: ignore[attr-defined]
        yield cluster


# -- no process left behind ---------------------------------------------------------------------
# Every process a test starts (CLI runs, demo agents, job supervisors and their jobs) inherits this
# marker; the real-sshd tests' processes run as the test users instead. What is still alive when
# the run ends is a leak: it is listed, killed, and the run fails.

_SESSION_KEY = "GPUCONSOLE_TEST_SESSION"
_TEST_USERS_PREFIX = "gcutest"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(_SESSION_KEY):  # the controller; xdist workers inherit it
        os.environ[_SESSION_KEY] = f"{os.getpid()}-{time.time_ns()}"
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            # The hundreds of `python -m gpuconsole` processes the suite starts would each compile
            # every module from source (nothing may write .pyc); an installed copy has them.
            import compileall

            compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "gpuconsole"), quiet=2)
    workers = Path(f"/tmp/gpuconsole-test-{os.environ[_SESSION_KEY]}")
    workers.mkdir(exist_ok=True)
    (workers / str(os.getpid())).touch()  # pytest's own processes are not leftovers


def _test_uids() -> set[int]:
    import pwd

    return {entry.pw_uid for entry in pwd.getpwall() if entry.pw_name.startswith(_TEST_USERS_PREFIX)}


def leftover_processes() -> dict[int, str]:
    """{pid: command line} of processes this test session started that are still alive."""
    session = os.environ.get(_SESSION_KEY, "")
    marker = f"{_SESSION_KEY}={session}".encode()
    ours = {int(p.name) for p in Path(f"/tmp/gpuconsole-test-{session}").glob("*") if p.name.isdigit()}
    ours.add(os.getpid())
    test_uids = _test_uids()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            stat_text = Path(f"/proc/{entry}/stat").read_text()
            if stat_text[stat_text.rfind(")") + 2] in "ZX":
                continue
            uid = Path(f"/proc/{entry}").stat().st_uid
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") if uid not in test_uids else []
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if uid in test_uids or marker in env:
            started_by = next((item.decode(errors="replace").split("=", 1)[1] for item in env
                               if item.startswith(b"PYTEST_CURRENT_TEST=")), "?")
            found[int(entry)] = f"{cmdline.strip()[:120]}  (started during {started_by})"
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or os.environ.get(_SESSION_KEY, "").split("-")[0] != str(os.getpid()):
        return  # only the controller judges, once every worker is done
    import signal

    deadline = time.monotonic() + 10.0
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)  # a demo that just stopped may still be reaping its children
        left = leftover_processes()
    workers = Path(f"/tmp/gpuconsole-test-{os.environ[_SESSION_KEY]}")
    for path in workers.glob("*"):
        path.unlink(missing_ok=True)
    workers.rmdir()
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    lines = "\n".join(f"  {pid}: {cmd}" for pid, cmd in sorted(left.items()))
    sys.stderr.write(f"\nFAILED: the test run left {len(left)} processes behind (now killed):\n{lines}\n")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
