"""What a machine has, probed or imagined: the values the fit calculator plans against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Vendor = Literal["nvidia", "amd", "apple", "intel", "other"]
Backend = Literal["cuda", "rocm", "metal", "vulkan", "sycl", "cpu"]


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores: int
    threads: int
    flags: tuple[str, ...] = ()
    freq_mhz: float | None = None

    @property
    def simd_width_bits(self) -> int:
        if "avx512f" in self.flags:
            return 512
        if "avx2" in self.flags or "avx" in self.flags:
            return 256
        if "sve" in self.flags or "neon" in self.flags or self.arch in ("arm64", "aarch64"):
            return 128
        return 128


@dataclass(frozen=True)
class MemoryInfo:
    total: int
    available: int
    bandwidth_gbs: float | None = None
    bandwidth_source: str | None = None  # "measured", "spec" or "estimate"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    vendor: Vendor
    name: str
    backend: Backend
    total_memory: int
    free_memory: int
    bandwidth_gbs: float | None = None
    fp16_tflops: float | None = None
    driver: str | None = None
    runtime_version: str | None = None  # CUDA driver API / ROCm / Metal version
    compute_capability: str | None = None
    unified: bool = False  # shares system RAM (Apple Silicon, Jetson)
    working_set_limit: int | None = None  # Apple: Metal's recommendedMaxWorkingSetSize
    spec_source: str | None = None

    @property
    def usable_memory(self) -> int:
        """What the GPU may hold: free VRAM, or the working-set limit of unified memory."""
        if self.working_set_limit:
            return min(self.working_set_limit, self.free_memory)
        return self.free_memory


@dataclass(frozen=True)
class LlamaBuild:
    """What the installed llama.cpp (the xllamacpp build) can use."""

    installed: bool
    version: str | None = None
    gpu_offload: bool = False
    mmap: bool = False
    mlock: bool = False
    rpc: bool = False
    backends: tuple[str, ...] = ()  # ggml backend devices, e.g. ("CPU", "CUDA0")
    system_info: str = ""


@dataclass(frozen=True)
class HardwareProfile:
    source: Literal["probed", "what-if"]
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple[GpuInfo, ...] = ()
    llama: LlamaBuild | None = None
    os: str = ""
    name: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.gpus)

    @property
    def gpu_backend(self) -> Backend:
        return self.gpus[0].backend if self.gpus else "cpu"

    def describe(self) -> str:
        if self.source == "what-if" and self.name:
            return self.name
        names = [g.name for g in self.gpus]
        gpus = (
            ", ".join(f"{names.count(n)}x {n}" if names.count(n) > 1 else n for n in dict.fromkeys(names))
            or "no GPU"
        )
        return f"{self.cpu.model} ({self.cpu.cores} cores), {self.memory.total / 2**30:.1f} GiB RAM, {gpus}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HardwareProfile:
        cpu = CpuInfo(**{**d["cpu"], "flags": tuple(d["cpu"].get("flags", ()))})
        mem = MemoryInfo(**d["memory"])
        gpus = tuple(GpuInfo(**g) for g in d.get("gpus", ()))
        llama = d.get("llama")
        build = LlamaBuild(**{**llama, "backends": tuple(llama.get("backends", ()))}) if llama else None
        return cls(
            source=d.get("source", "what-if"),
            cpu=cpu,
            memory=mem,
            gpus=gpus,
            llama=build,
            os=d.get("os", ""),
            name=d.get("name", ""),
            notes=tuple(d.get("notes", ())),
        )
