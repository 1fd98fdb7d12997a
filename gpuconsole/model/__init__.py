"""Plain data about the fleet: stdlib dataclasses, no I/O, shared by the CLI, TUI and watcher."""

from gpuconsole.model.jobs import Job
from gpuconsole.model.telemetry import (
    GpuProcess,
    GpuSample,
    NodeSnapshot,
    QueuedRequest,
    Reservation,
    ReservationRef,
)

__all__ = [
    "GpuProcess",
    "GpuSample",
    "Job",
    "NodeSnapshot",
    "QueuedRequest",
    "Reservation",
    "ReservationRef",
]
