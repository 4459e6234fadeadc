"""Probe this machine: CPU, RAM and its bandwidth, GPUs of every vendor, the llama.cpp build."""

from __future__ import annotations

import platform
from dataclasses import replace

from kennel.errors import HardwareSpecError
from kennel.hardware.bandwidth import cached_bandwidth
from kennel.hardware.cpu import probe_cpu, probe_memory
from kennel.hardware.gpus import probe_amd, probe_apple, probe_intel, probe_nvidia
from kennel.hardware.llamacpp import probe_llama_build
from kennel.hardware.profile import GpuInfo, HardwareProfile
from kennel.hardware.specs import lookup
from kennel.settings import KennelHome


def _with_spec(gpu: GpuInfo) -> GpuInfo:
    """Fill bandwidth and FP16 throughput from the spec table, which beats NVML's clock-based
    guess (GDDR6X and GDDR7 move more than two bits per clock)."""
    try:
        match = lookup(gpu.name)
    except HardwareSpecError:
        return gpu
    spec = match.spec
    return replace(
        gpu,
        bandwidth_gbs=spec.bandwidth_gbs,
        fp16_tflops=spec.fp16_tflops,
        unified=gpu.unified or spec.unified,
        spec_source=f"{spec.name}: {spec.source}",
    )


def probe_gpus() -> list[GpuInfo]:
    gpus: list[GpuInfo] = []
    for found in (probe_nvidia(), probe_amd(), probe_apple(), probe_intel()):
        gpus.extend(found)
    return [_with_spec(replace(g, index=i)) for i, g in enumerate(gpus)]


def probe(home: KennelHome, *, remeasure: bool = False, measure: bool = True) -> HardwareProfile:
    cpu = probe_cpu()
    mem = probe_memory()
    gpus = probe_gpus()
    notes: list[str] = []
    apple = next((g for g in gpus if g.vendor == "apple"), None)
    if apple is not None:
        # unified memory: the GPU's bandwidth is the machine's bandwidth
        mem = replace(mem, bandwidth_gbs=apple.bandwidth_gbs, bandwidth_source="spec")
    elif measure:
        result = cached_bandwidth(home.hardware_cache, cpu, mem.total, remeasure=remeasure)
        mem = replace(mem, bandwidth_gbs=round(result.gbs, 1), bandwidth_source="measured")
    llama = probe_llama_build()
    if gpus and llama.installed and not llama.gpu_offload:
        notes.append("This llama.cpp build cannot use the GPU; run `kennel doctor` for the fix.")
    return HardwareProfile(
        source="probed",
        cpu=cpu,
        memory=mem,
        gpus=tuple(gpus),
        llama=llama,
        os=f"{platform.system()} {platform.release()}",
        name=platform.node(),
        notes=tuple(notes),
    )
