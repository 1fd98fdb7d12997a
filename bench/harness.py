"""Shared benchmark plumbing: statistics, result records, timed subprocesses, demo clusters.

Standard library plus the project only, so `python bench/run.py` runs wherever the project does.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(values: list[float]) -> dict[str, float]:
    """median/p50/p95/p99/min/max/mean of samples (same unit as the samples)."""
    if not values:
        return {}
    return {
        "median": percentile(values, 50), "p50": percentile(values, 50),
        "p95": percentile(values, 95), "p99": percentile(values, 99),
        "min": min(values), "max": max(values), "mean": sum(values) / len(values),
    }


OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "==": lambda a, b: a == b,
       "<": lambda a, b: a < b, ">": lambda a, b: a > b}


@dataclass
class Check:
    """One budget clause: `stat op limit`, e.g. p99 <= 20 (ms)."""

    stat: str
    op: str
    limit: float


@dataclass
class Result:
    """One benchmark row: samples (or a single value), its budget clauses and their outcome."""

    name: str
    group: str
    unit: str
    samples: list[float] = field(default_factory=list)
    value: float | None = None
    budget: str | None = None
    checks: list[Check] = field(default_factory=list)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def stat(self, name: str) -> float:
        """A named statistic of the samples, or the single value for `value`."""
        if name == "value":
            return self.value if self.value is not None else math.nan
        return summarize(self.samples).get(name, math.nan) if self.samples else math.nan

    def headline(self) -> float:
        """The number a reader looks at first: the median, or the single value."""
        return self.stat("median") if self.samples else self.stat("value")

    def outcomes(self) -> list[dict[str, Any]]:
        """Each budget clause with the measured number and whether it held."""
        rows = []
        for check in self.checks:
            actual = self.stat(check.stat)
            ok = not math.isnan(actual) and bool(OPS[check.op](actual, check.limit))
            rows.append({"stat": check.stat, "op": check.op, "limit": check.limit,
                         "actual": _round(actual), "passed": ok})
        return rows

    @property
    def passed(self) -> bool | None:
        """True/False when there is a budget, None for informational rows."""
        outcomes = self.outcomes()
        return all(o["passed"] for o in outcomes) if outcomes else None

    def to_json(self) -> dict[str, Any]:
        """The JSON record written to results/latest.json."""
        record: dict[str, Any] = {"name": self.name, "group": self.group, "unit": self.unit,
                                  "n": len(self.samples) if self.samples else None}
        for key, value in summarize(self.samples).items():
            record[key] = _round(value)
        record["value"] = _round(self.value) if self.value is not None else None
        record["budget"] = self.budget
        record["checks"] = self.outcomes()
        record["passed"] = self.passed
        record["notes"] = self.notes
        record["extra"] = self.extra
        record["samples"] = [_round(v) for v in self.samples]
        return record


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def ms(seconds: float) -> float:
    """Seconds → milliseconds."""
    return seconds * 1000.0


# -- processes --------------------------------------------------------------------------------


def bench_env() -> dict[str, str]:
    """Environment for child processes: no SSH agent and no user config can change the result.

    GPUCONSOLE_KEEPER=0: every CLI call connects itself (cold, as measured so far) and none leaves
    a connection keeper behind; the rows that measure a warm keeper turn it on explicitly.
    """
    ensure_bytecode()
    env = dict(os.environ)
    for key in ("SSH_AUTH_SOCK", "GPUCONSOLE_CONFIG", "GPUCONSOLE_DEBUG", "PYTHONPROFILEIMPORTTIME"):
        env.pop(key, None)
    env["GPUCONSOLE_KEEPER"] = "0"
    return env


_BYTECODE: list[bool] = []


def ensure_bytecode() -> bool:
    """Compile the package's .pyc files once, as `pip install` does: an editable checkout under
    PYTHONDONTWRITEBYTECODE=1 (this sandbox sets it) would otherwise compile every module from source
    in every fresh process, about 50-100 ms of a cold command that no installed copy pays."""
    if not _BYTECODE:
        import compileall

        package = Path(__file__).resolve().parent.parent / "gpuconsole"
        _BYTECODE.append(bool(compileall.compile_dir(str(package), quiet=2)))
    return _BYTECODE[0]


@dataclass
class Timed:
    """A finished child process with its wall time and its CPU time (user + system)."""

    elapsed_s: float
    cpu_s: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(argv: list[str], *, timeout_s: float = 60.0, cwd: Path | None = None) -> Timed:
    """Run argv to completion; wall time from spawn to exit, CPU from RUSAGE_CHILDREN."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=bench_env(),
                          stdin=subprocess.DEVNULL, cwd=cwd, check=False)
    elapsed_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(elapsed_s, cpu_s, proc.returncode, proc.stdout, proc.stderr)


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    """SIGTERM a measured child, SIGKILL it if it has not ended within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def cli_argv(*args: str) -> list[str]:
    """`python -m gpuconsole ARGS` with this interpreter (what tests and CI run)."""
    return [sys.executable, "-m", "gpuconsole", *args]


def proc_cpu_s(pid: int, *, children: bool = False) -> float:
    """CPU seconds (all threads) of a live process from /proc/PID/stat; with reaped children."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 (1-based)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def proc_cpu_ns(pid: int) -> int | None:
    """On-CPU nanoseconds summed over the process's threads (/proc/PID/task/*/schedstat)."""
    total_ns = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                total_ns += int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total_ns


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from the `cpu` line of /proc/stat."""
    with open("/proc/stat") as handle:
        ticks = [int(v) for v in handle.readline().split()[1:9]]  # guest time is in user/nice
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def proc_children(pid: int) -> list[int]:
    """Direct children of a process, over all its threads."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(p) for p in handle.read().split()]
    return found


def proc_tree_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of a process and all its live descendants (threads included)."""
    total_ns, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total_ns += proc_cpu_ns(current) or 0  # a process that just exited counts as 0
        todo += proc_children(current)
    return total_ns


# -- machine description ----------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _mem_total_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info(tmp_dir: Path) -> dict[str, Any]:
    """What the numbers depend on: cores, CPU, Python, crypto stack, filesystem, load."""
    from gpuconsole.node.store import filesystem_type

    node_python = shutil.which("python3")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_total_bytes": _mem_total_bytes(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "node_python3": node_python,
        "node_python3_is_pyenv_shim": bool(node_python and "/shims/" in node_python),
        "versions": {name: _version(name) for name in
                     ("gpuconsole", "asyncssh", "cryptography", "textual", "rich")},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_modified_files": (_git("diff", "--name-only", "HEAD") or "").split(),
        "tmp_dir": str(tmp_dir),
        "tmp_filesystem": filesystem_type(str(tmp_dir)),
        "loadavg_start": list(os.getloadavg()),
        # Whether child processes load the package from .pyc (ensure_bytecode) and whether the
        # environment forbids writing them (then only the precompiled ones exist).
        "package_bytecode": ensure_bytecode(),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }
