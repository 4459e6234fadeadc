"""Vendor probes with fakes: NVML, rocm-smi JSON, amdgpu/i915 sysfs trees, Apple sysctl."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kennel.hardware import gpus as g
from kennel.hardware.bandwidth import cached_bandwidth, measure_bandwidth
from kennel.hardware.cpu import probe_cpu, probe_memory
from kennel.hardware.llamacpp import probe_llama_build
from kennel.hardware.probe import probe
from kennel.hardware.profile import CpuInfo, HardwareProfile
from kennel.settings import KennelHome


class FakeNvml:
    NVML_CLOCK_MEM = 2

    def __init__(self, devices: list[dict], fail_init: bool = False) -> None:
        self.devices, self.fail_init, self.shutdown = devices, fail_init, False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict:
        return self.devices[i]

    def nvmlDeviceGetName(self, h: dict) -> bytes:
        return h["name"].encode()

    def nvmlDeviceGetMemoryInfo(self, h: dict) -> SimpleNamespace:
        return SimpleNamespace(total=h["total"], free=h["free"], used=h["total"] - h["free"])

    def nvmlDeviceGetCudaComputeCapability(self, h: dict) -> tuple[int, int]:
        return h["cc"]

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetMemoryBusWidth(self, h: dict) -> int:
        return 384

    def nvmlDeviceGetMaxClockInfo(self, h: dict, clock: int) -> int:
        return 10501


def test_nvidia_through_nvml() -> None:
    nvml = FakeNvml(
        [{"name": "NVIDIA GeForce RTX 4090", "total": 24 * 2**30, "free": 22 * 2**30, "cc": (8, 9)}] * 2
    )
    found = g.probe_nvidia(nvml)
    assert len(found) == 2
    gpu = found[0]
    assert (gpu.vendor, gpu.backend, gpu.compute_capability, gpu.runtime_version, gpu.driver) == (
        "nvidia",
        "cuda",
        "8.9",
        "12.4",
        "550.54.15",
    )
    assert gpu.free_memory == 22 * 2**30
    assert nvml.shutdown


def test_nvml_missing_is_quiet() -> None:
    assert g.probe_nvidia(FakeNvml([], fail_init=True)) == []


def test_rocm_smi_json() -> None:
    doc = {
        "card0": {
            "Card Series": "Radeon RX 7900 XTX",
            "VRAM Total Memory (B)": "25753026560",
            "VRAM Total Used Memory (B)": "1073741824",
        },
        "system": {"Driver version": "6.8.5"},
    }
    (gpu,) = g._parse_rocm_smi(json.loads(json.dumps(doc)))
    assert gpu.name == "Radeon RX 7900 XTX" and gpu.backend == "rocm"
    assert gpu.free_memory == 25753026560 - 2**30


def _card(root: Path, n: int, vendor: str, files: dict[str, str]) -> None:
    dev = root / f"card{n}" / "device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    for name, text in files.items():
        p = dev / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_amd_sysfs(tmp_path: Path) -> None:
    _card(tmp_path, 0, "0x1002", {"mem_info_vram_total": str(16 * 2**30), "mem_info_vram_used": str(2**30)})
    _card(tmp_path, 1, "0x10de", {})
    (gpu,) = g._amd_sysfs(tmp_path)
    assert gpu.total_memory == 16 * 2**30 and gpu.free_memory == 15 * 2**30


def test_intel_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(g.shutil, "which", lambda name: None)
    _card(tmp_path, 0, "0x8086", {"tile0/gt0/lmem_total_bytes": str(16 * 2**30)})
    _card(tmp_path, 1, "0x8086", {})  # integrated: no local memory
    (gpu,) = g.probe_intel(tmp_path)
    assert gpu.vendor == "intel" and gpu.total_memory == 16 * 2**30


def test_apple_working_set() -> None:
    values = {
        "machdep.cpu.brand_string": "Apple M2 Max",
        "hw.memsize": str(64 * 2**30),
        "iogpu.wired_limit_mb": "0",
        "kern.osproductversion": "14.5",
    }
    (gpu,) = g.probe_apple(values.get, system="Darwin")
    assert gpu.unified and gpu.backend == "metal"
    assert gpu.working_set_limit == 48 * 2**30  # three quarters above 36 GiB
    assert gpu.usable_memory == 48 * 2**30
    values["iogpu.wired_limit_mb"] = "57344"
    assert g.probe_apple(values.get, system="Darwin")[0].working_set_limit == 56 * 2**30
    assert g.metal_working_set(16 * 2**30, None) == int(16 * 2**30 * 2 / 3)
    assert g.probe_apple(values.get, system="Linux") == []


def test_this_machine(kennel_home: Path) -> None:
    cpu, mem = probe_cpu(), probe_memory()
    assert cpu.cores >= 1 and cpu.threads >= cpu.cores
    assert 0 < mem.available <= mem.total
    build = probe_llama_build()
    assert build.installed and build.version == "2026.10.11549" and "CPU" in build.backends
    p = probe(KennelHome(kennel_home))
    # the probe measured (its speed is benchmarks/ business, not a test's)
    assert p.memory.bandwidth_source == "measured" and isinstance(p.memory.bandwidth_gbs, float)
    assert HardwareProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_bandwidth_is_cached(tmp_path: Path) -> None:
    from kennel.hardware.bandwidth import BandwidthResult

    cpu = CpuInfo(model="x", arch="x86_64", cores=1, threads=1)
    cache = tmp_path / "hw.json"

    runs: list[BandwidthResult] = []

    def calm(*, threads: int) -> BandwidthResult:  # the real copy test, as if on an idle machine
        r = measure_bandwidth(threads=threads, buffer_bytes=8 * 2**20, repeats=2, passes=1)
        runs.append(BandwidthResult(r.gbs, r.threads, r.seconds, r.measured_at, load=0.0))
        return runs[-1]

    first = cached_bandwidth(cache, cpu, 8 * 2**30, measure=calm)
    again = cached_bandwidth(cache, cpu, 8 * 2**30, measure=calm)
    assert len(runs) == 1 and first == runs[0]
    assert again.seconds == 0.0 and abs(again.gbs - first.gbs) < 0.01  # read back, not measured
    cached_bandwidth(cache, cpu, 8 * 2**30, remeasure=True, measure=calm)
    assert len(runs) == 2


def test_measure_bandwidth_small_buffer() -> None:
    assert measure_bandwidth(threads=2, buffer_bytes=8 * 2**20, repeats=2).gbs > 0.1


def test_bandwidth_is_measured_again_when_stale_or_taken_on_a_busy_machine(tmp_path: Path) -> None:
    from kennel.hardware.bandwidth import STALE_AFTER, BandwidthResult

    cpu = CpuInfo(model="x", arch="x86_64", cores=2, threads=2)
    cache = tmp_path / "hw.json"
    figures = iter([10.0, 14.0, 12.0, 9.0])
    clock = [1_000_000.0]
    calls: list[float] = []

    def fake(*, threads: int) -> BandwidthResult:
        gbs = next(figures)
        calls.append(gbs)
        load = 3.0 if gbs == 10.0 else 0.0  # the first figure was taken on a busy machine
        return BandwidthResult(gbs, threads, 1.0, clock[0], load)

    def get() -> BandwidthResult:
        return cached_bandwidth(cache, cpu, 8 * 2**30, measure=fake, now=lambda: clock[0])

    assert get().gbs == 10.0
    assert get().gbs == 14.0 and len(calls) == 2  # busy then: measured again now the machine is calmer
    assert get().gbs == 14.0 and len(calls) == 2  # calm and recent: kept
    clock[0] += STALE_AFTER + 1
    assert get().gbs == 12.0 and len(calls) == 3  # stale: measured again, the new figure stands
    r = cached_bandwidth(cache, cpu, 8 * 2**30, measure=fake, now=lambda: clock[0], remeasure=True)
    assert r.gbs == 9.0  # asked for: the new figure, even lower
