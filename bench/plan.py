"""Sizes and repetitions of every group: full mode follows docs/design.md section 5, quick is the CI
smoke run. run.py writes both plans into the report (`plan`, `plan.cloud_watch`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions: full mode follows docs/design.md section 5, quick is a CI smoke run."""

    quick: bool
    status_nodes: tuple[int, ...]
    status_reps: int
    naive_reps: int
    state_pairs: int
    renews: int
    reserve_cli_runs: int
    help_runs: int
    clients: int
    ops_per_client: int
    agent_cpu_s: float
    ping_n: int
    exec_n: int
    handshake_n: int
    fsync_n: int
    pystart_n: int
    poll_nodes: tuple[int, ...]
    poll_rounds: int
    tui_nodes: int
    tui_cpu_s: float
    tui_presses: int
    first_paint_runs: int
    jobs_n: int
    jobs_backlog_n: int
    jobs_submit_cap_s: float
    jobs_latency_trials: int
    jobs_queue_n: int  # jobs queued (by arrays) behind held GPUs: issue 14's 1,000
    jobs_queue_singles: int  # single submits on one warm connection behind that queue

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, (1, 4), 2, 1, 25, 25, 3, 5, 4, 20, 3.0, 30, 10, 5, 30, 5,
                       (1, 8), 10, 8, 5.0, 10, 1, 20, 10, 10.0, 5, 200, 50)
        return cls(False, (1, 8, 32, 64), 7, 3, 300, 300, 10, 20, 16, 200, 10.0, 500, 100, 20,
                   300, 20, (1, 8, 32, 64), 20, 64, 30.0, 40, 5, 500, 100, 60.0, 30, 1000, 200)


@dataclass(frozen=True)
class CloudPlan:
    """Sizes and repetitions of the two groups: full mode, or a quick CI smoke run."""

    quick: bool
    cloud_up_runs: int
    cloud_status_instances: int
    cloud_status_reps: int
    cloud_ls_reps: int
    import_runs: int
    watch_nodes: int
    watch_window_s: float
    watch_idle_trials: int

    @classmethod
    def make(cls, quick: bool) -> CloudPlan:
        if quick:
            return cls(True, 1, 1, 3, 3, 2, 4, 5.0, 1)
        return cls(False, 5, 4, 10, 10, 7, 64, 30.0, 5)


@dataclass(frozen=True)
class PeerPlan:
    """Sizes and repetitions of the `peers` and `latency` groups (gpuconsole against pdsh, clush,
    an OpenSSH loop and task-spooler; the same fan-out behind delay proxies)."""

    quick: bool
    fanout_nodes: tuple[int, ...]
    fanout_reps: int
    queue_jobs: int
    latency_nodes: tuple[int, ...]
    latency_rtts_ms: tuple[float, ...]
    latency_reps: int
    demo_processes: int  # the fan-out's nodes are spread over this many demo processes
    lock_pairs: int  # reserve + release pairs against flock over ssh
    scale_nodes: int  # the `scale` group: a poll at 1 Hz on this many nodes × 8 GPUs
    scale_processes: int
    scale_rounds: int

    @classmethod
    def make(cls, quick: bool) -> PeerPlan:
        if quick:
            return cls(True, (1, 4), 2, 10, (2,), (0.0, 20.0, 100.0), 1, 2, 3, 16, 2, 5)
        return cls(False, (1, 8, 32, 64), 9, 200, (8, 64), (0.0, 20.0, 100.0), 5, 4, 20, 256, 8, 30)
