"""Tokens per second as a range: decode is bound by memory traffic, prefill by arithmetic.

Decode reads every active weight (for MoE, only the experts a token uses) and the KV cache once
per token; each device contributes bytes / (bandwidth x efficiency) plus a fixed per-layer cost
for launching its kernels. Prefill does about 2 FLOPs per active parameter per token (plus the
attention over the prompt); with partial offload llama.cpp also streams the CPU-resident layers'
weights over PCIe to the GPU for every batch. Efficiencies come from published llama.cpp runs
and are replaced by this machine's measured ratio once ``kennel fit --measure`` has run.
"""

from __future__ import annotations

from dataclasses import dataclass

from kennel.fit.placement import ModelParts, Placement
from kennel.hardware.profile import CpuInfo, HardwareProfile

# fraction of peak bandwidth llama.cpp's decode kernels reach, and per-layer launch cost (s)
GPU_DECODE = {
    "cuda": (0.65, 30e-6),
    "rocm": (0.5, 40e-6),
    "metal": (0.7, 40e-6),
    "vulkan": (0.5, 50e-6),
    "sycl": (0.45, 50e-6),
}
# fraction of FP16 tensor throughput llama.cpp's prompt processing reaches
GPU_PREFILL = {"cuda": 0.5, "rocm": 0.35, "metal": 0.6, "vulkan": 0.3, "sycl": 0.3}
# Measured with benchmarks/fit_vs_measured.py on a 2-core AVX-512 EPYC (28.5 GB/s copy bandwidth),
# llama.cpp on every core, five shapes from 0.5B to 3B: decode streamed weights at ~34 GB/s, 1.2x
# the copy figure (a copy also pays a read-for-ownership per written byte, a weight read does
# not), 17 GB/s per core with the repacked int8 kernels (AVX2 cores manage about half), plus
# ~0.25 ms per layer per token for the threads' barrier between ops, which is what makes the
# 0.5B models slower than their bytes suggest. Prefill ran at 0.9 of the FP32 FMA peak.
CPU_DECODE_EFF = 1.2  # of measured copy bandwidth, when enough cores are working
# a spec sheet's or a what-if figure is the DIMMs' peak, which streaming reads reach ~70% of
CPU_DECODE_EFF_SPEC = 0.7
CPU_PER_CORE_GBS = {512: 17.0, 256: 8.5, 128: 6.0}  # dequantize-and-dot throughput per core
CPU_PREFILL_EFF = 0.9  # of FP32 FMA peak (int8 dot products beat FP32 FMA)
CPU_LAYER_COST = 250e-6
PCIE_GBS = 25.0  # PCIe 4.0 x16 in practice
DEFAULT_RAM_GBS = 40.0
UNCALIBRATED = (0.6, 1.3)
CALIBRATED = (0.9, 1.1)
DECODE_CONTEXT = 1024  # decode speed is quoted with this many tokens already in context
PREFILL_TOKENS = 512


@dataclass(frozen=True)
class Range:
    low: float
    expected: float
    high: float

    def scaled(self, f: float) -> Range:
        return Range(self.low * f, self.expected * f, self.high * f)


@dataclass(frozen=True)
class SpeedInputs:
    """Per-token work of one option, independent of where it runs."""

    active_params: int
    n_layer: int
    attn_dim: int  # n_head * head_dim, for attention FLOPs
    kv_bytes_per_cell: int  # whole model, one token of context
    expert_fraction: float  # n_expert_used / n_expert, 1.0 for dense models


@dataclass(frozen=True)
class Calibration:
    decode: float = 1.0
    prefill: float = 1.0
    measured: bool = False


def cpu_flops(cpu: CpuInfo) -> float:
    """FP32 FMA peak of the cores llama.cpp will use."""
    ghz = (cpu.freq_mhz or 2500.0) / 1000
    lanes = cpu.simd_width_bits // 32
    return cpu.cores * ghz * 1e9 * lanes * 2 * 2  # two FMA pipes, two FLOPs each


