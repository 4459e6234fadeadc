"""Where each layer goes: GPU(s), CPU, or nowhere because it does not fit.

llama.cpp offloads from the output end: with ``-ngl k`` the output layer and the last k-1
repeating layers go to the GPU (i_gpu_start = n_layer + 1 - k), the token embedding always
stays on the CPU, and several GPUs take contiguous runs of the offloaded layers in proportion to
their free memory (the default tensor split). Each GPU also holds its layers' KV cache, its own
compute buffer and its runtime's overhead. For MoE models llama.cpp's fit moves expert tensors
to the CPU before whole layers, keeping attention on the GPU; kennel tries that too.

Weights the CPU runs may also be repacked into a second copy in RAM (fit.repack): counted for
the layers, experts and output layer the placement leaves on the CPU, never for offloaded ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kennel.hardware.profile import GpuInfo, HardwareProfile
from kennel.units import MiB

Fits = Literal["gpu", "partial", "cpu", "no"]
GPU_MARGIN = 256 * MiB  # kept free on every GPU: other processes, fragmentation
RAM_MARGIN = 1024 * MiB  # kept free for the OS and the serving process around llama.cpp


@dataclass(frozen=True)
class ModelParts:
    """Byte sizes of one model run, split the way placement needs them."""

    input_weights: int  # token embedding (stays on the CPU)
    layer_weights: tuple[int, ...]
    layer_experts: tuple[int, ...]  # of which in ffn_*_exps tensors
    output_weights: int  # output norm + matrix (a copy of the embedding when tied)
    tied_copy: int  # bytes of output_weights that only exist when the output is on a GPU
    layer_kv: tuple[int, ...]
    compute_gpu: int  # one GPU's compute buffer running its share of the graph
    compute_cpu: int  # the CPU's compute buffer when it runs layers
    compute_host: int  # the CPU's small buffer when everything else is offloaded
    output_buffer: int
    gpu_overhead: int  # per GPU used
    cpu_overhead: int
    # bytes the CPU repacks (fit.repack.LayerRepack) when the part runs there; empty: none
    layer_repack: tuple[int, ...] = ()
    layer_repack_experts: tuple[int, ...] = ()
    output_repack: int = 0
    input_repack: int = 0

    @property
    def n_layer(self) -> int:
        return len(self.layer_weights)


@dataclass(frozen=True)
class DeviceUse:
    name: str
    used: int
    budget: int

    @property
    def fits(self) -> bool:
        return self.used <= self.budget


@dataclass(frozen=True)
class Placement:
    fits: Fits
    gpu_layers: int  # llama.cpp's -ngl (the output layer counts as one)
    n_layers: int  # n_layer + 1
    devices: tuple[DeviceUse, ...]
    experts_on_cpu: int = 0  # MoE layers whose experts stay in RAM (--n-cpu-moe)
    gpu_split: tuple[int, ...] = ()  # layers per GPU
    note: str = ""
    repack: int = 0  # of the RAM used, bytes of repacked weight copies (fit.repack)

    @property
    def gpu_bytes(self) -> int:
        return sum(d.used for d in self.devices if d.name != "RAM")


def budgets(hw: HardwareProfile) -> tuple[list[int], int]:
    """Bytes kennel may plan with: per GPU, and RAM (margins kept free for the rest of the system)."""
    gpus = [max(g.usable_memory - GPU_MARGIN, 0) for g in hw.gpus]
    ram = max(hw.memory.available - RAM_MARGIN, 0)
    return gpus, ram


def _split(n: int, weights: list[int]) -> list[int]:
    """llama.cpp's default tensor split: offloaded layer i goes to the first GPU whose cumulative
    share of free memory exceeds i/n (llama_model::load_tensors, std::upper_bound)."""
    total = sum(weights) or 1
    points, cum = [], 0.0
    for w in weights:
        cum += w
        points.append(cum / total)
    out = [0] * len(weights)
    for i in range(n):
        x = i / n
        g = next((k for k, p in enumerate(points) if p > x), len(points) - 1)
        out[g] += 1
    return out


def _repack(parts: ModelParts, ngl: int, experts_cpu: int) -> int:
    """Repacked bytes in RAM for ``ngl`` offloaded layers: CPU layers whole, the experts of
    offloaded layers kept in RAM, the output layer when it stays on the CPU."""
    if not parts.layer_repack:
        return parts.input_repack
    n = parts.n_layer
    start = n + 1 - ngl
    total = parts.input_repack + sum(parts.layer_repack[: min(start, n)])
    total += sum(parts.layer_repack_experts[max(start, 0) : experts_cpu])
    if start > n:
        total += parts.output_repack
    return total


def _layout(
    parts: ModelParts, ngl: int, n_gpus: int, weights: list[int], experts_cpu: int
) -> tuple[list[int], int, list[int]]:
    """Bytes per GPU, bytes on the CPU (repacked copies included), and layers per GPU, for
    ``ngl`` offloaded layers."""
    n = parts.n_layer
    start = n + 1 - ngl  # first offloaded index; index n is the output layer
    per_gpu = _split(ngl, weights) if ngl and n_gpus else [0] * n_gpus
    gpu = [0] * n_gpus
    cpu = parts.input_weights + parts.output_buffer + parts.cpu_overhead
    cursor, g = start, 0
    for g, count in enumerate(per_gpu):
        for idx in range(cursor, cursor + count):
            if idx == n:
                gpu[g] += parts.output_weights
            else:
                moved = parts.layer_experts[idx] if idx < experts_cpu else 0
                gpu[g] += parts.layer_weights[idx] - moved + parts.layer_kv[idx]
                cpu += moved
        cursor += count
    for idx in range(min(start, n)):
        cpu += parts.layer_weights[idx] + parts.layer_kv[idx]
    if start > n:  # output layer on the CPU too
        cpu += parts.output_weights - parts.tied_copy
    used_gpus = [i for i, c in enumerate(per_gpu) if c]
    for i in used_gpus:
        gpu[i] += parts.compute_gpu + parts.gpu_overhead
    cpu += parts.compute_cpu if (start > 0 or not used_gpus or experts_cpu) else parts.compute_host
    cpu += _repack(parts, ngl, experts_cpu)
    return gpu, cpu, per_gpu


def _devices(
    hw: HardwareProfile, gpu: list[int], cpu: int, gpu_budgets: list[int], ram: int
) -> tuple[DeviceUse, ...]:
    out = [DeviceUse(f"GPU{i} {g.name}", gpu[i], gpu_budgets[i]) for i, g in enumerate(hw.gpus)]
    if hw.unified_memory:
        # one pool: the CPU part and the GPU part come out of the same RAM
        out.append(DeviceUse("RAM", cpu + sum(gpu), ram))
    else:
        out.append(DeviceUse("RAM", cpu, ram))
    return tuple(out)


def plan(parts: ModelParts, hw: HardwareProfile, *, gpu_offload: bool = True) -> Placement:
    """The placement with the most layers on GPUs that fits, llama.cpp style."""
    gpu_budgets, ram = budgets(hw)
    n_total = parts.n_layer + 1
    gpus = list(hw.gpus) if gpu_offload else []
    weights = [g.usable_memory for g in gpus]  # llama.cpp splits by each device's free memory
    best: Placement | None = None
    for ngl in range(n_total if gpus else 0, -1, -1):
        gpu, cpu, split = _layout(parts, ngl, len(gpus), weights, 0)
        devs = _devices(hw, gpu + [0] * (len(hw.gpus) - len(gpus)), cpu, gpu_budgets, ram)
        if all(d.fits for d in devs):
            kind: Fits = "gpu" if ngl == n_total else ("partial" if ngl else "cpu")
            best = Placement(kind, ngl, n_total, devs, gpu_split=tuple(split), repack=_repack(parts, ngl, 0))
            break
    if best is not None and best.fits == "partial" and any(parts.layer_experts):
        moe = _plan_experts(parts, hw, gpus, weights, gpu_budgets, ram)
        if moe is not None:
            return moe
    if best is not None:
        return best
    gpu, cpu, split = _layout(parts, 0, len(gpus), weights, 0)
    devs = _devices(hw, [0] * len(hw.gpus), cpu, gpu_budgets, ram)
    return Placement("no", 0, n_total, devs, repack=_repack(parts, 0, 0))


def _plan_experts(
    parts: ModelParts,
    hw: HardwareProfile,
    gpus: list[GpuInfo],
    weights: list[int],
    gpu_budgets: list[int],
    ram: int,
) -> Placement | None:
    """All layers on the GPU but the experts of the first m layers in RAM (llama.cpp --n-cpu-moe)."""
    n_total = parts.n_layer + 1
    for m in range(1, parts.n_layer + 1):
        gpu, cpu, split = _layout(parts, n_total, len(gpus), weights, m)
        devs = _devices(hw, gpu + [0] * (len(hw.gpus) - len(gpus)), cpu, gpu_budgets, ram)
        if all(d.fits for d in devs):
            return Placement(
                "partial",
                n_total,
                n_total,
                devs,
                experts_on_cpu=m,
                gpu_split=tuple(split),
                note=f"experts of {m} of {parts.n_layer} layers in RAM, attention on the GPU",
                repack=_repack(parts, n_total, m),
            )
    return None
