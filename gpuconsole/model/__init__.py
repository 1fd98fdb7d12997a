"""Plain data about the fleet: stdlib dataclasses, no I/O, shared by the CLI, TUI and watcher."""

from gpuconsole.model.telemetry import (
    GpuProcess,
    GpuSample,
    Job,
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