def cpu_bandwidth(hw: HardwareProfile) -> float:
    """Bytes/s the CPU backend can stream weights at: RAM-bound or core-bound."""
    measured = hw.memory.bandwidth_source == "measured"
    ram = (hw.memory.bandwidth_gbs or DEFAULT_RAM_GBS) * (CPU_DECODE_EFF if measured else CPU_DECODE_EFF_SPEC)
    cores = hw.cpu.cores * CPU_PER_CORE_GBS.get(hw.cpu.simd_width_bits, 3.0)
    return min(ram, cores) * 1e9


def _read_bytes(
    parts: ModelParts, idx: int, inputs: SpeedInputs, experts_cpu: bool, fill: int
) -> tuple[float, float]:
    """Bytes one layer reads per token: (on its device, moved to CPU because experts are in RAM)."""
    experts = parts.layer_experts[idx] * inputs.expert_fraction
    dense = parts.layer_weights[idx] - parts.layer_experts[idx]
    kv = inputs.kv_bytes_per_cell / max(inputs.n_layer, 1) * fill
    if experts_cpu:
        return dense + kv, experts
    return dense + experts + kv, 0.0


def decode(
    parts: ModelParts,
    place: Placement,
    hw: HardwareProfile,
    inputs: SpeedInputs,
    cal: Calibration,
    *,
    fill: int = DECODE_CONTEXT,
) -> Range:
    n = parts.n_layer
    start = n + 1 - place.gpu_layers
    gpu_bytes = cpu_bytes = 0.0
    gpu_layers = 0
    for idx in range(n):
        on_gpu = idx >= start
        dev, moved = _read_bytes(parts, idx, inputs, on_gpu and idx < place.experts_on_cpu, fill)
        if on_gpu:
            gpu_bytes += dev
            gpu_layers += 1
        else:
            cpu_bytes += dev
        cpu_bytes += moved
    out = parts.output_weights - parts.tied_copy if start > n else parts.output_weights
    if start <= n:
        gpu_bytes += out
    else:
        cpu_bytes += out
    t = cpu_bytes / cpu_bandwidth(hw) + (n - gpu_layers) * CPU_LAYER_COST
    if gpu_bytes and hw.gpus:
        g = hw.gpus[0]
        eff, launch = GPU_DECODE.get(g.backend, (0.5, 50e-6))
        # layers are split across GPUs but run one after another: time adds up, bandwidth does not
        t += gpu_bytes / ((g.bandwidth_gbs or 300.0) * 1e9 * eff) + gpu_layers * launch
    return _range(1.0 / t, cal.decode, cal.measured)


def prefill(
    parts: ModelParts,
    place: Placement,
    hw: HardwareProfile,
    inputs: SpeedInputs,
    cal: Calibration,
    *,
    prompt: int = PREFILL_TOKENS,
) -> Range:
    n = parts.n_layer
    flops_per_token = 2.0 * inputs.active_params + 4.0 * inputs.n_layer * inputs.attn_dim * prompt / 2
    gpu_share = min(place.gpu_layers, n) / n if n else 0.0
    if not hw.gpus or place.gpu_layers == 0:
        t = flops_per_token / (cpu_flops(hw.cpu) * CPU_PREFILL_EFF)
        return _range(1.0 / t, cal.prefill, cal.measured)
    g = hw.gpus[0]
    gpu_flops = (g.fp16_tflops or 20.0) * 1e12 * GPU_PREFILL.get(g.backend, 0.3)
    t = flops_per_token / gpu_flops
    if gpu_share < 1.0 and not g.unified:
        # op offload: CPU-resident weights cross PCIe to the GPU once per batch of PREFILL_TOKENS
        cpu_weights = sum(parts.layer_weights[: n + 1 - place.gpu_layers])
        t += cpu_weights / (PCIE_GBS * 1e9) / prompt
    elif place.experts_on_cpu and not g.unified:
        t += sum(parts.layer_experts[: place.experts_on_cpu]) / (PCIE_GBS * 1e9) / prompt
    return _range(1.0 / t, cal.prefill, cal.measured)


def _range(expected: float, factor: float, measured: bool) -> Range:
    lo, hi = CALIBRATED if measured else UNCALIBRATED
    e = expected * factor
    return Range(low=e * lo, expected=e, high=e * hi)
