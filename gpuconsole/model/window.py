"""One GPU's quiet stretch: the state the idle rule keeps per GPU (see `gpuconsole.model.detect`)."""

from __future__ import annotations

from dataclasses import dataclass

from gpuconsole.model.telemetry import GpuSample

POWER_BAND_W = 25.0  # power moving more than this within a quiet stretch is activity
MEM_BAND_MIB = 256  # so is GPU memory in use moving more than this


def _spread_ok(low: float | None, high: float | None, value: float | None, band: float) -> bool:
    if value is None or low is None or high is None:
        return True
    return max(high, value) - min(low, value) <= band


@dataclass
class GpuWindow:
    """One GPU's current quiet stretch; `quiet_since_s` is None right after an active sample.

    `observed_only` says the stretch began at first sight or after a gap rather than after seen
    activity: an incomplete window then means "not known yet", not "busy".
    """

    reservation: str | None
    last_sample_s: float
    quiet_since_s: float | None
    observed_only: bool
    pids: list[int]
    power_min_w: float | None
    power_max_w: float | None
    mem_min_mib: int | None
    mem_max_mib: int | None
    util_max_pct: float

    @classmethod
    def start(cls, gpu: GpuSample, now_s: float, *, busy: bool, observed_only: bool) -> GpuWindow:
        return cls(
            reservation=gpu.reservation.id if gpu.reservation else None, last_sample_s=now_s,
            quiet_since_s=None if busy else now_s, observed_only=observed_only and not busy,
            pids=sorted(p.pid for p in gpu.processes), power_min_w=gpu.power_w, power_max_w=gpu.power_w,
            mem_min_mib=gpu.mem_used_mib, mem_max_mib=gpu.mem_used_mib, util_max_pct=gpu.util_pct or 0.0,
        )

    def still_quiet(self, gpu: GpuSample) -> bool:
        """Same processes, memory and power within their bands (utilization is checked before)."""
        return (
            sorted(p.pid for p in gpu.processes) == self.pids
            and _spread_ok(self.power_min_w, self.power_max_w, gpu.power_w, POWER_BAND_W)
            and _spread_ok(self.mem_min_mib, self.mem_max_mib, gpu.mem_used_mib, MEM_BAND_MIB)
        )

    def extend(self, gpu: GpuSample, now_s: float) -> None:
        self.last_sample_s = now_s
        self.util_max_pct = max(self.util_max_pct, gpu.util_pct or 0.0)
        if gpu.power_w is not None:
            self.power_min_w = gpu.power_w if self.power_min_w is None else min(self.power_min_w, gpu.power_w)
            self.power_max_w = gpu.power_w if self.power_max_w is None else max(self.power_max_w, gpu.power_w)
        if gpu.mem_used_mib is not None:
            mem = gpu.mem_used_mib
            self.mem_min_mib = mem if self.mem_min_mib is None else min(self.mem_min_mib, mem)
            self.mem_max_mib = mem if self.mem_max_mib is None else max(self.mem_max_mib, mem)
