"""The GPU facade: NVML errors become None, nvidia-smi CSV quirks parse, simulation follows processes."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Callable

import pytest

from gpuconsole.node import gpus
from tests.helpers import wait_for


class _NVMLError(Exception):
    pass


class _Util:
    gpu = 87


class _Mem:
    used = 10 * 1024 * 1024 * 1024
    total = 80 * 1024 * 1024 * 1024


class _Proc:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid = pid
        self.usedGpuMemory = used


def _fake_pynvml(unsupported: set[str]) -> types.ModuleType:
    """A stand-in for the one module the facade calls; named calls raise NVMLError."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = _NVMLError  # type: ignore[attr-defined]
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]

    def call(name: str, value: object):  # type: ignore[no-untyped-def]
        def fn(*_args: object) -> object:
            if name in unsupported:
                raise _NVMLError(name)
            return value
        return fn

    for name, value in {
        "nvmlInit": None, "nvmlDeviceGetCount": 2, "nvmlDeviceGetHandleByIndex": object(),
        "nvmlDeviceGetName": b"NVIDIA H100 80GB HBM3", "nvmlDeviceGetUUID": "GPU-abc",
        "nvmlDeviceGetUtilizationRates": _Util(), "nvmlDeviceGetMemoryInfo": _Mem(),
        "nvmlDeviceGetTemperature": 54, "nvmlDeviceGetPowerUsage": 312_500,
        "nvmlDeviceGetComputeRunningProcesses": [_Proc(os.getpid(), 2 * 1024 * 1024 * 1024)],
        "nvmlDeviceGetGraphicsRunningProcesses": [],
    }.items():
        setattr(mod, name, call(name, value))
    return mod


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[[set[str]], None]:
    def install(unsupported: set[str]) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(unsupported))
    return install


def test_nvml_sample_maps_units(fake_nvml) -> None:  # type: ignore[no-untyped-def]
    fake_nvml(set())
    sample = gpus.NvmlGpus().sample()
    assert len(sample) == 2
    gpu = sample[0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["uuid"] == "GPU-abc"
    assert gpu["util_pct"] == 87.0 and gpu["mem_used_mib"] == 10240 and gpu["mem_total_mib"] == 81920
    assert gpu["temperature_c"] == 54.0 and gpu["power_w"] == 312.5
    assert gpu["processes"][0]["pid"] == os.getpid() and gpu["processes"][0]["mem_mib"] == 2048
    assert gpu["processes"][0]["user"]


def test_nvml_unsupported_metrics_are_none(fake_nvml) -> None:  # type: ignore[no-untyped-def]
    fake_nvml({"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTemperature", "nvmlDeviceGetComputeRunningProcesses"})
    gpu = gpus.NvmlGpus().sample()[0]
    assert gpu["power_w"] is None and gpu["temperature_c"] is None
    assert gpu["util_pct"] == 87.0 and gpu["processes"] == []


def test_open_gpus_falls_back_to_none_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    source = gpus.open_gpus()
    assert source.source == "none" and source.count() == 0 and source.sample() == []
    assert "nvml" in source.reason and "nvidia-smi" in source.reason  # type: ignore[attr-defined]


def test_smi_csv_parses_na_and_not_supported() -> None:
    text = ("0, GPU-aaa, NVIDIA A100-SXM4-80GB, 35, 1024, 81920, 41, 88.12\n"
            "1, GPU-bbb, NVIDIA A100-SXM4-80GB, [N/A], [N/A], 81920, [Not Supported], [N/A]\n"
            "garbage line\n")
    parsed = gpus.parse_smi_csv(text)
    assert [g["index"] for g in parsed] == [0, 1]
    assert parsed[0]["util_pct"] == 35.0 and parsed[0]["power_w"] == 88.12
    assert parsed[1]["util_pct"] is None and parsed[1]["mem_used_mib"] is None
    assert parsed[1]["temperature_c"] is None and parsed[1]["mem_total_mib"] == 81920


def test_simulated_gpu_follows_bound_process() -> None:
    sim = gpus.SimulatedGpus(4, "sim-test-node")
    assert [g["util_pct"] for g in sim.sample()] == [0.0, 0.0, 0.0, 0.0]
    env = dict(os.environ, GPUCONSOLE_SIM_NODE="sim-test-node", CUDA_VISIBLE_DEVICES="1,3")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    try:
        sample = wait_for(lambda: (lambda s: s if s[1]["util_pct"] > 20 else None)(sim.sample()),
                          timeout_s=10, interval_s=0.2, message="GPU 1 busy")
        assert sample[3]["processes"][0]["pid"] == burner.pid
        assert sample[0]["processes"] == [] and sample[2]["util_pct"] == 0.0
        assert sample[1]["mem_used_mib"] > 0 and sample[1]["power_w"] > sample[0]["power_w"]
    finally:
        burner.kill()
        burner.wait()
    # Another node's processes never show up here.
    other = gpus.SimulatedGpus(4, "some-other-node")
    assert all(g["processes"] == [] for g in other.sample())
