"""GPU telemetry behind one facade: NVML, else `nvidia-smi` CSV, else simulated GPUs.

Every metric a device cannot report is None, never a string, so callers need no special cases.
"""

from __future__ import annotations

import os
import time

from . import health as gpu_health
from . import procs
from .loader import sha256_hex

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Protocol

    from .health import Readings
    from .typedefs import GpuSample, ProcessRecord

    ProcessesByGpu = Dict[int, List[ProcessRecord]]

    class GpuSource(Protocol):
        """What the agent needs of a GPU source: NVML, nvidia-smi, simulated, or none."""

        source: str

        def count(self) -> int: ...

        def processes(self) -> ProcessesByGpu:
            """{gpu index: processes on it}, for deciding which GPUs are in use (no metrics)."""

        def sample(self) -> list[GpuSample]:
            """Every GPU's metrics and processes; a metric the device cannot report is None."""

        def health(self, sim_faults: tuple[bytes, float] | None) -> Readings:
            """Every GPU's health readings (health.py); None for each one the source cannot read.
            `sim_faults`: the simulation's fault file (bytes, when written), which only it reads."""

SMI_FIELDS = "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"


def _process_record(pid: int, mem_mib: int | None) -> ProcessRecord:
    uid = procs.proc_uid(pid)
    return {
        "pid": pid,
        "user": procs.user_name(uid) if uid is not None else None,
        "command": procs.command_line(pid),
        "mem_mib": mem_mib,
    }


