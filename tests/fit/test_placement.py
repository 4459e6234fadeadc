"""Placement on fake hardware: full GPU, partial offload from the output end, multi-GPU, unified
memory, MoE experts in RAM, CPU only, does not fit."""

from __future__ import annotations

from kennel.fit.placement import GPU_MARGIN, RAM_MARGIN, ModelParts, plan
from kennel.hardware.profile import CpuInfo, GpuInfo, HardwareProfile, MemoryInfo

G = 2**30


def parts(
    n: int = 10, layer: int = G, experts: int = 0, kv: int = 0, out: int = G // 2, tied: int = 0
) -> ModelParts:
    return ModelParts(
        input_weights=G // 2,
        layer_weights=(layer,) * n,
        layer_experts=(experts,) * n,
        output_weights=out,
        tied_copy=tied,
        layer_kv=(kv,) * n,
        compute_gpu=G // 4,
        compute_cpu=G // 4,
        compute_host=G // 16,
        output_buffer=0,
        gpu_overhead=G // 4,
        cpu_overhead=0,
    )


def hw(
    gpus: list[int], ram: int = 64 * G, unified: bool = False, limit: int | None = None
) -> HardwareProfile:
    cpu = CpuInfo(model="test", arch="x86_64", cores=8, threads=8)
    gs = tuple(
        GpuInfo(
            index=i,
            vendor="nvidia",
            name=f"G{i}",
            backend="cuda",
            total_memory=m,
            free_memory=m,
            unified=unified,
            working_set_limit=limit,
        )
        for i, m in enumerate(gpus)
    )
    return HardwareProfile(source="what-if", cpu=cpu, memory=MemoryInfo(total=ram, available=ram), gpus=gs)


def budget(gb: float) -> int:
    return int(gb * G) + GPU_MARGIN


def test_fits_fully_on_gpu() -> None:
    # 10 layers + output + compute + overhead = 10 + 0.5 + 0.25 + 0.25
    p = plan(parts(), hw([budget(11)]))
    assert (p.fits, p.gpu_layers, p.n_layers) == ("gpu", 11, 11)


def test_partial_offload_starts_from_the_output() -> None:
    p = plan(parts(), hw([budget(5.1)]))
    # output (0.5) + 4 layers + compute + overhead = 5.0 fits; 5 layers would not
    assert (p.fits, p.gpu_layers) == ("partial", 5)
    ram = next(d for d in p.devices if d.name == "RAM")
    assert ram.used == G // 2 + 6 * G + G // 4  # embedding + the first 6 layers + CPU compute


def test_tied_output_needs_its_own_copy_on_the_gpu() -> None:
    # untied: 10 + 0.5 + 0.25 + 0.25 = 11 GiB; tied adds a 0.5 GiB copy of the embedding
    untied = plan(parts(out=G // 2), hw([budget(11.2)]))
    tied = plan(parts(out=G, tied=G // 2), hw([budget(11.2)]))
    assert untied.fits == "gpu" and tied.fits == "partial"


def test_two_gpus_split_in_proportion() -> None:
    p = plan(parts(n=20), hw([budget(16), budget(8)]))
    assert p.fits == "gpu"
    assert p.gpu_split == (14, 7)


def test_cpu_only_and_does_not_fit() -> None:
    assert plan(parts(), hw([], ram=16 * G)).fits == "cpu"
    small = plan(parts(), hw([], ram=8 * G))
    assert small.fits == "no" and small.gpu_layers == 0


def test_unified_memory_counts_once_and_respects_metal_limit() -> None:
    # 32 GiB Mac: model of 11 GiB fits under a 21 GiB working-set limit
    p = plan(parts(), hw([32 * G], ram=32 * G, unified=True, limit=21 * G))
    assert p.fits == "gpu"
    ram = next(d for d in p.devices if d.name == "RAM")
    assert ram.used >= 10 * G  # the GPU part is RAM too
    limited = plan(parts(), hw([32 * G], ram=32 * G, unified=True, limit=6 * G))
    assert limited.fits == "partial"


def test_moe_experts_move_to_ram_before_layers() -> None:
    moe = parts(n=10, layer=2 * G, experts=int(1.8 * G))
    p = plan(moe, hw([budget(12)], ram=64 * G))
    assert p.fits == "partial"
    assert p.gpu_layers == p.n_layers and p.experts_on_cpu > 0
    assert "experts" in p.note


def test_ram_margin_is_kept() -> None:
    need = G // 2 + 10 * G + G // 2 + G // 4
    assert plan(parts(), hw([], ram=need + RAM_MARGIN)).fits == "cpu"
    assert plan(parts(), hw([], ram=need + RAM_MARGIN - 1)).fits == "no"
