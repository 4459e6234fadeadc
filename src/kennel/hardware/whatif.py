"""Hardware the user does not own yet: a profile built from the spec table and a few numbers."""

from __future__ import annotations

from kennel.errors import HardwareSpecError, InvalidOptionError
from kennel.hardware.gpus import metal_working_set
from kennel.hardware.profile import CpuInfo, GpuInfo, HardwareProfile, MemoryInfo
from kennel.hardware.specs import lookup

# A typical host for a what-if GPU box when the user gives no CPU: 16 cores, dual-channel DDR5.
DEFAULT_CPU_CORES = 16
DEFAULT_RAM_BANDWIDTH_GBS = 80.0


MAX_GPUS = 64  # a what-if machine's GPUs at most, for the CLI and the console alike


def what_if(
    *,
    gpu: str | None = None,
    gpu_count: int = 1,
    ram: int | None = None,
    cpu_cores: int | None = None,
    ram_bandwidth_gbs: float | None = None,
) -> HardwareProfile:
    """A profile for ``gpu_count`` x ``gpu`` (or none) with ``ram`` bytes of system memory."""
    if gpu_count < 1 or gpu_count > MAX_GPUS:
        raise InvalidOptionError(f"--gpu-count must be between 1 and {MAX_GPUS}.")
    if ram is not None and ram < 2**29:
        raise InvalidOptionError("--ram is below 512 MiB; give it like 64G.")
    gpus: tuple[GpuInfo, ...] = ()
    notes: list[str] = []
    cores = cpu_cores or DEFAULT_CPU_CORES
    ram_bw = ram_bandwidth_gbs or DEFAULT_RAM_BANDWIDTH_GBS
    model = f"{cores}-core CPU"
    if gpu:
        match = lookup(gpu)
        spec = match.spec
        if not match.exact:
            notes.append(f"{gpu!r} read as {spec.name} ({spec.source}).")
        if spec.unified:
            if gpu_count != 1:
                raise HardwareSpecError(
                    f"{spec.name} is a single unified-memory system; --gpu-count does not apply."
                )
            total = ram or spec.memory_bytes
            ram = total
            ram_bw = ram_bandwidth_gbs or spec.bandwidth_gbs
            limit = metal_working_set(total, None) if spec.vendor == "apple" else int(total * 0.9)
            model = spec.name
            gpus = (
                GpuInfo(
                    index=0,
                    vendor=spec.vendor,
                    name=spec.name,
                    backend=spec.backend,
                    total_memory=total,
                    free_memory=total,
                    bandwidth_gbs=spec.bandwidth_gbs,
                    fp16_tflops=spec.fp16_tflops,
                    unified=True,
                    working_set_limit=limit,
                    spec_source=spec.source,
                ),
            )
        else:
            gpus = tuple(
                GpuInfo(
                    index=i,
                    vendor=spec.vendor,
                    name=spec.name,
                    backend=spec.backend,
                    total_memory=spec.memory_bytes,
                    free_memory=spec.memory_bytes,
                    bandwidth_gbs=spec.bandwidth_gbs,
                    fp16_tflops=spec.fp16_tflops,
                    spec_source=spec.source,
                )
                for i in range(gpu_count)
            )
    if ram is None:
        ram = 64 * 2**30 if gpus else 32 * 2**30
        notes.append(f"No --ram given: assuming {ram // 2**30} GiB.")
    flags = ("neon", "dotprod") if gpus and gpus[0].vendor == "apple" else ("avx", "avx2", "fma", "f16c")
    cpu = CpuInfo(
        model=model, arch="arm64" if "neon" in flags else "x86_64", cores=cores, threads=cores, flags=flags
    )
    mem = MemoryInfo(
        total=ram,
        available=int(ram * 0.9),
        bandwidth_gbs=ram_bw,
        bandwidth_source="spec" if ram_bandwidth_gbs or (gpus and gpus[0].unified) else "estimate",
    )
    label = f"{gpu_count}x {gpus[0].name}" if gpus and gpu_count > 1 else (gpus[0].name if gpus else model)
    return HardwareProfile(
        source="what-if",
        cpu=cpu,
        memory=mem,
        gpus=gpus,
        name=f"{label}, {ram / 2**30:.0f} GiB RAM",
        notes=tuple(notes),
    )