class NvmlGpus:
    """NVML through nvidia-ml-py (`import pynvml`), initialised once with handles cached."""

    source = "nvml"

    def __init__(self) -> None:
        import pynvml  # optional: present on nodes with nvidia-ml-py installed

        self._nvml = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._static: list[dict[str, Any]] = []
        for index, handle in enumerate(self._handles):
            name = self._query(pynvml.nvmlDeviceGetName, handle)
            if isinstance(name, bytes):
                name = name.decode()
            uuid = self._query(pynvml.nvmlDeviceGetUUID, handle)
            if isinstance(uuid, bytes):
                uuid = uuid.decode()
            self._static.append({"index": index, "uuid": uuid, "name": name})
        self._health: gpu_health.NvmlHealth | None = None

    def health(self, sim_faults: tuple[bytes, float] | None) -> Readings:
        if self._health is None:
            self._health = gpu_health.NvmlHealth(self._nvml, self._handles)
        return self._health.read(time.time(), time.monotonic())

    def _query(self, func: Callable[..., Any], *args: Any) -> Any:
        """Call one NVML function; any NVML error (NotSupported, NoPermission…) becomes None."""
        try:
            return func(*args)
        except self._nvml.NVMLError:
            return None

    def count(self) -> int:
        return len(self._handles)

    def processes(self) -> ProcessesByGpu:
        """{gpu index: [process records]} from the compute and graphics process lists."""
        nvml = self._nvml
        result: ProcessesByGpu = {}
        for index, handle in enumerate(self._handles):
            seen: dict[int, int | None] = {}
            for getter in (nvml.nvmlDeviceGetComputeRunningProcesses,
                           nvml.nvmlDeviceGetGraphicsRunningProcesses):
                for proc in self._query(getter, handle) or []:
                    used = getattr(proc, "usedGpuMemory", None)
                    mem_mib = int(used // (1024 * 1024)) if isinstance(used, int) else None
                    seen[proc.pid] = mem_mib
            result[index] = [_process_record(pid, mem) for pid, mem in sorted(seen.items())]
        return result

    def sample(self) -> list[GpuSample]:
        nvml = self._nvml
        gpus: list[GpuSample] = []
        procs_by_gpu = self.processes()
        for index, handle in enumerate(self._handles):
            util = self._query(nvml.nvmlDeviceGetUtilizationRates, handle)
            mem = self._query(nvml.nvmlDeviceGetMemoryInfo, handle)
            temp = self._query(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            power_mw = self._query(nvml.nvmlDeviceGetPowerUsage, handle)
            static = self._static[index]
            gpus.append({
                "index": static["index"], "uuid": static["uuid"], "name": static["name"],
                "util_pct": float(util.gpu) if util is not None else None,
                "mem_used_mib": int(mem.used // (1024 * 1024)) if mem is not None else None,
                "mem_total_mib": int(mem.total // (1024 * 1024)) if mem is not None else None,
                "temperature_c": float(temp) if temp is not None else None,
                "power_w": round(power_mw / 1000.0, 1) if power_mw is not None else None,
                "processes": procs_by_gpu.get(index, []),
            })
        return gpus


def _smi_number(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", "" …


def parse_smi_csv(text: str) -> list[GpuSample]:
    """Parse `nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits` output."""
    gpus: list[GpuSample] = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 8:
            continue
        try:
            index = int(parts[0])
        except ValueError:
            continue
        used, total = _smi_number(parts[4]), _smi_number(parts[5])
        gpus.append({
            "index": index, "uuid": parts[1] or None, "name": parts[2] or None,
            "util_pct": _smi_number(parts[3]),
            "mem_used_mib": int(used) if used is not None else None,
            "mem_total_mib": int(total) if total is not None else None,
            "temperature_c": _smi_number(parts[6]), "power_w": _smi_number(parts[7]),
            "processes": [],
        })
    return gpus


class SmiGpus:
    """Fallback for nodes without nvidia-ml-py: one `nvidia-smi` CSV query per sample."""

    source = "nvidia-smi"

    def __init__(self) -> None:
        self._last = self.sample()

    def _run(self, *args: str) -> str:
        import subprocess  # only the nvidia-smi fallback needs it; it costs start-up time

        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise OSError(out.stderr.strip() or "nvidia-smi failed")
        return out.stdout

    def count(self) -> int:
        return len(self._last)

    def health(self, sim_faults: tuple[bytes, float] | None) -> Readings:
        return {g["index"]: gpu_health.empty() for g in self._last}  # not asked of nvidia-smi: unknown

    def processes(self) -> ProcessesByGpu:
        by_uuid = {g["uuid"]: g["index"] for g in self._last}
        result: ProcessesByGpu = {g["index"]: [] for g in self._last}
        try:
            text = self._run("--query-compute-apps=pid,gpu_uuid,used_memory",
                             "--format=csv,noheader,nounits")
        except Exception:  # a hung or failing nvidia-smi: report no processes, keep the metrics
            return result
        for line in text.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3 and parts[1] in by_uuid and parts[0].isdigit():
                mem = _smi_number(parts[2])
                result[by_uuid[parts[1]]].append(
                    _process_record(int(parts[0]), int(mem) if mem is not None else None))
        return result

    def sample(self) -> list[GpuSample]:
        gpus = parse_smi_csv(self._run("--query-gpu=" + SMI_FIELDS, "--format=csv,noheader,nounits"))
        self._last = gpus
        procs_by_gpu = self.processes()
        for gpu in gpus:
            gpu["processes"] = procs_by_gpu.get(gpu["index"], [])
        return gpus


SIM_MODELS = (("NVIDIA H100 80GB HBM3", 81559, 700.0), ("NVIDIA A100-SXM4-80GB", 81920, 400.0))


class SimulatedGpus:
    """Plausible GPUs whose load follows real processes bound to them.

    A process counts as running on simulated GPU i of node N when its environment has
    GPUCONSOLE_SIM_NODE=N and CUDA_VISIBLE_DEVICES naming index i (or its UUID). Its CPU use
    becomes the GPU's utilization and its resident memory, scaled, the GPU memory in use.
    The model, UUIDs and noise follow `identity` (default: `node`) and `seed`.
    """

    source = "simulated"

    def __init__(self, count: int, node: str, seed: object = 0, identity: str | None = None) -> None:
        self._node = node
        self._count = count
        import random  # only the simulation needs it: a real node's start does not pay for it

        name = node if identity is None else identity
        digest = int(sha256_hex(("%s/%s" % (name, seed)).encode()), 16)
        self._model = SIM_MODELS[digest % len(SIM_MODELS)]
        self._uuids: list[str] = []
        for index in range(count):
            h = sha256_hex(("%s/%d/%s" % (name, index, seed)).encode())
            self._uuids.append("GPU-%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:32]))
        self._rng = random.Random(digest)
        self._env_cache: dict[int, tuple[int, tuple[int, ...]]] = {}  # pid -> (start ticks, GPU indices)
        self._cpu_prev: dict[int, tuple[int, float]] = {}  # pid -> (ticks, monotonic time)
        self._ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._self_pid = os.getpid()

    def count(self) -> int:
        return self._count

    def health(self, sim_faults: tuple[bytes, float] | None) -> Readings:
        data, written_wall = sim_faults if sim_faults is not None else (None, None)
        return gpu_health.simulated(data, self._count, written_wall)

    def _bound_gpus(self, pid: int) -> tuple[int, ...]:
        """GPUs a process is bound to, from its environment, read once per (pid, start time).

        Unbound pids are cached by pid alone and forgotten when the pid disappears, so a scan
        reads /proc/PID/stat only for bound processes (pid reuse between two scans is the cost).
        """
        entry = self._env_cache.get(pid)
        if entry is not None:
            cached_start, cached = entry
            if not cached or procs.start_ticks(pid) == cached_start:
                return cached
        start = procs.start_ticks(pid)
        if start is None:
            return ()
        gpus: tuple[int, ...] = ()
        try:
            env = procs.environ(pid)
        except OSError:
            env = {}
        if env.get("GPUCONSOLE_SIM_NODE") == self._node and "CUDA_VISIBLE_DEVICES" in env:
            gpus = tuple(self._parse_visible(env["CUDA_VISIBLE_DEVICES"]))
        self._env_cache[pid] = (start, gpus)
        return gpus

    def _parse_visible(self, text: str) -> Iterator[int]:
        for item in text.split(","):
            item = item.strip()
            if item.isdigit() and int(item) < self._count:
                yield int(item)
            elif item in self._uuids:
                yield self._uuids.index(item)

    def _scan(self) -> dict[int, list[tuple[int, float, int]]]:
        """{gpu index: [(pid, cpu_pct, rss_mib)]} for live processes bound to this node's GPUs."""
        now = time.monotonic()
        bound: dict[int, list[tuple[int, float, int]]] = {i: [] for i in range(self._count)}
        live = set()
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            pids = []
        for pid in pids:
            if pid == self._self_pid:
                continue
            gpus = self._bound_gpus(pid)
            if not gpus:
                continue
            live.add(pid)
            ticks = procs.cpu_ticks(pid)
            if ticks is None:
                continue
            prev = self._cpu_prev.get(pid)
            self._cpu_prev[pid] = (ticks, now)
            if prev is not None and now > prev[1]:
                cpu_pct = 100.0 * (ticks - prev[0]) / self._ticks_per_s / (now - prev[1])
            else:
                cpu_pct = self._lifetime_cpu_pct(pid, ticks)
            rss_mib = _rss_mib(pid)
            for gpu in gpus:
                bound[gpu].append((pid, cpu_pct, rss_mib))
        for pid in list(self._cpu_prev):
            if pid not in live:
                del self._cpu_prev[pid]
        present = set(pids)
        for pid in [p for p in self._env_cache if p not in present]:
            del self._env_cache[pid]
        return bound

    def _lifetime_cpu_pct(self, pid: int, ticks: int) -> float:
        """A first-seen process's average CPU use since it started (one-shot samples need it)."""
        start = procs.start_ticks(pid)
        try:
            with open("/proc/uptime") as handle:
                uptime_s = float(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        if start is None:
            return 0.0
        alive_s = uptime_s - start / float(self._ticks_per_s)
        return 100.0 * ticks / self._ticks_per_s / alive_s if alive_s > 0.05 else 0.0

    def processes(self) -> ProcessesByGpu:
        total_mib = self._model[1]
        return {
            gpu: [_process_record(pid, min(total_mib, 512 + rss * 8)) for pid, _, rss in items]
            for gpu, items in self._scan().items()
        }

    def sample(self) -> list[GpuSample]:
        name, total_mib, max_power_w = self._model
        gpus: list[GpuSample] = []
        for index, items in sorted(self._scan().items()):
            util = min(100.0, sum(cpu for _, cpu, _ in items))
            used = min(total_mib, sum(512 + rss * 8 for _, _, rss in items))
            jitter = self._rng.uniform(-0.5, 0.5)
            gpus.append({
                "index": index, "uuid": self._uuids[index], "name": name,
                "util_pct": round(util, 1), "mem_used_mib": int(used), "mem_total_mib": total_mib,
                "temperature_c": round(31.0 + 0.5 * util + jitter, 1),
                "power_w": round(0.1 * max_power_w + 0.85 * max_power_w * util / 100.0 + jitter, 1),
                "processes": [_process_record(pid, min(total_mib, 512 + rss * 8))
                              for pid, _, rss in items],
            })
        return gpus


def _rss_mib(pid: int) -> int:
    try:
        with open("/proc/%d/statm" % pid) as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0


class NoGpus:
    """A node without GPUs or driver: telemetry still flows, with an empty GPU list."""

    source = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def count(self) -> int:
        return 0

    def processes(self) -> ProcessesByGpu:
        return {}

    def health(self, sim_faults: tuple[bytes, float] | None) -> Readings:
        return {}

    def sample(self) -> list[GpuSample]:
        return []


def _enable_site_packages() -> None:
    """The agent starts with `python3 -S`; add site-packages (where pynvml lives) when needed."""
    import sys

    if sys.flags.no_site and "site" not in sys.modules:
        try:
            import site

            site.main()
        except Exception:
            pass


def open_gpus(simulate: int = 0, node: str = "node", seed: object = 0, identity: str | None = None) -> GpuSource:
    """Pick the best source: simulated when asked, else NVML, else nvidia-smi, else none."""
    if simulate:
        return SimulatedGpus(int(simulate), node, seed, identity)
    _enable_site_packages()
    errors = []
    factories: tuple[type[NvmlGpus] | type[SmiGpus], ...] = (NvmlGpus, SmiGpus)
    for factory in factories:
        try:
            return factory()
        except Exception as exc:  # any import, driver or parse failure means "try the next source"
            errors.append("%s: %s" % (factory.source, exc))
    return NoGpus("; ".join(errors))
