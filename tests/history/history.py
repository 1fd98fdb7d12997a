"""The history: an append-only record of every invocation and completion, observation and fault.

Times are `time.monotonic()` seconds (CLOCK_MONOTONIC is system-wide, so the job processes' own
marker times compare with ours) plus the wall clock for people. An operation whose completion is
unknown (the client was killed, timed out, or lost its connection mid-request) is `info`, like
Jepsen's indeterminate operations: it may or may not have taken effect.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK, FAIL, INFO, PENDING = "ok", "fail", "info", "pending"

# Client operations, observations (per node) and faults share one record type.
OPS = ("reserve", "release", "renew", "submit", "cancel", "preempt")
OBSERVATIONS = ("reservations", "jobs")


@dataclass
class Op:
    """One operation: invoked at `start_s`, completed at `end_s` (None while pending)."""

    index: int
    process: str  # "cli-0", "api-1", "observer", "nemesis", ...
    f: str  # an entry of OPS or OBSERVATIONS, or a fault kind for the nemesis
    args: dict[str, Any]
    start_s: float
    start_wall: float
    end_s: float | None = None
    end_wall: float | None = None
    outcome: str = PENDING
    info: str | None = None  # why an `info` op is indeterminate: timeout, crash, unreachable
    exit_code: int | None = None
    result: Any = None
    error: str = ""
    node: str | None = None  # per-node observations and faults

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        return cls(**data)


@dataclass
class JobRun:
    """One run of a job process, from the marker file the process itself wrote.

    `start_s` and every beat are instants at which the process was certainly alive; `last_s` is
    the latest of them. `ended` is True when it wrote its own end (not killed).
    """

    name: str
    job_id: str | None
    node: str | None
    gpus: tuple[int, ...]
    pid: int
    start_s: float
    last_s: float
    ended: bool
    beats: list[float] = field(default_factory=list)


class Recorder:
    """Thread-safe, append-only: `invoke` returns the op, `complete` fills its end once."""

    def __init__(self, path: Path | None = None) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def _write(self, kind: str, op: Op) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"event": kind, "op": op.to_json()}, default=str) + "\n")
            self._file.flush()

    def invoke(self, process: str, f: str, args: dict[str, Any] | None = None, *, node: str | None = None) -> Op:
        with self._lock:
            op = Op(len(self.ops), process, f, dict(args or {}), time.monotonic(), time.time(), node=node)
            self.ops.append(op)
            self._write("invoke", op)
        return op

    def complete(self, op: Op, outcome: str, *, result: Any = None, exit_code: int | None = None,
                 error: str = "", info: str | None = None) -> Op:
        end_s, end_wall = time.monotonic(), time.time()
        with self._lock:
            if op.outcome != PENDING:
                return op  # completed once already (the nemesis may have marked it)
            op.end_s, op.end_wall = end_s, end_wall
            op.outcome, op.result, op.exit_code = outcome, result, exit_code
            op.error, op.info = error[-500:], info
            self._write("complete", op)
        return op

    def fault(self, kind: str, detail: dict[str, Any], *, node: str | None = None) -> Op:
        """A fault that starts now; call `complete(op, OK)` when it ends (instant faults at once)."""
        return self.invoke("nemesis", kind, detail, node=node)

    def snapshot(self) -> list[Op]:
        with self._lock:
            return list(self.ops)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_history(path: Path) -> list[Op]:
    """Ops from a recorder's JSONL file (the last line per op wins: invoke, then complete)."""
    ops: dict[int, Op] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            data = json.loads(line)["op"]
            ops[data["index"]] = Op.from_json(data)
    return [ops[i] for i in sorted(ops)]


# ---- job markers ---------------------------------------------------------------------------

# The job every `submit` runs: `python -S -c JOB_CODE MARKER_DIR NAME DURATION_S STUBBORN`. It
# appends its start (pid, CUDA_VISIBLE_DEVICES, job id, preempt-file path, which names the node's
# state dir), a beat every 0.2 s and its end to MARKER_DIR/NAME.PID.jsonl. A stubborn job ignores
# SIGTERM (the supervisor's SIGKILL ends it); the others exit 143 at once.
JOB_CODE = r"""
import json, os, signal, sys, time
d, name, dur, stubborn = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
fd = os.open(os.path.join(d, "%s.%d.jsonl" % (name, os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def w(ev, **extra):
    extra.update(ev=ev, t=time.monotonic())
    os.write(fd, (json.dumps(extra) + "\n").encode())
e = os.environ
w("start", wall=time.time(), pid=os.getpid(), name=name, job=e.get("GPUCONSOLE_JOB_ID"),
  cvd=e.get("CUDA_VISIBLE_DEVICES"), pf=e.get("GPUCONSOLE_PREEMPT_FILE"))
def term(signum, frame):
    w("term")
    if not stubborn:
        os._exit(143)
signal.signal(signal.SIGTERM, term)
end = time.monotonic() + dur
while time.monotonic() < end:
    time.sleep(max(0.0, min(0.2, end - time.monotonic())))
    w("beat")
w("end")
"""


def _gpus(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(g) for g in (text or "").split(",") if g.strip())
    except ValueError:
        return ()


def read_markers(marker_dir: Path, node_of_state_dir: dict[str, str]) -> list[JobRun]:
    """Every job run recorded under `marker_dir`; the node comes from the preempt file's path
    (<state_dir>/jobs/<id>/preempt.json). A torn last line (a kill mid-write) is skipped."""
    runs: list[JobRun] = []
    if not marker_dir.is_dir():
        return runs
    for path in sorted(marker_dir.glob("*.jsonl")):
        head: dict[str, Any] | None = None
        times: list[float] = []
        ended = False
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("ev") == "start":
                head = entry
            times.append(float(entry["t"]))
            ended = ended or entry.get("ev") == "end"
        if head is None:
            continue
        state_dir = os.path.dirname(os.path.dirname(os.path.dirname(head.get("pf") or "")))
        runs.append(JobRun(str(head.get("name")), head.get("job"), node_of_state_dir.get(state_dir),
                           _gpus(head.get("cvd")), int(head.get("pid") or 0), float(head["t"]), max(times),
                           ended, times))
    return runs
